//! Best-of-batches `pick` timings: a noise-resistant companion to the criterion bench.
//!
//! Run: `cargo bench -p strategies --bench pick_best`
//!
//! The CI and developer VMs have two cores shared with other builds, so criterion's means
//! swing by 2–4× with the machine's load. This reports, for each strategy and pool size,
//! the *minimum* over 600 batches of 2,000 picks: a batch that ran without being preempted
//! or having its caches flushed, i.e. close to the cost on an idle core. Use it to compare
//! changes on a busy machine; use criterion (`--bench pick`) for distributions.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strategies::{
    build, hash_key, now_ms, Kind, Node, NodeStats, PickContext, SharedState, Strategy,
};

const BATCHES: usize = 600;
const PICKS: usize = 2_000;

/// `cargo bench` passes `--bench`; without it (`cargo test --benches`) run a quick smoke
/// pass instead of the full timing.
fn batches() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        BATCHES
    } else {
        2
    }
}

fn nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            key: format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256),
            weight: 1,
            stats: Arc::new(NodeStats::new()),
        })
        .collect()
}

fn best_ns(s: &dyn Strategy, keys: &[u64], now: u64) -> f64 {
    let mut best = f64::MAX;
    let mut k = 0usize;
    for _ in 0..batches() {
        let t = Instant::now();
        for _ in 0..PICKS {
            k = (k + 1) & 4095;
            let ctx = PickContext {
                hash: keys[k],
                exclude: &[],
                now_ms: now,
            };
            black_box(s.pick(black_box(&ctx)));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / PICKS as f64);
    }
    best
}

fn main() {
    // `cargo bench` passes `--bench`; an optional other argument filters by name.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let keys: Vec<u64> = (0..4096)
        .map(|k| hash_key(format!("client-{k}").as_bytes()))
        .collect();
    let now = now_ms();
    println!(
        "best of {} batches of {PICKS} picks, ns per pick",
        batches()
    );
    println!("{:<24} {:>8} {:>8} {:>8}", "strategy", "3", "100", "1000");
    for kind in Kind::ALL {
        if !kind.as_str().contains(&filter) {
            continue;
        }
        let row: Vec<String> = [3usize, 100, 1000]
            .iter()
            .map(|&n| {
                let s = build(kind, nodes(n), Arc::new(SharedState::default()));
                format!("{:8.1}", best_ns(s.as_ref(), &keys, now))
            })
            .collect();
        println!("{:<24} {}", kind.as_str(), row.join(" "));
    }
    if "p2c_ewma".contains(&filter) {
        // Every node observed, read 5 s later: each cost read decays the estimate.
        let n = nodes(1000);
        for (i, node) in n.iter().enumerate() {
            node.stats
                .observe_rtt(Duration::from_micros(500 + (i as u64 * 37) % 5000));
        }
        let s = build(Kind::P2cEwma, n, Arc::new(SharedState::default()));
        println!(
            "{:<24} {:>8} {:>8} {:8.1}",
            "p2c_ewma (decaying)",
            "",
            "",
            best_ns(s.as_ref(), &keys, now + 5_000)
        );
    }
}
