//! The proxy core: answers the balancer makes itself, the demo, and a graceful drain.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::client::{get, try_get, within};
use common::{eventually, refusing_addr, single_pool_config, Backend, Behaviour, Switchyard, WAIT};

/// A balancer-made error: the status, a short JSON `{"error": "..."}` body that names no
/// internal address, and the request id.
fn assert_local_error(r: &common::Resp, status: u16, hidden: &[String]) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert!(
        r.header("x-backend").is_none(),
        "the answer must not come from a backend"
    );
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let j = r.json();
    assert!(
        j["error"].as_str().is_some_and(|e| !e.is_empty()),
        "body must be {{\"error\": ...}}: {j}"
    );
    let text = r.text();
    for h in hidden {
        assert!(
            !text.contains(h.as_str()),
            "the error body reveals {h}: {text}"
        );
    }
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "balancer-made answers carry X-Request-Id too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_gives_502() {
    let dead = refusing_addr();
    let sy = Switchyard::start(&single_pool_config("round_robin", &[dead], ""));
    let r = get(sy.http(), "/").await;
    assert_local_error(&r, 502, &[dead.to_string(), dead.port().to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_answers_gives_504_within_the_request_timeout() {
    let hang = Backend::start("hang", Behaviour::Hang).await;
    let sy = Switchyard::start(&single_pool_config(
        "round_robin",
        &[hang.addr],
        "    timeouts:\n      request: 1s\n",
    ));
    let t0 = Instant::now();
    let r = get(sy.http(), "/").await;
    let took = t0.elapsed();
    assert_local_error(&r, 504, &[hang.addr.to_string()]);
    assert!(
        took < Duration::from_secs(10),
        "504 took {took:?} with a 1s request timeout"
    );
    assert!(
        took >= Duration::from_millis(900),
        "504 after {took:?}: sooner than the 1s request timeout"
    );
    assert_eq!(
        hang.count(),
        1,
        "the request reached the hanging backend once"
    );
}

#[test]
fn demo_round_robins_over_three_named_backends() {
    let sy = Switchyard::demo();
    assert!(sy.admin_opt().is_some(), "the demo logs `admin listening`");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seq: Vec<String> = rt.block_on(async {
        let mut seq = Vec::new();
        for i in 0..6 {
            let r = get(sy.http(), &format!("/hello/{i}")).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let text = r.text();
            let name = ["backend-1", "backend-2", "backend-3"]
                .into_iter()
                .find(|n| text.contains(n))
                .unwrap_or_else(|| panic!("the body names no backend: {text:?}"));
            seq.push(name.to_string());
        }
        seq
    });
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in &seq {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "all three backends answer: {seq:?}");
    assert!(
        counts.values().all(|&n| n == 2),
        "round robin over 6 requests: {seq:?}"
    );
    for i in 3..6 {
        assert_eq!(seq[i], seq[i - 3], "not a rotation: {seq:?}");
    }
}

/// Start a balancer with one held request in flight, then send SIGTERM and wait until the
/// process logged that it is draining.
async fn draining_with_one_request(
    b: &Backend,
) -> (Switchyard, tokio::task::JoinHandle<common::Resp>) {
    let sy = Switchyard::start(&single_pool_config("round_robin", &[b.addr], ""));
    let http = sy.http();
    b.hold();
    let pending = tokio::spawn(async move { get(http, "/slow").await });
    eventually("the request to reach the backend", WAIT, || {
        b.in_flight() == 1
    })
    .await;
    sy.signal("TERM");
    sy.wait_for_message("SIGTERM: draining", 0, WAIT);
    (sy, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let (mut sy, pending) = draining_with_one_request(&b).await;

    // New connections are no longer accepted...
    let http = sy.http();
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(http).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener still accepts connections {WAIT:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but the process waits for the request in flight.
    assert!(
        sy.wait_exit(Duration::from_millis(300)).is_none(),
        "exited with a request still in flight"
    );

    b.release();
    let r = within("the in-flight request", WAIT, pending)
        .await
        .expect("task");
    assert_eq!(r.status, 200, "the in-flight request finishes normally");
    assert_eq!(r.backend(), "b");
    let st = sy
        .wait_exit(WAIT)
        .expect("switchyard exits after the drain");
    assert_eq!(st.code(), Some(0), "exit status {st}");
}

/// DESIGN.md: `/healthz` is 200 while the process runs and `/readyz` 503 while draining, so
/// an orchestrator can tell "draining" from "dead" during `shutdown_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_not_ready_but_alive_while_draining() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let (sy, pending) = draining_with_one_request(&b).await;
    let admin = sy.admin_addr();

    let ready = try_get(admin, "/readyz").await;
    let health = try_get(admin, "/healthz").await;
    b.release();
    let _ = within("the in-flight request", WAIT, pending).await;

    match ready {
        Ok(r) => assert_eq!(r.status, 503, "/readyz while draining: {}", r.text()),
        Err(e) => panic!("/readyz while draining: the admin API did not answer ({e})"),
    }
    match health {
        Ok(r) => assert_eq!(r.status, 200, "/healthz while draining: {}", r.text()),
        Err(e) => panic!("/healthz while draining: the admin API did not answer ({e})"),
    }
}

/// Sequential requests to one node go over one kept-alive upstream connection, whatever
/// the response body looks like (fixed length, empty, streamed): the per-node pool takes
/// the connection back when each body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let fixed = Backend::start("fixed", Behaviour::Echo).await;
    let empty = Backend::start("empty", Behaviour::Status(204)).await;
    let streamed = Backend::start("streamed", Behaviour::Source(256 * 1024)).await;
    for backend in [&fixed, &empty, &streamed] {
        let sy = Switchyard::start(&single_pool_config("round_robin", &[backend.addr], ""));
        for i in 0..20 {
            let r = get(sy.http(), &format!("/n{i}")).await;
            assert!(
                r.status.is_success(),
                "{}: status {}",
                backend.name,
                r.status
            );
        }
        assert_eq!(
            backend.count(),
            20,
            "{}: every request reached it",
            backend.name
        );
        assert!(
            backend.connections() <= 2,
            "{}: 20 sequential requests opened {} upstream connections",
            backend.name,
            backend.connections()
        );
    }
}
