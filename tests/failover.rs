//! Health probes, passive outlier detection, retries, slow start and failover, end to end:
//! the real `switchyard` binary in front of real backends, one of them a separate OS
//! process killed with SIGKILL in the middle of a load (`examples/test_backend.rs`).
//!
//! Waits are bounded polls, never fixed sleeps; the only timing assertions are the loose
//! upper bounds the issue states (and lower bounds that follow from the config itself).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use common::client::{get, post};
use common::wait_until;
use common::{
    blocking, metric, parse_metrics, pool_yaml, refusing_addr, single_pool_config, Backend,
    Behaviour, Sample, Switchyard, BIN, WAIT,
};

use flaky::Flaky;

// ---- helpers ----------------------------------------------------------------------------

/// `GET /api/v1/pools` on the admin listener.
async fn pools(sy: &Switchyard) -> Value {
    let r = get(sy.admin_addr(), "/api/v1/pools").await;
    assert_eq!(r.status, 200, "GET /api/v1/pools: {}", r.text());
    r.json()
}

/// The admin API's document for node `addr` of `pool`.
fn node_doc(doc: &Value, pool: &str, addr: SocketAddr) -> Value {
    let addr = addr.to_string();
    doc["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["nodes"].as_array())
        .and_then(|ns| ns.iter().find(|n| n["addr"] == addr.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("no node {addr} in pool {pool}: {doc}"))
}

/// `health` of a node in the admin API.
async fn health(sy: &Switchyard, pool: &str, addr: SocketAddr) -> String {
    node_doc(&pools(sy).await, pool, addr)["health"]
        .as_str()
        .expect("health is a string")
        .to_string()
}

/// `ejected` of a node in the admin API.
async fn ejected(sy: &Switchyard, pool: &str, addr: SocketAddr) -> bool {
    node_doc(&pools(sy).await, pool, addr)["ejected"]
        .as_bool()
        .expect("ejected is a bool")
}

/// Wait until every node in `addrs` shows `health: want`.
async fn wait_health(sy: &Switchyard, pool: &str, addrs: &[SocketAddr], want: &str) -> Duration {
    let what = format!("nodes {addrs:?} of pool {pool} to be {want}");
    wait_until(&what, WAIT, move || async move {
        let doc = pools(sy).await;
        addrs
            .iter()
            .all(|a| node_doc(&doc, pool, *a)["health"] == want)
    })
    .await
}

async fn metrics(sy: &Switchyard) -> Vec<Sample> {
    let r = get(sy.admin_addr(), "/metrics").await;
    assert_eq!(r.status, 200);
    parse_metrics(&r.text())
}

/// `switchyard_upstream_requests_total` for one node and outcome (0 when absent).
fn upstream(samples: &[Sample], node: SocketAddr, outcome: &str) -> f64 {
    let node = node.to_string();
    metric(
        samples,
        "switchyard_upstream_requests_total",
        &[("node", &node), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// Log lines with `fields.message == message` about node `addr`.
fn node_logs(sy: &Switchyard, message: &str, addr: SocketAddr) -> Vec<Value> {
    let addr = addr.to_string();
    sy.log_messages(message)
        .into_iter()
        .filter(|v| v["fields"]["node"].as_str() == Some(addr.as_str()))
        .collect()
}

/// Wait until at least `n` lines `message` about `addr` were logged; returns them.
async fn wait_node_logs(sy: &Switchyard, message: &str, addr: SocketAddr, n: usize) -> Vec<Value> {
    let what = format!("{n} log line(s) `{message}` for node {addr}");
    wait_until(&what, WAIT, move || async move {
        node_logs(sy, message, addr).len() >= n
    })
    .await;
    node_logs(sy, message, addr)
}

/// `GET path` through the balancer; asserts 200 and returns the answering backend.
async fn get_ok(sy: &Switchyard, path: &str) -> String {
    let r = get(sy.http(), path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.backend()
}

/// Which backend answered each of `n` sequential 200 GETs.
async fn spread(sy: &Switchyard, path: &str, n: usize) -> Vec<String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(get_ok(sy, path).await);
    }
    v
}

fn hits(seq: &[String], name: &str) -> usize {
    seq.iter().filter(|s| *s == name).count()
}

/// A config with one pool `web` of `nodes` (weight 1) and the given extra pool lines.
fn config(nodes: &[SocketAddr], extra: &str) -> String {
    single_pool_config("round_robin", nodes, extra)
}

/// A `health_check` block.
fn health_check(interval_ms: u64, healthy: u32, unhealthy: u32) -> String {
    format!(
        "    health_check:\n      path: /healthz\n      interval: {interval_ms}ms\n      \
         timeout: {}ms\n      healthy_threshold: {healthy}\n      unhealthy_threshold: {unhealthy}\n",
        interval_ms / 2
    )
}

/// A keep-alive HTTP/1.1 client (the harness's client opens a connection per request).
type KaClient = Client<HttpConnector, Empty<Bytes>>;

fn ka_client() -> KaClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// One answer seen by the keep-alive client.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    backend: Option<String>,
}

/// `GET url` over the keep-alive client, body read whole; errors (and a hang longer than
/// [`WAIT`]) are returned, not panicked on.
async fn ka_get(client: &KaClient, url: &str) -> Result<Answer, String> {
    let req = Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let backend = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(Answer { status, backend })
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))?
}

// ---- a backend in its own process ---------------------------------------------------------

/// `target/<profile>/examples/test_backend`, built first when missing or older than its
/// source (`cargo test --test failover` alone does not build examples).
fn test_backend_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
        let exe = bin_dir.join("examples").join("test_backend");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/test_backend.rs");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let fresh = match (mtime(&exe), mtime(&src)) {
            (Some(e), Some(s)) => e >= s,
            _ => false,
        };
        if !fresh {
            let profile = match bin_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            let target_dir = bin_dir.parent().expect("the target directory");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let st = Command::new(cargo)
                .args(["build", "--quiet", "--example", "test_backend", "--profile"])
                .arg(&profile)
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .status()
                .expect("run cargo build --example test_backend");
            assert!(st.success(), "cargo build --example test_backend: {st}");
        }
        assert!(exe.exists(), "{} was not built", exe.display());
        exe
    })
}

