//! Operating a running balancer (issue 5): hot reload (SIGHUP, file watch, admin API),
//! reloads under load and across upgraded connections, balancing state carried over a
//! reload, graceful shutdown, the access log, and the Prometheus tooling (`promtool`).
//!
//! Everything runs the real binary in front of real backends on kernel-chosen ports. Waits
//! are bounded polls; the only sleeps pace a load or a reload cadence.
//! `tests/admin.rs` covers drain/undrain and the `/api/v1/pools` shape and `tests/proxy.rs`
//! SIGTERM with a held request and `/readyz` while draining; this file does not repeat them.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::client::{collect, get, get_with, request, send, try_get, within};
use common::wait_until;
use common::{
    metric, parse_metrics, pool_yaml, unique_dir, Backend, Behaviour, Resp, Sample, Switchyard,
    WAIT,
};

// ---- helpers ----------------------------------------------------------------------------

/// The environment variable the test configs name in `admin.token_env`, and its value.
const TOKEN_ENV: &str = "SY_OPS_TEST_ADMIN_TOKEN";
const TOKEN: &str = "ops-test-t0ken";

/// The log message of a rejected reload (one line per error).
const REJECTED: &str = "config reload rejected; the old config keeps serving";

/// One `http` listener and the admin API on 127.0.0.1:0 (mutations enabled through
/// [`TOKEN_ENV`]), a catch-all route to pool `web`; `top` is spliced in before `routes:`
/// (top-level keys such as `shutdown_timeout`), `pool_extra` into the pool.
fn config(strategy: &str, nodes: &[(SocketAddr, u32)], pool_extra: &str, top: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n  token_env: {TOKEN_ENV}\n{top}routes:\n  - pool: web\npools:\n{}",
        pool_yaml("web", strategy, nodes, pool_extra)
    )
}

/// Start a balancer and wait until it catches SIGHUP and SIGTERM, so that a test about
/// reloads or shutdown is not hit by the start-up race that
/// `signals_right_after_ready_are_handled` exposes (the handlers are installed after
/// `switchyard ready` is logged). Linux: reads `SigCgt` in `/proc/PID/status`; elsewhere it
/// only starts the balancer.
async fn start(yaml: &str, env: &[(&str, &str)]) -> Switchyard {
    let sy = Switchyard::start_with_env(yaml, env);
    let status = format!("/proc/{}/status", sy.pid());
    // Bits are signal number - 1: SIGHUP = 1, SIGTERM = 15.
    let want: u64 = (1 << 0) | (1 << 14);
    let caught = || -> Option<u64> {
        let text = std::fs::read_to_string(&status).ok()?;
        let mask = text.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
        u64::from_str_radix(mask.trim(), 16).ok()
    };
    let deadline = Instant::now() + WAIT;
    while let Some(mask) = caught() {
        if mask & want == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "switchyard did not install its SIGHUP/SIGTERM handlers within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sy
}

/// Wait until the file watch has taken its first look at the config file, so that a test
/// of file-watch reloads is not hit by the start-up race that
/// `file_watch_sees_an_edit_made_right_after_start` exposes: append a comment (a change of
/// bytes, not of meaning) until the watch reports a change, then wait for that reload.
async fn wait_for_file_watch(sy: &Switchyard) {
    let path = sy.config_path().to_path_buf();
    let original = std::fs::read_to_string(&path).expect("read the config");
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        let seen = sy.log_messages("config file changed: reloading").len();
        let reloaded = sy.log_messages("config reloaded").len();
        write_atomically(&path, &format!("{original}# watch probe {n}\n"));
        let probe_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < probe_until {
            if sy.log_messages("config file changed: reloading").len() > seen {
                sy.wait_for_message("config reloaded", reloaded, WAIT);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            Instant::now() < deadline,
            "the file watch never reported a change of {}",
            path.display()
        );
    }
}

/// The `/api/v1/pools` document.
async fn pools_doc(sy: &Switchyard) -> Value {
    let r = get(sy.admin_addr(), "/api/v1/pools").await;
    assert_eq!(r.status, 200, "/api/v1/pools: {}", r.text());
    r.json()
}

/// Pool `name` of a pools document.
fn pool_of<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no pool {name} in {doc}"))
}

/// `(addr, weight)` of every node of pool `name`, in document order.
fn nodes_of(doc: &Value, name: &str) -> Vec<(String, u64)> {
    pool_of(doc, name)["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("pool {name} has no `nodes` array: {doc}"))
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().expect("addr is a string").to_string(),
                n["weight"].as_u64().expect("weight is a number"),
            )
        })
        .collect()
}

/// The node `addr` of pool `pool`.
fn node_of<'a>(doc: &'a Value, pool: &str, addr: SocketAddr) -> &'a Value {
    pool_of(doc, pool)["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["addr"] == addr.to_string()))
        .unwrap_or_else(|| panic!("node {addr} not in pool {pool}: {doc}"))
}

/// Wait until pool `web` has exactly `nodes`. The harness's `reload` returns on the first
/// `config reloaded` line after it rewrote the file, and since the file watch also reloads
/// on every write, that line can (rarely) belong to a reload that read the file just before
/// the write; the state is the reliable sign.
async fn applied(sy: &Switchyard, nodes: &[(SocketAddr, u32)]) {
    let want = expect_nodes(nodes);
    wait_until(&format!("pool web to have {want:?}"), WAIT, || async {
        nodes_of(&pools_doc(sy).await, "web") == want
    })
    .await;
}

