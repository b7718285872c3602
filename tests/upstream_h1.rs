//! The balancer's own HTTP/1.1 client (src/upstream/codec.rs) against a scripted node that writes
//! raw bytes: every framing a node may use arrives intact, keep-alive connections are
//! reused only when they may be, a connection the node closed while idle is never used,
//! and a broken answer is a 502 or a cut body — never a hang.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::client::{collect, get, request, send, within};
use common::{single_pool_config, Switchyard, WAIT};

/// A node that answers each request with bytes chosen by its path, and counts the
/// connections it accepted.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, Arc::clone(&r)));
            }
        });
        Scripted {
            addr,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Read one request head (and a Content-Length body); `None` at end of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let method = first.next().unwrap_or("").to_string();
            let path = first.next().unwrap_or("").to_string();
            let len: usize = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((method, path, body));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut s: TcpStream, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut on_this_conn = 0;
    while let Some((method, path, body)) = read_request(&mut s, &mut buf).await {
        requests.fetch_add(1, Ordering::SeqCst);
        on_this_conn += 1;
        let answer: Vec<u8> = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kind: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
            "/length" => b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world".to_vec(),
            "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            "/nocontent" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/head" if method == "HEAD" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec(),
            "/echo" => {
                let mut a = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
                a.extend_from_slice(&body);
                a
            }
            "/close" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the node closes").await;
                return;
            }
            "/garbage" => b"SPDY/9 what\r\n\r\n".to_vec(),
            "/short" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this").await;
                return;
            }
            "/idle-close" => {
                // Answer as keep-alive, then close the idle connection soon after, as a
                // node with a short keep-alive timeout does.
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            // The race a keep-alive timeout causes: the second request on a connection
            // finds it closed without an answer.
            "/racy" if on_this_conn > 1 => return,
            "/racy" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn config(node: SocketAddr) -> String {
    single_pool_config("round_robin", &[node], "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_arrives_intact_and_keep_alive_is_reused() {
    let node = Scripted::start().await;
    let sy = Switchyard::start(&config(node.addr));

    let r = get(sy.http(), "/chunked").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world", "chunked body, extensions dropped");
    assert_eq!(r.header("x-kind"), Some("chunked"));
    let r = get(sy.http(), "/length").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello world"));
    let r = get(sy.http(), "/continue").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "ok"),
        "an interim 100 is skipped"
    );
    let r = get(sy.http(), "/nocontent").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (204, 0));
    let head = request(Method::HEAD, "/head")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let r = collect(send(sy.http(), head).await).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("5"),
        "HEAD keeps the length"
    );
    assert!(r.body.is_empty());
    let r = collect(
        send(
            sy.http(),
            request(Method::POST, "/echo")
                .body(Full::new(Bytes::from_static(b"a small buffered body")))
                .expect("request"),
        )
        .await,
    )
    .await;
    assert_eq!(r.text(), "a small buffered body");
    // All of the above had a length (or were chunked) and were read to the end: one
    // connection carried them all, one after the other.
    assert_eq!(node.connections(), 1, "the keep-alive connection is reused");

    // A body that runs to the close: intact, and that connection is not reused.
    let r = get(sy.http(), "/close").await;
    assert_eq!(r.text(), "until the node closes");
    let r = get(sy.http(), "/length").await;
    assert_eq!(r.text(), "hello world");
    assert_eq!(
        node.connections(),
        2,
        "a close-delimited answer ends its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_node_closed_while_idle_is_not_used() {
    let node = Scripted::start().await;
    let sy = Switchyard::start(&config(node.addr));
    // POSTs: were a closed connection used, the request would fail (502) rather than go
    // out again, so only the idle check can make these pass.
    for i in 0..5 {
        let post = request(Method::POST, "/idle-close")
            .body(Full::new(Bytes::from_static(b"x")))
            .expect("request");
        let r = collect(send(sy.http(), post).await).await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "ok"),
            "round {i}"
        );
        // Let the node close the idle connection before the next request.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(node.connections(), 5, "one fresh connection per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_race_is_retried_for_idempotent_requests_only() {
    let node = Scripted::start().await;
    let sy = Switchyard::start(&config(node.addr));
    // Each GET after the first finds the pooled connection closing without an answer; it
    // goes out again on a fresh connection and succeeds.
    for i in 0..4 {
        let r = get(sy.http(), "/racy").await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "ok"),
            "GET {i}"
        );
    }
    assert_eq!(node.connections(), 4);
    // A POST may have been acted on: it is not sent twice by the connection pool.
    let before = node.requests.load(Ordering::SeqCst);
    let post = request(Method::POST, "/racy")
        .body(Full::new(Bytes::from_static(b"once")))
        .expect("request");
    let r = collect(send(sy.http(), post).await).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        node.requests.load(Ordering::SeqCst) - before,
        1,
        "the node saw the POST once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_give_502_or_a_cut_body() {
    let node = Scripted::start().await;
    let sy = Switchyard::start(&config(node.addr));
    let r = get(sy.http(), "/garbage").await;
    assert_eq!(r.status, 502, "{}", r.text());

    // The node announces 100 bytes, sends 9 and closes: the client's connection is cut
    // too (whether its head got out first or not), so the client cannot take the short
    // body for a complete one.
    let mut c = TcpStream::connect(sy.http()).await.expect("connect");
    c.write_all(b"GET /short HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    within("the cut connection to end", WAIT, c.read_to_end(&mut got))
        .await
        .ok();
    let text = String::from_utf8_lossy(&got);
    let body_len = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    assert!(body_len < 100, "a complete body arrived: {text:?}");

    // The balancer is fine afterwards.
    let r = get(sy.http(), "/length").await;
    assert_eq!(r.text(), "hello world");
}

/// A node that reads only the request head, answers `413` at once and then holds the
/// connection open without reading, behind a 4 KiB receive buffer. The codec writes the
/// (buffered) body whole before reading the answer: the body must still fit in the socket
/// buffers and the early answer reach the client, not a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_is_written_is_passed_on() {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let node = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
                    .await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    let sy = Switchyard::start(&single_pool_config(
        "round_robin",
        &[node],
        "    timeouts: {connect: 1s, request: 3s}\n",
    ));
    // 64 KiB: the largest body that is buffered (and so goes through the codec).
    let post = request(Method::POST, "/upload")
        .body(Full::new(Bytes::from(vec![b'x'; 64 * 1024])))
        .expect("request");
    let r = collect(send(sy.http(), post).await).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (413, "big!"),
        "the node's early answer"
    );
}
