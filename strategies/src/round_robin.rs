//! Plain round robin: each node in turn, ignoring weights.
//!
//! Why it exists: it is the simplest fair policy and the easiest to reason about when
//! every node is alike; its sequence is exact and predictable (0, 1, 2, 0, 1, 2, ...),
//! which operators rely on when debugging.
//!
//! How it works: the pool's [`SharedState::cursor`] is a monotonic pick counter; a pick
//! takes the next value with one `fetch_add` and starts at `cursor % n`. Because the
//! counter lives in the pool's shared state rather than in this struct, a rebuild (config
//! reload, Redis update) keeps the rotation going instead of restarting at node 0.
//!
//! Nodes that cannot take the attempt (ineligible, or in `ctx.exclude`) are skipped by
//! walking forward; when that happens the cursor is moved past the node chosen
//! (`fetch_max`), so the *next* pick continues after it. The rotation is therefore exact
//! over the eligible nodes: with node 1 down, three nodes give 0, 2, 0, 2 rather than
//! 0, 2, 2, 0, 2, 2 (which a plain skip would give, doubling node 2's share).
//!
//! Slow start: a node whose slow-start factor is `f < 1` is accepted with probability
//! `f` and otherwise passed over like an ineligible node (cursor skip included), so its
//! share is `f` times its normal one relative to the others: `f / (f + n - 1)`. When every usable node is in slow start and all refuse, the first usable node
//! of the walk is taken anyway: slow start must never turn a healthy pool into "no node".
//!
//! Cost of a pick: one atomic `fetch_add` plus one eligibility check when the next node is
//! usable (the common case); O(n) in the worst case (almost every node unusable).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::{admit, usable, Node, PickContext, SharedState, Strategy};

/// Round robin over the eligible nodes; see the module docs.
pub struct RoundRobin {
    nodes: Vec<Node>,
    shared: Arc<SharedState>,
}

impl RoundRobin {
    pub fn new(nodes: Vec<Node>, shared: Arc<SharedState>) -> RoundRobin {
        RoundRobin { nodes, shared }
    }
}

impl fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin")
            .field("nodes", &self.nodes.len())
            .field("cursor", &self.shared.cursor.load(Ordering::Relaxed))
            .finish()
    }
}

impl Strategy for RoundRobin {
    fn name(&self) -> &'static str {
        crate::Kind::RoundRobin.as_str()
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.nodes.len();
        if n == 0 {
            return None;
        }
        let c = self.shared.cursor.fetch_add(1, Ordering::Relaxed);
        let start = (c % n as u64) as usize;
        // First usable node that slow start turned down, kept as the last resort.
        let mut refused: Option<(usize, usize)> = None;
        for step in 0..n {
            let i = wrap(start + step, n);
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            if admit(&node.stats, ctx.now_ms) {
                self.skip_to(c, step);
                return Some(i);
            }
            refused.get_or_insert((step, i));
        }
        let (step, i) = refused?;
        self.skip_to(c, step);
        Some(i)
    }
}

impl RoundRobin {
    /// After skipping `step` nodes from cursor value `c`, make the next pick start right
    /// after the node chosen. `fetch_max` rather than a store: concurrent picks may have
    /// moved the cursor further already, and it must never go backwards.
    #[inline]
    fn skip_to(&self, c: u64, step: usize) {
        if step > 0 {
            self.shared
                .cursor
                .fetch_max(c.wrapping_add(step as u64 + 1), Ordering::Relaxed);
        }
    }
}

