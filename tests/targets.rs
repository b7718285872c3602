//! Request targets a reverse proxy has nothing to forward to, against the real binary:
//! `CONNECT` (HTTP/1.1 authority-form and HTTP/2, extended CONNECT included), an
//! authority-form target with another method, and an asterisk-form target with any method
//! but `OPTIONS` are refused with a 400 JSON answer (on HTTP/1 the connection closes) and
//! never reach a node; `OPTIONS *` is answered by the balancer itself. Raw sockets, curl and
//! the h2 Python library, with a recording backend that must see nothing of them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::client::get;
use common::programs::{python_json, require, require_python, run};
use common::raw::{answer_then_close, RawConn};
use common::{single_pool_config, Backend, Behaviour, Switchyard};

const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// `bytes` on a fresh connection: a 400 JSON answer with `error`, then the connection closes.
async fn assert_refused(sy: &Switchyard, name: &str, bytes: &[u8], error: &str) {
    let r = answer_then_close(sy.http(), name, bytes).await;
    assert_eq!(r.json_error(name, 400), error, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_misplaced_target_forms_are_refused_on_http1() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let connect = "CONNECT is not supported";
    let form = "request target not allowed for this method";
    // What follows a CONNECT head may be tunnel bytes (a TLS ClientHello here): never read.
    let mut tunnel = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec();
    tunnel.extend_from_slice(b"\x16\x03\x01\x00\x05hello");
    assert_refused(&sy, "CONNECT", &tunnel, connect).await;
    assert_refused(
        &sy,
        "CONNECT HTTP/1.0",
        b"CONNECT example.com:443 HTTP/1.0\r\n\r\n",
        connect,
    )
    .await;
    assert_refused(&sy, "GET *", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", form).await;
    assert_refused(
        &sy,
        "POST *",
        b"POST * HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        form,
    )
    .await;
    assert_refused(
        &sy,
        "GET authority-form",
        b"GET example.com:80 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        form,
    )
    .await;
    assert_eq!(b.count(), 0, "a refused request reached the node");

    // OPTIONS * is about the balancer: answered here, the connection stays usable.
    let mut c = RawConn::connect(sy.http()).await;
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let r = c.read_response().await.expect("an answer to OPTIONS *");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.header("x-request-id").is_some());
    assert!(!r.closes());
    let r = c.read_response().await.expect("the next request's answer");
    assert_eq!((r.status, r.header("x-backend")), (200, Some("b")));
    let seen: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, ["/after"], "only the normal request reached the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_requests_with_odd_targets_and_through_a_tunnel() {
    let curl = require("curl", "apt-get install curl");
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let url = sy.url("/");
    let curl_out = |args: &[&str]| {
        let mut cmd = Command::new(&curl);
        cmd.args(["-sS", "--max-time", "20"]).args(args);
        run(cmd, PROGRAM_TIMEOUT)
    };

    let out = curl_out(&["-i", "--request-target", "*", "-X", "GET", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.ends_with(r#"{"error":"request target not allowed for this method"}"#),
        "{text}"
    );
    let out = curl_out(&["-i", "--request-target", "*", "-X", "OPTIONS", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // The balancer used as a forward proxy with a tunnel: curl sends CONNECT and fails.
    let proxy = format!("http://{}", sy.http());
    let out = curl_out(&["-p", "-x", &proxy, "http://example.invalid/"]);
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(56), "{stderr}");
    assert!(
        stderr.contains("CONNECT tunnel failed, response 400"),
        "{stderr}"
    );

    assert_eq!(b.count(), 0, "nothing reached the node");
    assert_eq!(get(sy.http(), "/ok").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connect_and_asterisk_are_refused() {
    let py = require_python(&[("h2", "h2")]);
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let addr = sy.http().to_string();
    let request = |fields: serde_json::Value| {
        python_json(
            &py,
            "h2_request.py",
            &[&addr, &fields.to_string()],
            PROGRAM_TIMEOUT,
        )
    };
    let response = |events: &serde_json::Value| -> (String, String) {
        let head = events
            .as_array()
            .and_then(|e| e.iter().find(|e| e["type"] == "response"))
            .unwrap_or_else(|| panic!("no response: {events}"));
        let body: String = events
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "data")
            .filter_map(|e| e["data"].as_str())
            .collect();
        (
            head["headers"][":status"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            body,
        )
    };

    let events = request(serde_json::json!([
        [":method", "CONNECT"],
        [":authority", "example.com:443"]
    ]));
    let (status, body) = response(&events);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("400", r#"{"error":"CONNECT is not supported"}"#)
    );

    let events = request(serde_json::json!([
        [":method", "GET"],
        [":scheme", "http"],
        [":authority", "x"],
        [":path", "*"]
    ]));
    let (status, body) = response(&events);
    assert_eq!(status, "400", "{events}");
    assert!(body.contains("request target not allowed"), "{body}");

    let events = request(serde_json::json!([
        [":method", "OPTIONS"],
        [":scheme", "http"],
        [":authority", "x"],
        [":path", "*"]
    ]));
    assert_eq!(response(&events).0, "200", "{events}");

    // Extended CONNECT (RFC 8441, WebSockets over HTTP/2): Switchyard does not announce
    // SETTINGS_ENABLE_CONNECT_PROTOCOL, so `:protocol` makes the request malformed and the
    // stream is reset with PROTOCOL_ERROR (1) before any answer.
    let events = request(serde_json::json!([
        [":method", "CONNECT"],
        [":protocol", "websocket"],
        [":scheme", "http"],
        [":authority", "x"],
        [":path", "/chat"]
    ]));
    let reset = events
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "reset"))
        .unwrap_or_else(|| panic!("the stream was not reset: {events}"));
    assert_eq!(reset["code"], 1, "{events}");

    assert_eq!(b.count(), 0, "nothing reached the node");
}