fn expect_nodes(nodes: &[(SocketAddr, u32)]) -> Vec<(String, u64)> {
    nodes
        .iter()
        .map(|(a, w)| (a.to_string(), u64::from(*w)))
        .collect()
}

async fn metrics(sy: &Switchyard) -> Vec<Sample> {
    let r = get(sy.admin_addr(), "/metrics").await;
    assert_eq!(r.status, 200);
    parse_metrics(&r.text())
}

/// `switchyard_config_reloads_total{result}`; an unexported series counts as 0.
async fn reloads(sy: &Switchyard, result: &str) -> f64 {
    metric(
        &metrics(sy).await,
        "switchyard_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// Which backend answered each of `n` sequential GETs, counted per backend.
async fn split(sy: &Switchyard, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let r = get(sy.http(), &format!("/split/{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        *counts.entry(r.backend()).or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `POST path` on the admin API, with `Authorization: Bearer token` when given.
async fn admin_post(sy: &Switchyard, path: &str, token: Option<&str>) -> Resp {
    let mut b = request(Method::POST, path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    collect(
        send(
            sy.admin_addr(),
            b.body(Empty::<Bytes>::new()).expect("request"),
        )
        .await,
    )
    .await
}

/// Replace `path` the way editors and `kubectl cp`-style tools do: write a new file next to
/// it, then rename it over the old one (a new inode).
fn write_atomically(path: &Path, yaml: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    std::fs::write(&tmp, yaml).expect("write the new config next to the old one");
    std::fs::rename(&tmp, path).expect("rename the new config over the old one");
}

/// `FILE:LINE:COLUMN: message` → `(line, column)` when `err` starts with `file:`.
fn position(err: &str, file: &Path) -> Option<(usize, usize)> {
    let rest = err.strip_prefix(&format!("{}:", file.display()))?;
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?.parse().ok()?;
    let column = parts.next()?.parse().ok()?;
    let message = parts.next()?;
    (message.starts_with(' ') && line > 0 && column > 0).then_some((line, column))
}

/// The 1-based number of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
        + 1
}

/// Read an HTTP/1.1 response head (up to the blank line) byte by byte.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await.expect("read the response head");
        assert!(
            n > 0,
            "connection closed in the response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
        assert!(head.len() < 16 * 1024, "response head too long");
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The `promtool` binary on PATH, if any.
fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

fn skip_without_promtool(test: &str) -> Option<PathBuf> {
    let p = promtool();
    if p.is_none() {
        eprintln!(
            "SKIPPED {test}: `promtool` is not on PATH. Install the Debian package `prometheus` \
             (apt-get install prometheus) to run this test."
        );
    }
    p
}

// ---- 1. SIGHUP ----------------------------------------------------------------------------

/// Editing the file and sending SIGHUP adds a node and changes a weight: the admin API shows
/// the new node set and the traffic split follows the new weights exactly (smooth weighted
/// round robin over a 5-slot cycle: 50 sequential requests are 10 cycles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_after_an_edit_adds_a_node_and_changes_a_weight() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let c = Backend::start("c", Behaviour::Echo).await;
    let before = [(a.addr, 1), (b.addr, 1)];
    let sy = start(&config("weighted_round_robin", &before, "", ""), &[]).await;

    assert_eq!(
        nodes_of(&pools_doc(&sy).await, "web"),
        expect_nodes(&before)
    );
    assert_eq!(split(&sy, 10).await, counts(&[("a", 5), ("b", 5)]));

    let after = [(a.addr, 1), (b.addr, 3), (c.addr, 1)];
    sy.reload(&config("weighted_round_robin", &after, "", ""));
    sy.wait_for_message("SIGHUP: reloading the config", 0, WAIT);
    // `reload` returns on the first `config reloaded` after the write; wait for the new
    // node set to be sure it is this file's (see `applied`).
    applied(&sy, &after).await;

    let doc = pools_doc(&sy).await;
    assert_eq!(nodes_of(&doc, "web"), expect_nodes(&after), "{doc}");
    let new = node_of(&doc, "web", c.addr);
    assert_eq!(new["source"], "static", "{new}");
    assert_eq!(new["draining"], false, "{new}");
    assert_eq!(new["active_requests"], 0, "{new}");

    assert_eq!(
        split(&sy, 50).await,
        counts(&[("a", 10), ("b", 30), ("c", 10)]),
        "weights 1:3:1 after the reload"
    );
    assert!(
        reloads(&sy, "success").await >= 1.0,
        "config_reloads_total{{result=\"success\"}} counts the reload"
    );
    assert_eq!(reloads(&sy, "failure").await, 0.0);
}

// ---- 2. invalid edits ---------------------------------------------------------------------

/// An invalid file is rejected as a whole: the old config keeps serving, every error is
/// logged as FILE:LINE:COLUMN, the failure is counted, and `POST /api/v1/reload` answers 400
/// with the errors; once the file is fixed the same call answers 200 and applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_keeps_the_old_config_and_is_reported() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let c = Backend::start("c", Behaviour::Echo).await;
    let good = [(a.addr, 1), (b.addr, 1)];
    let sy = start(&config("round_robin", &good, "", ""), &[(TOKEN_ENV, TOKEN)]).await;
    let path = sy.config_path().to_path_buf();

    // Two errors in one edit that also adds node c: an unknown strategy and a weight of 0.
    let bad = config(
        "round_robbin",
        &[(a.addr, 1), (b.addr, 1), (c.addr, 0)],
        "",
        "",
    );
    let strategy_line = line_of(&bad, "strategy: round_robbin");
    let weight_line = line_of(&bad, "weight: 0");
    std::fs::write(&path, &bad).expect("write the invalid config");
    sy.signal("HUP");
    // One log line per error; wait for both.
    sy.wait_for_message(REJECTED, 1, WAIT);

    let errors: Vec<String> = sy
        .log_messages(REJECTED)
        .iter()
        .map(|v| {
            v["fields"]["error"]
                .as_str()
                .unwrap_or_else(|| panic!("the rejection names no error: {v}"))
                .to_string()
        })
        .collect();
    let at_line = |line: usize| {
        errors
            .iter()
            .find(|e| position(e, &path).is_some_and(|(l, _)| l == line))
            .unwrap_or_else(|| {
                panic!(
                    "no logged error at {}:{line}:COLUMN in {errors:#?}",
                    path.display()
                )
            })
    };
    assert!(
        at_line(strategy_line).contains("round_robbin"),
        "{errors:#?}"
    );
    assert!(at_line(weight_line).contains("weight"), "{errors:#?}");
    assert!(
        sy.log_messages("config reloaded").is_empty(),
        "an invalid file must not be applied"
    );

    // The old config keeps serving: only a and b, round robin, c never sees a request.
    assert_eq!(split(&sy, 10).await, counts(&[("a", 5), ("b", 5)]));
    assert_eq!(c.count(), 0, "the rejected node got traffic");
    let doc = pools_doc(&sy).await;
    assert_eq!(nodes_of(&doc, "web"), expect_nodes(&good), "{doc}");
    assert_eq!(pool_of(&doc, "web")["strategy"], "round_robin");
    assert!(
        reloads(&sy, "failure").await >= 1.0,
        "config_reloads_total{{result=\"failure\"}} counts the rejection"
    );
    assert_eq!(reloads(&sy, "success").await, 0.0);

    // The admin API reports the same errors with a 400.
    let failures = reloads(&sy, "failure").await;
    let r = admin_post(&sy, "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    let list: Vec<&str> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("`errors` is an array: {body}"))
        .iter()
        .map(|e| e.as_str().expect("each error is a string"))
        .collect();
    assert_eq!(list.len(), 2, "both errors: {body}");
    let lines: Vec<usize> = list
        .iter()
        .map(|e| {
            position(e, &path)
                .unwrap_or_else(|| panic!("not FILE:LINE:COLUMN: message: {e:?}"))
                .0
        })
        .collect();
    assert_eq!(lines, vec![strategy_line, weight_line], "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        reloads(&sy, "failure").await > failures,
        "the rejected admin reload is counted"
    );
    assert_eq!(split(&sy, 4).await, counts(&[("a", 2), ("b", 2)]));
    assert_eq!(c.count(), 0);

    // Fixed: the admin reload answers 200 and the new node set serves.
    let fixed = [(a.addr, 1), (b.addr, 1), (c.addr, 2)];
    std::fs::write(&path, config("weighted_round_robin", &fixed, "", "")).expect("write");
    let r = admin_post(&sy, "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "reloaded");
    let doc = pools_doc(&sy).await;
    assert_eq!(nodes_of(&doc, "web"), expect_nodes(&fixed), "{doc}");
    assert_eq!(pool_of(&doc, "web")["strategy"], "weighted_round_robin");
    assert_eq!(split(&sy, 8).await, counts(&[("a", 2), ("b", 2), ("c", 4)]));
    assert!(reloads(&sy, "success").await >= 1.0);
}

// ---- 3. reloads under load --------------------------------------------------------------

/// One HTTP/1.1 keep-alive connection to `addr`.
async fn keep_alive(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[derive(Default)]
struct LoadReport {
    ok: usize,
    /// Every request that did not end in a 200, with why.
    failures: Vec<String>,
    /// Connections the clients had to open (one each when nothing closes them).
    connections: usize,
    by_backend: HashMap<String, usize>,
}

/// GET in a loop on one keep-alive connection until `stop`; reconnect only when the
/// connection is gone.
async fn load_client(
    addr: SocketAddr,
    id: usize,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
) {
    let mut sender = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if sender.is_none() {
            report.lock().unwrap().connections += 1;
            match keep_alive(addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    report
                        .lock()
                        .unwrap()
                        .failures
                        .push(format!("client {id}: connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected");
        if let Err(e) = within("keep-alive connection ready", WAIT, s.ready()).await {
            report.lock().unwrap().failures.push(format!(
                "client {id}: the connection closed between requests: {e}"
            ));
            sender = None;
            continue;
        }
        i += 1;
        let req = Request::get(format!("/load/{id}/{i}"))
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request");
        let res = tokio::time::timeout(WAIT, async {
            let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts.status, parts.headers, body))
        })
        .await;
        let mut rep = report.lock().unwrap();
        match res {
            Ok(Ok((status, headers, _))) if status == StatusCode::OK => {
                rep.ok += 1;
                let backend = headers
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string();
                *rep.by_backend.entry(backend).or_insert(0) += 1;
            }
            Ok(Ok((status, _, body))) => rep.failures.push(format!(
                "client {id}: status {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Ok(Err(e)) => {
                rep.failures
                    .push(format!("client {id}: request failed: {e}"));
                sender = None;
            }
            Err(_) => {
                rep.failures
                    .push(format!("client {id}: no answer within {WAIT:?}"));
                sender = None;
            }
        }
    }
}

/// 16 clients loop GETs on keep-alive connections for ~15 s while the config is reloaded
/// every second, alternating between two valid configs (a weight change plus a node that
/// comes and goes). Not one request may fail and no client connection may be closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_every_second_under_load_fails_no_request() {
    const CLIENTS: usize = 16;
    const RELOADS: usize = 14;
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let c = Backend::start("c", Behaviour::Echo).await;
    let one = config("weighted_round_robin", &[(a.addr, 1), (b.addr, 1)], "", "");
    let two = config(
        "weighted_round_robin",
        &[(a.addr, 1), (b.addr, 3), (c.addr, 1)],
        "",
        "",
    );
    let sy = start(&one, &[]).await;
    let http = sy.http();

    let stop = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(load_client(
                http,
                id,
                Arc::clone(&stop),
                Arc::clone(&report),
            ))
        })
        .collect();

    // Let the load start before the first reload.
    common::eventually("the load to start", WAIT, || {
        report.lock().unwrap().ok >= CLIENTS
    })
    .await;
    let t0 = Instant::now();
    for i in 0..RELOADS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sy.reload(if i % 2 == 0 { &two } else { &one });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        within("a load client to stop", WAIT, c)
            .await
            .expect("load client task");
    }
    let loaded_for = t0.elapsed();

    {
        let rep = report.lock().unwrap();
        eprintln!(
            "{} requests in {loaded_for:?} over {RELOADS} reloads; per backend {:?}",
            rep.ok, rep.by_backend
        );
        assert!(
            rep.failures.is_empty(),
            "{} of {} requests failed during reloads; first ones: {:#?}",
            rep.failures.len(),
            rep.ok + rep.failures.len(),
            &rep.failures[..rep.failures.len().min(10)]
        );
        assert_eq!(
            rep.connections, CLIENTS,
            "a reload closed client keep-alive connections"
        );
        assert!(
            rep.ok >= 20 * RELOADS,
            "too little load to mean anything: {} requests",
            rep.ok
        );
        assert!(
            rep.by_backend.get("c").copied().unwrap_or(0) > 0 && c.count() > 0,
            "the node added by every other reload served: {:?}",
            rep.by_backend
        );
        assert_eq!(
            rep.by_backend.values().sum::<usize>(),
            a.count() + b.count() + c.count(),
            "every request reached a backend once"
        );
    }
    assert!(reloads(&sy, "success").await >= RELOADS as f64);
    assert_eq!(reloads(&sy, "failure").await, 0.0);
}

// ---- 4. file watch ------------------------------------------------------------------------

/// Without any signal, replacing the file by an atomic rename (a new inode, as editors and
/// ConfigMap volumes do) is noticed and applied, twice in a row (the watch survives the
/// inode change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_applies_an_atomic_rename() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let c = Backend::start("c", Behaviour::Echo).await;
    let sy = start(&config("weighted_round_robin", &[(a.addr, 1)], "", ""), &[]).await;
    assert_eq!(split(&sy, 2).await, counts(&[("a", 2)]));
    wait_for_file_watch(&sy).await;
    let signals = sy.log_messages("SIGHUP: reloading the config").len();
    let watched = sy.log_messages("config file changed: reloading").len();
    let path = sy.config_path().to_path_buf();

    let first = [(a.addr, 1), (b.addr, 2)];
    write_atomically(&path, &config("weighted_round_robin", &first, "", ""));
    wait_until("the renamed file to be applied (b added)", WAIT, || async {
        nodes_of(&pools_doc(&sy).await, "web") == expect_nodes(&first)
    })
    .await;
    assert_eq!(split(&sy, 6).await, counts(&[("a", 2), ("b", 4)]));

    // Again, on the new inode: a removed, b re-weighted, c added.
    let second = [(b.addr, 5), (c.addr, 1)];
    write_atomically(&path, &config("weighted_round_robin", &second, "", ""));
    wait_until("the second rename to be applied", WAIT, || async {
        nodes_of(&pools_doc(&sy).await, "web") == expect_nodes(&second)
    })
    .await;
    let a_before = a.count();
    assert_eq!(split(&sy, 12).await, counts(&[("b", 10), ("c", 2)]));
    assert_eq!(a.count(), a_before, "a removed node got traffic");

    assert!(
        sy.log_messages("config file changed: reloading").len() >= watched + 2,
        "both reloads came from the file watch"
    );
    assert_eq!(
        sy.log_messages("SIGHUP: reloading the config").len(),
        signals,
        "no signal was sent"
    );
    assert!(reloads(&sy, "success").await >= 3.0);
}

// ---- 5. WebSocket across reloads ----------------------------------------------------------

/// A WebSocket opened through the balancer keeps echoing across ten reloads that change the
/// pool it came through (weight changes, a node added and removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_survives_ten_reloads() {
    let ws = Backend::start("ws", Behaviour::WebSocketEcho).await;
    let other = Backend::start("other", Behaviour::Echo).await;
    let one = config("weighted_round_robin", &[(ws.addr, 1)], "", "");
    let two = config(
        "weighted_round_robin",
        &[(ws.addr, 2), (other.addr, 1)],
        "",
        "",
    );
    let sy = start(&one, &[]).await;

    let mut s = within("connect", WAIT, TcpStream::connect(sy.http()))
        .await
        .expect("connect");
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        sy.http()
    );
    s.write_all(handshake.as_bytes()).await.expect("write");
    let head = within("the 101 answer", WAIT, read_head(&mut s)).await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "expected 101, got: {head}"
    );

    async fn echo(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).await.expect("write to the WebSocket");
        let mut back = vec![0u8; msg.len()];
        within("the echo", WAIT, s.read_exact(&mut back))
            .await
            .expect("read the echo: the upgraded connection was closed");
        assert_eq!(back, msg);
    }
    echo(&mut s, b"before any reload").await;

    for i in 0..10 {
        sy.reload(if i % 2 == 0 { &two } else { &one });
        echo(&mut s, format!("after reload {}", i + 1).as_bytes()).await;
    }
    assert!(sy.log_messages("config reloaded").len() >= 10);
    // Larger than a socket buffer's worth in one go, still on the same connection.
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.into_split();
    let expected = big.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&big).await.expect("write 256 KiB");
        w
    });
    let mut back = vec![0u8; expected.len()];
    within("256 KiB echoed", WAIT, r.read_exact(&mut back))
        .await
        .expect("read 256 KiB");
    assert!(back == expected, "the echo after ten reloads differs");
    let _w = within("writer", WAIT, writer).await.expect("writer task");
    assert_eq!(ws.count(), 1, "one upgrade request, never re-sent");
}

