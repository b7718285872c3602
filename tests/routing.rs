//! Routing by host and path prefix, over HTTP/1.1 and h2c.

mod common;

use bytes::Bytes;
use http::{Method, Version};
use http_body_util::{BodyExt, Full};

use common::client::{get_with, H2};
use common::{pool_yaml, Backend, Behaviour, Switchyard};

/// Routes, in order (first match wins):
/// 1. host exact.test + /api → api
/// 2. host exact.test → exact
/// 3. host *.example.com → wild
/// 4. /static → static
/// 5. /api → late
///
/// and no catch-all, so anything else is a 404.
fn routing_config(
    api: &Backend,
    exact: &Backend,
    wild: &Backend,
    stat: &Backend,
    late: &Backend,
) -> String {
    let mut y = String::from(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nroutes:\n\
         \x20 - host: exact.test\n    path_prefix: /api\n    pool: api\n\
         \x20 - host: exact.test\n    pool: exact\n\
         \x20 - host: \"*.example.com\"\n    pool: wild\n\
         \x20 - path_prefix: /static\n    pool: static\n\
         \x20 - path_prefix: /api\n    pool: late\n\
         pools:\n",
    );
    for b in [api, exact, wild, stat, late] {
        y.push_str(&pool_yaml(&b.name, "round_robin", &[(b.addr, 1)], ""));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_path_routing() {
    let api = Backend::start("api", Behaviour::Echo).await;
    let exact = Backend::start("exact", Behaviour::Echo).await;
    let wild = Backend::start("wild", Behaviour::Echo).await;
    let stat = Backend::start("static", Behaviour::Echo).await;
    let late = Backend::start("late", Behaviour::Echo).await;
    let sy = Switchyard::start(&routing_config(&api, &exact, &wild, &stat, &late));

    // (Host header, path, expected pool or None for 404)
    let cases: &[(&str, &str, Option<&str>)] = &[
        // exact host + prefix; the broader routes 2 and 5 match too, the first wins
        ("exact.test", "/api", Some("api")),
        ("exact.test", "/api/", Some("api")),
        ("exact.test", "/api/x/y?q=1", Some("api")),
        // segment boundary: /apix is not under /api
        ("exact.test", "/apix", Some("exact")),
        ("exact.test", "/", Some("exact")),
        // host: case-insensitive, port ignored
        ("EXACT.Test:8080", "/api/x", Some("api")),
        ("Exact.TEST", "/other", Some("exact")),
        // wildcard: one or more labels, not the bare domain
        ("a.example.com", "/", Some("wild")),
        ("A.B.Example.COM:99", "/x", Some("wild")),
        ("a.example.com", "/api", Some("wild")),
        ("example.com", "/", None),
        ("badexample.com", "/", None),
        ("example.com.evil.test", "/", None),
        // path-only routes, any host
        ("other.test", "/static", Some("static")),
        ("other.test", "/static/app.js", Some("static")),
        ("other.test", "/staticx", None),
        ("other.test", "/api/v1", Some("late")),
        ("example.com", "/api", Some("late")),
        // nothing matches
        ("other.test", "/", None),
        ("other.test", "/apix", None),
    ];
    for (host, path, want) in cases {
        let r = get_with(sy.http(), path, &[("host", host)]).await;
        match want {
            Some(pool) => {
                assert_eq!(r.status, 200, "Host {host} {path}: {}", r.text());
                assert_eq!(r.backend(), *pool, "Host {host} {path}");
            }
            None => {
                assert_eq!(r.status, 404, "Host {host} {path} should match no route");
                assert!(
                    r.header("x-backend").is_none(),
                    "a 404 must come from the balancer"
                );
                let ct = r.header("content-type").unwrap_or("");
                assert!(
                    ct.starts_with("application/json"),
                    "404 content-type {ct:?}"
                );
                let j = r.json();
                assert!(
                    j["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "404 body must be {{\"error\": ...}}: {j}"
                );
            }
        }
    }
    // The backend sees the path and query untouched.
    let last = api.last_request();
    assert_eq!(last.target, "/api/x");
    assert!(api.requests().iter().any(|r| r.target == "/api/x/y?q=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_routes_by_authority() {
    let h2 = Backend::start("h2-backend", Behaviour::Echo).await;
    let dflt = Backend::start("default", Behaviour::Echo).await;
    let echo = Backend::start("echo", Behaviour::EchoBody).await;
    let mut yaml = String::from(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nroutes:\n\
         \x20 - host: h2.test\n    path_prefix: /echo\n    pool: echo\n\
         \x20 - host: h2.test\n    pool: h2pool\n\
         \x20 - pool: fallback\npools:\n",
    );
    yaml.push_str(&pool_yaml("h2pool", "round_robin", &[(h2.addr, 1)], ""));
    yaml.push_str(&pool_yaml("fallback", "round_robin", &[(dflt.addr, 1)], ""));
    yaml.push_str(&pool_yaml("echo", "round_robin", &[(echo.addr, 1)], ""));
    let sy = Switchyard::start(&yaml);

    let mut c = H2::connect(sy.http()).await;
    let r = c.get("h2.test", "/hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.backend(), "h2-backend");
    assert_eq!(r.text(), "h2-backend");

    // Same connection, another :authority.
    let r = c.get("other.test", "/hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "default");

    // Upstream is HTTP/1.1 with the :authority as Host.
    let up = h2.last_request();
    assert_eq!(up.version, Version::HTTP_11);
    assert_eq!(up.target, "/hello");
    assert_eq!(up.header("host").as_deref(), Some("h2.test"));
    assert_eq!(up.header("x-forwarded-host").as_deref(), Some("h2.test"));

    // A request body over h2 reaches the backend and comes back.
    let body = Full::new(Bytes::from_static(b"ping over h2"))
        .map_err(|never| match never {})
        .boxed();
    let r = c.send(Method::POST, "h2.test", "/echo", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "echo");
    assert_eq!(&r.body[..], b"ping over h2");
}
