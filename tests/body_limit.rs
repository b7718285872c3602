//! `limits.max_body_bytes` → 413: an announced length over the limit is refused before any
//! upstream is contacted; a body of unknown length (chunked, HTTP/2 without
//! content-length) is cut when it crosses the limit, the node never receiving more than the
//! limit, and the client gets 413 — or, when the response had already started, a reset.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use common::backend::{pattern_fnv, BoxError, PatternBody};
use common::client::{self, within, ChannelBody};
use common::raw::{After, RawConn};
use common::{single_pool_config, Backend, Behaviour, Switchyard, WAIT};

/// Not a multiple of the 64 KiB frames the tests send, so a cut lands inside a frame.
const LIMIT: u64 = 100_000;

fn config(backend: SocketAddr) -> String {
    format!(
        "{}limits:\n  max_body_bytes: {LIMIT}\n",
        single_pool_config("round_robin", &[backend], "")
    )
}

/// POST `body` over a fresh HTTP/1.1 connection; connection errors come back as `Err`.
async fn try_post(
    addr: SocketAddr,
    body: common::backend::AnyBody,
) -> Result<(u16, Bytes), String> {
    within("a POST through the balancer", WAIT, async move {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(Method::POST)
            .uri("/upload")
            .header(http::header::HOST, addr.to_string())
            .body(body)
            .expect("request");
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    })
    .await
}

/// The same over h2c (prior knowledge).
async fn try_post_h2(
    addr: SocketAddr,
    body: common::backend::AnyBody,
) -> Result<(u16, Bytes), String> {
    within("an h2c POST through the balancer", WAIT, async move {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/upload"))
            .body(body)
            .expect("request");
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    })
    .await
}

fn assert_too_large(status: u16, body: &[u8]) {
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(body));
    let j: serde_json::Value = serde_json::from_slice(body).expect("a JSON error body");
    assert_eq!(j["error"], "request body too large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_length_over_the_limit_is_refused_before_any_upstream_is_contacted() {
    let b = Backend::start("sink", Behaviour::Sink).await;
    let sy = Switchyard::start(&config(b.addr));

    // The head alone: the answer comes without the body being sent.
    let mut c = RawConn::connect(sy.http()).await;
    c.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            LIMIT + 1
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let r = c.read_response().await.expect("an answer");
    assert_too_large(r.status, &r.body);
    assert!(r.closes(), "the unread body ends the connection: {r:?}");
    assert_eq!(c.after(WAIT).await, After::Closed);

    // With `Expect: 100-continue` the client is told 413 instead of "go on".
    let mut c = RawConn::connect(sy.http()).await;
    c.send(b"PUT /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n")
        .await
        .expect("write");
    let r = c.read_response().await.expect("an answer");
    assert_too_large(r.status, &r.body);

    // HTTP/2 with a content-length over the limit.
    let (status, body) = try_post_h2(sy.http(), PatternBody::new(LIMIT + 1).boxed())
        .await
        .expect("an h2 answer");
    assert_too_large(status, &body);

    assert_eq!(b.connections(), 0, "the node was contacted");
    assert_eq!(b.count(), 0);

    // Exactly the limit passes, whole.
    let (status, body) = try_post(sy.http(), PatternBody::new(LIMIT).boxed())
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).expect("sink JSON");
    assert_eq!(j["len"], LIMIT);
    assert_eq!(j["fnv"], pattern_fnv(LIMIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsized_body_is_cut_at_the_limit() {
    let b = Backend::start("sink", Behaviour::Sink).await;
    let sy = Switchyard::start(&config(b.addr));

    // Exactly the limit, chunked: passes whole.
    let (status, body) = try_post(sy.http(), PatternBody::chunked(LIMIT).boxed())
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).expect("sink JSON");
    assert_eq!(j["len"], LIMIT);
    assert_eq!(j["fnv"], pattern_fnv(LIMIT));
    assert_eq!(b.body_bytes(), LIMIT);

    // 4 MiB chunked, HTTP/1.1: forwarded, then cut. The client gets 413 (the node had not
    // answered) or, if the balancer's close beat the answer to it, a reset.
    match try_post(sy.http(), PatternBody::chunked(4 << 20).boxed()).await {
        Ok((status, body)) => assert_too_large(status, &body),
        Err(e) => eprintln!("HTTP/1.1 upload cut with a reset: {e}"),
    }
    // (Whether the node saw the head depends on timing: the cut may come before the
    // balancer's first write to it. A 413 can only come from the cut: a chunked body has
    // no length to refuse up front.)

    // The same over HTTP/2 without content-length: 413 on the stream.
    match try_post_h2(sy.http(), PatternBody::chunked(4 << 20).boxed()).await {
        Ok((status, body)) => assert_too_large(status, &body),
        Err(e) => eprintln!("HTTP/2 upload cut with a reset: {e}"),
    }

    // Give the node time to read whatever reached it: never more than the limit per request.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let seen = b.body_bytes();
    assert!(
        seen <= 3 * LIMIT,
        "the node received {seen} bytes for one whole body and two cut ones of at most {LIMIT}"
    );

    // Still serving: a small chunked body passes whole.
    let (status, body) = try_post(sy.http(), PatternBody::chunked(50_000).boxed())
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).expect("sink JSON");
    assert_eq!(j["len"], 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_the_limit_after_the_response_started_resets_it() {
    // The echo node answers at once and streams the body back while it arrives.
    let b = Backend::start("echo", Behaviour::EchoBody).await;
    let sy = Switchyard::start(&config(b.addr));
    let addr = sy.http();
    let (tx, body) = ChannelBody::new(4);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/echo")
        .body(body)
        .expect("request");
    // First 32 KiB: under the limit; the response head comes back.
    tx.send(Bytes::from(vec![b'a'; 32 * 1024]))
        .await
        .expect("queue the first chunk");
    let resp = client::send(addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Then much more than the limit, while the echoed body is read.
    let feeder = tokio::spawn(async move {
        for _ in 0..64 {
            if tx.send(Bytes::from(vec![b'b'; 64 * 1024])).await.is_err() {
                return;
            }
        }
    });
    let mut body = resp.into_body();
    let mut echoed = 0u64;
    let end = within("the echoed body ends", WAIT, async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => echoed += f.data_ref().map_or(0, |d| d.len() as u64),
                Some(Err(e)) => break Err::<(), BoxError>(Box::new(e)),
                None => break Ok(()),
            }
        }
    })
    .await;
    assert!(
        end.is_err(),
        "the response ended cleanly after {echoed} bytes: it must be reset"
    );
    assert!(
        echoed <= LIMIT,
        "{echoed} bytes echoed: the node received more than the limit"
    );
    feeder.abort();

    // Still serving.
    let r = client::post(addr, "/after", "small").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "small");
}
