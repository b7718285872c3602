//! Live registration through Redis, end to end: each test starts its own `redis-server` on a
//! free port (never 6379), the real `switchyard` binary and real backends.
//!
//! The two `#[ignore]`d tests at the end measure the figures for bench/RESULTS.md:
//! `cargo test --release --test registry -- --ignored --nocapture --test-threads 1`.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use redis::aio::MultiplexedConnection;
use redis_server::RedisServer;

use common::client::{get, try_get};
use common::{
    blocking, metric, parse_metrics, wait_until, Backend, Behaviour, Switchyard, BIN, WAIT,
};

const CHANNEL: &str = "switchyard:nodes";

fn key(pool: &str) -> String {
    format!("switchyard:pool:{pool}")
}

/// A config with one `http` listener, the admin API, the given pools (the first one is the
/// catch-all, every other is routed by `/NAME`) and the `redis` section.
fn config(url: &str, pools: &[(&str, &[SocketAddr])], resync: &str) -> String {
    let mut s = String::from(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\nroutes:\n",
    );
    for (name, _) in pools.iter().skip(1) {
        s.push_str(&format!("  - path_prefix: /{name}\n    pool: {name}\n"));
    }
    s.push_str(&format!("  - pool: {}\npools:\n", pools[0].0));
    for (name, nodes) in pools {
        s.push_str(&format!("  {name}:\n    strategy: round_robin\n"));
        if nodes.is_empty() {
            s.push_str("    nodes: []\n");
        } else {
            s.push_str("    nodes:\n");
            for n in *nodes {
                s.push_str(&format!("      - addr: \"{n}\"\n"));
            }
        }
    }
    s.push_str(&format!(
        "redis:\n  url: {url}\n  resync_interval: {resync}\n"
    ));
    s
}