// ---- 6. least_conn state across reloads ---------------------------------------------------

fn active(doc: &Value, addr: SocketAddr) -> u64 {
    node_of(doc, "web", addr)["active_requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("active_requests is a number: {doc}"))
}

/// least_conn's in-flight counts survive reloads: three requests held on `a` read 3 before
/// and after an unrelated reload, and after a reload that adds `b` the strategy still sees
/// them (every new request goes to the idle `b`). Released, they finish 200 and the counts
/// return to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_in_flight_counts_survive_a_reload() {
    const HELD: usize = 3;
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let timeouts = |s: u32| format!("    timeouts:\n      request: {s}s\n");
    let sy = start(
        &config("least_conn", &[(a.addr, 1)], &timeouts(30), ""),
        &[],
    )
    .await;
    let http = sy.http();

    a.hold();
    let pending: Vec<_> = (0..HELD)
        .map(|i| tokio::spawn(async move { get(http, &format!("/held/{i}")).await }))
        .collect();
    common::eventually("the held requests to reach a", WAIT, || {
        a.in_flight() == HELD
    })
    .await;
    let a_key = a.addr.to_string();
    let gauge = |m: &[Sample]| {
        metric(
            m,
            "switchyard_node_active_requests",
            &[("pool", "web"), ("node", &a_key)],
        )
    };
    assert_eq!(active(&pools_doc(&sy).await, a.addr), HELD as u64);
    assert_eq!(gauge(&metrics(&sy).await), Some(HELD as f64));

    // Unrelated change: the request timeout.
    sy.reload(&config("least_conn", &[(a.addr, 1)], &timeouts(29), ""));
    assert_eq!(
        active(&pools_doc(&sy).await, a.addr),
        HELD as u64,
        "a reload reset the in-flight count"
    );
    assert_eq!(gauge(&metrics(&sy).await), Some(HELD as f64));

    // Add an idle node: least_conn must still see a's three and pick b every time.
    sy.reload(&config(
        "least_conn",
        &[(a.addr, 1), (b.addr, 1)],
        &timeouts(29),
        "",
    ));
    applied(&sy, &[(a.addr, 1), (b.addr, 1)]).await;
    let doc = pools_doc(&sy).await;
    assert_eq!(active(&doc, a.addr), HELD as u64, "{doc}");
    assert_eq!(active(&doc, b.addr), 0, "{doc}");
    for i in 0..4 {
        let r = get(http, &format!("/new/{i}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.backend(),
            "b",
            "least_conn sent request {i} to the busy node"
        );
    }
    assert_eq!(a.count(), HELD, "nothing new reached a");

    a.release();
    for p in pending {
        let r = within("a held request", WAIT, p).await.expect("task");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "a");
    }
    wait_until("the in-flight counts to return to 0", WAIT, || async {
        let doc = pools_doc(&sy).await;
        active(&doc, a.addr) == 0 && active(&doc, b.addr) == 0
    })
    .await;
    assert_eq!(gauge(&metrics(&sy).await), Some(0.0));
}

