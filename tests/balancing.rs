//! Load-balancing strategies, end to end: the real binary in front of real backends.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::client::{get, get_with};
use common::{eventually, pool_yaml, single_pool_config, Backend, Behaviour, Switchyard, WAIT};

async fn echo_backends(names: &[&str]) -> Vec<Backend> {
    let mut v = Vec::new();
    for n in names {
        v.push(Backend::start(n, Behaviour::Echo).await);
    }
    v
}

fn addrs(bs: &[Backend]) -> Vec<SocketAddr> {
    bs.iter().map(|b| b.addr).collect()
}

/// Which backend answered each of `n` sequential GETs.
async fn sequence(sy: &Switchyard, n: usize) -> Vec<String> {
    let mut seq = Vec::with_capacity(n);
    for i in 0..n {
        let r = get(sy.http(), &format!("/seq/{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), r.backend(), "the body names the backend");
        seq.push(r.backend());
    }
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotates_exactly_in_config_order() {
    let bs = echo_backends(&["a", "b", "c"]).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &addrs(&bs), ""));

    let seq = sequence(&sy, 9).await;
    for b in &bs {
        let n = seq.iter().filter(|s| **s == b.name).count();
        assert_eq!(n, 3, "backend {} got {n} of 9 requests: {seq:?}", b.name);
        assert_eq!(
            b.count(),
            3,
            "backend {} recorded {} requests",
            b.name,
            b.count()
        );
    }
    // The rotation may start anywhere but must follow the config order a → b → c → a.
    let next = |s: &str| match s {
        "a" => "b",
        "b" => "c",
        _ => "a",
    };
    for w in seq.windows(2) {
        assert_eq!(w[1], next(&w[0]), "not a rotation in config order: {seq:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_is_exact_and_smooth() {
    let heavy = Backend::start("heavy", Behaviour::Echo).await;
    let light = Backend::start("light", Behaviour::Echo).await;
    let yaml = format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nroutes:\n  - pool: web\npools:\n{}",
        pool_yaml(
            "web",
            "weighted_round_robin",
            &[(heavy.addr, 3), (light.addr, 1)],
            ""
        )
    );
    let sy = Switchyard::start(&yaml);

    let seq = sequence(&sy, 40).await;
    let heavy_n = seq.iter().filter(|s| *s == "heavy").count();
    assert_eq!(
        (heavy_n, seq.len() - heavy_n),
        (30, 10),
        "40 requests must split exactly 3:1: {seq:?}"
    );
    // Smooth weighting is periodic with period 4 (the weight sum): every 4 consecutive
    // requests, wherever the window starts, hold exactly 3 heavy and 1 light.
    for (i, w) in seq.windows(4).enumerate() {
        let h = w.iter().filter(|s| *s == "heavy").count();
        assert_eq!(h, 3, "window {i}..{} is not 3:1: {w:?} in {seq:?}", i + 4);
    }
    // And the light node is never starved for more than 3 requests in a row.
    let mut run = 0;
    for s in &seq {
        run = if s == "heavy" { run + 1 } else { 0 };
        assert!(run <= 3, "more than 3 heavy picks in a row: {seq:?}");
    }
}

/// `active_requests` of every node of pool `web`, by address, from the admin API.
async fn active_requests(sy: &Switchyard) -> HashMap<String, u64> {
    let r = get(sy.admin_addr(), "/api/v1/pools").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    let pool = doc["pools"]
        .as_array()
        .expect("pools array")
        .iter()
        .find(|p| p["name"] == "web")
        .expect("pool web")
        .clone();
    pool["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().expect("addr").to_string(),
                n["active_requests"].as_u64().expect("active_requests"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_the_node_holding_requests() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&single_pool_config("least_conn", &[a.addr, b.addr], ""));
    let http = sy.http();

    // Both nodes hold their requests: each new request must go to the node with fewer in
    // flight, so 6 requests sent one after another end up 3 and 3.
    a.hold();
    b.hold();
    let mut pending = Vec::new();
    for i in 0..6 {
        pending.push(tokio::spawn(async move {
            get(http, &format!("/held/{i}")).await
        }));
        eventually("the held request to reach a backend", WAIT, || {
            a.in_flight() + b.in_flight() == i + 1
        })
        .await;
    }
    assert_eq!(
        (a.in_flight(), b.in_flight()),
        (3, 3),
        "least_conn must balance in-flight requests"
    );

    // b finishes its requests; a keeps 3 in flight.
    b.release();
    let a_key = a.addr.to_string();
    let b_key = b.addr.to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let act = active_requests(&sy).await;
        if act.get(&b_key) == Some(&0) {
            assert_eq!(
                act.get(&a_key),
                Some(&3),
                "admin API active_requests: {act:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b's requests never finished: {act:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // While a holds 3, every new request goes to b.
    for i in 0..10 {
        let r = match tokio::time::timeout(WAIT, get(http, &format!("/fast/{i}"))).await {
            Ok(r) => r,
            Err(_) => panic!(
                "request {i} got no answer: sent to the busy node? (a has received {})",
                a.count()
            ),
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "b", "request {i} went to the busy node");
    }
    assert_eq!(a.count(), 3, "a got a request while it held 3");
    assert_eq!(a.in_flight(), 3);

    a.release();
    let mut by_backend = HashMap::new();
    for p in pending {
        let r = common::client::within("a held request", WAIT, p)
            .await
            .expect("task");
        assert_eq!(r.status, 200);
        *by_backend.entry(r.backend()).or_insert(0) += 1;
    }
    assert_eq!(by_backend.get("a"), Some(&3));
    assert_eq!(by_backend.get("b"), Some(&3));
}

fn hash_config(nodes: &[SocketAddr]) -> String {
    single_pool_config("consistent_hash", nodes, "    hash_key: header:X-User\n")
}

/// The node each of `keys` maps to, asserting it answers.
async fn mapping(sy: &Switchyard, keys: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys {
        let r = get_with(sy.http(), "/", &[("x-user", k)]).await;
        assert_eq!(r.status, 200, "key {k}: {}", r.text());
        out.push(r.backend());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_by_header_is_sticky_and_moves_few_keys() {
    let bs = echo_backends(&["n1", "n2", "n3", "n4"]).await;
    let all = addrs(&bs);
    let sy = Switchyard::start(&hash_config(&all[..3]));

    // The same header value always lands on the same node.
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let r = get_with(sy.http(), "/", &[("x-user", user)]).await;
            assert_eq!(r.status, 200);
            seen.insert(r.backend());
        }
        assert_eq!(seen.len(), 1, "X-User {user} went to {seen:?}");
    }

    let keys: Vec<String> = (0..50).map(|i| format!("user-{i}")).collect();
    let before = mapping(&sy, &keys).await;
    let used: HashSet<&String> = before.iter().collect();
    // All requests come from 127.0.0.1: only hashing the header spreads them.
    assert!(
        used.len() >= 2,
        "50 different X-User values all went to {used:?}: is the header hashed at all?"
    );
    assert!(
        !before.iter().any(|n| n == "n4"),
        "n4 is not in the pool yet"
    );

    // Add a fourth node (SIGHUP reload): keys that move must move to it, and few move.
    sy.reload(&hash_config(&all));
    let after = mapping(&sy, &keys).await;
    let moved: Vec<(&String, &String, &String)> = keys
        .iter()
        .zip(before.iter().zip(after.iter()))
        .filter(|(_, (b, a))| b != a)
        .map(|(k, (b, a))| (k, b, a))
        .collect();
    for (k, from, to) in &moved {
        assert_eq!(
            to.as_str(),
            "n4",
            "key {k} moved from {from} to {to}, not to the new node"
        );
    }
    assert!(
        moved.len() <= 25,
        "{} of 50 keys moved when going from 3 to 4 nodes: {moved:?}",
        moved.len()
    );
    assert!(!moved.is_empty(), "the new node took none of 50 keys");

    // A second instance with the same nodes agrees key for key (instances share a ring).
    let fresh = Switchyard::start(&hash_config(&all));
    let fresh_map = mapping(&fresh, &keys).await;
    assert_eq!(
        fresh_map, after,
        "a fresh instance maps keys differently from the reloaded one"
    );
}
