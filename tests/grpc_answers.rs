//! gRPC-shaped answers, against the real binary and the real grpcio Python client (no
//! generated code: methods are called with raw bytes). Every answer the balancer makes
//! itself to a gRPC request is HTTP 200 with `grpc-status` and `grpc-message` and no body —
//! over HTTP/2 one HEADERS frame with END_STREAM ("Trailers-Only") — while the same
//! failure to a plain HTTP request stays the JSON answer with its HTTP status, and both are
//! counted under that HTTP status.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};

use common::client::{get, get_with, H2};
use common::programs::{python_json, require_python};
use common::{metric, parse_metrics, refusing_addr, Backend, Behaviour, Switchyard};

/// Long enough for a debug build on a busy machine; the client's own deadline is 20 s.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);

fn python() -> std::path::PathBuf {
    require_python(&[("grpc", "grpcio"), ("h2", "h2")])
}

/// A unary call through grpcio: `(code name, details, metadata)`.
fn grpc_call(
    py: &std::path::PathBuf,
    addr: std::net::SocketAddr,
    method: &str,
) -> serde_json::Value {
    python_json(
        py,
        "grpc_call.py",
        &[&addr.to_string(), method],
        PYTHON_TIMEOUT,
    )
}

/// No route for `/nowhere.Svc`, a pool whose only node refuses connections, and a pool
/// whose node never answers, with `timeouts.request: 1s`.
fn config(hang: std::net::SocketAddr) -> String {
    format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n\
         routes:\n  - path_prefix: /refused.Svc\n    pool: refused\n\
         \x20 - path_prefix: /silent.Svc\n    pool: silent\n\
         pools:\n  refused:\n    nodes: [{{addr: \"{}\"}}]\n\
         \x20 silent:\n    timeouts: {{request: 1s}}\n    nodes: [{{addr: \"{hang}\"}}]\n",
        refusing_addr()
    )
}

fn assert_status(got: &serde_json::Value, code: &str, details: &str) {
    assert_eq!(got["code"], code, "{got}");
    assert_eq!(got["details"], details, "{got}");
    assert!(
        got["metadata"]["x-request-id"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "every answer carries x-request-id: {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_reads_the_status_of_each_answer_the_balancer_makes() {
    let py = python();
    let hang = Backend::start("hang", Behaviour::Hang).await;
    let sy = Switchyard::start(&config(hang.addr));
    let addr = sy.http();

    let got = grpc_call(&py, addr, "/nowhere.Svc/Call");
    assert_status(&got, "UNIMPLEMENTED", "no route");
    let got = grpc_call(&py, addr, "/refused.Svc/Call");
    assert_status(&got, "UNAVAILABLE", "upstream failed");
    // The balancer's own timeout, not the client's 20 s deadline ("Deadline Exceeded").
    let got = grpc_call(&py, addr, "/silent.Svc/Call");
    assert_status(&got, "DEADLINE_EXCEEDED", "upstream timeout");
    assert_eq!(hang.count(), 1, "the silent node got the call");

    // The same failures to plain HTTP requests: JSON with the HTTP status.
    for (path, status, error) in [
        ("/nowhere.Svc/Call", 404, "no route"),
        ("/refused.Svc/Call", 502, "upstream failed"),
        ("/silent.Svc/Call", 504, "upstream timeout"),
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(r.json()["error"], error, "{path}");
        assert!(r.header("grpc-status").is_none(), "{path}");
    }
    // gRPC exists over HTTP/2 only: a gRPC content-type over HTTP/1.1 gets JSON.
    let r = get_with(
        addr,
        "/nowhere.Svc/Call",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no route");
    // HTTP/2 without a gRPC content-type is not gRPC either; grpc-web is not gRPC.
    let mut h2 = H2::connect(addr).await;
    let r = h2.get("test.local", "/nowhere.Svc/Call").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no route");
    let web = Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed();
    let r = h2
        .send_with(
            Method::POST,
            "test.local",
            "/nowhere.Svc/Call",
            &[("content-type", "application/grpc-web+proto")],
            web,
        )
        .await;
    assert_eq!(r.status, 404, "grpc-web keeps the HTTP status");
    assert!(r.header("grpc-status").is_none());

    // Counted under the HTTP status each answer stands for: gRPC and plain alike.
    let text = get(sy.admin_addr(), "/metrics").await.text();
    let samples = parse_metrics(&text);
    let count = |pool: &str, class: &str| {
        metric(
            &samples,
            "switchyard_requests_total",
            &[("pool", pool), ("status_class", class)],
        )
    };
    assert_eq!(count("none", "4xx"), Some(5.0), "{text}");
    assert_eq!(count("refused", "5xx"), Some(2.0), "{text}");
    assert_eq!(count("silent", "5xx"), Some(2.0), "{text}");
    assert_eq!(
        count("none", "2xx").unwrap_or(0.0),
        0.0,
        "a gRPC-shaped 200 is not counted as a success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_grpc_call_is_resource_exhausted() {
    let py = python();
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&format!(
        "{}rate_limit:\n  requests_per_second: 0.001\n  burst: 1\n",
        common::single_pool_config("round_robin", &[b.addr], "")
    ));
    // The one token goes to a plain request.
    assert_eq!(get(sy.http(), "/").await.status, 200);
    let got = grpc_call(&py, sy.http(), "/pkg.Svc/Call");
    assert_status(&got, "RESOURCE_EXHAUSTED", "too many requests");
    let r = get(sy.http(), "/").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "too many requests");
    assert_eq!(b.count(), 1, "refused calls never reach the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_answer_is_one_headers_frame_with_end_stream() {
    let py = python();
    let sy = Switchyard::start(&config(refusing_addr()));
    let fields = serde_json::json!([
        [":method", "POST"],
        [":scheme", "http"],
        [":authority", "test.local"],
        [":path", "/nowhere.Svc/Call"],
        ["content-type", "application/grpc+proto"],
        ["te", "trailers"],
    ]);
    let events = python_json(
        &py,
        "h2_request.py",
        &[&sy.http().to_string(), &fields.to_string()],
        PYTHON_TIMEOUT,
    );
    let events = events.as_array().expect("a list of events");
    assert_eq!(
        events.len(),
        2,
        "HEADERS with END_STREAM, nothing else: {events:?}"
    );
    let head = &events[0];
    assert_eq!(head["type"], "response", "{events:?}");
    assert_eq!(head["end_stream"], true, "Trailers-Only: {events:?}");
    assert_eq!(head["headers"][":status"], "200");
    assert_eq!(head["headers"]["content-type"], "application/grpc");
    assert_eq!(head["headers"]["grpc-status"], "12");
    assert_eq!(head["headers"]["grpc-message"], "no route");
    assert!(head["headers"]["x-request-id"].is_string(), "{head}");
    assert_eq!(events[1]["type"], "end");
}
