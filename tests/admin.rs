//! The admin API: health, readiness, metrics, the pools document, node drain.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Method;
use http_body_util::Empty;

use common::client::{collect, get, request, send};
use common::{metric, parse_metrics, pool_yaml, Backend, Behaviour, Resp, Switchyard};

fn two_pool_config(web: &[(SocketAddr, u32)], api: &[(SocketAddr, u32)]) -> String {
    format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n  token_env: SY_TEST_ADMIN_TOKEN\nroutes:\n  - path_prefix: /api\n    pool: api\n  - pool: web\npools:\n{}{}",
        pool_yaml("web", "round_robin", web, ""),
        pool_yaml("api", "least_conn", api, ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_pools() {
    let w1 = Backend::start("w1", Behaviour::Echo).await;
    let w2 = Backend::start("w2", Behaviour::Echo).await;
    let a1 = Backend::start("a1", Behaviour::Echo).await;
    let sy = Switchyard::start(&two_pool_config(
        &[(w1.addr, 1), (w2.addr, 5)],
        &[(a1.addr, 1)],
    ));
    let admin = sy.admin_addr();

    assert_eq!(get(admin, "/healthz").await.status, 200);
    assert_eq!(get(admin, "/readyz").await.status, 200);

    // Traffic: 4 requests to web, 1 to api.
    for i in 0..4 {
        let r = get(sy.http(), &format!("/page/{i}")).await;
        assert_eq!(r.status, 200);
    }
    let r = get(sy.http(), "/api/x").await;
    assert_eq!(r.backend(), "a1");

    let m = get(admin, "/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for name in [
        "switchyard_requests_total",
        "switchyard_request_duration_seconds",
        "switchyard_upstream_requests_total",
        "switchyard_node_active_requests",
        "switchyard_downstream_connections_active",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    let samples = parse_metrics(&text);
    assert_eq!(
        metric(
            &samples,
            "switchyard_requests_total",
            &[("pool", "web"), ("status_class", "2xx")]
        ),
        Some(4.0),
        "requests_total for web"
    );
    assert_eq!(
        metric(
            &samples,
            "switchyard_requests_total",
            &[("pool", "api"), ("status_class", "2xx")]
        ),
        Some(1.0),
        "requests_total for api"
    );
    assert_eq!(
        metric(
            &samples,
            "switchyard_request_duration_seconds_count",
            &[("pool", "web")]
        ),
        Some(4.0),
        "request_duration_seconds histogram count for web"
    );
    let a1_key = a1.addr.to_string();
    assert_eq!(
        metric(
            &samples,
            "switchyard_upstream_requests_total",
            &[("pool", "api"), ("node", &a1_key), ("outcome", "success")]
        ),
        Some(1.0),
        "upstream_requests_total for a1"
    );
    assert_eq!(
        metric(
            &samples,
            "switchyard_node_active_requests",
            &[("pool", "api"), ("node", &a1_key)]
        ),
        Some(0.0),
        "nothing in flight on a1"
    );
    assert!(
        metric(
            &samples,
            "switchyard_downstream_connections_active",
            &[("listener", "http")]
        )
        .is_some(),
        "downstream_connections_active{{listener=\"http\"}} is exported"
    );

    // The pools document, as DESIGN.md "Decisions" gives it.
    let r = get(admin, "/api/v1/pools").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "content-type {:?}",
        r.header("content-type")
    );
    let doc = r.json();
    let pools = doc["pools"].as_array().expect("`pools` is an array");
    assert_eq!(pools.len(), 2, "{doc}");
    let web = pools.iter().find(|p| p["name"] == "web").expect("pool web");
    let api = pools.iter().find(|p| p["name"] == "api").expect("pool api");
    assert_eq!(web["strategy"], "round_robin");
    assert_eq!(api["strategy"], "least_conn");
    let nodes = web["nodes"].as_array().expect("`nodes` is an array");
    assert_eq!(nodes.len(), 2);
    for (node, (addr, weight)) in nodes.iter().zip([(w1.addr, 1), (w2.addr, 5)]) {
        assert_eq!(node["addr"], addr.to_string(), "{node}");
        assert_eq!(node["weight"], weight, "{node}");
        assert_eq!(node["source"], "static", "{node}");
        // No health check configured: never probed, so `up` or `unknown`, never `down`.
        let health = node["health"].as_str().expect("health is a string");
        assert!(health == "up" || health == "unknown", "{node}");
        assert_eq!(node["ejected"], false, "{node}");
        assert_eq!(node["draining"], false, "{node}");
        assert_eq!(node["active_requests"], 0, "{node}");
    }
    assert_eq!(api["nodes"][0]["addr"], a1.addr.to_string());

    // Unknown admin paths are 404s.
    assert_eq!(get(admin, "/nope").await.status, 404);
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Resp {
    let mut b = request(Method::POST, path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    collect(send(addr, b.body(Empty::<Bytes>::new()).expect("request")).await).await
}

async fn web_node(sy: &Switchyard, addr: SocketAddr) -> serde_json::Value {
    let doc = get(sy.admin_addr(), "/api/v1/pools").await.json();
    doc["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "web"))
        .and_then(|p| p["nodes"].as_array())
        .and_then(|ns| ns.iter().find(|n| n["addr"] == addr.to_string()))
        .cloned()
        .unwrap_or_else(|| panic!("node {addr} not in pool web: {doc}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_undrain_need_the_token() {
    let w1 = Backend::start("w1", Behaviour::Echo).await;
    let w2 = Backend::start("w2", Behaviour::Echo).await;
    let a1 = Backend::start("a1", Behaviour::Echo).await;
    let sy = Switchyard::start_with_env(
        &two_pool_config(&[(w1.addr, 1), (w2.addr, 1)], &[(a1.addr, 1)]),
        &[("SY_TEST_ADMIN_TOKEN", "s3cret-token")],
    );
    let admin = sy.admin_addr();
    let drain = format!("/api/v1/pools/web/nodes/{}/drain", w1.addr);
    let undrain = format!("/api/v1/pools/web/nodes/{}/undrain", w1.addr);

    assert_eq!(post(admin, &drain, None).await.status, 401, "no token");
    assert_eq!(
        post(admin, &drain, Some("wrong")).await.status,
        401,
        "wrong token"
    );
    assert_eq!(web_node(&sy, w1.addr).await["draining"], false);

    let r = post(admin, &drain, Some("s3cret-token")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(web_node(&sy, w1.addr).await["draining"], true);
    let before = w1.count();
    for _ in 0..6 {
        let r = get(sy.http(), "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "w2", "a draining node took a new request");
    }
    assert_eq!(w1.count(), before);

    // Percent-encoded colon accepted too.
    let enc = format!(
        "/api/v1/pools/web/nodes/{}%3A{}/undrain",
        w1.addr.ip(),
        w1.addr.port()
    );
    let r = post(admin, &enc, Some("s3cret-token")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(web_node(&sy, w1.addr).await["draining"], false);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(get(sy.http(), "/").await.backend());
    }
    assert!(
        seen.contains("w1"),
        "the undrained node serves again: {seen:?}"
    );

    let r = post(admin, &undrain, Some("s3cret-token")).await;
    assert_eq!(r.status, 200, "undrain is idempotent");
    assert_eq!(
        post(
            admin,
            "/api/v1/pools/nope/nodes/1.2.3.4:5/drain",
            Some("s3cret-token")
        )
        .await
        .status,
        404
    );
}