/// `examples/test_backend` running as a child process.
struct ProcBackend {
    child: Child,
    addr: SocketAddr,
}

impl ProcBackend {
    fn start(name: &str) -> ProcBackend {
        let mut child = Command::new(test_backend_exe())
            .arg(name)
            // Held open by us: the backend exits by itself when the test process dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn examples/test_backend");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("test_backend printed no port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("test_backend printed {line:?}, not a port"));
        ProcBackend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// SIGKILL (std's `Child::kill` on Unix) and reap.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the backend");
        let _ = self.child.wait();
    }
}

impl Drop for ProcBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- a backend whose answer can be switched -----------------------------------------------

mod flaky {
    //! An in-process backend whose status can be switched at run time: answers `status`
    //! with `x-backend: NAME`; `GET /healthz` answers 200 or 503 as `set_healthy` says.
    //! Counts the other requests.

    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{HeaderValue, Request, Response, StatusCode};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    struct State {
        name: String,
        healthy: AtomicBool,
        status: AtomicU16,
        count: AtomicUsize,
    }

    pub struct Flaky {
        pub addr: SocketAddr,
        state: Arc<State>,
        stop: CancellationToken,
    }

    impl Flaky {
        pub async fn start(name: &str, status: u16) -> Flaky {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let state = Arc::new(State {
                name: name.to_string(),
                healthy: AtomicBool::new(true),
                status: AtomicU16::new(status),
                count: AtomicUsize::new(0),
            });
            let stop = CancellationToken::new();
            tokio::spawn(serve(listener, Arc::clone(&state), stop.clone()));
            Flaky { addr, state, stop }
        }

        pub fn set_status(&self, status: u16) {
            self.state.status.store(status, Ordering::SeqCst);
        }

        /// What `/healthz` answers: 200 when healthy, 503 otherwise.
        pub fn set_healthy(&self, healthy: bool) {
            self.state.healthy.store(healthy, Ordering::SeqCst);
        }

        /// Requests other than health probes.
        pub fn count(&self) -> usize {
            self.state.count.load(Ordering::SeqCst)
        }
    }

