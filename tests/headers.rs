//! Header rules of DESIGN.md: X-Forwarded-*, X-Request-Id, Host, hop-by-hop stripping.

mod common;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};

use common::client::{get, get_with, H2};
use common::raw;
use common::{single_pool_config, Backend, Behaviour, Switchyard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_request_id() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let http = sy.http();

    // An incoming X-Forwarded-For is kept and the peer appended; Host is kept as sent and
    // copied, port included, into X-Forwarded-Host.
    let r = get_with(
        http,
        "/fwd",
        &[("host", "myhost.test:8080"), ("x-forwarded-for", "1.2.3.4")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = b.last_request();
    assert_eq!(
        up.header("x-forwarded-for").as_deref(),
        Some("1.2.3.4, 127.0.0.1")
    );
    assert_eq!(up.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        up.header("x-forwarded-host").as_deref(),
        Some("myhost.test:8080")
    );
    assert_eq!(up.header("host").as_deref(), Some("myhost.test:8080"));

    // Without X-Forwarded-For the peer alone; the id is generated, sent upstream and echoed.
    let r = get_with(http, "/gen", &[("host", "plain.test")]).await;
    assert_eq!(r.status, 200);
    let up = b.last_request();
    assert_eq!(up.target, "/gen");
    assert_eq!(up.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(up.header("host").as_deref(), Some("plain.test"));
    assert_eq!(up.header("x-forwarded-host").as_deref(), Some("plain.test"));
    let upstream_id = up
        .header("x-request-id")
        .expect("a generated X-Request-Id upstream");
    assert!(!upstream_id.is_empty());
    assert!(
        !upstream_id.contains(','),
        "exactly one X-Request-Id upstream: {upstream_id:?}"
    );
    assert_eq!(
        r.header("x-request-id"),
        Some(upstream_id.as_str()),
        "the response echoes the id the backend saw"
    );

    // Each request gets its own id.
    let r2 = get(http, "/gen2").await;
    let id2 = r2.header("x-request-id").expect("id on the response");
    assert_ne!(id2, upstream_id, "two requests got the same generated id");

    // A client's id is kept as is, upstream and on the response.
    let r = get_with(http, "/keep", &[("x-request-id", "client-id-123")]).await;
    assert_eq!(r.status, 200);
    let up = b.last_request();
    assert_eq!(up.header("x-request-id").as_deref(), Some("client-id-123"));
    assert_eq!(r.header("x-request-id"), Some("client-id-123"));
    let ids: Vec<_> = r.headers.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "one X-Request-Id on the response: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let b = Backend::start(
        "hop",
        Behaviour::Headers(vec![
            ("keep-alive", "timeout=5, max=100"),
            ("connection", "x-backend-hop"),
            ("x-backend-hop", "secret"),
            ("proxy-connection", "keep-alive"),
            ("x-backend-kept", "yes"),
        ]),
    )
    .await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));

    let r = get_with(
        sy.http(),
        "/hop",
        &[
            ("connection", "keep-alive, X-Hop"),
            ("x-hop", "must-not-pass"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c-fake/1"),
            ("x-kept", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let up = b.last_request();
    assert_eq!(
        up.header("x-kept").as_deref(),
        Some("kept"),
        "end-to-end headers pass"
    );
    for h in ["x-hop", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(
            up.header(h).is_none(),
            "hop-by-hop request header {h} reached the backend: {:?}",
            up.header(h)
        );
    }
    // `Trailer` is end-to-end (RFC 9110 §6.6.2): it announces the trailer fields that
    // follow the body, and HTTP/1.1 senders send only the announced ones. `TE: trailers`
    // says this hop accepts trailers, which the balancer does: it is sent on (with
    // `Connection: te`), as Envoy and HAProxy do; any other TE value is not.
    assert_eq!(up.header("trailer").as_deref(), Some("x-checksum"));
    assert_eq!(up.header("te").as_deref(), Some("trailers"));
    // The balancer may open its own keep-alive connection, but must not pass on the
    // client's Connection header with the names it listed.
    if let Some(c) = up.header("connection") {
        assert!(
            !c.to_ascii_lowercase().contains("x-hop"),
            "the client's Connection header was forwarded: {c}"
        );
    }

    // Response direction.
    assert_eq!(
        r.header("x-backend-kept"),
        Some("yes"),
        "end-to-end response headers pass"
    );
    for h in ["keep-alive", "x-backend-hop", "proxy-connection"] {
        assert!(
            r.header(h).is_none(),
            "hop-by-hop response header {h} reached the client: {:?}",
            r.header(h)
        );
    }
    if let Some(c) = r.header("connection") {
        assert!(
            !c.to_ascii_lowercase().contains("x-backend-hop"),
            "the backend's Connection header was forwarded: {c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_fields_reach_an_http1_node_as_one_line() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let mut h2 = H2::connect(sy.http()).await;
    let empty = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let r = h2
        .send_with(
            Method::GET,
            "cookies.test",
            "/c",
            &[("cookie", "a=1"), ("cookie", "b=2")],
            empty,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = b.last_request();
    let cookies: Vec<_> = up.headers.get_all("cookie").iter().collect();
    assert_eq!(
        cookies,
        ["a=1; b=2"],
        "one Cookie line, fields joined by '; '"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_sets_the_host_sent_upstream() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    // RFC 9112 §3.2.2: with an absolute-form target the Host header is ignored. The request
    // was routed by `a.example:8080` (userinfo dropped), so that is what the node is told.
    let mut c = raw::connect(sy.http()).await;
    raw::write(
        &mut c,
        b"GET http://user@a.example:8080/abs?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n",
    )
    .await;
    let r = raw::read_response(&mut c).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = b.last_request();
    assert_eq!(up.target, "/abs?q=1");
    assert_eq!(up.header("host").as_deref(), Some("a.example:8080"));
    assert_eq!(
        up.header("x-forwarded-host").as_deref(),
        Some("a.example:8080")
    );
}
