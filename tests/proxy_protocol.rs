//! PROXY protocol v1/v2 on listeners with `proxy_protocol: true` (issue 7), against the real
//! binary: the header's source address is the client address the backend sees in
//! `X-Forwarded-For` and the access log records; a missing, invalid or late header closes
//! the connection and is counted; a listener without the option never parses one.

mod common;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};

use common::client::{get, within};
use common::raw::{connect, get_request, read_response, wait_closed, write};
use common::{metric, parse_metrics, unique_dir, Backend, Behaviour, Switchyard, WAIT};

/// One listener `edge` with `proxy_protocol: true` and one `plain` without, both to `backend`;
/// an access log in JSON to a file.
fn config(backend: SocketAddr, log: &std::path::Path, tls: Option<(&PathBuf, &PathBuf)>) -> String {
    let tls = match tls {
        Some((cert, key)) => format!(
            "    tls:\n      certificates:\n        - cert: \"{}\"\n          key: \"{}\"\n",
            cert.display(),
            key.display()
        ),
        None => String::new(),
    };
    format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    proxy_protocol: true\n{tls}  \
         - name: plain\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n\
         access_log:\n  format: json\n  path: \"{}\"\nroutes:\n  - pool: web\npools:\n  web:\n    \
         nodes:\n      - addr: \"{backend}\"\nlimits:\n  header_read_timeout: 1s\n",
        log.display()
    )
}

async fn start() -> (Backend, Switchyard, PathBuf) {
    let backend = Backend::start("b", Behaviour::Echo).await;
    let log = unique_dir("pp-log").join("access.log");
    let sy = Switchyard::start(&config(backend.addr, &log, None));
    (backend, sy, log)
}

fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.push(ver_cmd);
    v.push(fam);
    v.extend_from_slice(&u16::try_from(block.len()).expect("len").to_be_bytes());
    v.extend_from_slice(block);
    v
}

/// A v2 PROXY header for 198.51.100.23:40000 → 10.0.0.1:443, with an AWS-like TLV.
fn v2_inet() -> Vec<u8> {
    let mut block = vec![198, 51, 100, 23, 10, 0, 0, 1];
    block.extend_from_slice(&40000u16.to_be_bytes());
    block.extend_from_slice(&443u16.to_be_bytes());
    block.extend_from_slice(&[0xEA, 0, 4, 1, b'v', b'p', b'c']);
    v2(0x21, 0x11, &block)
}

fn v2_inet6() -> Vec<u8> {
    let src: Ipv6Addr = "2001:db8::42".parse().expect("ip");
    let dst: Ipv6Addr = "2001:db8::1".parse().expect("ip");
    let mut block = src.octets().to_vec();
    block.extend_from_slice(&dst.octets());
    block.extend_from_slice(&40000u16.to_be_bytes());
    block.extend_from_slice(&443u16.to_be_bytes());
    v2(0x21, 0x21, &block)
}

/// Send `header` then `GET path` on one new connection; return the response status and what
/// the backend saw in X-Forwarded-For.
async fn via_header(addr: SocketAddr, backend: &Backend, header: &[u8], path: &str) -> String {
    let mut s = connect(addr).await;
    // Header and request in one write: the request bytes right behind the header must reach
    // HTTP intact (nothing read past the header).
    write(&mut s, &[header, &get_request(path)].concat()).await;
    let resp = read_response(&mut s).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = backend.last_request();
    assert_eq!(seen.target, path);
    seen.header("x-forwarded-for").expect("an X-Forwarded-For")
}