    impl Drop for Flaky {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn serve(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            let state = Arc::clone(&state);
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(answer(&state, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    }

    fn answer(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let status = if req.uri().path() == "/healthz" {
            if state.healthy.load(Ordering::SeqCst) {
                200
            } else {
                503
            }
        } else {
            state.count.fetch_add(1, Ordering::SeqCst);
            state.status.load(Ordering::SeqCst)
        };
        let mut resp = Response::new(Full::new(Bytes::from(state.name.clone())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        if let Ok(v) = HeaderValue::from_str(&state.name) {
            resp.headers_mut().insert("x-backend", v);
        }
        resp
    }
}

// ---- 1. active health probes ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_healthz_takes_node_out_of_rotation_and_recovery_brings_it_back() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let c = Backend::start("c", Behaviour::Echo).await;
    let (interval, healthy_threshold, unhealthy_threshold) = (500u64, 2u32, 2u32);
    let sy = Switchyard::start(&config(
        &[a.addr, b.addr, c.addr],
        &health_check(interval, healthy_threshold, unhealthy_threshold),
    ));
    wait_health(&sy, "web", &[a.addr, b.addr, c.addr], "up").await;
    let seq = spread(&sy, "/x", 9).await;
    assert_eq!(hits(&seq, "b"), 3, "all three in rotation first: {seq:?}");

    // /healthz of b starts failing: b leaves within interval × unhealthy_threshold + 1 s.
    b.set_healthy(false);
    let took = wait_health(&sy, "web", &[b.addr], "down").await;
    let bound = Duration::from_millis(interval * unhealthy_threshold as u64 + 1000);
    assert!(
        took <= bound,
        "b went down {took:?} after its /healthz began failing; bound {bound:?}"
    );
    let seq = spread(&sy, "/x", 12).await;
    assert_eq!(hits(&seq, "b"), 0, "a down node takes no traffic: {seq:?}");
    assert_eq!(hits(&seq, "a") + hits(&seq, "c"), 12);
    let doc = pools(&sy).await;
    assert_eq!(node_doc(&doc, "web", a.addr)["health"], "up");
    assert_eq!(node_doc(&doc, "web", c.addr)["health"], "up");

    let down = wait_node_logs(&sy, "node down: health check failed", b.addr, 1).await;
    assert_eq!(down.len(), 1, "one transition, one line: {down:?}");
    assert!(
        down[0]["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("503")),
        "the down line gives the reason: {}",
        down[0]
    );
    let m = metrics(&sy).await;
    let b_label = b.addr.to_string();
    assert_eq!(
        metric(&m, "switchyard_node_up", &[("node", &b_label)]),
        Some(0.0)
    );
    assert!(
        metric(
            &m,
            "switchyard_health_checks_total",
            &[("node", &b_label), ("result", "failure")]
        )
        .unwrap_or(0.0)
            >= unhealthy_threshold as f64
    );

    // Recovery: back after healthy_threshold good probes.
    b.set_healthy(true);
    let took = wait_health(&sy, "web", &[b.addr], "up").await;
    let bound = Duration::from_millis(interval * healthy_threshold as u64 + 2000);
    assert!(
        took <= bound,
        "b came back {took:?} after recovering; bound {bound:?}"
    );
    let seq = spread(&sy, "/x", 12).await;
    assert!(hits(&seq, "b") >= 3, "b takes traffic again: {seq:?}");
    // Up lines: the first successful probe at start, then the recovery.
    let up = wait_node_logs(&sy, "node up: health check passed", b.addr, 2).await;
    assert_eq!(up.len(), 2, "{up:?}");
    assert_eq!(up[1]["fields"]["previous"], "down", "{}", up[1]);
    let m = metrics(&sy).await;
    assert_eq!(
        metric(&m, "switchyard_node_up", &[("node", &b_label)]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_start_and_stop_with_the_node_set_and_new_nodes_wait_for_a_probe() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let c = Backend::start("c", Behaviour::Echo).await;
    let hc = health_check(200, 1, 5);
    let sy = Switchyard::start(&config(&[a.addr, b.addr], &hc));
    wait_health(&sy, "web", &[a.addr, b.addr], "up").await;

    // b leaves, c (whose /healthz fails for now) arrives.
    c.set_healthy(false);
    sy.reload(&config(&[a.addr, c.addr], &hc));
    let b_probes = b.health_probes();
    let a_probes = a.health_probes();
    assert_eq!(
        health(&sy, "web", a.addr).await,
        "up",
        "a survives the swap as it was"
    );
    assert_eq!(
        health(&sy, "web", c.addr).await,
        "unknown",
        "a new node starts unknown"
    );
    let seq = spread(&sy, "/x", 8).await;
    assert_eq!(
        hits(&seq, "a"),
        8,
        "an unprobed node takes no traffic: {seq:?}"
    );
    wait_until("c is probed", WAIT, || async { c.health_probes() >= 2 }).await;
    // Four more intervals of a: b's probe task is gone (one in flight may still land).
    wait_until("a is probed 4 more times", WAIT, || async {
        a.health_probes() >= a_probes + 4
    })
    .await;
    assert!(
        b.health_probes() <= b_probes + 1,
        "b left the pool but is still probed ({b_probes} → {})",
        b.health_probes()
    );
    let doc = pools(&sy).await;
    assert_eq!(
        doc["pools"][0]["nodes"].as_array().map(Vec::len),
        Some(2),
        "{doc}"
    );

    // c's first successful probe lets it in.
    c.set_healthy(true);
    wait_health(&sy, "web", &[c.addr], "up").await;
    let seq = spread(&sy, "/x", 8).await;
    assert_eq!(hits(&seq, "c"), 4, "{seq:?}");
}

// ---- 2. a backend process killed under load ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_load_costs_no_request_with_retries() {
    const TOTAL: usize = 2000;
    const WORKERS: usize = 50;
    const KILL_AT: usize = 400;

    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let victim = blocking(|| ProcBackend::start("victim"));
    let victim_addr = victim.addr;
    let extra = format!(
        "{}    outlier_detection:\n      consecutive_failures: 3\n      base_ejection_time: 10s\n      \
         max_ejection_percent: 50\n    retries:\n      attempts: 2\n      \
         on: [connect_failure, timeout, 502, 503, 504]\n    timeouts:\n      connect: 1s\n      request: 5s\n",
        health_check(300, 1, 2)
    );
    let sy = Switchyard::start(&config(&[a.addr, victim_addr, b.addr], &extra));
    wait_health(&sy, "web", &[a.addr, victim_addr, b.addr], "up").await;

    let client = ka_client();
    let url = sy.url("/load");
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    type Outcome = (Instant, Instant, Result<Answer, String>);
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::with_capacity(TOTAL)));

    // The killer: SIGKILL once KILL_AT requests are done, while WORKERS are in flight.
    let killer = {
        let done = Arc::clone(&done);
        let mut victim = victim;
        tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < KILL_AT {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            victim.kill();
            (Instant::now(), victim)
        })
    };
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, url) = (client.clone(), url.clone());
        let (next, done, results) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&results));
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < TOTAL {
                let t0 = Instant::now();
                let r = ka_get(&client, &url).await;
                results.lock().unwrap().push((t0, Instant::now(), r));
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let load_start = Instant::now();
    // Meanwhile: when does the admin API show the victim ejected, and down?
    let (killed_at, _victim) = killer.await.expect("killer task");
    let (mut ejected_after, mut down_after) = (None, None);
    while (ejected_after.is_none() || down_after.is_none()) && killed_at.elapsed() < WAIT {
        let n = node_doc(&pools(&sy).await, "web", victim_addr);
        if ejected_after.is_none() && n["ejected"] == true {
            ejected_after = Some(killed_at.elapsed());
        }
        if down_after.is_none() && n["health"] == "down" {
            down_after = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in workers {
        w.await.expect("worker");
    }
    let load_time = load_start.elapsed();
    let results = std::mem::take(&mut *results.lock().unwrap());
    assert_eq!(results.len(), TOTAL);

    let failed: Vec<String> = results
        .iter()
        .filter(|(_, _, r)| !matches!(r, Ok(a) if (200..300).contains(&a.status)))
        .map(|(t0, t1, r)| {
            let rel = |t: &Instant| {
                t.saturating_duration_since(killed_at).as_millis() as i64
                    - killed_at.saturating_duration_since(*t).as_millis() as i64
            };
            format!(
                "start {:+} ms, end {:+} ms after the kill: {r:?}",
                rel(t0),
                rel(t1)
            )
        })
        .collect();
    let by_victim_before = results
        .iter()
        .filter(|(_, _, r)| matches!(r, Ok(a) if a.backend.as_deref() == Some("victim")))
        .count();
    let started_after: Vec<&Outcome> = results
        .iter()
        .filter(|(t0, _, _)| *t0 > killed_at)
        .collect();
    let in_flight_at_kill: Vec<&Outcome> = results
        .iter()
        .filter(|(t0, t1, _)| *t0 <= killed_at && *t1 >= killed_at)
        .collect();
    let max_latency_around_kill = results
        .iter()
        .filter(|(t0, t1, _)| *t1 >= killed_at && *t0 <= killed_at + Duration::from_secs(1))
        .map(|(t0, t1, _)| *t1 - *t0)
        .max()
        .unwrap_or_default();
    let m = metrics(&sy).await;
    let failed_attempts: f64 = ["http_error", "connect_error", "timeout"]
        .iter()
        .map(|o| upstream(&m, victim_addr, o))
        .sum();
    let retries = metric(&m, "switchyard_retries_total", &[("pool", "web")]).unwrap_or(0.0);
    eprintln!(
        "FIGURES kill-mid-load: {TOTAL} GETs by {WORKERS} keep-alive clients in {load_time:?}; \
         killed after {KILL_AT} done, {} in flight at the kill, {} started after; \
         failed client requests: {}; victim served {by_victim_before} before dying; \
         failed upstream attempts on the victim: {failed_attempts}; retries: {retries}; \
         victim ejected {ejected_after:?} and probed down {down_after:?} after the kill; \
         slowest request within 1 s of the kill: {max_latency_around_kill:?}",
        in_flight_at_kill.len(),
        started_after.len(),
        failed.len(),
    );

    assert!(
        failed.is_empty(),
        "{} of {TOTAL} GETs failed although a retry could have saved them; first: {:#?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        by_victim_before > 0,
        "the victim served before it was killed"
    );
    assert!(
        started_after.len() >= TOTAL / 4,
        "the kill must happen mid-load: only {} GETs started after it",
        started_after.len()
    );
    assert!(
        started_after
            .iter()
            .all(|(_, _, r)| matches!(r, Ok(a) if a.backend.as_deref() != Some("victim"))),
        "a dead process answered"
    );
    assert!(
        failed_attempts >= 1.0 && retries >= 1.0,
        "the dead node was tried and the attempts retried (failed {failed_attempts}, retries \
         {retries}; ejected {ejected_after:?}, down {down_after:?} after the kill; victim doc {})",
        node_doc(&pools(&sy).await, "web", victim_addr)
    );
    assert!(ejected_after.is_some(), "the dead node was ejected");
    // Out of rotation by probes alone within interval × unhealthy_threshold + 1 s.
    let down_after = down_after.expect("the dead node was probed down");
    assert!(
        down_after <= Duration::from_millis(300 * 2 + 1000),
        "probed down {down_after:?} after the kill"
    );
    wait_node_logs(&sy, "node ejected", victim_addr, 1).await;
    wait_node_logs(&sy, "node down: health check failed", victim_addr, 1).await;
}

// ---- 3. a blackholed node -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_node_get_is_retried_elsewhere_post_gets_504() {
    let hole = Backend::start("hole", Behaviour::Hang).await;
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let extra = "    retries:\n      attempts: 1\n      on: [timeout]\n    timeouts:\n      \
                 connect: 1s\n      request: 500ms\n";
    let sy = Switchyard::start(&config(&[hole.addr, echo.addr], extra));

    // Round robin: after the first request every request meets the hole first.
    for i in 0..3 {
        let t = Instant::now();
        let r = get(sy.http(), &format!("/get/{i}")).await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
        assert_eq!(r.backend(), "echo");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "GET {i} took {:?}",
            t.elapsed()
        );
    }
    assert!(hole.count() >= 1, "the hole was tried");
    assert_eq!(echo.count(), 3, "each GET reached echo exactly once");
    let m = metrics(&sy).await;
    assert!(upstream(&m, hole.addr, "timeout") >= 1.0);
    assert!(metric(&m, "switchyard_retries_total", &[("pool", "web")]).unwrap_or(0.0) >= 1.0);

    // POST is not idempotent: a POST that meets the hole is answered 504, not retried.
    let mut saw_504 = false;
    for i in 0..4 {
        let echo_before = echo.count();
        let t = Instant::now();
        let r = post(sy.http(), &format!("/post/{i}"), "payload").await;
        match r.status.as_u16() {
            200 => {
                assert_eq!(r.backend(), "echo");
                assert_eq!(echo.count(), echo_before + 1);
            }
            504 => {
                assert!(r.header("x-backend").is_none());
                assert_eq!(r.json()["error"], "upstream timeout");
                assert_eq!(
                    echo.count(),
                    echo_before,
                    "a POST must not be retried on echo"
                );
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "504 after {:?}",
                    t.elapsed()
                );
                saw_504 = true;
                break;
            }
            s => panic!("POST {i}: unexpected {s}: {}", r.text()),
        }
    }
    assert!(saw_504, "no POST met the blackholed node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_for_any_method() {
    let dead = refusing_addr();
    let echo = Backend::start("echo", Behaviour::Echo).await;
    // Default retries: `{attempts: 1, on: [connect_failure]}`.
    let sy = Switchyard::start(&config(&[dead, echo.addr], ""));
    for i in 0..4 {
        let r = post(sy.http(), &format!("/p/{i}"), "payload").await;
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        assert_eq!(r.backend(), "echo");
    }
    assert_eq!(echo.count(), 4);
    let m = metrics(&sy).await;
    assert!(
        upstream(&m, dead, "connect_error") >= 1.0,
        "the dead node was tried"
    );
}

/// A body too large to keep for a retry (over the 64 KiB buffer) streams to the node and
/// cannot be sent twice — but a connect failure happens before any of it is read, so the
/// request comes back unsent and goes to another node whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_for_a_streamed_body() {
    let dead = refusing_addr();
    let sink = Backend::start("sink", Behaviour::Sink).await;
    let sy = Switchyard::start(&config(&[dead, sink.addr], ""));
    let payload = vec![7u8; 300 * 1024];
    for i in 0..4 {
        let r = post(sy.http(), &format!("/big/{i}"), payload.clone()).await;
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        assert_eq!(
            r.json()["len"],
            payload.len(),
            "POST {i}: the whole body arrived"
        );
    }
    assert_eq!(sink.count(), 4);
    let m = metrics(&sy).await;
    assert!(
        upstream(&m, dead, "connect_error") >= 1.0,
        "the dead node was tried"
    );
}

