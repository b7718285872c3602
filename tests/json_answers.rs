//! Every answer the balancer makes is JSON, also the ones hyper's HTTP/1 parser makes before
//! a request exists (a malformed head → 400, a head over `max_header_bytes` → 431, a target
//! over 65,534 bytes → 414): exact bytes over TCP against the real binary; each answer has
//! `content-type: application/json`, an `x-request-id`, a body with an `error` field, and
//! the connection closes after it. Nothing of these requests reaches the node.

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};

use common::client::{get, H2};
use common::programs::{require, run};
use common::raw::{answer_then_close, After, RawConn};
use common::{single_pool_config, Backend, Behaviour, Switchyard, WAIT};

async fn refused(sy: &Switchyard, name: &str, bytes: &[u8], status: u16) -> String {
    answer_then_close(sy.http(), name, bytes)
        .await
        .json_error(name, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_http1_parser_refuses_get_json_answers() {
    let b = Backend::start("b", Behaviour::Echo).await;
    // 128 KiB: room for a target over hyper's 65,534-byte limit within the head limit.
    let sy = Switchyard::start(
        &single_pool_config("round_robin", &[b.addr], "")
            .replace("routes:", "limits:\n  max_header_bytes: 128KiB\nroutes:"),
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad method characters",
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "method with a slash",
            b"GE/T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "space in a header name",
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
        ),
        (
            "bad byte in a header name",
            b"GET / HTTP/1.1\r\nX-A\x01: 1\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a value",
            b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n".to_vec(),
        ),
        (
            "unknown version",
            b"GET / HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("not HTTP", b"GET / HTXP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "space in the target",
            b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n".to_vec(),
        ),
        (
            "invalid Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n".to_vec(),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in &cases {
        assert_eq!(
            refused(&sy, name, bytes, 400).await,
            "malformed request",
            "{name}"
        );
    }

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(130 * 1024)
    );
    let error = refused(&sy, "head over max_header_bytes", big.as_bytes(), 431).await;
    assert_eq!(error, "request headers too large");
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let error = refused(&sy, "target over 65,534 bytes", long.as_bytes(), 414).await;
    assert_eq!(error, "request target too long");

    // After a good request on the same connection: that one is answered first, as it was.
    let mut c = RawConn::connect(sy.http()).await;
    let _ = c
        .send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nG(T / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.read_response().await.expect("the first answer");
    assert_eq!((r.status, r.header("x-backend")), (200, Some("b")), "{r:?}");
    let r = c.read_response().await.expect("the refusal");
    r.json_error("after a good request", 400);
    assert!(r.closes());
    assert_eq!(c.after(WAIT).await, After::Closed);

    let seen: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, ["/first"], "refused heads never reach the node");
    assert_eq!(get(sy.http(), "/ok").await.status, 200, "still serving");
}

/// An HTTP/2 header list over `max_header_bytes` (counted as RFC 7541 does) gets our JSON
/// 431 on its stream, the connection stays usable, and the node sees nothing of it. Far
/// above the limit — over h2's own cap, twice the limit — h2 answers its bare 431 itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_http2_header_list_gets_a_json_431() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(
        &single_pool_config("round_robin", &[b.addr], "")
            .replace("routes:", "limits:\n  max_header_bytes: 16KiB\nroutes:"),
    );
    let mut h2 = H2::connect(sy.http()).await;
    let empty = || {
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed()
    };
    let big = "v".repeat(20 * 1024);
    let r = h2
        .send_with(
            Method::GET,
            "test.local",
            "/big",
            &[("x-big", &big)],
            empty(),
        )
        .await;
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(r.json()["error"], "request headers too large");

    // Just under the limit, counting 32 bytes per field and the pseudo-header fields:
    // served, on the same connection.
    let fits = "v".repeat(16 * 1024 - 300);
    let r = h2
        .send_with(
            Method::GET,
            "test.local",
            "/fits",
            &[("x-big", &fits)],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "b");

    // Many small fields add up the same way.
    let many: Vec<(String, String)> = (0..400)
        .map(|i| (format!("x-h{i}"), "v".repeat(20)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = h2
        .send_with(Method::GET, "test.local", "/many", &many, empty())
        .await;
    assert_eq!(r.status, 431, "400 fields of ~60 bytes each: {}", r.text());
    assert_eq!(r.json()["error"], "request headers too large");

    // Over twice the limit: h2's own answer, without a body.
    let huge = "v".repeat(40 * 1024);
    let r = h2
        .send_with(
            Method::GET,
            "test.local",
            "/huge",
            &[("x-big", &huge)],
            empty(),
        )
        .await;
    assert_eq!(r.status, 431);
    assert!(r.header("x-request-id").is_none(), "h2's own answer");

    let seen: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, ["/fits"], "oversize lists never reach the node");
}

/// Over TLS (ALPN `http/1.1`) the guard sits below hyper too: curl sends a method hyper's
/// parser refuses, and gets the JSON answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_head_over_tls_gets_a_json_answer() {
    let curl = require("curl", "apt-get install curl");
    let b = Backend::start("b", Behaviour::Echo).await;
    let dir = common::unique_dir("tls-answers");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write the certificate");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write the key");
    let sy = Switchyard::start(&format!(
        "listeners:\n  - name: https\n    bind: 127.0.0.1:0\n    tls:\n      certificates:\n\
         \x20       - cert: \"{}\"\n          key: \"{}\"\n\
         admin:\n  bind: 127.0.0.1:0\nroutes:\n  - pool: web\npools:\n  web:\n\
         \x20   nodes: [{{addr: \"{}\"}}]\n",
        cert_path.display(),
        key_path.display(),
        b.addr
    ));
    let url = format!("https://localhost:{}/", sy.http().port());
    let resolve = format!("localhost:{}:127.0.0.1", sy.http().port());
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "-k", "-i", "--http1.1", "--max-time", "20"])
        .args(["--resolve", &resolve, "-X", "G(T", &url]);
    let out = run(cmd, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("content-type: application/json"), "{text}");
    assert!(text.contains("x-request-id: "), "{text}");
    assert!(text.ends_with(r#"{"error":"malformed request"}"#), "{text}");
    assert_eq!(b.count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}
