//! Node selection for Switchyard, as plain data.
//!
//! This crate has no I/O and no async runtime so that every strategy can be unit-tested,
//! property-tested and benchmarked on its own. The proxy builds one [`Strategy`] per pool
//! whenever the pool's node set changes (off the request path) and calls
//! [`Strategy::pick`] once per attempt on the request path.
//!
//! Live per-node facts (in-flight requests, peak-EWMA latency, health, ejection, draining,
//! slow start) live in [`NodeStats`], shared through `Arc` between the proxy, the health
//! checker and the strategies, and read with atomics only: no strategy takes a lock.
//!
//! Map of the crate:
//! - [`stats`]: `NodeStats`, the in-flight guard and the monotonic millisecond clock.
//! - [`round_robin`], [`weighted`], [`least_conn`], [`p2c_ewma`], [`consistent_hash`],
//!   [`random`]: one strategy each.
//! - [`hash`]: the fast key hash the proxy uses for `consistent_hash`.

pub mod consistent_hash;
pub mod hash;
pub mod least_conn;
pub mod p2c_ewma;
pub mod random;
pub mod round_robin;
pub mod stats;
pub mod weighted;

mod rng;

#[cfg(test)]
mod testkit;

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use hash::{hash_key, hash_key_seeded};
pub use stats::{now_ms, Health, InFlight, NodeStats};

/// One node as a strategy sees it. The index of a node in the slice given to [`build`] is
/// the index [`Strategy::pick`] returns.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node's `host:port`; `consistent_hash` places the node on its ring by this key,
    /// so that the same address lands on the same ring points in every snapshot.
    pub key: String,
    /// Configured weight, 1..=1000.
    pub weight: u32,
    /// Live stats shared with the proxy and the health checker.
    pub stats: Arc<NodeStats>,
}

/// What the proxy knows about one attempt when it asks for a node.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    /// Hash of the request's key (`consistent_hash` only; 0 otherwise).
    pub hash: u64,
    /// Indices already tried for this request: a retry goes to a different node.
    pub exclude: &'a [usize],
    /// [`now_ms`] read once per request by the caller.
    pub now_ms: u64,
}

/// Counters that must outlive one strategy instance: the proxy keeps one per pool and hands
/// it to every rebuilt strategy, so a config reload or a Redis update does not reset the
/// round-robin position.
#[derive(Debug, Default)]
pub struct SharedState {
    /// Monotonic pick counter used by the rotating strategies.
    pub cursor: AtomicU64,
}

/// A node-selection algorithm over a fixed node set.
pub trait Strategy: Send + Sync + fmt::Debug {
    /// The strategy's config name (`round_robin`, ...): its [`Kind::as_str`].
    fn name(&self) -> &'static str;

    /// Pick a node for one attempt. Never returns a node that is not
    /// [`NodeStats::is_eligible`] at `ctx.now_ms` or that is in `ctx.exclude`;
    /// returns `None` when no node qualifies.
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize>;
}

/// May node `i` take this attempt: not already tried for this request, and eligible.
///
/// The exclusion list is checked first because it is a short slice on the stack, while
/// eligibility dereferences the node's shared stats (another cache line).
#[inline(always)]
pub(crate) fn usable(stats: &NodeStats, i: usize, ctx: &PickContext<'_>) -> bool {
    !ctx.exclude.contains(&i) && stats.is_eligible(ctx.now_ms)
}

/// Slow-start admission for the strategies that walk a fixed order (rotation, tables,
/// random draws): a node at slow-start factor `f` is accepted with probability `f`, so it
/// gets about `f` of its normal share; a rejected node is passed over like an ineligible
/// one. Free when slow start is off (factor exactly 1.0).
#[inline(always)]
pub(crate) fn admit(stats: &NodeStats, now_ms: u64) -> bool {
    rng::chance(stats.weight_factor(now_ms))
}

/// A node's configured weight as the strategies use it: at least 1. Config validation
/// rejects 0; clamping keeps a stray 0 from silently removing a node or dividing by zero.
#[inline]
pub(crate) fn weight_of(node: &Node) -> u32 {
    node.weight.max(1)
}

/// The strategies Switchyard ships, by their config names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    P2cEwma,
    ConsistentHash,
    Random,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 6] = [
        Kind::RoundRobin,
        Kind::WeightedRoundRobin,
        Kind::LeastConn,
        Kind::P2cEwma,
        Kind::ConsistentHash,
        Kind::Random,
    ];

    /// Every kind's name, in the order of [`Kind::ALL`] (what a config error lists).
    pub const NAMES: [&'static str; 6] = {
        let mut names = [""; 6];
        let mut i = 0;
        while i < names.len() {
            names[i] = Kind::ALL[i].as_str();
            i += 1;
        }
        names
    };

    /// The name used in the config file and the admin API: spelled here only.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::RoundRobin => "round_robin",
            Kind::WeightedRoundRobin => "weighted_round_robin",
            Kind::LeastConn => "least_conn",
            Kind::P2cEwma => "p2c_ewma",
            Kind::ConsistentHash => "consistent_hash",
            Kind::Random => "random",
        }
    }

    /// Parse a config name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Build a strategy of `kind` over `nodes`. Table-based strategies (smooth weights, the hash
/// ring) build their tables here, so call this off the request path.
pub fn build(kind: Kind, nodes: Vec<Node>, shared: Arc<SharedState>) -> Box<dyn Strategy> {
    match kind {
        Kind::RoundRobin => Box::new(round_robin::RoundRobin::new(nodes, shared)),
        Kind::WeightedRoundRobin => Box::new(weighted::SmoothWeighted::new(nodes, shared)),
        Kind::LeastConn => Box::new(least_conn::LeastConn::new(nodes, shared)),
        Kind::P2cEwma => Box::new(p2c_ewma::P2cEwma::new(nodes)),
        Kind::ConsistentHash => Box::new(consistent_hash::Ring::new(nodes)),
        Kind::Random => Box::new(random::Random::new(nodes)),
    }
}