// ---- 7. graceful shutdown -----------------------------------------------------------------

/// SIGTERM while a 2-second request is in flight: the listener refuses new connections at
/// once, an idle keep-alive connection is closed, the slow request finishes 200, and the
/// process exits 0 soon after (not at `shutdown_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_two_second_request_refuses_new_connections_and_exits_0() {
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_secs(2))).await;
    // Only /slow is routed: probes to other paths get the balancer's own quick 404.
    let mut sy = start(&format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\nshutdown_timeout: 25s\nroutes:\n  - path_prefix: /slow\n    pool: web\npools:\n{}",
        pool_yaml("web", "round_robin", &[(slow.addr, 1)], "")
    ), &[]).await;
    let http = sy.http();

    // An idle keep-alive connection, opened and used before the signal.
    let mut idle = TcpStream::connect(http).await.expect("connect");
    idle.write_all(format!("GET /probe HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let head = within("the warm-up answer", WAIT, read_head(&mut idle)).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("content-length"))
        })
        .expect("a content-length");
    let mut body = vec![0u8; len];
    within("the warm-up body", WAIT, idle.read_exact(&mut body))
        .await
        .expect("warm-up body");

    let t0 = Instant::now();
    let pending = tokio::spawn(async move { get(http, "/slow").await });
    common::eventually("the slow request to reach the backend", WAIT, || {
        slow.in_flight() == 1
    })
    .await;
    sy.signal("TERM");
    sy.wait_for_message("SIGTERM: draining", 0, WAIT);

    // New connections are refused (or closed without an answer) during the drain. A probe
    // that still got through answered 404 at once, in the instant before the listener
    // stopped.
    wait_until("the listener to stop accepting", WAIT, || async {
        try_get(http, "/probe").await.is_err()
    })
    .await;
    assert!(
        !pending.is_finished(),
        "the 2-second request had already finished when new connections were refused"
    );
    assert!(
        sy.wait_exit(Duration::ZERO).is_none(),
        "exited with a request in flight"
    );
    if let Ok(mut s) = TcpStream::connect(http).await {
        let _ = s
            .write_all(format!("GET /probe HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes())
            .await;
        let mut buf = [0u8; 64];
        let n = within("a late connection to be closed", WAIT, s.read(&mut buf))
            .await
            .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "a connection made during the drain was answered: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    // The idle keep-alive connection is closed by the balancer, without a response.
    let mut buf = [0u8; 64];
    let n = within(
        "the idle keep-alive connection to be closed",
        WAIT,
        idle.read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "unexpected bytes on the idle connection: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let r = within("the slow request", WAIT, pending)
        .await
        .expect("task");
    let took = t0.elapsed();
    assert_eq!(
        r.status,
        200,
        "the in-flight request finishes: {}",
        r.text()
    );
    assert_eq!(r.backend(), "slow");
    assert!(
        took >= Duration::from_millis(1900),
        "answered after {took:?}"
    );
    let st = sy
        .wait_exit(Duration::from_secs(15))
        .expect("switchyard exits once the request is done, long before shutdown_timeout");
    assert_eq!(st.code(), Some(0), "exit status {st}");
    assert!(!sy.log_messages("stopped").is_empty());
}

/// `shutdown_timeout` bounds the drain: a request that never finishes does not keep the
/// process alive past it, and the exit is still 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_bounds_the_drain() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let mut sy = start(
        &config("round_robin", &[(b.addr, 1)], "", "shutdown_timeout: 1s\n"),
        &[],
    )
    .await;
    let http = sy.http();
    b.hold();
    let _pending = tokio::spawn(async move { try_get(http, "/stuck").await });
    common::eventually("the request to reach the backend", WAIT, || {
        b.in_flight() == 1
    })
    .await;
    let t0 = Instant::now();
    sy.signal("TERM");
    let st = sy
        .wait_exit(WAIT)
        .expect("switchyard exits after shutdown_timeout");
    let took = t0.elapsed();
    assert_eq!(st.code(), Some(0), "exit status {st}");
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before shutdown_timeout (1s) with a request in flight"
    );
    assert!(
        !sy.log_messages("shutdown_timeout reached with connections still open; closing them")
            .is_empty(),
        "the cut-off is logged"
    );
    b.release();
}

