//! `rate_limit`: a token bucket per client address → 429 with `Retry-After`, counted in
//! `switchyard_rate_limited_total{listener}`; clients behind `trusted_proxies` are told
//! apart by `X-Forwarded-For`; the bucket table stays bounded under a flood of distinct
//! addresses; a reload applies a changed limit.

mod common;

use std::time::{Duration, Instant};

use common::client::{get, get_with};
use common::raw::RawConn;
use common::{metric, parse_metrics, single_pool_config, Backend, Behaviour, Switchyard};

/// `switchyard::balance::ratelimit::MAX_BUCKETS`: 64 shards of 1024.
const MAX_BUCKETS: f64 = 65_536.0;

async fn metrics(sy: &Switchyard) -> Vec<common::Sample> {
    let r = get(sy.admin_addr(), "/metrics").await;
    assert_eq!(r.status, 200);
    parse_metrics(&r.text())
}

fn assert_429(r: &common::Resp) -> u64 {
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.header("x-backend").is_none(),
        "a 429 must not come from a node"
    );
    assert_eq!(r.json()["error"], "too many requests");
    assert!(r.header("x-request-id").is_some());
    let retry: u64 = r
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    retry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_429_with_retry_after_then_recovery() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let yaml = format!(
        "{}rate_limit:\n  requests_per_second: 1\n  burst: 3\n",
        single_pool_config("round_robin", &[b.addr], "")
    );
    let sy = Switchyard::start(&yaml);
    let http = sy.http();

    let t0 = Instant::now();
    // A new bucket starts full: `burst` requests pass whatever the timing.
    for i in 0..3 {
        let r = get(http, "/").await;
        assert_eq!(r.status, 200, "request {i} of the burst: {}", r.text());
    }
    // Then a refusal comes before the bucket can refill (one token per second).
    let mut ok = 3;
    let mut refused = 0;
    let mut retry_after = 0;
    for _ in 0..6 {
        let r = get(http, "/").await;
        if r.status == 200 {
            ok += 1;
        } else {
            retry_after = assert_429(&r);
            refused += 1;
            break;
        }
    }
    let elapsed = t0.elapsed();
    assert_eq!(refused, 1, "no 429 after {ok} requests in {elapsed:?}");
    let refilled = elapsed.as_secs_f64().floor() as usize;
    assert!(
        ok <= 3 + refilled,
        "{ok} requests passed in {elapsed:?}: more than burst + refill"
    );
    assert_eq!(b.count(), ok, "refused requests never reach a node");

    let m = metrics(&sy).await;
    assert_eq!(
        metric(&m, "switchyard_rate_limited_total", &[("listener", "http")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "switchyard_rate_limit_buckets", &[]),
        Some(1.0),
        "one client, one bucket"
    );

    // Waiting as long as Retry-After says is enough.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
    let r = get(http, "/").await;
    assert_eq!(r.status, 200, "after waiting Retry-After: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_have_their_own_buckets() {
    let b = Backend::start("b", Behaviour::Echo).await;
    // One token per 1000 s: nothing refills during the test.
    let limit = "rate_limit:\n  requests_per_second: 0.001\n  burst: 2\n";
    let trusted = format!(
        "{}trusted_proxies: [127.0.0.1/32]\n{limit}",
        single_pool_config("round_robin", &[b.addr], "")
    );
    let sy = Switchyard::start(&trusted);
    let http = sy.http();
    let from = |xff: &'static str| [("x-forwarded-for", xff)];

    for _ in 0..2 {
        assert_eq!(get_with(http, "/", &from("203.0.113.1")).await.status, 200);
    }
    assert_429(&get_with(http, "/", &from("203.0.113.1")).await);
    // Another client behind the same proxy is not affected...
    let r = get_with(http, "/", &from("203.0.113.2")).await;
    assert_eq!(r.status, 200);
    // ...and X-Forwarded-For still carries the real peer at its end.
    assert_eq!(
        b.last_request().header("x-forwarded-for").as_deref(),
        Some("203.0.113.2, 127.0.0.1")
    );
    // Prepending a made-up address does not make a new client: the last untrusted hop
    // counts.
    assert_429(&get_with(http, "/", &from("198.51.100.7, 203.0.113.1")).await);
    // One IPv6 /64 is one client.
    assert_eq!(get_with(http, "/", &from("2001:db8::1")).await.status, 200);
    assert_eq!(get_with(http, "/", &from("2001:db8::2")).await.status, 200);
    assert_429(&get_with(http, "/", &from("2001:db8::3")).await);
    let m = metrics(&sy).await;
    assert_eq!(
        metric(&m, "switchyard_rate_limited_total", &[("listener", "http")]),
        Some(3.0)
    );
    drop(sy);

    // Without trusted_proxies, X-Forwarded-For is not believed: every request is the peer's.
    let untrusted = format!(
        "{}{limit}",
        single_pool_config("round_robin", &[b.addr], "")
    );
    let sy = Switchyard::start(&untrusted);
    let http = sy.http();
    assert_eq!(get_with(http, "/", &from("203.0.113.1")).await.status, 200);
    assert_eq!(get_with(http, "/", &from("203.0.113.2")).await.status, 200);
    assert_429(&get_with(http, "/", &from("203.0.113.3")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_table_stays_bounded_under_100k_distinct_clients() {
    // No node is needed: requests for an unrouted host get 404, after the rate limit has
    // made (or found) the client's bucket. One token per 1000 s, burst 1: every bucket is
    // drained and none refills, so none can be dropped as "full" — eviction must make
    // room by age.
    let yaml = "listeners:\n  - name: http\n    bind: 127.0.0.1:0\n\
        admin:\n  bind: 127.0.0.1:0\n\
        routes:\n  - host: only.test\n    pool: web\n\
        pools:\n  web:\n    nodes: [{addr: \"127.0.0.1:9\"}]\n\
        trusted_proxies: [127.0.0.1/32]\n\
        rate_limit:\n  requests_per_second: 0.001\n  burst: 1\n";
    let sy = Switchyard::start(yaml);
    let http = sy.http();
    const CLIENTS: u32 = 100_000;
    const CONNS: u32 = 8;
    const BATCH: u32 = 250;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(http).await;
            let mut i = c;
            while i < CLIENTS {
                // A batch of pipelined requests, each from its own address in 100.64/10.
                let mut batch = String::new();
                let mut n = 0;
                while n < BATCH && i < CLIENTS {
                    let ip = std::net::Ipv4Addr::from(0x6440_0000u32 + i);
                    batch.push_str(&format!(
                        "GET /flood HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {ip}\r\n\r\n"
                    ));
                    n += 1;
                    i += CONNS;
                }
                conn.send(batch.as_bytes()).await.expect("write a batch");
                for _ in 0..n {
                    let r = conn.read_response().await.expect("a response");
                    assert_eq!(
                        r.status, 404,
                        "each client's first request passes the limit"
                    );
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("100 000 requests within 5 minutes")
            .expect("a flood task failed");
    }
    eprintln!("100 000 clients in {:?}", t0.elapsed());

    let m = metrics(&sy).await;
    let buckets = metric(&m, "switchyard_rate_limit_buckets", &[]).expect("the buckets gauge");
    assert!(
        buckets <= MAX_BUCKETS,
        "{buckets} buckets for 100 000 clients: the table is not bounded"
    );
    assert!(
        buckets >= MAX_BUCKETS * 0.75,
        "{buckets} buckets: the table should be nearly full, not emptied"
    );
    assert_eq!(
        metric(&m, "switchyard_rate_limited_total", &[("listener", "http")]).unwrap_or(0.0),
        0.0,
        "every client made one request: none was over its limit"
    );
    // The most recent clients are still known: a second request from one is refused.
    let last = std::net::Ipv4Addr::from(0x6440_0000u32 + CLIENTS - 1).to_string();
    let mut conn = RawConn::connect(http).await;
    conn.send(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {last}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let r = conn.read_response().await.expect("a response");
    assert_eq!(r.status, 429, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_changed_rate_limit() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let base = single_pool_config("round_robin", &[b.addr], "");
    let sy = Switchyard::start(&base);
    let http = sy.http();
    for _ in 0..5 {
        assert_eq!(get(http, "/").await.status, 200, "no limit configured");
    }
    sy.reload(&format!(
        "{base}rate_limit:\n  requests_per_second: 0.001\n  burst: 1\n"
    ));
    assert_eq!(get(http, "/").await.status, 200, "a new bucket starts full");
    assert_429(&get(http, "/").await);
    // Raised at reload: the client keeps its (empty) bucket, which now holds more and
    // refills faster.
    sy.reload(&format!(
        "{base}rate_limit:\n  requests_per_second: 1000\n  burst: 5\n"
    ));
    assert_eq!(get(http, "/").await.status, 200);
    sy.reload(&base);
    for _ in 0..5 {
        assert_eq!(get(http, "/").await.status, 200, "limit removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_hashing_uses_the_client_behind_a_trusted_proxy() {
    let nodes = [
        Backend::start("n1", Behaviour::Echo).await,
        Backend::start("n2", Behaviour::Echo).await,
        Backend::start("n3", Behaviour::Echo).await,
    ];
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let yaml = format!(
        "{}trusted_proxies: [127.0.0.1/32]\n",
        single_pool_config("consistent_hash", &addrs, "    hash_key: client_ip\n")
    );
    let sy = Switchyard::start(&yaml);
    let mut used = std::collections::HashSet::new();
    for i in 0..20 {
        let xff = format!("192.0.2.{i}");
        let first = get_with(sy.http(), "/", &[("x-forwarded-for", &xff)])
            .await
            .backend();
        for _ in 0..3 {
            let again = get_with(sy.http(), "/", &[("x-forwarded-for", &xff)])
                .await
                .backend();
            assert_eq!(again, first, "client {xff} moved between nodes");
        }
        used.insert(first);
    }
    // All from one peer, yet 20 clients spread over the nodes (all on one node by chance:
    // about 1 in 10^9).
    assert!(
        used.len() > 1,
        "every client hashed to {used:?}: the peer was used"
    );
}
