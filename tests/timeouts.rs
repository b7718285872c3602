//! Timeouts that fit streaming: `timeouts.request` ends when the response head arrives, a
//! body in either direction is bounded by inactivity (`timeouts.idle`), and so is an
//! upgraded tunnel. A stream longer than the request timeout arrives whole; a node that
//! stalls mid-body, a client that stalls mid-upload, and an idle tunnel are all cut.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::client::{request, send, within};
use common::raw;
use common::{single_pool_config, Backend, Behaviour, Switchyard, WAIT};

/// A node that answers every request with a chunked body: `chunks` chunks, one every
/// `every`, after the head; with `chunks == 0` it sends the head and then nothing, holding
/// the connection open.
async fn trickle_node(chunks: u32, every: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // One request head is enough for this node.
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                if chunks == 0 {
                    // Head, then silence, connection open.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                for i in 0..chunks {
                    tokio::time::sleep(every).await;
                    let event = format!("data: {i}\n\n");
                    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_request_timeout_arrives_whole() {
    // 16 events, one every 0.5 s: 8 s of streaming through a 3 s request timeout.
    let node = trickle_node(16, Duration::from_millis(500)).await;
    let sy = Switchyard::start(&single_pool_config(
        "round_robin",
        &[node],
        "    timeouts: {request: 3s, idle: 5s}\n",
    ));
    let req = request(Method::GET, "/events")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let start = Instant::now();
    let body = within("the whole stream", Duration::from_secs(60), async {
        let resp = send(sy.http(), req).await;
        assert_eq!(resp.status(), 200);
        resp.into_body()
            .collect()
            .await
            .expect("the stream is not cut")
            .to_bytes()
    })
    .await;
    let text = String::from_utf8_lossy(&body);
    let expected: String = (0..16).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(text, expected, "every event arrived, in order");
    assert!(
        start.elapsed() >= Duration::from_secs(7),
        "the stream really lasted longer than the request timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stalls_after_the_head_is_cut_by_the_idle_timeout() {
    let node = trickle_node(0, Duration::ZERO).await;
    let sy = Switchyard::start(&single_pool_config(
        "round_robin",
        &[node],
        "    timeouts: {request: 30s, idle: 1s}\n",
    ));
    let req = request(Method::GET, "/stall")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let start = Instant::now();
    let result = within("the stalled body to be cut", WAIT, async {
        let resp = send(sy.http(), req).await;
        assert_eq!(resp.status(), 200, "the head arrived");
        resp.into_body().collect().await
    })
    .await;
    assert!(
        result.is_err(),
        "a stalled body ends with an error, not a clean end"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "not cut before the idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_upload_gets_408_and_the_node_is_not_blamed() {
    let sink = Backend::start("sink", Behaviour::Sink).await;
    let sy = Switchyard::start(&single_pool_config(
        "round_robin",
        &[sink.addr],
        "    timeouts: {request: 30s, idle: 1s}\n    outlier_detection: {consecutive_failures: 1}\n",
    ));
    let mut s = raw::connect(sy.http()).await;
    raw::write(
        &mut s,
        b"POST /upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    // ...and nothing more: the upload stalls.
    let resp = within(
        "the answer to a stalled upload",
        WAIT,
        raw::read_response(&mut s),
    )
    .await;
    assert_eq!(resp.status, 408, "{}", resp.text());
    // The node did nothing wrong: it still takes requests (one failure would eject it).
    let r = common::client::get(sy.http(), "/after").await;
    assert_eq!(r.status, 200, "the node is still in rotation: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed() {
    let ws = Backend::start("ws", Behaviour::WebSocketEcho).await;
    let sy = Switchyard::start(&single_pool_config(
        "round_robin",
        &[ws.addr],
        "    timeouts: {idle: 1s}\n",
    ));
    let mut s = within("connect", WAIT, TcpStream::connect(sy.http()))
        .await
        .expect("connect");
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within("the 101", WAIT, s.read(&mut b)).await.expect("read");
        assert!(n > 0, "closed before the 101");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Traffic keeps it open past the idle timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        within("the echo", WAIT, s.read_exact(&mut back))
            .await
            .expect("echo");
        assert_eq!(&back, b"ping");
    }
    // ...silence closes it (wait_closed panics if it stays open).
    let closed = raw::wait_closed(&mut s, WAIT).await;
    assert!(
        closed.after >= Duration::from_millis(900),
        "closed by the idle timeout, not before it: {closed:?}"
    );
}