// ---- 8. promtool --------------------------------------------------------------------------

/// `promtool check metrics` accepts the exposition after varied traffic (2xx, a 404 with no
/// route, a 502, a successful and a failed reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_exposition() {
    let Some(promtool) = skip_without_promtool("promtool_accepts_the_metrics_exposition") else {
        return;
    };
    let a = Backend::start("a", Behaviour::Echo).await;
    let dead = common::refusing_addr();
    let yaml = format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n  token_env: {TOKEN_ENV}\nroutes:\n  - path_prefix: /dead\n    pool: dead\n  - path_prefix: /app\n    pool: web\npools:\n{}{}",
        pool_yaml("web", "round_robin", &[(a.addr, 1)], ""),
        pool_yaml("dead", "least_conn", &[(dead, 1)], ""),
    );
    let sy = start(&yaml, &[(TOKEN_ENV, TOKEN)]).await;
    for i in 0..5 {
        assert_eq!(get(sy.http(), &format!("/app/{i}")).await.status, 200);
    }
    assert_eq!(get(sy.http(), "/nowhere").await.status, 404);
    assert_eq!(get(sy.http(), "/dead/x").await.status, 502);
    sy.reload(&yaml);
    std::fs::write(sy.config_path(), "pools: [").expect("write");
    assert_eq!(
        admin_post(&sy, "/api/v1/reload", Some(TOKEN)).await.status,
        400
    );

    let text = get(sy.admin_addr(), "/metrics").await.text();
    for name in [
        "switchyard_requests_total",
        "switchyard_upstream_requests_total",
        "switchyard_config_reloads_total",
        "switchyard_node_up",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
        // Dropped here: promtool sees EOF.
    }
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- the exposition ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool check rules` accepts the alert rules, which hold the seven alerts
/// docs/operations.md names (their unit tests: deploy/prometheus/alerts_test.yaml).
#[test]
fn promtool_accepts_the_alert_rules() {
    let Some(promtool) = skip_without_promtool("promtool_accepts_the_alert_rules") else {
        return;
    };
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yaml");
    let out = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("run promtool check rules");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check rules {} failed ({}):\n{report}",
        file.display(),
        out.status
    );
    assert!(report.contains("SUCCESS: 7 rules found"), "{report}");
    let text = std::fs::read_to_string(&file).expect("read the alert rules");
    for alert in [
        "SwitchyardNodeDown",
        "SwitchyardPoolNoHealthyNodes",
        "SwitchyardRedisDisconnected",
        "SwitchyardConfigReloadFailed",
        "SwitchyardHigh5xxRatio",
        "SwitchyardRateLimitingSustained",
        "SwitchyardConnectionsRefused",
    ] {
        assert!(
            text.contains(&format!("alert: {alert}")),
            "alerts.yaml lacks {alert}"
        );
    }
}

// ---- 9. access log ------------------------------------------------------------------------

/// A balancer whose routes send `/app...` to pool `web` (node `a`) and nothing else, with the
/// access log in `format` written to a file in a fresh temp dir.
async fn with_access_log(format: &str) -> (Backend, Switchyard, PathBuf, PathBuf) {
    let a = Backend::start("a", Behaviour::Echo).await;
    let dir = unique_dir("accesslog");
    let log = dir.join("access.log");
    let yaml = format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\naccess_log:\n  format: {format}\n  path: \"{}\"\nroutes:\n  - path_prefix: /app\n    pool: web\npools:\n{}",
        log.display(),
        pool_yaml("web", "round_robin", &[(a.addr, 1)], "")
    );
    let sy = Switchyard::start(&yaml);
    (a, sy, log, dir)
}

/// The non-empty lines of `path` once there are at least `n` of them.
async fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let read = || -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let p = path.to_path_buf();
    common::eventually(
        &format!("{n} lines in the access log {}", p.display()),
        WAIT,
        || read().len() >= n,
    )
    .await;
    read()
}

/// JSON access log: one line per request with every field, the request id the client got,
/// a client-supplied id kept, and a no-route 404 logged with pool `none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_json_has_one_complete_line_per_request() {
    const N: usize = 5;
    let (a, sy, log, dir) = with_access_log("json").await;
    let mut sent: Vec<(String, Resp)> = Vec::new();
    for i in 0..N {
        let path = format!("/app/item/{i}");
        let r = get(sy.http(), &path).await;
        assert_eq!(r.status, 200);
        sent.push((path, r));
    }
    let own = get_with(
        sy.http(),
        "/app/own-id",
        &[("x-request-id", "ops-test-id-42")],
    )
    .await;
    assert_eq!(own.status, 200);
    assert_eq!(own.header("x-request-id"), Some("ops-test-id-42"));
    sent.push(("/app/own-id".to_string(), own));
    let missing = get(sy.http(), "/no/route/here").await;
    assert_eq!(missing.status, 404);
    sent.push(("/no/route/here".to_string(), missing));

    let lines = wait_lines(&log, sent.len()).await;
    assert_eq!(lines.len(), sent.len(), "one line per request:\n{lines:#?}");
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for e in &entries {
        for key in [
            "time",
            "client",
            "method",
            "host",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "pool",
            "node",
            "attempts",
            "request_id",
        ] {
            assert!(e.get(key).is_some(), "no `{key}` in {e}");
        }
        let time = e["time"].as_str().expect("time is a string");
        assert!(
            time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
            "time is RFC 3339: {e}"
        );
        assert_eq!(e["client"], "127.0.0.1", "{e}");
        assert_eq!(e["method"], "GET", "{e}");
        assert_eq!(e["host"], sy.http().to_string(), "{e}");
        assert!(e["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
    }
    for (path, r) in &sent {
        let id = r
            .header("x-request-id")
            .expect("every answer has X-Request-Id");
        let e = entries
            .iter()
            .find(|e| e["request_id"] == id)
            .unwrap_or_else(|| panic!("no access-log line with request_id {id}: {lines:#?}"));
        assert_eq!(e["path"], path.as_str(), "{e}");
        assert_eq!(e["status"], r.status.as_u16(), "{e}");
        assert_eq!(e["bytes"], r.body.len() as u64, "{e}");
        if r.status == 200 {
            assert_eq!(e["pool"], "web", "{e}");
            assert_eq!(e["node"], a.addr.to_string(), "{e}");
            assert_eq!(e["attempts"], 1, "{e}");
        } else {
            assert_eq!(e["pool"], "none", "a request with no route: {e}");
            assert_eq!(e["attempts"], 0, "{e}");
        }
    }
    drop(sy);
    let _ = std::fs::remove_dir_all(dir);
}

/// logfmt access log: `key=value` lines with `status=` and the response's `request_id=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_logfmt_has_status_and_request_id() {
    let (_a, sy, log, dir) = with_access_log("logfmt").await;
    let ok = get(sy.http(), "/app/x").await;
    let missing = get(sy.http(), "/elsewhere").await;
    assert_eq!((ok.status.as_u16(), missing.status.as_u16()), (200, 404));
    let lines = wait_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let fields = |l: &str| -> HashMap<String, String> {
        l.split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect()
    };
    for (r, status, pool) in [(&ok, "200", "web"), (&missing, "404", "none")] {
        let id = r.header("x-request-id").expect("X-Request-Id");
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("request_id={id}")))
            .unwrap_or_else(|| panic!("no line with request_id={id}: {lines:#?}"));
        let f = fields(line);
        assert_eq!(f.get("status").map(String::as_str), Some(status), "{line}");
        assert_eq!(f.get("pool").map(String::as_str), Some(pool), "{line}");
        assert_eq!(f.get("method").map(String::as_str), Some("GET"), "{line}");
        for key in [
            "time",
            "client",
            "host",
            "path",
            "bytes",
            "duration_ms",
            "node",
            "attempts",
        ] {
            assert!(f.contains_key(key), "no `{key}=` in {line}");
        }
    }
    drop(sy);
    let _ = std::fs::remove_dir_all(dir);
}