// ---- 4. passive ejection ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_a_node_until_the_ejection_time_is_over() {
    let good = Backend::start("good", Behaviour::Echo).await;
    let bad = Flaky::start("bad", 500).await;
    let extra = "    outlier_detection:\n      consecutive_failures: 3\n      base_ejection_time: 2s\n      \
                 max_ejection_percent: 50\n";
    let sy = Switchyard::start(&config(&[good.addr, bad.addr], extra));

    // Default retries (connect failures only): the 500s reach the client.
    let mut third_sent = None;
    for i in 0..20 {
        let t = Instant::now();
        let r = get(sy.http(), &format!("/e/{i}")).await;
        assert!(
            r.status == 200 || r.status == 500,
            "{} {}",
            r.status,
            r.text()
        );
        if bad.count() == 3 {
            third_sent = Some(t);
            break;
        }
    }
    let third_sent = third_sent.expect("bad got 3 requests");
    // Ejected before the third failure was answered.
    let doc = pools(&sy).await;
    assert_eq!(node_doc(&doc, "web", bad.addr)["ejected"], true, "{doc}");
    assert_eq!(node_doc(&doc, "web", good.addr)["ejected"], false, "{doc}");
    assert_eq!(
        node_doc(&doc, "web", bad.addr)["health"],
        "unknown",
        "no probes"
    );
    let lines = wait_node_logs(&sy, "node ejected", bad.addr, 1).await;
    assert_eq!(lines[0]["fields"]["ejection_seconds"], 2.0, "{}", lines[0]);
    assert!(lines[0]["fields"]["reason"].is_string());

    // While ejected, everything goes to good.
    let mut n = 0;
    while n < 10 && third_sent.elapsed() < Duration::from_millis(1500) {
        assert_eq!(get_ok(&sy, "/while-ejected").await, "good");
        n += 1;
    }
    assert!(n > 0, "no request made while the node was ejected");
    assert_eq!(bad.count(), 3);

    // It returns by itself when the ejection time is over.
    bad.set_status(200);
    wait_until("bad back from ejection", WAIT, || async {
        !ejected(&sy, "web", bad.addr).await
    })
    .await;
    let out_for = third_sent.elapsed();
    assert!(
        out_for >= Duration::from_millis(1950),
        "returned {out_for:?} after the third failure was sent; the ejection is 2 s"
    );
    assert!(
        out_for <= Duration::from_secs(5),
        "returned only after {out_for:?}"
    );
    let seq = spread(&sy, "/after", 10).await;
    assert!(hits(&seq, "bad") >= 3, "bad takes traffic again: {seq:?}");
    wait_node_logs(&sy, "node returned from ejection", bad.addr, 1).await;

    // Ejected again soon after: the ejection time doubles.
    bad.set_status(503);
    let before = bad.count();
    for i in 0..20 {
        let _ = get(sy.http(), &format!("/again/{i}")).await;
        if bad.count() == before + 3 {
            break;
        }
    }
    assert!(ejected(&sy, "web", bad.addr).await);
    let lines = wait_node_logs(&sy, "node ejected", bad.addr, 2).await;
    assert_eq!(lines[1]["fields"]["ejection_count"], 2, "{}", lines[1]);
    assert_eq!(lines[1]["fields"]["ejection_seconds"], 4.0, "{}", lines[1]);
}