/// (addr, weight, source) of each node of `pool`, from the admin API.
async fn nodes(sy: &Switchyard, pool: &str) -> Vec<(String, u64, String)> {
    let r = get(sy.admin_addr(), "/api/v1/pools").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    let pools = doc["pools"].as_array().expect("pools array");
    let p = pools
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in {doc}"));
    p["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().unwrap_or_default().to_string(),
                n["weight"].as_u64().unwrap_or_default(),
                n["source"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn addrs(sy: &Switchyard, pool: &str) -> BTreeSet<String> {
    nodes(sy, pool).await.into_iter().map(|n| n.0).collect()
}

async fn has_node(sy: &Switchyard, pool: &str, addr: SocketAddr) -> bool {
    addrs(sy, pool).await.contains(&addr.to_string())
}

async fn metric_value(sy: &Switchyard, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let r = get(sy.admin_addr(), "/metrics").await;
    metric(&parse_metrics(&r.text()), name, labels)
}

async fn redis_connected(sy: &Switchyard) -> f64 {
    metric_value(sy, "switchyard_redis_connected", &[])
        .await
        .unwrap_or(-1.0)
}

async fn updates(sy: &Switchyard, result: &str) -> f64 {
    metric_value(
        sy,
        "switchyard_registry_updates_total",
        &[("result", result)],
    )
    .await
    .unwrap_or(0.0)
}

async fn hset(con: &mut MultiplexedConnection, pool: &str, field: &str, value: &str) {
    let _: () = redis::cmd("HSET")
        .arg(key(pool))
        .arg(field)
        .arg(value)
        .query_async(con)
        .await
        .expect("HSET");
}

async fn hdel(con: &mut MultiplexedConnection, pool: &str, field: &str) {
    let _: () = redis::cmd("HDEL")
        .arg(key(pool))
        .arg(field)
        .query_async(con)
        .await
        .expect("HDEL");
}

async fn publish(con: &mut MultiplexedConnection, pool: &str) {
    let _: () = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(pool)
        .query_async(con)
        .await
        .expect("PUBLISH");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Which backend answered `GET path` (panics on a failed request).
async fn served_by(sy: &Switchyard, path: &str) -> String {
    let r = get(sy.http(), path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.backend()
}

/// Run `switchyard ARGS` to completion.
fn cli(args: &[&str]) -> Output {
    blocking(|| {
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the switchyard binary")
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------
// 1. HSET + PUBLISH by hand

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registered_by_hand_gets_traffic_within_a_second_and_none_after_deregistering() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let dynb = Backend::start("dyn", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(&redis.url(), &[("web", &[stat.addr])], "30s"));
    assert_eq!(redis_connected(&sy).await, 1.0, "connected at start-up");
    let mut con = redis.con().await;

    hset(&mut con, "web", &dynb.addr.to_string(), r#"{"weight":1}"#).await;
    let t0 = Instant::now();
    publish(&mut con, "web").await;
    loop {
        if served_by(&sy, "/").await == "dyn" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "the registered node got no request within 1 s of PUBLISH"
        );
    }
    let took = t0.elapsed();
    eprintln!("registered node served {took:?} after PUBLISH");
    let listed = nodes(&sy, "web").await;
    assert!(
        listed.contains(&(dynb.addr.to_string(), 1, "redis".to_string())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(stat.addr.to_string(), 1, "static".to_string())),
        "{listed:?}"
    );

    hdel(&mut con, "web", &dynb.addr.to_string()).await;
    publish(&mut con, "web").await;
    wait_until("the deregistered node leaves the pool", WAIT, || async {
        !has_node(&sy, "web", dynb.addr).await
    })
    .await;
    let before = dynb.count();
    for _ in 0..20 {
        assert_eq!(served_by(&sy, "/").await, "static");
    }
    assert_eq!(dynb.count(), before, "a deregistered node got requests");
}

// ---------------------------------------------------------------------------------------
// 2. Expiry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_ignored_and_an_entry_is_dropped_when_it_expires() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(&redis.url(), &[("web", &[stat.addr])], "30s"));
    let mut con = redis.con().await;

    let past = format!(r#"{{"weight":1,"expires_at_ms":{}}}"#, now_ms() - 1000);
    hset(&mut con, "web", "127.0.0.1:1001", &past).await;
    hset(&mut con, "web", "127.0.0.1:1002", r#"{"weight":2}"#).await;
    publish(&mut con, "web").await;
    wait_until("the valid entry appears", WAIT, || async {
        addrs(&sy, "web").await.contains("127.0.0.1:1002")
    })
    .await;
    assert!(
        !addrs(&sy, "web").await.contains("127.0.0.1:1001"),
        "an expired entry was applied"
    );
    assert_eq!(updates(&sy, "expired").await, 1.0);

    // Expires ~2 s from now; no message is sent after this one.
    let expires_at = now_ms() + 2000;
    let soon = format!(r#"{{"weight":1,"expires_at_ms":{expires_at}}}"#);
    hset(&mut con, "web", "127.0.0.1:1003", &soon).await;
    publish(&mut con, "web").await;
    wait_until("the expiring entry appears", WAIT, || async {
        addrs(&sy, "web").await.contains("127.0.0.1:1003")
    })
    .await;
    assert!(
        now_ms() < expires_at,
        "the machine was too slow to see the entry before it expired"
    );
    wait_until("the entry is dropped when it expires", WAIT, || async {
        !addrs(&sy, "web").await.contains("127.0.0.1:1003")
    })
    .await;
    let late = now_ms() as i64 - expires_at as i64;
    eprintln!("expired entry dropped {late} ms after expires_at_ms");
    assert!(late >= 0, "dropped {} ms before it expired", -late);
    assert!(
        late <= 1500,
        "dropped {late} ms after it expired (want within ~1 s)"
    );
    // The other registered node stays.
    assert!(addrs(&sy, "web").await.contains("127.0.0.1:1002"));
}

// ---------------------------------------------------------------------------------------
// 3. Validation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_skipped_counted_and_logged_once_while_good_ones_apply() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let good = Backend::start("good", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(
        &redis.url(),
        &[("web", &[stat.addr]), ("str", &[])],
        "30s",
    ));
    let mut con = redis.con().await;

    hset(&mut con, "web", "127.0.0.1:2001", "{not json").await;
    hset(&mut con, "web", "not-an-address", r#"{"weight":1}"#).await;
    hset(&mut con, "web", "127.0.0.1:2003", r#"{"weight":0}"#).await;
    hset(&mut con, "web", &good.addr.to_string(), r#"{"weight":1}"#).await;
    publish(&mut con, "web").await;
    wait_until("the good entry gets traffic", WAIT, || async {
        served_by(&sy, "/").await == "good"
    })
    .await;
    let expected: BTreeSet<String> = [stat.addr.to_string(), good.addr.to_string()].into();
    assert_eq!(addrs(&sy, "web").await, expected);
    assert_eq!(updates(&sy, "invalid").await, 3.0);

    // Re-reads (a message, a `*`) neither count nor log them again.
    publish(&mut con, "web").await;
    publish(&mut con, "*").await;
    // A message for a pool that is not in the config is ignored and counted.
    publish(&mut con, "nosuchpool").await;
    wait_until("the unknown pool message is counted", WAIT, || async {
        updates(&sy, "unknown_pool").await == 1.0
    })
    .await;
    assert_eq!(
        updates(&sy, "invalid").await,
        3.0,
        "bad entries counted again"
    );
    let logged = sy
        .log_messages("invalid registry entry skipped (the other entries still apply)")
        .len();
    assert_eq!(logged, 3, "each bad entry is logged once");
    assert_eq!(addrs(&sy, "web").await, expected);
    let r = get(sy.http(), "/").await;
    assert_eq!(r.status, 200);

    // A key that is not a hash spoils only its own pool: counted once, no reconnect.
    let _: () = redis::cmd("SET")
        .arg(key("str"))
        .arg("not a hash")
        .query_async(&mut con)
        .await
        .expect("SET");
    publish(&mut con, "str").await;
    publish(&mut con, "*").await;
    wait_until("the non-hash key is counted", WAIT, || async {
        updates(&sy, "invalid").await == 4.0
    })
    .await;
    publish(&mut con, "web").await;
    hset(&mut con, "web", "127.0.0.1:2004", "{}").await;
    publish(&mut con, "web").await;
    wait_until("the registry still applies changes", WAIT, || async {
        addrs(&sy, "web").await.contains("127.0.0.1:2004")
    })
    .await;
    assert_eq!(updates(&sy, "invalid").await, 4.0);
    assert_eq!(
        updates(&sy, "error").await,
        0.0,
        "a bad key caused a reconnect"
    );
    assert_eq!(redis_connected(&sy).await, 1.0);
}

// ---------------------------------------------------------------------------------------
// 4. Outage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_the_last_node_set_and_a_change_made_meanwhile_is_picked_up() {
    let mut redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let dyn1 = Backend::start("dyn1", Behaviour::Echo).await;
    let dyn2 = Backend::start("dyn2", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(&redis.url(), &[("web", &[stat.addr])], "30s"));
    {
        let mut con = redis.con().await;
        hset(&mut con, "web", &dyn1.addr.to_string(), "{}").await;
        publish(&mut con, "web").await;
    }
    wait_until("dyn1 registered", WAIT, || async {
        has_node(&sy, "web", dyn1.addr).await
    })
    .await;

    redis.kill();
    wait_until("switchyard_redis_connected 0", WAIT, || async {
        redis_connected(&sy).await == 0.0
    })
    .await;
    // Traffic goes on, over the last known set (the registered node included).
    let mut seen = BTreeSet::new();
    for i in 0..20 {
        let r = get(sy.http(), &format!("/during-outage/{i}")).await;
        assert_eq!(r.status, 200, "request during the outage: {}", r.text());
        seen.insert(r.backend());
    }
    assert_eq!(
        seen,
        BTreeSet::from(["dyn1".to_string(), "static".to_string()])
    );

    // Redis comes back on the same port, empty, and — to make "written while the balancer
    // was disconnected" certain — with a password the balancer does not know yet.
    redis.restart_with(&["--requirepass", "sekret"]);
    let authed =
        redis::Client::open(format!("redis://:sekret@127.0.0.1:{}/0", redis.port)).expect("client");
    let mut con = authed
        .get_multiplexed_async_connection()
        .await
        .expect("connect with the password");
    hset(&mut con, "web", &dyn2.addr.to_string(), r#"{"weight":2}"#).await; // no PUBLISH
    assert_eq!(
        redis_connected(&sy).await,
        0.0,
        "connected without the password?"
    );
    assert!(
        has_node(&sy, "web", dyn1.addr).await,
        "the last set is kept while Redis refuses"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query_async(&mut con)
        .await
        .expect("CONFIG SET requirepass");

    // Reconnect (backoff is capped at 5 s) → full re-read: dyn2 is in, dyn1 (not in the
    // new Redis, which is the truth) is out.
    wait_until(
        "dyn2 picked up after reconnect, without a PUBLISH",
        WAIT,
        || async { has_node(&sy, "web", dyn2.addr).await },
    )
    .await;
    assert_eq!(redis_connected(&sy).await, 1.0);
    let expected: BTreeSet<String> = [stat.addr.to_string(), dyn2.addr.to_string()].into();
    assert_eq!(addrs(&sy, "web").await, expected);
    wait_until("dyn2 gets traffic", WAIT, || async {
        served_by(&sy, "/").await == "dyn2"
    })
    .await;
    assert!(updates(&sy, "error").await >= 1.0);
}

// ---------------------------------------------------------------------------------------
// 5. Several balancers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_balancers_on_one_redis_both_route_to_a_new_node() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let dynb = Backend::start("dyn", Behaviour::Echo).await;
    let cfg = config(&redis.url(), &[("web", &[stat.addr])], "30s");
    let a = Switchyard::start(&cfg);
    let b = Switchyard::start(&cfg);
    let mut con = redis.con().await;
    hset(&mut con, "web", &dynb.addr.to_string(), "{}").await;
    publish(&mut con, "web").await;
    for sy in [&a, &b] {
        wait_until(
            "the new node serves through each balancer",
            WAIT,
            || async { served_by(sy, "/").await == "dyn" },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// 6. The CLI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_register_list_deregister_round_trip() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let dynb = Backend::start("dyn", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(&redis.url(), &[("web", &[stat.addr])], "30s"));
    let url = redis.url();
    let addr = dynb.addr.to_string();

    let out = cli(&[
        "node", "register", "--redis", &url, "--pool", "web", "--addr", &addr, "--weight", "3",
        "--ttl", "60s",
    ]);
    assert!(
        out.status.success(),
        "register failed: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("registered"),
        "{}",
        text(&out.stdout)
    );
    wait_until("the balancer has the node with weight 3", WAIT, || async {
        nodes(&sy, "web")
            .await
            .contains(&(addr.clone(), 3, "redis".to_string()))
    })
    .await;
    wait_until("the node serves", WAIT, || async {
        served_by(&sy, "/").await == "dyn"
    })
    .await;

    // Another pool, to see `list` find every pool by SCAN.
    let out = cli(&[
        "node",
        "register",
        "--redis",
        &url,
        "--pool",
        "other",
        "--addr",
        "10.9.9.9:80",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = cli(&["node", "list", "--redis", &url]);
    assert!(out.status.success(), "list failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], "other 10.9.9.9:80 1 -", "{stdout}");
    let cols: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(cols.len(), 4, "POOL ADDR WEIGHT EXPIRES: {stdout}");
    assert_eq!(&cols[..3], &["web", addr.as_str(), "3"], "{stdout}");
    assert!(
        (cols[3].len() == 20 || cols[3].len() == 24)
            && cols[3].ends_with('Z')
            && cols[3].as_bytes()[10] == b'T',
        "EXPIRES is RFC 3339 UTC: {}",
        cols[3]
    );

    let out = cli(&["node", "list", "--redis", &url, "--pool", "web", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    let arr = v.as_array().expect("a JSON array");
    assert_eq!(arr.len(), 1, "{v}");
    assert_eq!(arr[0]["pool"], "web");
    assert_eq!(arr[0]["addr"], addr.as_str());
    assert_eq!(arr[0]["weight"], 3);
    let exp = arr[0]["expires_at_ms"].as_u64().expect("expires_at_ms");
    let now = now_ms();
    assert!(
        exp > now + 50_000 && exp <= now + 60_000,
        "ttl 60s → {exp} vs now {now}"
    );
    assert_eq!(arr[0]["expires"].as_str(), Some(cols[3]));

    let out = cli(&[
        "node",
        "deregister",
        "--redis",
        &url,
        "--pool",
        "web",
        "--addr",
        &addr,
    ]);
    assert!(
        out.status.success(),
        "deregister failed: {}",
        text(&out.stderr)
    );
    wait_until("the balancer drops the node", WAIT, || async {
        !has_node(&sy, "web", dynb.addr).await
    })
    .await;
    let out = cli(&["node", "list", "--redis", &url, "--pool", "web"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "", "still listed");
}

#[test]
fn cli_rejects_bad_arguments_and_explains_connection_errors() {
    let redis = RedisServer::start();
    let url = redis.url();
    let bad = [
        (vec!["--addr", "10.0.0.1:80", "--weight", "0"], "1 to 1000"),
        (
            vec!["--addr", "10.0.0.1:80", "--weight", "1001"],
            "1 to 1000",
        ),
        (vec!["--addr", "10.0.0.1"], "HOST:PORT"),
        (vec!["--addr", "10.0.0.1:0"], "port"),
        (vec!["--addr", "10.0.0.1:80", "--ttl", "soon"], "duration"),
        (vec!["--addr", "10.0.0.1:80", "--heartbeat"], "--ttl"),
    ];
    for (args, want) in bad {
        let mut all = vec!["node", "register", "--redis", &url, "--pool", "web"];
        all.extend(args.iter().copied());
        let out = cli(&all);
        assert!(!out.status.success(), "{all:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{all:?}: stderr {err:?} lacks {want:?}");
    }
    // Nothing was written.
    let out = cli(&["node", "list", "--redis", &url]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "");

    // Nothing listens on this port.
    let closed = common::refusing_addr();
    let out = cli(&[
        "node",
        "list",
        "--redis",
        &format!("redis://:pw@{closed}/0"),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is redis-server running"), "{err}");
    assert!(!err.contains(":pw@"), "the password is shown: {err}");
}

// ---------------------------------------------------------------------------------------
// 7. Heartbeat sidecar

fn sidecar(url: &str, addr: SocketAddr, ttl: &str) -> std::process::Child {
    Command::new(BIN)
        .args([
            "node", "register", "--redis", url, "--pool", "web", "--addr",
        ])
        .arg(addr.to_string())
        .args(["--ttl", ttl, "--heartbeat"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the sidecar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_sidecar_keeps_a_node_alive_and_its_death_removes_it() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let dynb = Backend::start("dyn", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(&redis.url(), &[("web", &[stat.addr])], "30s"));
    let ttl = Duration::from_secs(2);

    let mut side = sidecar(&redis.url(), dynb.addr, "2s");
    wait_until("the sidecar registers the node", WAIT, || async {
        has_node(&sy, "web", dynb.addr).await
    })
    .await;
    // It stays for well past the ttl.
    let until = Instant::now() + ttl + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(
            has_node(&sy, "web", dynb.addr).await,
            "the node dropped out while its sidecar was heartbeating"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // kill -9: no deregistration; the entry expires.
    blocking(|| {
        side.kill().expect("kill -9 the sidecar");
        side.wait().expect("reap the sidecar");
    });
    let killed = Instant::now();
    wait_until(
        "the node disappears after its sidecar died",
        WAIT,
        || async { !has_node(&sy, "web", dynb.addr).await },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("node removed {took:?} after kill -9 of its sidecar (ttl {ttl:?})");
    assert!(
        took <= ttl + Duration::from_millis(1500),
        "removed {took:?} after the kill; want within ttl + ~1 s"
    );

    // SIGTERM: deregisters at once and exits 0.
    let mut side = sidecar(&redis.url(), dynb.addr, "10s");
    wait_until("the second sidecar registers the node", WAIT, || async {
        has_node(&sy, "web", dynb.addr).await
    })
    .await;
    let st = Command::new("kill")
        .args(["-s", "TERM", &side.id().to_string()])
        .status()
        .expect("kill -s TERM");
    assert!(st.success());
    let t = Instant::now();
    wait_until("the node is deregistered on SIGTERM", WAIT, || async {
        !has_node(&sy, "web", dynb.addr).await
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}: not at once (ttl was 10 s)",
        t.elapsed()
    );
    let status = blocking(|| {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = side.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert!(status.success(), "sidecar exit status {status}");
}

// ---------------------------------------------------------------------------------------
// 8. Registration storm under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_storm_under_load_fails_no_request_and_ends_in_the_right_state() {
    let redis = RedisServer::start();
    let s1 = Backend::start("s1", Behaviour::Echo).await;
    let s2 = Backend::start("s2", Behaviour::Echo).await;
    let mut dyns = Vec::new();
    for i in 0..3 {
        dyns.push(Backend::start(&format!("d{i}"), Behaviour::Echo).await);
    }
    let sy = Switchyard::start(&config(
        &redis.url(),
        &[("web", &[s1.addr, s2.addr])],
        "30s",
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let addr = sy.http();
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match try_get(addr, &format!("/load/{c}/{i}")).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("failed request: {} {}", r.status, r.text());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed request: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
            }
        }));
    }
    wait_until("load is flowing", WAIT, || async {
        ok.load(Ordering::Relaxed) > 20
    })
    .await;

    // 1000 messages, each after an HSET or HDEL of one of the three registered nodes: a
    // burst of 10 pipelines of 100, 30 ms apart, so that the balancer applies some
    // intermediate states (nodes come and go) under the load, not only the last one.
    let applied_before = updates(&sy, "applied").await;
    let mut con = redis.con().await;
    let mut registered = [false; 3];
    for chunk in 0..10 {
        let mut pipe = redis::pipe();
        for i in chunk * 100..(chunk + 1) * 100 {
            let d = i % 3;
            let addr = dyns[d].addr.to_string();
            if (i / 3 + chunk) % 2 == 0 {
                pipe.cmd("HSET")
                    .arg(key("web"))
                    .arg(&addr)
                    .arg(r#"{"weight":1}"#)
                    .ignore();
                registered[d] = true;
            } else {
                pipe.cmd("HDEL").arg(key("web")).arg(&addr).ignore();
                registered[d] = false;
            }
            pipe.cmd("PUBLISH").arg(CHANNEL).arg("web").ignore();
        }
        let _: () = pipe
            .query_async(&mut con)
            .await
            .expect("the storm pipeline");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    let mut expected: BTreeSet<String> = [s1.addr.to_string(), s2.addr.to_string()].into();
    for (d, reg) in registered.iter().enumerate() {
        if *reg {
            expected.insert(dyns[d].addr.to_string());
        }
    }
    wait_until("the final state after the storm", WAIT, || async {
        addrs(&sy, "web").await == expected
    })
    .await;
    // A little more load on the final state, then stop.
    let settled = ok.load(Ordering::Relaxed);
    wait_until("more load after the storm", WAIT, || async {
        ok.load(Ordering::Relaxed) > settled + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let applied = updates(&sy, "applied").await - applied_before;
    eprintln!(
        "storm: {} requests ok, {} failed; 1000 messages → {applied} applied updates; final set {expected:?}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the storm"
    );
    assert!(
        applied < 1000.0,
        "no coalescing: {applied} updates for 1000 messages"
    );
    assert!(s1.count() > 0 && s2.count() > 0, "static nodes served");
    assert_eq!(redis_connected(&sy).await, 1.0);
}

// ---------------------------------------------------------------------------------------
// 9. In-flight requests to a removed node finish

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_to_a_removed_node_completes() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let slow = Backend::start("slow", Behaviour::Echo).await;
    // Pool `reg` has no static node: only the registered one.
    let sy = Switchyard::start(&config(
        &redis.url(),
        &[("web", &[stat.addr]), ("reg", &[])],
        "30s",
    ));
    let mut con = redis.con().await;
    hset(&mut con, "reg", &slow.addr.to_string(), "{}").await;
    publish(&mut con, "reg").await;
    wait_until("the node is registered", WAIT, || async {
        has_node(&sy, "reg", slow.addr).await
    })
    .await;

    slow.hold();
    let addr = sy.http();
    let inflight = tokio::spawn(async move { get(addr, "/reg/slow").await });
    wait_until("the request reached the node", WAIT, || async {
        slow.in_flight() == 1
    })
    .await;

    hdel(&mut con, "reg", &slow.addr.to_string()).await;
    publish(&mut con, "reg").await;
    wait_until("the node is removed", WAIT, || async {
        nodes(&sy, "reg").await.is_empty()
    })
    .await;
    // New requests find no node...
    let r = get(sy.http(), "/reg/new").await;
    assert_eq!(r.status, 503, "{}", r.text());
    // ...while the one in flight completes.
    slow.release();
    let r = inflight.await.expect("the in-flight request task");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "slow");
}

// ---------------------------------------------------------------------------------------
// rediss:// with a password

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_works_for_the_balancer_and_the_cli() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/redis-tls");
    let file = |name: &str| fixtures.join(name).to_string_lossy().into_owned();
    let tls_port = common::refusing_addr().port();
    let tls_port_s = tls_port.to_string();
    // Plain TCP on the usual free port (for the test's own commands), TLS on another.
    let _redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port_s,
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "s3cret",
    ]);
    let tls_url = format!("rediss://:s3cret@localhost:{tls_port}/0");
    let stat = Backend::start("static", Behaviour::Echo).await;
    let dynb = Backend::start("dyn", Behaviour::Echo).await;
    // The test CA is trusted through SSL_CERT_FILE (read with the system's roots).
    let ca = file("ca.pem");
    let sy = Switchyard::start_with_env(
        &config(&tls_url, &[("web", &[stat.addr])], "30s"),
        &[("SSL_CERT_FILE", ca.as_str())],
    );
    assert_eq!(redis_connected(&sy).await, 1.0, "connected over TLS");
    for line in sy.stderr_lines() {
        assert!(!line.contains("s3cret"), "the password is logged: {line}");
    }

    let out = blocking(|| {
        Command::new(BIN)
            .args([
                "node", "register", "--redis", &tls_url, "--pool", "web", "--addr",
            ])
            .arg(dynb.addr.to_string())
            .env("SSL_CERT_FILE", &ca)
            .stdin(Stdio::null())
            .output()
            .expect("run the CLI")
    });
    assert!(
        out.status.success(),
        "register over TLS: {}",
        text(&out.stderr)
    );
    wait_until("the node registered over TLS serves", WAIT, || async {
        served_by(&sy, "/").await == "dyn"
    })
    .await;

    // Without the test CA the certificate is refused, and the error says so.
    let out = cli(&["node", "list", "--redis", &tls_url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains("s3cret"), "the password is shown: {err}");
}

// ---------------------------------------------------------------------------------------
// Reloads keep registered nodes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_keeps_the_registered_nodes_and_reads_new_pools() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let dynb = Backend::start("dyn", Behaviour::Echo).await;
    let other = Backend::start("other", Behaviour::Echo).await;
    let url = redis.url();
    let sy = Switchyard::start(&config(&url, &[("web", &[stat.addr])], "30s"));
    let mut con = redis.con().await;
    hset(&mut con, "web", &dynb.addr.to_string(), "{}").await;
    // Registered for a pool the config does not have yet.
    hset(&mut con, "extra", &other.addr.to_string(), "{}").await;
    publish(&mut con, "web").await;
    wait_until("registered", WAIT, || async {
        has_node(&sy, "web", dynb.addr).await
    })
    .await;

    sy.reload(&config(
        &url,
        &[("web", &[stat.addr]), ("extra", &[])],
        "30s",
    ));
    assert!(
        has_node(&sy, "web", dynb.addr).await,
        "a reload dropped the registered node"
    );
    wait_until("the new pool's registry entries are read", WAIT, || async {
        has_node(&sy, "extra", other.addr).await
    })
    .await;
    assert_eq!(served_by(&sy, "/extra/x").await, "other");
}

// ---------------------------------------------------------------------------------------
// Figures for bench/RESULTS.md (run with --release --ignored --nocapture)

/// A keep-alive HTTP/1.1 client connection: `GET path` → status and `x-backend`.
struct KeepAlive {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
}

impl KeepAlive {
    fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive { addr, sender: None }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Option<String>), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("sender");
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::get(path)
            .header(http::header::HOST, "bench")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.map_err(|e| {
            self.sender = None;
            e.to_string()
        })?;
        let status = resp.status().as_u16();
        let backend = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, backend))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn bench_propagation_latency_publish_to_first_request() {
    let redis = RedisServer::start();
    let stat = Backend::start("static", Behaviour::Echo).await;
    let node = Backend::start("node", Behaviour::Echo).await;
    // `reg` has no static node: its first 200 is the first request the new node served.
    let sy = Switchyard::start(&config(
        &redis.url(),
        &[("web", &[stat.addr]), ("reg", &[])],
        "30s",
    ));
    let mut con = redis.con().await;
    let mut client = KeepAlive::new(sy.http());
    let field = node.addr.to_string();
    let mut samples = Vec::new();
    for _ in 0..100 {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(key("reg"), &field, r#"{"weight":1}"#)
            .ignore()
            .publish(CHANNEL, "reg")
            .ignore();
        let t0 = Instant::now();
        let _: () = pipe.query_async(&mut con).await.expect("register");
        loop {
            let (status, backend) = client.get("/reg/p").await.expect("request");
            if status == 200 {
                assert_eq!(backend.as_deref(), Some("node"));
                break;
            }
            assert!(t0.elapsed() < WAIT, "never served");
        }
        samples.push(t0.elapsed());
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(key("reg"), &field)
            .ignore()
            .publish(CHANNEL, "reg")
            .ignore();
        let _: () = pipe.query_async(&mut con).await.expect("deregister");
        loop {
            let (status, _) = client.get("/reg/p").await.expect("request");
            if status == 503 {
                break;
            }
        }
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "propagation PUBLISH → first request served by the new node, n={}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.90).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
}

/// Requests/s of `conns` keep-alive client loops for `d`; failures are counted.
async fn load(addr: SocketAddr, conns: usize, d: Duration) -> (f64, u64) {
    let stop = Instant::now() + d;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut c = KeepAlive::new(addr);
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < stop {
                match c.get("/").await {
                    Ok((200, _)) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.expect("load task");
        ok += o;
        failed += f;
    }
    (ok as f64 / d.as_secs_f64(), failed)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is the 1st, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// What the Redis side does during a throughput phase.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Storm {
    Quiet,
    /// One pipelined burst of 1000 register/deregister messages every second (the issue's
    /// "a thousand messages in a second").
    BurstPerSecond,
    /// Bursts of 1000 back to back, as fast as Redis takes them (a stress figure).
    Continuous,
}

/// Send storms of `mode` until `flag` clears; returns the messages sent.
async fn storm(url: String, addrs: Vec<String>, mode: Storm, flag: Arc<AtomicBool>) -> u64 {
    if mode == Storm::Quiet {
        return 0;
    }
    let client = redis::Client::open(url).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sent = 0u64;
    while flag.load(Ordering::Relaxed) {
        if mode == Storm::BurstPerSecond {
            tokio::select! {
                _ = tick.tick() => {}
                _ = async { while flag.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(5)).await } } => break,
            }
        }
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            let a = &addrs[i % addrs.len()];
            if (i / addrs.len()) % 2 == 0 {
                pipe.cmd("HSET").arg(key("web")).arg(a).arg("{}").ignore();
            } else {
                pipe.cmd("HDEL").arg(key("web")).arg(a).ignore();
            }
            pipe.cmd("PUBLISH").arg(CHANNEL).arg("web").ignore();
        }
        let _: () = pipe.query_async(&mut con).await.expect("storm");
        sent += 1000;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn bench_throughput_during_a_registration_storm() {
    let redis = RedisServer::start();
    let s1 = Backend::start("s1", Behaviour::Echo).await;
    let s2 = Backend::start("s2", Behaviour::Echo).await;
    let mut dyns = Vec::new();
    for i in 0..3 {
        dyns.push(Backend::start(&format!("d{i}"), Behaviour::Echo).await);
    }
    let sy = Switchyard::start(&config(
        &redis.url(),
        &[("web", &[s1.addr, s2.addr])],
        "30s",
    ));
    let phase = Duration::from_secs(5);
    let conns = 8;
    let rounds = 3;
    let _ = load(sy.http(), conns, Duration::from_secs(1)).await; // warm-up

    let modes = [Storm::Quiet, Storm::BurstPerSecond, Storm::Continuous];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut rate: Vec<f64> = vec![0.0; modes.len()];
    let mut applied: Vec<f64> = vec![0.0; modes.len()];
    let mut sy_cpu: Vec<f64> = vec![0.0; modes.len()];
    let mut redis_cpu: Vec<f64> = vec![0.0; modes.len()];
    let redis_pid = redis.pid().expect("redis pid");
    for _round in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let flag = Arc::new(AtomicBool::new(true));
            let addrs: Vec<String> = dyns.iter().map(|d| d.addr.to_string()).collect();
            let before = updates(&sy, "applied").await;
            let stormer = tokio::spawn(storm(redis.url(), addrs, *mode, flag.clone()));
            let (c0, r0) = (cpu_seconds(sy.pid()), cpu_seconds(redis_pid));
            let t = Instant::now();
            let (r, failed) = load(sy.http(), conns, phase).await;
            flag.store(false, Ordering::Relaxed);
            let sent = stormer.await.expect("stormer");
            let took = t.elapsed().as_secs_f64();
            sy_cpu[m] += (cpu_seconds(sy.pid()) - c0) / took / rounds as f64;
            redis_cpu[m] += (cpu_seconds(redis_pid) - r0) / took / rounds as f64;
            assert_eq!(failed, 0, "failed requests ({mode:?})");
            rps[m].push(r);
            rate[m] += sent as f64 / took / rounds as f64;
            applied[m] += (updates(&sy, "applied").await - before) / took / rounds as f64;
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let quiet = median(&rps[0]);
    println!("throughput, {conns} keep-alive clients, {rounds} interleaved rounds of {phase:?} per mode:");
    for (m, mode) in modes.iter().enumerate() {
        println!(
            "  {mode:?}: {:.0?} req/s, median {:.0} → ratio {:.3} vs quiet; {:.0} messages/s, {:.1} applied updates/s; CPU: switchyard {:.2} cores, redis-server {:.2} cores",
            rps[m],
            median(&rps[m]),
            median(&rps[m]) / quiet,
            rate[m],
            applied[m],
            sy_cpu[m],
            redis_cpu[m],
        );
    }
}