async fn proxy_errors(sy: &Switchyard, reason: &str) -> f64 {
    let r = get(sy.admin_addr(), "/metrics").await;
    metric(
        &parse_metrics(&r.text()),
        "switchyard_proxy_protocol_errors_total",
        &[("listener", "edge"), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_headers_set_the_client_address() {
    let (backend, sy, log) = start().await;
    let edge = sy.addr("edge");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/v1-tcp4",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec(),
            "203.0.113.7",
        ),
        (
            "/v1-tcp6",
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n".to_vec(),
            "2001:db8::7",
        ),
        ("/v2-inet", v2_inet(), "198.51.100.23"),
        ("/v2-inet6", v2_inet6(), "2001:db8::42"),
        // The balancer's own connections (health checks) and unknown sources: the real peer.
        ("/v2-local", v2(0x20, 0x00, &[]), "127.0.0.1"),
        ("/v1-unknown", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
    ];
    for (path, header, want) in &cases {
        assert_eq!(
            &via_header(edge, &backend, header, path).await,
            want,
            "{path}"
        );
    }

    // The access log records the same client address.
    let mut lines = Vec::new();
    common::eventually("every access-log line written", WAIT, || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        lines.len() >= cases.len()
    })
    .await;
    for (path, _, want) in &cases {
        let rec: serde_json::Value = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["path"] == *path)
            .unwrap_or_else(|| panic!("no access-log line for {path}: {lines:?}"));
        assert_eq!(rec["client"], *want, "{path}");
    }
    assert_eq!(proxy_errors(&sy, "invalid").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_holds_for_every_request_of_the_connection_and_may_arrive_in_pieces() {
    let (backend, sy, _log) = start().await;
    let mut s = connect(sy.addr("edge")).await;
    let header = b"PROXY TCP4 203.0.113.9 10.0.0.1 1 443\r\n";
    // Dribbled in three pieces: the reader waits for the rest without consuming a byte of
    // what follows.
    for part in [&header[..3], &header[3..20], &header[20..]] {
        write(&mut s, part).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/one", "/two", "/three"] {
        write(&mut s, &get_request(path)).await;
        let resp = read_response(&mut s).await;
        assert_eq!(resp.status, 200);
        let seen = backend.last_request();
        assert_eq!(seen.target, path);
        assert_eq!(
            seen.header("x-forwarded-for").as_deref(),
            Some("203.0.113.9")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_follows_the_header() {
    let (backend, sy, _log) = start().await;
    let mut s = connect(sy.addr("edge")).await;
    write(&mut s, &v2_inet()).await;
    let (mut sender, conn) = within("h2c handshake after a PROXY header", WAIT, async move {
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2c handshake")
    })
    .await;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::GET)
        .uri("http://test.local/h2")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = within("h2 request", WAIT, sender.send_request(req))
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = backend.last_request();
    assert_eq!(seen.version, http::Version::HTTP_11, "upstream is HTTP/1.1");
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("198.51.100.23")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_invalid_or_late_headers_close_the_connection_and_are_counted() {
    let (backend, sy, _log) = start().await;
    let edge = sy.addr("edge");

    // No header at all: a plain HTTP request is closed without an answer.
    let mut s = connect(edge).await;
    write(&mut s, &get_request("/no-header")).await;
    let closed = wait_closed(&mut s, WAIT).await;
    assert!(
        closed.bytes.is_empty(),
        "answered: {:?}",
        String::from_utf8_lossy(&closed.bytes)
    );

    // Invalid headers: a bad address, a v1 line without CRLF within 107 bytes, a v2 DGRAM,
    // a v2 length over the bound.
    let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 120][..]].concat();
    let mut too_long_v2 = v2(0x21, 0x11, &[]);
    too_long_v2[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    let bad: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 203.0.113.300 10.0.0.1 1 2\r\n".to_vec(),
        long,
        v2(0x21, 0x12, &[0; 12]),
        too_long_v2,
    ];
    for header in &bad {
        let mut s = connect(edge).await;
        write(&mut s, &[&header[..], &get_request("/bad")].concat()).await;
        let closed = wait_closed(&mut s, WAIT).await;
        assert!(
            closed.bytes.is_empty(),
            "answered {:?} after {:?}",
            String::from_utf8_lossy(&closed.bytes),
            String::from_utf8_lossy(header)
        );
    }
    common::wait_until("invalid headers counted", WAIT, || async {
        proxy_errors(&sy, "invalid").await == 5.0
    })
    .await;

    // A header that never completes: closed after header_read_timeout (1s), counted.
    let mut s = connect(edge).await;
    write(&mut s, b"PROXY TCP4 203.0.113.7 ").await;
    let closed = wait_closed(&mut s, WAIT).await;
    assert!(closed.bytes.is_empty());
    assert!(
        closed.after >= Duration::from_millis(900),
        "closed after {:?}, before header_read_timeout",
        closed.after
    );
    common::wait_until("the late header counted", WAIT, || async {
        proxy_errors(&sy, "timeout").await == 1.0
    })
    .await;

    // A client that closes half-way through its header.
    let mut s = connect(edge).await;
    write(&mut s, &v2_inet()[..10]).await;
    drop(s);
    common::wait_until("the cut-short header counted", WAIT, || async {
        proxy_errors(&sy, "eof").await == 1.0
    })
    .await;

    assert_eq!(backend.count(), 0, "nothing reached the backend");
    // The listener still serves well-formed connections.
    let xff = via_header(
        edge,
        &backend,
        b"PROXY TCP4 203.0.113.1 10.0.0.1 1 2\r\n",
        "/ok",
    )
    .await;
    assert_eq!(xff, "203.0.113.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_the_option_answers_400_to_a_proxy_line() {
    let (backend, sy, _log) = start().await;
    let mut s = connect(sy.addr("plain")).await;
    write(
        &mut s,
        &[
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n"[..],
            &get_request("/"),
        ]
        .concat(),
    )
    .await;
    let resp = read_response(&mut s).await;
    assert_eq!(resp.status, 400);
    assert_eq!(backend.count(), 0);
    // And it is served normally, with the real peer as the client.
    let r = get(sy.addr("plain"), "/direct").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        backend.last_request().header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_comes_before_tls_on_a_tls_listener() {
    let backend = Backend::start("b", Behaviour::Echo).await;
    let dir = unique_dir("pp-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let (cert_path, key_path) = (dir.join("site.pem"), dir.join("site.key"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write key");
    let sy = Switchyard::start(&config(
        backend.addr,
        &dir.join("access.log"),
        Some((&cert_path, &key_path)),
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));

    let mut tcp = connect(sy.addr("edge")).await;
    write(&mut tcp, &v2_inet()).await;
    let name = ServerName::try_from("localhost").expect("name");
    let stream = within(
        "TLS handshake after the PROXY header",
        WAIT,
        connector.connect(name, tcp),
    )
    .await
    .expect("TLS handshake");
    let (mut sender, conn) = within("HTTP/1.1 over TLS", WAIT, async move {
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake")
    })
    .await;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/tls")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = within("request over TLS", WAIT, sender.send_request(req))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = within("body", WAIT, resp.into_body().collect()).await;
    let seen = backend.last_request();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("198.51.100.23")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));

    // Without the header, a TLS ClientHello is not a PROXY header: closed, counted invalid.
    let tcp = connect(sy.addr("edge")).await;
    let name = ServerName::try_from("localhost").expect("name");
    let res = within(
        "TLS handshake without a PROXY header",
        WAIT,
        connector.connect(name, tcp),
    )
    .await;
    assert!(res.is_err(), "a TLS session without the PROXY header");
    common::wait_until("the ClientHello counted as invalid", WAIT, || async {
        proxy_errors(&sy, "invalid").await == 1.0
    })
    .await;
}