#[cfg(test)]
mod tests {
    //! The contract every strategy shares, checked through [`build`].

    use super::*;
    use crate::testkit::*;
    use crate::Strategy;
    use proptest::prelude::*;

    fn make(kind: Kind, nodes: Vec<Node>) -> Box<dyn Strategy> {
        build(kind, nodes, Arc::new(SharedState::default()))
    }

    fn hashed(k: usize) -> u64 {
        hash_key(format!("k{k}").as_bytes())
    }

    #[test]
    fn names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(make(kind, equal(2)).name(), kind.as_str());
        }
        assert_eq!(Kind::parse("least_connections"), None);
    }

    #[test]
    fn empty_pool_is_none() {
        for kind in Kind::ALL {
            assert_eq!(make(kind, Vec::new()).pick(&ctx(&[])), None, "{kind}");
        }
    }

    #[test]
    fn strategies_are_shareable_across_threads() {
        for kind in Kind::ALL {
            let s: Arc<dyn Strategy> = Arc::from(make(kind, equal(7)));
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || {
                        (0..2_000)
                            .filter(|k| {
                                let cx = PickContext {
                                    hash: hashed(k + t * 10_000),
                                    exclude: &[3],
                                    now_ms: NOW,
                                };
                                matches!(s.pick(&cx), Some(i) if i < 7 && i != 3)
                            })
                            .count()
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().ok(), Some(2_000), "{kind}");
            }
        }
    }

    #[test]
    fn all_in_slow_start_still_picks() {
        for kind in Kind::ALL {
            for size in [1, 3, 40] {
                let n = equal(size);
                for node in &n {
                    slow_start(&node.stats, 0.1);
                }
                let s = make(kind, n);
                for k in 0..200 {
                    let cx = PickContext {
                        hash: hashed(k),
                        exclude: &[],
                        now_ms: NOW,
                    };
                    assert!(s.pick(&cx).is_some(), "{kind} over {size}");
                }
            }
        }
    }

    fn kind_strategy() -> impl proptest::strategy::Strategy<Value = Kind> {
        proptest::sample::select(Kind::ALL.to_vec())
    }

    fn reason_strategy() -> impl proptest::strategy::Strategy<Value = Option<Reason>> {
        proptest::option::weighted(0.4, proptest::sample::select(REASONS.to_vec()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever the mix of states, loads, weights and exclusions: a pick is always a
        /// usable node, and `None` only when no node is usable.
        #[test]
        fn picks_only_usable_nodes(
            kind in kind_strategy(),
            seed in any::<u64>(),
            spec in proptest::collection::vec((1u32..20, reason_strategy(), 0u32..4, proptest::option::of(0.1f64..1.0)), 0..40),
            exclude in proptest::collection::vec(0usize..40, 0..4),
            hashes in proptest::collection::vec(any::<u64>(), 1..20),
        ) {
            rng::seed(seed);
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let n = nodes(&weights);
            let mut guards = Vec::new();
            for (node, (_, reason, inflight, slow)) in n.iter().zip(&spec) {
                guards.extend(hold(&node.stats, *inflight));
                if let Some(r) = reason {
                    guards.extend(make_ineligible(&node.stats, *r));
                }
                if let Some(f) = slow {
                    slow_start(&node.stats, *f);
                }
            }
            let any_usable = n.iter().enumerate().any(|(i, node)| !exclude.contains(&i) && node.stats.is_eligible(NOW));
            let s = make(kind, n.clone());
            for &hash in &hashes {
                let cx = PickContext { hash, exclude: &exclude, now_ms: NOW };
                match s.pick(&cx) {
                    None => prop_assert!(!any_usable, "{} returned None with a usable node", kind),
                    Some(i) => {
                        prop_assert!(i < n.len());
                        prop_assert!(!exclude.contains(&i), "{} picked excluded {}", kind, i);
                        prop_assert!(n[i].stats.is_eligible(NOW), "{} picked ineligible {}", kind, i);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Slow start reduces a node's share under every strategy: compare node 0's share
        /// of picks in the same pool with and without slow start on it.
        #[test]
        fn slow_start_reduces_share(kind in kind_strategy(), seed in any::<u64>(), size in 2usize..8, factor in 0.1f64..0.5) {
            const PICKS: usize = 3_000;
            let share = |slow: bool| -> f64 {
                rng::seed(seed);
                let n = equal(size);
                if slow {
                    slow_start(&n[0].stats, factor);
                }
                let s = make(kind, n);
                let c = if kind == Kind::ConsistentHash {
                    counts_hashed(s.as_ref(), size, PICKS)
                } else {
                    counts(s.as_ref(), size, PICKS, &ctx(&[]))
                };
                c[0] as f64 / PICKS as f64
            };
            let base = share(false);
            let slowed = share(true);
            // Skip/rejection strategies cut node 0's share by f·s/(s - 1 + f) (at most 2f/(1 + f)
            // for s = 2), the hash ring by about f, and the load-based ones to nothing (an idle
            // warming node always looks busier). Assert the looser (0.5 + f)× bound, plus
            // sampling slack.
            let slack = 5.0 * sd(PICKS, base.max(0.01)) / PICKS as f64;
            prop_assert!(slowed < base * (0.5 + factor) + slack || slowed == 0.0,
                "{}: share {} with slow start at {}, {} without", kind, slowed, factor, base);
        }
    }
}
