//! `pick` cost of every strategy at 3, 100 and 1,000 nodes, all eligible.
//!
//! Run: `cargo bench -p strategies --bench pick -- --warm-up-time 1 --measurement-time 2`
//! (add a filter such as `pick/least_conn` to run one group).
//!
//! Budgets: under 50 ns per pick at 1,000 nodes for every strategy but `consistent_hash`,
//! which has 150 ns. The numbers are single-threaded with the node stats hot in cache,
//! which is the best case; they are for comparing strategies and catching regressions.
//!
//! Besides the main `pick` group: `pick_observed` measures `p2c_ewma` when every node has
//! a latency observation that must be decayed on read (the `exp` path), `least_conn_size`
//! measures around the exact/sampled threshold, and `build` the table construction that
//! runs off the request path on every pool change.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strategies::{build, hash_key, now_ms, Kind, Node, NodeStats, PickContext, SharedState};

fn nodes(n: usize, weight: impl Fn(usize) -> u32) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            key: format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256),
            weight: weight(i),
            stats: Arc::new(NodeStats::new()),
        })
        .collect()
}

/// Hashes of distinct keys, so consistent-hash lookups are not one cached path.
fn hashes() -> Vec<u64> {
    (0..4096)
        .map(|k| hash_key(format!("client-{k}").as_bytes()))
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let keys = hashes();
    let now = now_ms();
    let mut group = c.benchmark_group("pick");
    for kind in Kind::ALL {
        for n in [3usize, 100, 1000] {
            let s = build(kind, nodes(n, |_| 1), Arc::new(SharedState::default()));
            group.bench_with_input(BenchmarkId::new(kind.as_str(), n), &n, |b, _| {
                let mut k = 0usize;
                b.iter(|| {
                    k = (k + 1) & 4095;
                    let ctx = PickContext {
                        hash: keys[k],
                        exclude: &[],
                        now_ms: now,
                    };
                    black_box(s.pick(black_box(&ctx)))
                });
            });
        }
    }
    group.finish();
}

fn bench_p2c_observed(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_observed");
    let n = nodes(1000, |_| 1);
    for (i, node) in n.iter().enumerate() {
        node.stats
            .observe_rtt(Duration::from_micros(500 + (i as u64 * 37) % 5000));
    }
    let s = build(Kind::P2cEwma, n, Arc::new(SharedState::default()));
    // Five seconds after the observations: every read decays (computes an exp).
    let ctx = PickContext {
        hash: 0,
        exclude: &[],
        now_ms: now_ms() + 5_000,
    };
    group.bench_function("p2c_ewma/1000", |b| {
        b.iter(|| black_box(s.pick(black_box(&ctx))))
    });
    group.finish();
}

fn bench_least_conn_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("least_conn_size");
    let ctx = PickContext {
        hash: 0,
        exclude: &[],
        now_ms: now_ms(),
    };
    for n in [8usize, 16, 17, 32] {
        let s = build(
            Kind::LeastConn,
            nodes(n, |_| 1),
            Arc::new(SharedState::default()),
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(s.pick(black_box(&ctx))))
        });
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for (kind, label) in [
        (
            Kind::WeightedRoundRobin,
            "weighted_round_robin/1000_mixed_weights",
        ),
        (Kind::ConsistentHash, "consistent_hash/1000"),
    ] {
        let n = nodes(1000, |i| 1 + (i as u32 * 7919) % 100);
        group.bench_function(label, |b| {
            b.iter(|| {
                black_box(build(
                    kind,
                    black_box(n.clone()),
                    Arc::new(SharedState::default()),
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_pick,
    bench_p2c_observed,
    bench_least_conn_sizes,
    bench_build
);
criterion_main!(benches);
