//! Request trailers, from third-party clients to a third-party node, straight and through
//! switchyard.
//!
//! gRPC and other streaming protocols put what is known only at the end of an upload (a
//! checksum, a status) in trailers. The node is `tests/interop/trailers_node.py` (h11 and
//! h2, the libraries hypercorn is built on, since no ASGI server exposes request trailers);
//! the clients are nghttp (h2c, `--trailer`) and a chunked HTTP/1.1 request with a trailer
//! section written byte for byte (curl cannot send request trailers). Every combination of
//! client protocol and upstream protocol must deliver the trailers the node gets directly.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::{json, Value};

use common::thirdparty::{nghttp_with_trailers, one_node_config, TrailersNode};
use common::{unique_dir, Switchyard, WAIT};

const TRAILERS: [&str; 2] = ["x-req-check: abc123", "x-req-count: 3"];
const BODY_LEN: usize = 50_000;

fn expected_trailers() -> Value {
    json!({"x-req-check": "abc123", "x-req-count": "3"})
}

/// POST a chunked HTTP/1.1 body of `BODY_LEN` bytes with [`TRAILERS`] after the last chunk;
/// returns the status line and the body of the answer (read until the server closes).
fn http1_chunked_with_trailers(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut req = b"POST /upload HTTP/1.1\r\nHost: trailers.interop.test\r\n\
        Transfer-Encoding: chunked\r\nTE: trailers\r\nTrailer: x-req-check, x-req-count\r\n\
        Connection: close\r\n\r\n"
        .to_vec();
    for chunk in vec![b'z'; BODY_LEN].chunks(16 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n");
    for t in TRAILERS {
        req.extend_from_slice(format!("{t}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).expect("write the request");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    // A chunked answer's body still has its framing: keep the JSON line only.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or(body)
        .to_string();
    (status, json)
}

/// POST with nghttp over h2c: `BODY_LEN` bytes, then [`TRAILERS`].
fn h2c_with_trailers(addr: SocketAddr) -> (String, String) {
    let dir = unique_dir("nghttp");
    let body = dir.join("body");
    std::fs::write(&body, vec![b'z'; BODY_LEN]).expect("write the body");
    let ran = nghttp_with_trailers(&format!("http://{addr}/upload"), &body, &TRAILERS);
    let _ = std::fs::remove_dir_all(&dir);
    (
        format!("nghttp exit {:?} {}", ran.code, ran.stderr.trim()),
        ran.stdout_text(),
    )
}

/// What the node reported, or why there is no report.
fn node_report(sent: &(String, String)) -> Result<Value, String> {
    serde_json::from_str::<Value>(sent.1.trim())
        .map_err(|_| format!("{}: no report from the node: {:?}", sent.0, sent.1))
}

#[test]
fn request_trailers_reach_the_node_over_every_protocol_pair() {
    let node = TrailersNode::start();
    type Client = fn(SocketAddr) -> (String, String);
    let clients: [(&str, Client); 2] = [
        ("HTTP/1.1 chunked", http1_chunked_with_trailers),
        ("h2c (nghttp)", h2c_with_trailers),
    ];

    // Straight to the node: the harness sends the trailers and the node sees them.
    for (client, send) in &clients {
        let report = node_report(&send(node.addr))
            .unwrap_or_else(|e| panic!("{client} straight to the node: {e}"));
        assert_eq!(
            (&report["trailers"], &report["body_len"]),
            (&expected_trailers(), &json!(BODY_LEN)),
            "{client} straight to the node: {report}"
        );
    }

    let mut problems = Vec::new();
    for (upstream, pool) in [
        ("HTTP/1.1 upstream", ""),
        ("h2c upstream", "    upstream_protocol: h2\n"),
    ] {
        let sy = Switchyard::start(&one_node_config(
            node.addr,
            &format!("    timeouts: {{connect: 2s, request: 20s}}\n{pool}"),
        ));
        for (client, send) in &clients {
            match node_report(&send(sy.http())) {
                Ok(r) if r["trailers"] == expected_trailers() && r["body_len"] == BODY_LEN => {}
                Ok(r) => problems.push(format!(
                    "  {client} → switchyard → {upstream}: the answer was {r}"
                )),
                Err(e) => problems.push(format!("  {client} → switchyard → {upstream}: {e}")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "request trailers {:?} sent after a {BODY_LEN}-byte body do not reach the node through \
         switchyard:\n{}",
        TRAILERS,
        problems.join("\n")
    );
}
