//! A tiny HTTP/1.1 backend run as its own OS process, for the failover tests that kill a
//! backend for real (SIGKILL) in the middle of a load (`tests/failover.rs`).
//!
//! `test_backend [NAME]` binds 127.0.0.1:0, prints the bound port on stdout (one line) and
//! serves until killed: `GET /healthz` answers 200; every other request answers 200 with
//! the name as the body and an `x-backend: NAME` header. It exits by itself when its stdin
//! closes, so a test process that dies without cleaning up leaves no orphan behind.

use std::convert::Infallible;
use std::io::{Read, Write};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "test-backend".to_string());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{port}")?;
        out.flush()?;
    }

    // The parent closing our stdin (or dying) ends the process.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });

    let name = Bytes::from(name);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(answer(&req, name)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, name: Bytes) -> Response<Full<Bytes>> {
    let body = if req.uri().path() == "/healthz" {
        Bytes::from_static(b"ok")
    } else {
        name.clone()
    };
    let mut resp = Response::new(Full::new(body));
    if let Ok(v) = http::HeaderValue::from_maybe_shared(name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}