// ---- 10. admin reload needs the token -----------------------------------------------------

/// `POST /api/v1/reload` without the token, or with a wrong one, is 401 and reloads
/// nothing; without any token configured it is 401 with a message saying how to enable it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_needs_the_token() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let yaml = config("round_robin", &[(a.addr, 1)], "", "");
    // The file is never changed here, so the file watch never reloads: every reload counted
    // below comes from the admin API.
    let sy = Switchyard::start_with_env(&yaml, &[(TOKEN_ENV, TOKEN)]);
    for token in [None, Some("wrong"), Some("ops-test-t0ke"), Some("")] {
        let r = admin_post(&sy, "/api/v1/reload", token).await;
        assert_eq!(r.status, 401, "token {token:?}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
    let r = get(sy.admin_addr(), "/api/v1/reload").await;
    assert_eq!(r.status, 405, "GET /api/v1/reload: {}", r.text());
    assert_eq!(
        reloads(&sy, "success").await,
        0.0,
        "a refused call reloaded"
    );
    assert_eq!(
        reloads(&sy, "failure").await,
        0.0,
        "a refused call reloaded"
    );
    assert!(sy.log_messages("config reloaded").is_empty());
    // The right token does reload (so the counters above would have moved).
    let r = admin_post(&sy, "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(reloads(&sy, "success").await, 1.0);

    // With the variable named but not set, and with no token_env at all: 401 with a message
    // saying how to enable mutations.
    for (yaml, must_name) in [
        (yaml.clone(), TOKEN_ENV),
        (
            common::single_pool_config("round_robin", &[a.addr], ""),
            "token_env",
        ),
    ] {
        let sy = Switchyard::start(&yaml);
        let r = admin_post(&sy, "/api/v1/reload", Some(TOKEN)).await;
        assert_eq!(r.status, 401, "{}", r.text());
        let msg = r.json()["error"].as_str().unwrap_or("").to_string();
        assert!(
            msg.contains(must_name),
            "the refusal should say how to enable mutations (mention {must_name}): {msg}"
        );
        assert_eq!(reloads(&sy, "success").await, 0.0);
        assert_eq!(reloads(&sy, "failure").await, 0.0);
    }
}

// ---- start-up races ---------------------------------------------------------------------

/// A signal sent as soon as the process has logged `switchyard ready` is handled: SIGHUP
/// reloads (it must not kill the process with the default action), and SIGTERM drains and
/// exits 0. Orchestrators and scripts act on readiness at once.
///
/// When this fails intermittently: the signal handlers are installed only in
/// `Supervisor::run`, after `start` has logged `switchyard ready`; until then SIGHUP and
/// SIGTERM have their default action (the process is killed by the signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_right_after_ready_are_handled() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let yaml = config("round_robin", &[(a.addr, 1)], "", "");
    let sy = Switchyard::start(&yaml);
    sy.signal("HUP");
    let mut sy = sy;
    let st = sy.wait_exit(Duration::from_millis(500));
    assert!(
        st.is_none(),
        "SIGHUP right after `switchyard ready` killed the process: {st:?}"
    );
    sy.wait_for_message("config reloaded", 0, WAIT);

    let mut sy = Switchyard::start(&yaml);
    sy.signal("TERM");
    let st = sy.wait_exit(WAIT).expect("exits after SIGTERM");
    assert_eq!(
        st.code(),
        Some(0),
        "SIGTERM right after `switchyard ready`: exit status {st}"
    );
}

/// An edit made right after start-up is not missed by the file watch: the watch compares
/// against the bytes that were loaded, not against whatever the file holds when the watch
/// task gets around to its first look.
///
/// When this fails intermittently: `watch::watch_config` takes its baseline fingerprint
/// (and registers the watch) in a task that may run after `switchyard ready` and after the
/// edit; the edit then looks like "no change" and is never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_sees_an_edit_made_right_after_start() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&config("round_robin", &[(a.addr, 1)], "", ""));
    let next = [(a.addr, 1), (b.addr, 1)];
    write_atomically(sy.config_path(), &config("round_robin", &next, "", ""));
    applied(&sy, &next).await;
}