/// With probes configured, an ejected node must pass a probe before it is trusted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejected_node_with_probes_must_pass_one_before_it_returns() {
    let good = Backend::start("good", Behaviour::Echo).await;
    let bad = Flaky::start("bad", 500).await;
    // unhealthy_threshold 20 × 250 ms: probes alone would not take bad down for ~5 s.
    let extra = format!(
        "{}    outlier_detection:\n      consecutive_failures: 3\n      base_ejection_time: 1s\n      \
         max_ejection_percent: 50\n",
        health_check(250, 1, 20)
    );
    let sy = Switchyard::start(&config(&[good.addr, bad.addr], &extra));
    wait_health(&sy, "web", &[good.addr, bad.addr], "up").await;

    // bad's /healthz fails from now on; three 500s on live traffic eject it.
    bad.set_healthy(false);
    // Once a failing probe was counted, no earlier (passing) probe can still land.
    let bad_label = bad.addr.to_string();
    wait_until("a failing probe of bad", WAIT, || async {
        let m = metrics(&sy).await;
        metric(
            &m,
            "switchyard_health_checks_total",
            &[("node", &bad_label), ("result", "failure")],
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    for i in 0..20 {
        let _ = get(sy.http(), &format!("/e/{i}")).await;
        if bad.count() == 3 {
            break;
        }
    }
    assert!(ejected(&sy, "web", bad.addr).await);
    bad.set_status(200);
    wait_until("the ejection time is over", WAIT, || async {
        !ejected(&sy, "web", bad.addr).await
    })
    .await;
    // Its probes kept failing: not trusted yet, so no traffic.
    let h = health(&sy, "web", bad.addr).await;
    assert_ne!(h, "up", "an ejected node came back without passing a probe");
    let seq = spread(&sy, "/after", 8).await;
    assert_eq!(hits(&seq, "bad"), 0, "{seq:?}");

    bad.set_healthy(true);
    wait_health(&sy, "web", &[bad.addr], "up").await;
    let seq = spread(&sy, "/later", 8).await;
    assert_eq!(hits(&seq, "bad"), 4, "{seq:?}");
}

// ---- 5. the max_ejection_percent cap --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_caps_how_many_nodes_are_ejected() {
    let mut bs = Vec::new();
    for name in ["x", "y", "z"] {
        bs.push(Backend::start(name, Behaviour::Status(500)).await);
    }
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let extra = "    outlier_detection:\n      consecutive_failures: 3\n      base_ejection_time: 20s\n      \
                 max_ejection_percent: 50\n";
    let sy = Switchyard::start(&config(&addrs, extra));

    let count_ejected = |doc: &Value| {
        addrs
            .iter()
            .filter(|a| node_doc(doc, "web", **a)["ejected"] == true)
            .count()
    };
    for round in 0..2 {
        for i in 0..30 {
            let r = get(sy.http(), &format!("/{round}/{i}")).await;
            assert_eq!(
                r.status,
                500,
                "the failing nodes still answer: {}",
                r.text()
            );
            assert!(
                r.header("x-backend").is_some(),
                "not a balancer-made answer"
            );
        }
        let doc = pools(&sy).await;
        assert_eq!(
            count_ejected(&doc),
            1,
            "3 failing nodes at 50 %: exactly one ejected (round {round}): {doc}"
        );
    }
    let lines = sy.log_messages("node ejected");
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The ejected node got no more traffic after the first round.
    let doc = pools(&sy).await;
    let out = bs
        .iter()
        .find(|b| node_doc(&doc, "web", b.addr)["ejected"] == true)
        .expect("the ejected node");
    assert!(
        out.count() <= 5,
        "{} got {} requests",
        out.name,
        out.count()
    );
}

// ---- 6. slow start --------------------------------------------------------------------------

/// A pool `web` of two nodes with `slow_start: 6s` and `strategy`; a third node is added by
/// a SIGHUP reload; then GETs for `SLOW_START_SECONDS` seconds from `clients` concurrent
/// sequential loops, against backends that behave as `behaviour`. Returns the new node's
/// share of each second's requests, and the request counts.
const SLOW_START_SECONDS: usize = 7;

async fn slow_start_shares(strategy: &str) -> (Vec<f64>, Vec<usize>) {
    slow_start_shares_with(strategy, Behaviour::Echo, 1).await
}

async fn slow_start_shares_with(
    strategy: &str,
    behaviour: Behaviour,
    clients: usize,
) -> (Vec<f64>, Vec<usize>) {
    let a = Backend::start("a", behaviour.clone()).await;
    let b = Backend::start("b", behaviour.clone()).await;
    let extra = if strategy == "consistent_hash" {
        "    hash_key: path\n    slow_start: 6s\n"
    } else {
        "    slow_start: 6s\n"
    };
    let sy = Switchyard::start(&single_pool_config(strategy, &[a.addr, b.addr], extra));
    let client = ka_client();
    for i in 0..10 {
        let r = ka_get(&client, &sy.url(&format!("/warm/{i}")))
            .await
            .expect("warm-up GET");
        assert_eq!(r.status, 200);
    }

    let c = Backend::start("c", behaviour).await;
    sy.reload(&single_pool_config(
        strategy,
        &[a.addr, b.addr, c.addr],
        extra,
    ));
    let t0 = Instant::now();
    let mut loops = Vec::new();
    for l in 0..clients {
        let client = client.clone();
        let base = sy.url("/ss");
        loops.push(tokio::spawn(async move {
            // (second, answered by c) for every request of this loop.
            let mut seen = Vec::new();
            let mut i = 0u64;
            loop {
                let sec = t0.elapsed().as_secs() as usize;
                if sec >= SLOW_START_SECONDS {
                    break seen;
                }
                i += 1;
                let r = ka_get(&client, &format!("{base}/{l}/{i}"))
                    .await
                    .expect("GET");
                assert_eq!(r.status, 200);
                seen.push((sec, r.backend.as_deref() == Some("c")));
                // Leave some CPU to the other tests on a 2-core machine.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let mut total = vec![0usize; SLOW_START_SECONDS];
    let mut to_c = vec![0usize; SLOW_START_SECONDS];
    for l in loops {
        for (sec, is_c) in l.await.expect("client loop") {
            // A request started in the last second may finish just after it.
            let sec = sec.min(SLOW_START_SECONDS - 1);
            total[sec] += 1;
            to_c[sec] += usize::from(is_c);
        }
    }
    let share: Vec<f64> = (0..SLOW_START_SECONDS)
        .map(|s| to_c[s] as f64 / total[s].max(1) as f64)
        .collect();
    eprintln!("FIGURES slow-start 6s {strategy}: share of the new node per second {share:.3?} (requests {total:?})");
    for (s, n) in total.iter().enumerate() {
        assert!(
            *n >= 30,
            "too few requests in second {s} to measure a share: {total:?}"
        );
    }
    (share, to_c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_nodes_share() {
    let (share, to_c) = slow_start_shares("round_robin").await;
    let (first, last) = (share[0], share[SLOW_START_SECONDS - 1]);
    assert!(
        to_c[0] >= 1,
        "the new node gets some traffic at once (floor): {share:?}"
    );
    assert!(
        first < 0.5 * last,
        "first-second share {first:.3} should be well below the final {last:.3}: {share:?}"
    );
    assert!(
        last >= 0.22,
        "after the window the new node has a full share: {share:?}"
    );
}

/// The issue: "Every strategy honours it, p2c_ewma included (seed new nodes with a
/// conservative latency, never zero)". The seed must not keep a new node out for good.
///
/// p2c_ewma follows measured latency. With one sequential client on backends answering in
/// ~300 µs, a single scheduler hiccup on this shared machine (a 5 ms answer, a 16x peak)
/// makes that node the most expensive for tens of seconds, since nothing else in the cost
/// differs: the share then swings with noise, not with slow start (a CI run saw the new node
/// at 0 % for the last two seconds). So this runs the way p2c is meant to be used: three
/// concurrent clients, so in-flight counts weigh in, against backends answering in 10 ms,
/// so a hiccup of a few milliseconds is a small relative peak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_nodes_share_p2c_ewma() {
    let (share, to_c) =
        slow_start_shares_with("p2c_ewma", Behaviour::Slow(Duration::from_millis(10)), 3).await;
    let first = share[0];
    let late = share[SLOW_START_SECONDS - 2..].iter().sum::<f64>() / 2.0;
    assert!(
        late >= 0.18,
        "a new p2c_ewma node must reach a real share (1/3 at full weight), got {share:?}"
    );
    assert!(first < 0.6 * late, "no ramp: {share:?}");
    assert!(
        to_c[0] >= 1,
        "the new node gets some traffic at once (floor): {share:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_nodes_share_least_conn() {
    let (share, to_c) = slow_start_shares("least_conn").await;
    let (first, last) = (share[0], share[SLOW_START_SECONDS - 1]);
    assert!(
        last >= 0.22,
        "after the window the new node has a full share: {share:?}"
    );
    assert!(first < 0.5 * last, "no ramp: {share:?}");
    assert!(
        to_c[0] >= 1,
        "the new node gets some traffic at once (floor): {share:?}"
    );
}

// ---- 7. the retry budget --------------------------------------------------------------------

/// Three nodes all answering 503; `n` sequential GETs with `attempts: 2, on: [503]` and
/// `budget_percent`. Returns (upstream attempts, retries metric, elapsed).
async fn full_outage(budget_percent: u32, n: usize) -> (usize, f64, Duration) {
    let mut bs = Vec::new();
    for name in ["p", "q", "r"] {
        bs.push(Backend::start(name, Behaviour::Status(503)).await);
    }
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let extra = format!(
        "    retries:\n      attempts: 2\n      on: [503]\n      budget_percent: {budget_percent}\n"
    );
    let sy = Switchyard::start(&config(&addrs, &extra));
    let client = ka_client();
    let url = sy.url("/outage");
    let t = Instant::now();
    for i in 0..n {
        let r = ka_get(&client, &url).await.expect("GET");
        assert_eq!(r.status, 503, "request {i}: every node answers 503");
    }
    let elapsed = t.elapsed();
    let attempts: usize = bs.iter().map(|b| b.count()).sum();
    let m = metrics(&sy).await;
    let retries = metric(&m, "switchyard_retries_total", &[("pool", "web")]).unwrap_or(0.0);
    (attempts, retries, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_retries_when_every_node_fails() {
    const N: usize = 300;
    let (on, on_retries, on_time) = full_outage(20, N).await;
    let (off, off_retries, off_time) = full_outage(100, N).await;
    eprintln!(
        "FIGURES full outage, {N} GETs, attempts 2: budget 20 % → {on} upstream attempts \
         (+{:.0} %) in {on_time:?}; budget 100 % → {off} (+{:.0} %) in {off_time:?}; \
         no budget would be {}",
        (on - N) as f64 * 100.0 / N as f64,
        (off - N) as f64 * 100.0 / N as f64,
        3 * N
    );
    // The bound holds while all N requests are in one 10 s window.
    assert!(
        on_time < Duration::from_secs(9),
        "{N} GETs took {on_time:?}"
    );
    let cap = N + (N / 5).max(30);
    assert!(
        on <= cap,
        "budget 20 %: {on} attempts for {N} requests; at most {cap}"
    );
    assert!(
        on > N,
        "retries do happen within the budget ({on} attempts)"
    );
    assert_eq!(on_retries as usize, on - N, "switchyard_retries_total");
    assert_eq!(off_retries as usize, off - N, "switchyard_retries_total");
    assert!(
        off > on,
        "a larger budget allows more retries ({off} vs {on})"
    );
    assert!(
        off <= 2 * N + 30,
        "budget 100 %: {off} attempts for {N} requests"
    );
}

// ---- 8. state across a snapshot swap ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_and_ejected_nodes_keep_their_state_across_a_reload() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let c = Backend::start("c", Behaviour::Echo).await;
    let x = Flaky::start("x", 200).await;
    let y = Backend::start("y", Behaviour::Echo).await;
    let web_extra = health_check(400, 1, 3);
    let ej_extra = "    outlier_detection:\n      consecutive_failures: 3\n      base_ejection_time: 30s\n      \
                    max_ejection_percent: 50\n";
    let yaml = |extra_route: &str, c_weight: u32| {
        format!(
            "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\nroutes:\n{extra_route}  \
             - path_prefix: /ej\n    pool: ej\n  - pool: web\npools:\n{}{}",
            pool_yaml("web", "round_robin", &[(a.addr, 1), (b.addr, 1), (c.addr, c_weight)], &web_extra),
            pool_yaml("ej", "round_robin", &[(x.addr, 1), (y.addr, 1)], ej_extra),
        )
    };
    let sy = Switchyard::start(&yaml("", 1));
    wait_health(&sy, "web", &[a.addr, b.addr, c.addr], "up").await;

    b.set_healthy(false);
    wait_health(&sy, "web", &[b.addr], "down").await;
    x.set_status(502);
    for i in 0..20 {
        let _ = get(sy.http(), &format!("/ej/{i}")).await;
        if x.count() == 3 {
            break;
        }
    }
    assert!(ejected(&sy, "ej", x.addr).await, "x ejected");

    // An unrelated change: a new route and another node's weight.
    sy.reload(&yaml("  - path_prefix: /extra\n    pool: web\n", 2));
    let doc = pools(&sy).await;
    assert_eq!(
        node_doc(&doc, "web", c.addr)["weight"],
        2,
        "the reload took effect"
    );
    assert_eq!(
        node_doc(&doc, "web", b.addr)["health"],
        "down",
        "b stays down: {doc}"
    );
    assert_eq!(node_doc(&doc, "web", a.addr)["health"], "up", "{doc}");
    assert_eq!(
        node_doc(&doc, "ej", x.addr)["ejected"],
        true,
        "x stays ejected: {doc}"
    );
    let seq = spread(&sy, "/extra/1", 12).await;
    assert_eq!(hits(&seq, "b"), 0, "{seq:?}");
    let x_before = x.count();
    let seq = spread(&sy, "/ej/after", 6).await;
    assert!(seq.iter().all(|s| s == "y"), "{seq:?}");
    assert_eq!(x.count(), x_before);
    // Still true a probe interval later: the probe of b was not restarted from scratch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health(&sy, "web", b.addr).await, "down");
    assert_eq!(
        node_logs(&sy, "node down: health check failed", b.addr).len(),
        1,
        "no second down transition"
    );
}

// ---- 9. failover edges ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_answers_503_at_once() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let extra = format!(
        "{}    timeouts:\n      request: 30s\n",
        health_check(300, 1, 2)
    );
    let sy = Switchyard::start(&config(&[a.addr, b.addr], &extra));
    wait_health(&sy, "web", &[a.addr, b.addr], "up").await;
    a.set_healthy(false);
    b.set_healthy(false);
    wait_health(&sy, "web", &[a.addr, b.addr], "down").await;
    let before = a.count() + b.count();
    let t = Instant::now();
    let r = get(sy.http(), "/nothing-up").await;
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "no healthy upstream");
    assert!(r.header("x-backend").is_none());
    assert!(
        took < Duration::from_secs(2),
        "503 after {took:?}: must not wait for anything"
    );
    assert_eq!(a.count() + b.count(), before, "no node was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_saturated_answers_503() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let extra = "    max_connections_per_node: 1\n    timeouts:\n      request: 30s\n";
    let sy = Switchyard::start(&config(&[a.addr, b.addr], extra));
    assert_eq!(spread(&sy, "/warm", 2).await.len(), 2);
    a.hold();
    b.hold();
    let addr = sy.http();
    let first = tokio::spawn(async move { get(addr, "/slow/1").await });
    wait_until("one request held", WAIT, || async {
        a.in_flight() + b.in_flight() == 1
    })
    .await;
    let second = tokio::spawn(async move { get(addr, "/slow/2").await });
    wait_until("one request held on each node", WAIT, || async {
        a.in_flight() == 1 && b.in_flight() == 1
    })
    .await;
    let doc = pools(&sy).await;
    for n in [a.addr, b.addr] {
        assert_eq!(node_doc(&doc, "web", n)["active_requests"], 1, "{doc}");
    }

    let t = Instant::now();
    let r = get(sy.http(), "/third").await;
    assert_eq!(r.status, 503, "every node at its cap: {}", r.text());
    assert_eq!(r.json()["error"], "no healthy upstream");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "503 after {:?}",
        t.elapsed()
    );
    assert_eq!(
        a.count() + b.count(),
        4,
        "the third request reached no node"
    );

    a.release();
    b.release();
    for h in [first, second] {
        let r = h.await.expect("held request");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(spread(&sy, "/free", 2).await.len(), 2, "capacity is back");
}

// ---- 10. upstream timeouts ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_gives_504_and_counts_as_a_failure() {
    let hole = Backend::start("hole", Behaviour::Hang).await;
    let extra = "    timeouts:\n      connect: 1s\n      request: 400ms\n    outlier_detection:\n      \
                 consecutive_failures: 2\n      base_ejection_time: 20s\n      max_ejection_percent: 100\n";
    let sy = Switchyard::start(&config(&[hole.addr], extra));
    for i in 0..2 {
        let t = Instant::now();
        let r = get(sy.http(), &format!("/t/{i}")).await;
        assert_eq!(r.status, 504, "{}", r.text());
        assert_eq!(r.json()["error"], "upstream timeout");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "504 after {:?}",
            t.elapsed()
        );
    }
    let m = metrics(&sy).await;
    assert_eq!(upstream(&m, hole.addr, "timeout"), 2.0);
    // Two timeouts are two failures: the node is ejected and the pool has nothing left.
    assert!(ejected(&sy, "web", hole.addr).await);
    let r = get(sy.http(), "/t/after").await;
    assert_eq!(r.status, 503, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_gives_504_and_counts_as_a_failure() {
    // A listener with a backlog of 0 whose queue is full: further SYNs are dropped, so a
    // connect neither succeeds nor is refused.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let listener = sock.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => break,
        }
    }
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(addr),
    )
    .await;
    assert!(
        probe.is_err(),
        "precondition: a connect to {addr} must hang"
    );

    let extra = "    timeouts:\n      connect: 300ms\n      request: 10s\n    outlier_detection:\n      \
                 consecutive_failures: 2\n      base_ejection_time: 20s\n      max_ejection_percent: 100\n";
    let sy = Switchyard::start(&config(&[addr], extra));
    for i in 0..2 {
        let t = Instant::now();
        let r = get(sy.http(), &format!("/c/{i}")).await;
        assert_eq!(r.status, 504, "{}", r.text());
        assert_eq!(r.json()["error"], "upstream timeout");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "504 after {:?}",
            t.elapsed()
        );
    }
    let m = metrics(&sy).await;
    assert_eq!(
        upstream(&m, addr, "timeout"),
        2.0,
        "connect timeouts count as timeouts"
    );
    assert_eq!(upstream(&m, addr, "connect_error"), 0.0);
    assert!(ejected(&sy, "web", addr).await, "and as failures");
    let r = get(sy.http(), "/c/after").await;
    assert_eq!(r.status, 503, "{}", r.text());
    drop(listener);
}
