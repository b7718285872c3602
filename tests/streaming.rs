//! Bodies stream through the balancer both ways, and upgrades are tunnelled.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::backend::{pattern_fnv, PatternBody, PatternChecker};
use common::client::{collect, request, send, within, ChannelBody};
use common::{single_pool_config, Backend, Behaviour, Switchyard, WAIT};

const BIG: u64 = 100 * 1024 * 1024;

/// Generous: 100 MiB through a debug build on a shared 2-core machine.
const BIG_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_100_mib_intact() {
    let sink = Backend::start("sink", Behaviour::Sink).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[sink.addr], ""));

    let req = request(Method::POST, "/upload")
        .body(PatternBody::new(BIG))
        .expect("request");
    let r = within("100 MiB upload", BIG_TIMEOUT, async {
        collect(send(sy.http(), req).await).await
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(
        j["len"].as_u64(),
        Some(BIG),
        "bytes received by the backend"
    );
    assert_eq!(
        j["fnv"].as_u64(),
        Some(pattern_fnv(BIG)),
        "checksum of the bytes received by the backend"
    );
    let up = sink.last_request();
    assert_eq!(
        up.header("content-length").as_deref(),
        Some(BIG.to_string().as_str()),
        "the announced length is passed on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_100_mib_intact() {
    let source = Backend::start("source", Behaviour::Source(BIG)).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[source.addr], ""));

    let req = request(Method::GET, "/download")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let checker = within("100 MiB download", BIG_TIMEOUT, async {
        let resp = send(sy.http(), req).await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut checker = PatternChecker::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body frame");
            if let Some(d) = frame.data_ref() {
                checker.feed(d);
            }
        }
        checker
    })
    .await;
    assert_eq!(checker.len, BIG, "bytes received by the client");
    assert_eq!(
        checker.first_mismatch, None,
        "the body differs from what the backend sent"
    );
    assert_eq!(checker.fnv.finish(), pattern_fnv(BIG), "checksum");
}

/// Full duplex: the backend echoes the body as it arrives, and the client only sends the
/// next chunk after it got the previous one back. A balancer that buffers the request (or
/// waits for its end before forwarding the response) deadlocks here and times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_full_duplex() {
    let echo = Backend::start("echo", Behaviour::EchoBody).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[echo.addr], ""));

    let (tx, body) = ChannelBody::new(1);
    let req = request(Method::POST, "/duplex")
        .body(body)
        .expect("request");
    let resp = send(sy.http(), req).await;
    assert_eq!(resp.status(), 200);
    let mut down = resp.into_body();
    for i in 0..20u32 {
        let chunk = Bytes::from(format!("chunk {i:02} ").repeat(100));
        within("send a chunk", WAIT, tx.send(chunk.clone()))
            .await
            .expect("send");
        // Read until this chunk came back whole.
        let mut got = Vec::new();
        while got.len() < chunk.len() {
            let frame = within(&format!("chunk {i} echoed back"), WAIT, down.frame())
                .await
                .expect("body ended early")
                .expect("body error");
            if let Some(d) = frame.data_ref() {
                got.extend_from_slice(d);
            }
        }
        assert_eq!(&got[..], &chunk[..], "chunk {i} came back different");
    }
    drop(tx);
    let rest = within("end of the echoed body", WAIT, down.collect())
        .await
        .expect("body")
        .to_bytes();
    assert!(rest.is_empty(), "unexpected trailing bytes: {rest:?}");
}

/// Read an HTTP/1.1 response head byte by byte (so nothing after it is consumed).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.expect("read the response head");
        assert!(n > 0, "connection closed in the response head: {head:?}");
        head.push(b[0]);
        assert!(head.len() < 16 * 1024, "response head too long");
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled_both_ways() {
    let ws = Backend::start("ws", Behaviour::WebSocketEcho).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[ws.addr], ""));

    let mut s = within("connect", WAIT, TcpStream::connect(sy.http()))
        .await
        .expect("connect");
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        sy.http()
    );
    s.write_all(handshake.as_bytes()).await.expect("write");
    let head = within("the 101 answer", WAIT, read_head(&mut s)).await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "expected 101 Switching Protocols, got: {head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "the 101 carries Upgrade: websocket: {head}"
    );

    // The backend saw an upgrade request.
    let up = ws.last_request();
    assert_eq!(up.header("upgrade").as_deref(), Some("websocket"));
    assert!(
        up.header("connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade")),
        "Connection: upgrade must reach the backend: {:?}",
        up.header("connection")
    );

    // A masked WebSocket text frame "hello" (RFC 6455 example), then raw bytes: whatever
    // is written comes back unchanged.
    let frame: &[u8] = &[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    for msg in [frame, b"second message", &[0u8, 255, 1, 254]] {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        within("the echo", WAIT, s.read_exact(&mut back))
            .await
            .expect("read the echo");
        assert_eq!(&back[..], msg);
    }

    // 1 MiB each way at the same time.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    let (mut r, mut w) = s.into_split();
    let expected = big.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&big).await.expect("write 1 MiB");
        w
    });
    let mut back = vec![0u8; expected.len()];
    within("1 MiB echoed", WAIT, r.read_exact(&mut back))
        .await
        .expect("read 1 MiB");
    assert!(back == expected, "the 1 MiB echo differs");
    let _w = within("writer", WAIT, writer).await.expect("writer task");
}
