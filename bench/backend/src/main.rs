//! Tiny upstream for Switchyard's benchmarks (bench/run.sh, bench/upload_memory.sh,
//! bench/grpc.sh).
//!
//! Serves ports `port..port+count`, keep-alive on, one tokio runtime with `--workers` threads.
//! Default mode: HTTP/1.1, every request gets 200 and a fixed `--body`-byte body; `--delay-ms N`
//! (or a `delay_ms=N` query parameter) delays the answer. Two streaming modes exist for memory
//! tests:
//!
//! - `--sink`: reads the request body frame by frame, keeping nothing, and answers with the
//!   number of bytes it read (`1073741824\n`). `--rate-mib N` caps that read at N MiB/s, so the
//!   upstream is slower than the client and a proxy without backpressure has to buffer.
//! - `--source BYTES`: answers with a BYTES-long body, streamed in 64 KiB chunks (Content-Length
//!   set), so a 1 GiB download costs the backend no memory either. A `bytes=N` query parameter
//!   overrides BYTES for one request (a small warm-up download).
//!
//! With both, the request body is sunk first and then BYTES are streamed back.
//!
//! `--grpc` makes it a gRPC server instead: HTTP/2 with prior knowledge (h2c), every POST is
//! read to its end and answered like a successful unary call — 200, `content-type:
//! application/grpc`, one length-prefixed message of `--body` bytes and the trailer
//! `grpc-status: 0` — whatever the method name. A grpcio server would be the bottleneck of a
//! proxy benchmark; this one costs a few microseconds per call. `GET /count` answers the
//! number of calls answered so far on all ports, so a benchmark can tell answers the backend
//! gave from answers a proxy made up.
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    process::exit,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONTENT_TYPE},
    server::conn::{http1, http2},
    service::service_fn,
    HeaderMap, Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const USAGE: &str = "usage: bench-backend [--port 8081] [--count 1] [--workers 1] [--body 64] \
                     [--delay-ms 0] [--sink [--rate-mib N]] [--source BYTES] | [--grpc]";

/// HTTP/2 streams one client connection may have open at once in `--grpc` mode: above any
/// `CONNS x STREAMS` a benchmark uses, so the backend never queues a proxy's streams (hyper's
/// default is 200).
const GRPC_MAX_STREAMS: u32 = 1024;

/// Calls answered in `--grpc` mode, all ports together (`GET /count`).
static GRPC_ANSWERS: AtomicU64 = AtomicU64::new(0);

/// Chunk size of `--source` bodies: large enough that per-frame overhead is small, small enough
/// that a proxy forwarding frame by frame holds little at a time.
const SOURCE_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy)]
struct Opts {
    port: u16,
    count: u16,
    workers: usize,
    body: usize,
    delay_ms: u64,
    sink: bool,
    /// Bytes per second the sink reads at most; `None` = as fast as the peer sends.
    sink_rate: Option<f64>,
    source: Option<u64>,
    grpc: bool,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        port: 8081,
        count: 1,
        workers: 1,
        body: 64,
        delay_ms: 0,
        sink: false,
        sink_rate: None,
        source: None,
        grpc: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--sink" || flag == "--grpc" {
            o.sink |= flag == "--sink";
            o.grpc |= flag == "--grpc";
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        const VALUED: [&str; 7] = [
            "--port",
            "--count",
            "--workers",
            "--body",
            "--delay-ms",
            "--source",
            "--rate-mib",
        ];
        if !VALUED.contains(&flag.as_str()) {
            return Err(format!("unknown flag {flag}"));
        }
        let v = args.next().ok_or(format!("missing value for {flag}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad value {v:?} for {flag}: {e}");
        match flag.as_str() {
            "--port" => o.port = v.parse().map_err(|e| bad(&e))?,
            "--count" => o.count = v.parse().map_err(|e| bad(&e))?,
            "--workers" => o.workers = v.parse().map_err(|e| bad(&e))?,
            "--body" => o.body = v.parse().map_err(|e| bad(&e))?,
            "--delay-ms" => o.delay_ms = v.parse().map_err(|e| bad(&e))?,
            "--source" => o.source = Some(v.parse().map_err(|e| bad(&e))?),
            "--rate-mib" => {
                let mib: f64 = v.parse().map_err(|e| bad(&e))?;
                o.sink_rate = (mib > 0.0).then_some(mib * 1024.0 * 1024.0);
            }
            _ => unreachable!("every flag in VALUED has an arm"),
        }
    }
    if o.grpc && (o.sink || o.source.is_some() || o.delay_ms > 0) {
        return Err("--grpc takes only --port, --count, --workers and --body".into());
    }
    if o.count == 0 || o.port.checked_add(o.count - 1).is_none() {
        return Err("--port + --count must stay within 1..=65535".into());
    }
    Ok(o)
}

/// A response body of `left` bytes, handed out as slices of one shared chunk.
struct Source {
    left: u64,
    chunk: Bytes,
}

