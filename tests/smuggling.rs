//! Request smuggling and malformed input (DESIGN.md "Decisions: Smuggling"): exact bytes
//! over TCP. Every refused request gets 400 and its connection closed, nothing of it — nor
//! a request hidden in its body — reaches a backend, and the balancer keeps serving.
//!
//! Some cases are refused by hyper's parser, others by Switchyard's HTTP/1 framing guard
//! (src/h1guard.rs); the tests do not care which: they hold the whole process to the rule.

mod common;

use std::time::Duration;

use common::client::get;
use common::raw::{After, RawConn};
use common::{single_pool_config, Backend, Behaviour, Switchyard, WAIT};

/// Send `bytes` on a fresh connection: the answer must be 400 and the connection must
/// close.
async fn assert_refused(sy: &Switchyard, name: &str, bytes: &[u8]) {
    let mut c = RawConn::connect(sy.http()).await;
    // The balancer may close while we are still writing (it answers as soon as the head
    // is refused): a write error is fine, the answer is what counts.
    let _ = c.send(bytes).await;
    let resp = c
        .read_response()
        .await
        .unwrap_or_else(|| panic!("{name}: the connection closed without an answer"));
    assert_eq!(resp.status, 400, "{name}: {resp:?}");
    assert!(
        resp.header("x-backend").is_none(),
        "{name}: the answer came from a backend"
    );
    assert_eq!(
        c.after(WAIT).await,
        After::Closed,
        "{name}: the connection stayed open after the 400 (or sent more)"
    );
}

/// Like [`assert_refused`], for a status other than 400.
async fn assert_refused_with(sy: &Switchyard, name: &str, bytes: &[u8], status: u16) {
    let mut c = RawConn::connect(sy.http()).await;
    let _ = c.send(bytes).await;
    let resp = c
        .read_response()
        .await
        .unwrap_or_else(|| panic!("{name}: the connection closed without an answer"));
    assert_eq!(resp.status, status, "{name}: {resp:?}");
    assert_eq!(c.after(WAIT).await, After::Closed, "{name}: left open");
}

/// Whatever was refused, the backend saw nothing of it, and a normal request still works.
async fn assert_backend_untouched_and_healthy(sy: &Switchyard, b: &Backend) {
    assert_eq!(
        b.count(),
        0,
        "a refused request reached the backend: {:?}",
        b.requests().iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    let r = get(sy.http(), "/ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "b");
    let seen: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, vec!["/ok".to_string()], "only the normal request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_is_refused_and_the_hidden_request_never_forwarded() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    // The classic CL.TE / TE.CL pairs: one side reads the body by one header, the other by
    // the other, and the rest of the body becomes a second request.
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length then Transfer-Encoding",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"
            ),
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{hidden}"
            ),
        ),
        (
            "Content-Length 0 with Transfer-Encoding",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n",
                hidden.len()
            ),
        ),
        (
            "two different Content-Length values",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
        ),
        (
            "Content-Length list with different values",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 36\r\n\r\n{hidden}"),
        ),
    ];
    for (name, bytes) in &cases {
        assert_refused(&sy, name, bytes.as_bytes()).await;
    }
    assert_backend_untouched_and_healthy(&sy, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_are_refused() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let long_method = format!("{} /a HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(200));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Transfer-Encoding not ending in chunked",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        ),
        (
            "Transfer-Encoding gzip, chunked",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "chunked twice",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "two Transfer-Encoding lines",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "Content-Length with a sign",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
        ),
        (
            "negative Content-Length",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
        (
            "space before the colon",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello".to_vec(),
        ),
        (
            "NUL in a header value",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n".to_vec(),
        ),
        (
            "control byte in a header value",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x0bb\r\n\r\n".to_vec(),
        ),
        (
            "invalid header name",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n".to_vec(),
        ),
        (
            "obs-fold",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n".to_vec(),
        ),
        ("method longer than 32 bytes", long_method.into_bytes()),
        (
            "NUL in the method",
            b"G\x00T /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "unknown version",
            b"GET /a HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/2.0 in an HTTP/1 request line",
            b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "space in the target",
            b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "no version",
            b"GET /a\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "bare LF line ends",
            b"GET /a HTTP/1.1\nHost: x\n\n".to_vec(),
        ),
        (
            "bare LF after one header",
            b"GET /a HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n".to_vec(),
        ),
        (
            "bare CR line ends",
            b"GET /a HTTP/1.1\rHost: x\r\r".to_vec(),
        ),
        (
            "header line without a colon",
            b"GET /a HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in &cases {
        assert_refused(&sy, name, bytes).await;
    }
    // A head over `max_header_bytes` (64 KiB by default): 431.
    let huge = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(70 * 1024)
    );
    assert_refused_with(&sy, "head over max_header_bytes", huge.as_bytes(), 431).await;
    assert_backend_untouched_and_healthy(&sy, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_offending_request_of_a_pipeline_is_refused() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    // Two good requests, then CL+TE with a hidden request, then one more that must never be
    // read: all written at once.
    let mut c = RawConn::connect(sy.http()).await;
    let _ = c
        .send(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              POST /third HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /fourth HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
    for target in ["/first", "/second"] {
        let r = c.read_response().await.expect("a response");
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.header("x-backend"), Some("b"), "{target}");
    }
    let r = c.read_response().await.expect("the refusal");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.closes(), "the refusal says Connection: close: {r:?}");
    assert_eq!(c.after(WAIT).await, After::Closed);
    let seen: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, vec!["/first".to_string(), "/second".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_keep_alive_traffic_is_not_refused() {
    // Bodies that look like heads, chunk extensions, trailers, empty lines between
    // messages: nothing here may trip the guard, on one connection.
    let b = Backend::start("b", Behaviour::Sink).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let tricky =
        "x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nGET /no HTTP/1.1\r\n\r\n";
    let mut c = RawConn::connect(sy.http()).await;
    let mut bytes = format!(
        "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{tricky}",
        tricky.len()
    );
    bytes.push_str(&format!(
        "POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};name=value\r\n{tricky}\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
        tricky.len()
    ));
    bytes.push_str("\r\nGET /3 HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n");
    bytes.push_str("GET /4 HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send(bytes.as_bytes()).await.expect("write");
    let lens = [tricky.len(), tricky.len() + 3, 0, 0];
    for (i, len) in lens.iter().enumerate() {
        let r = c
            .read_response()
            .await
            .unwrap_or_else(|| panic!("request {} got no answer", i + 1));
        assert_eq!(r.status, 200, "request {}: {r:?}", i + 1);
        let j: serde_json::Value = serde_json::from_slice(&r.body).expect("sink JSON");
        assert_eq!(j["len"], *len as u64, "request {}", i + 1);
    }
    assert_eq!(
        c.after(Duration::from_millis(300)).await,
        After::Open,
        "the connection stays open for more"
    );
    let seen: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, vec!["/1", "/2", "/3", "/4"]);
}