/// `i % n` for `i < 2n`, without a division.
#[inline(always)]
pub(crate) fn wrap(i: usize, n: usize) -> usize {
    if i >= n {
        i - n
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Strategy;
    use proptest::prelude::*;

    fn rr(nodes: Vec<Node>) -> RoundRobin {
        RoundRobin::new(nodes, Arc::new(SharedState::default()))
    }

    fn sequence(s: &RoundRobin, k: usize, exclude: &[usize]) -> Vec<Option<usize>> {
        (0..k).map(|_| s.pick(&ctx(exclude))).collect()
    }

    #[test]
    fn exact_rotation_over_three() {
        let s = rr(equal(3));
        let got: Vec<usize> = sequence(&s, 9, &[]).into_iter().flatten().collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn rotation_survives_a_rebuild() {
        let shared = Arc::new(SharedState::default());
        let nodes = equal(3);
        let a = RoundRobin::new(nodes.clone(), Arc::clone(&shared));
        assert_eq!(a.pick(&ctx(&[])), Some(0));
        assert_eq!(a.pick(&ctx(&[])), Some(1));
        let b = RoundRobin::new(nodes, shared);
        assert_eq!(b.pick(&ctx(&[])), Some(2));
        assert_eq!(b.pick(&ctx(&[])), Some(0));
    }

    #[test]
    fn skipping_keeps_the_rotation_exact() {
        let nodes = equal(3);
        let _g = make_ineligible(&nodes[1].stats, Reason::Down);
        let s = rr(nodes);
        let got: Vec<usize> = sequence(&s, 6, &[]).into_iter().flatten().collect();
        assert_eq!(got, [0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn every_ineligibility_reason_is_skipped() {
        for reason in REASONS {
            let nodes = equal(4);
            let _g = make_ineligible(&nodes[2].stats, reason);
            let s = rr(nodes);
            for p in sequence(&s, 20, &[]) {
                assert!(matches!(p, Some(0 | 1 | 3)), "{reason:?}: {p:?}");
            }
        }
    }

    #[test]
    fn exclusion_empty_and_all_ineligible() {
        let s = rr(equal(3));
        for _ in 0..6 {
            assert_eq!(s.pick(&ctx(&[0, 2])), Some(1));
        }
        assert_eq!(s.pick(&ctx(&[0, 1, 2])), None);
        assert_eq!(rr(Vec::new()).pick(&ctx(&[])), None);

        let nodes = equal(5);
        let _guards: Vec<_> = nodes
            .iter()
            .zip(REASONS)
            .map(|(n, r)| make_ineligible(&n.stats, r))
            .collect();
        assert_eq!(rr(nodes).pick(&ctx(&[])), None);
    }

    #[test]
    fn slow_start_reduces_share_but_a_slow_pool_still_picks() {
        crate::rng::seed(11);
        let nodes = equal(4);
        slow_start(&nodes[0].stats, 0.25);
        let s = rr(nodes.clone());
        let c = counts(&s, 4, 40_000, &ctx(&[]));
        // Unslowed share 1/4. A refused turn goes to the next node and the cursor skips
        // past it, which makes node 0's share exactly proportional: 0.25 / 3.25 ≈ 0.077
        // (sd ≈ 0.0013 over 40k picks).
        let share0 = c[0] as f64 / 40_000.0;
        assert!((0.067..0.087).contains(&share0), "{c:?}");

        for n in &nodes {
            slow_start(&n.stats, 0.1);
        }
        let c = counts(&s, 4, 4_000, &ctx(&[]));
        assert!(c.iter().all(|&k| k > 500), "all slow, still spread: {c:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Single-threaded, the picks walk the eligible nodes in index order, cyclically,
        /// from wherever the cursor stands: over k full rounds each eligible node is
        /// picked exactly k times.
        #[test]
        fn rotation_is_exact(
            mask in proptest::collection::vec(any::<bool>(), 1..24),
            start in any::<u32>(),
            rounds in 1usize..5,
        ) {
            let nodes = equal(mask.len());
            let _g: Vec<_> = nodes
                .iter()
                .zip(&mask)
                .filter(|(_, &up)| !up)
                .map(|(n, _)| make_ineligible(&n.stats, Reason::Down))
                .collect();
            let shared = Arc::new(SharedState::default());
            shared.cursor.store(u64::from(start), Ordering::Relaxed);
            let s = RoundRobin::new(nodes, shared);
            let eligible: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
            let got = sequence(&s, rounds * eligible.len().max(1), &[]);
            if eligible.is_empty() {
                prop_assert!(got.iter().all(Option::is_none));
            } else {
                let got: Vec<usize> = got.into_iter().map(|p| p.expect("eligible exists")).collect();
                // The first pick is the first eligible node at or after the cursor.
                let first = eligible
                    .iter()
                    .position(|&i| i >= start as usize % mask.len())
                    .unwrap_or(0);
                let expect: Vec<usize> = (0..got.len())
                    .map(|k| eligible[(first + k) % eligible.len()])
                    .collect();
                prop_assert_eq!(got, expect);
            }
        }
    }
}