impl Body for Source {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

type RespBody = Either<Full<Bytes>, Source>;

/// Reads a request body to its end, keeping nothing; returns its length.
/// With a rate, sleeps whenever it got ahead of `rate` bytes per second.
async fn sink(mut body: Incoming, rate: Option<f64>) -> Result<u64, hyper::Error> {
    let start = Instant::now();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(n as f64 / rate);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(ahead).await;
            }
        }
    }
    Ok(n)
}

/// The value of query parameter `key` (e.g. `delay_ms=`), when present and a number.
fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.parse().ok())
}

async fn handle(req: Request<Incoming>, o: Opts, body: Bytes, chunk: Bytes) -> Response<RespBody> {
    let delay = query_u64(&req, "delay_ms=").unwrap_or(o.delay_ms);
    let source = o.source.map(|n| query_u64(&req, "bytes=").unwrap_or(n));
    let mut answer = body;
    if o.sink {
        match sink(req.into_body(), o.sink_rate).await {
            Ok(n) => answer = Bytes::from(format!("{n}\n")),
            Err(e) => {
                let mut resp = Response::new(Either::Left(Full::new(Bytes::from(format!(
                    "request body: {e}\n"
                )))));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                return resp;
            }
        }
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match source {
        Some(left) => Response::new(Either::Right(Source { left, chunk })),
        None => Response::new(Either::Left(Full::new(answer))),
    }
}

/// A successful unary gRPC answer's body: one message, then the `grpc-status: 0` trailer.
struct GrpcReply {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcReply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(m) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(m))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}

/// A gRPC message with its 5-byte prefix: not compressed, big-endian length.
fn grpc_message(payload_len: usize) -> Bytes {
    let len = u32::try_from(payload_len).unwrap_or_else(|_| {
        eprintln!("bench-backend: --body {payload_len} is too large for one gRPC message");
        exit(2);
    });
    let mut m = Vec::with_capacity(5 + payload_len);
    m.push(0);
    m.extend_from_slice(&len.to_be_bytes());
    m.resize(5 + payload_len, b'x');
    Bytes::from(m)
}

fn plain(status: StatusCode, text: String) -> Response<Either<Full<Bytes>, GrpcReply>> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *resp.status_mut() = status;
    resp
}

async fn grpc_handle(
    req: Request<Incoming>,
    message: Bytes,
) -> Response<Either<Full<Bytes>, GrpcReply>> {
    if req.method() == Method::GET && req.uri().path() == "/count" {
        let n = GRPC_ANSWERS.load(Ordering::Relaxed);
        return plain(StatusCode::OK, format!("{n}\n"));
    }
    if req.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "gRPC calls are POSTs\n".into(),
        );
    }
    // Like a real server, the whole request message is read before the answer.
    if let Err(e) = sink(req.into_body(), None).await {
        return plain(StatusCode::BAD_REQUEST, format!("request body: {e}\n"));
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut resp = Response::new(Either::Right(GrpcReply {
        message: Some(message),
        trailers: Some(trailers),
    }));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    GRPC_ANSWERS.fetch_add(1, Ordering::Relaxed);
    resp
}

async fn serve(port: u16, o: Opts, body: Bytes, chunk: Bytes) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-backend: bind {addr}: {e}");
            exit(1);
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, chunk) = (body.clone(), chunk.clone());
        if o.grpc {
            // `body` is the whole gRPC message, prefix included (see main).
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let message = body.clone();
                    async move { Ok::<_, Infallible>(grpc_handle(req, message).await) }
                });
                let _ = http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(GRPC_MAX_STREAMS)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            continue;
        }
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (body, chunk) = (body.clone(), chunk.clone());
                async move { Ok::<_, Infallible>(handle(req, o, body, chunk).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn main() {
    let o = parse().unwrap_or_else(|e| {
        eprintln!("bench-backend: {e}\n{USAGE}");
        exit(2);
    });
    let body = if o.grpc {
        grpc_message(o.body)
    } else {
        Bytes::from(vec![b'x'; o.body])
    };
    let chunk = Bytes::from(vec![b'x'; SOURCE_CHUNK]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.workers.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let tasks: Vec<_> = (0..o.count)
            .map(|i| tokio::spawn(serve(o.port + i, o, body.clone(), chunk.clone())))
            .collect();
        let mode = match (o.sink, o.source) {
            _ if o.grpc => format!("grpc h2c message={}B", o.body),
            (true, Some(n)) => format!("sink+source {n}B"),
            (true, None) => "sink".into(),
            (false, Some(n)) => format!("source {n}B"),
            (false, None) => format!("body={}B", o.body),
        };
        eprintln!(
            "bench-backend: ports {}..{} workers={} {mode}",
            o.port,
            o.port + o.count - 1,
            o.workers
        );
        for t in tasks {
            let _ = t.await;
        }
    });
}
