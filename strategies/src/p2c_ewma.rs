//! Power of two random choices over peak-EWMA latency × load (Finagle's and Linkerd's
//! default balancer).
//!
//! Why it exists: it routes around slow nodes, not only busy ones, using latency the proxy
//! already measures, at a constant cost per pick regardless of pool size, and without the
//! herd behaviour of "always the single best node" (every proxy instance and every core
//! piling onto the same node between two updates of its stats).
//!
//! How it works: draw two distinct usable nodes uniformly at random and send the attempt
//! to the one with the lower cost
//!
//! ```text
//! cost = ewma_ns × (in_flight + 1) / weight
//! ```
//!
//! where `ewma_ns` is the node's peak-EWMA round-trip estimate as of now
//! ([`NodeStats::ewma_ns_at`]): it jumps up at once on a slow response, decays toward
//! faster ones, and decays toward zero while the node gets no responses so that a node
//! that was slow once is tried again. `in_flight + 1` makes the estimate a prediction of
//! the wait for *this* request.
//!
//! A node never observed has no latency of its own. Its fixed seed
//! ([`DEFAULT_RTT`](crate::stats::DEFAULT_RTT), 100 ms) is right only against other
//! unobserved nodes (at start-up every node is equally unknown): against a peer answering
//! in 300 µs it would lose every comparison, never be picked, and so never be observed — a
//! node added at run time would get no traffic at all. So an unobserved candidate borrows
//! the observed cost of the node it is compared with: it is assumed as fast as its peer
//! (never faster) and the choice falls to in-flight load, where an idle new node wins
//! and so gets its first requests and a real estimate.
//!
//! Slow start: the winner of a comparison is admitted with probability equal to its
//! slow-start factor (10 % → 100 % over the window); when refused, the other candidate
//! takes the request. A warming node thus gets a share that ramps linearly from the floor,
//! also in an idle pool (dividing its cost by the factor instead would give it nothing at
//! all until the window ends, as long as the pool is idle).
//!
//! Choosing the better of two random nodes is Mitzenmacher's "power of two choices": the
//! maximum load drops exponentially compared with one random choice, while the cost of a
//! pick stays O(1).
//!
//! With fewer than three nodes "two distinct random nodes" is the whole pool, so the pick
//! compares the usable ones directly. Unusable draws are redrawn, up to [`MAX_DRAWS`]
//! draws in all. If fewer than two usable nodes turned up (most of the pool is down), the
//! pick falls back to an exact O(n) scan for the cheapest usable node, which also answers
//! `None` correctly.

use std::fmt;

use crate::{rng, usable, weight_of, Node, PickContext, Strategy};

/// Random draws per pick before falling back to the exact scan.
pub const MAX_DRAWS: usize = 8;

/// Power of two choices over peak-EWMA cost; see the module docs.
pub struct P2cEwma {
    nodes: Vec<Node>,
}

impl P2cEwma {
    pub fn new(nodes: Vec<Node>) -> P2cEwma {
        P2cEwma { nodes }
    }

    /// The exact scan: cheapest usable node (runner-up if the winner is refused by slow
    /// start). Unobserved nodes borrow the highest observed latency among the usable ones.
    fn cheapest(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let mut seed: Option<f64> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if usable(&node.stats, i, ctx) && node.stats.is_observed() {
                let l = node.stats.ewma_ns_at(ctx.now_ms);
                seed = Some(seed.map_or(l, |s: f64| s.max(l)));
            }
        }
        let mut best: Option<(usize, f64)> = None;
        let mut second: Option<(usize, f64)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            let c = cost_with(node, latency(node, seed, ctx.now_ms));
            if best.is_none_or(|(_, b)| c < b) {
                second = best;
                best = Some((i, c));
            } else if second.is_none_or(|(_, b)| c < b) {
                second = Some((i, c));
            }
        }
        let (b, _) = best?;
        Some(match second {
            Some((s, _)) if !self.admits(b, ctx) => s,
            _ => b,
        })
    }

    /// Compare two usable candidates; see the module docs.
    fn choose(&self, a: usize, b: usize, ctx: &PickContext<'_>) -> usize {
        let (Some(na), Some(nb)) = (self.nodes.get(a), self.nodes.get(b)) else {
            return a;
        };
        let peer = |n: &Node| {
            n.stats
                .is_observed()
                .then(|| n.stats.ewma_ns_at(ctx.now_ms))
        };
        let ca = cost_with(na, latency(na, peer(nb), ctx.now_ms));
        let cb = cost_with(nb, latency(nb, peer(na), ctx.now_ms));
        let a_wins = ca < cb || (ca == cb && rng::chance(0.5));
        let (win, lose) = if a_wins { (a, b) } else { (b, a) };
        if self.admits(win, ctx) {
            win
        } else {
            lose
        }
    }

    /// Slow-start admission of the winner.
    fn admits(&self, i: usize, ctx: &PickContext<'_>) -> bool {
        self.nodes
            .get(i)
            .is_none_or(|n| crate::admit(&n.stats, ctx.now_ms))
    }
}

fn usable_at(nodes: &[Node], i: usize, ctx: &PickContext<'_>) -> bool {
    nodes.get(i).is_some_and(|n| usable(&n.stats, i, ctx))
}

/// A node's latency for a comparison: its own estimate once observed; before that the
/// peer's (`seed`), or the fixed seed when there is no observed peer either.
#[inline]
fn latency(node: &Node, seed: Option<f64>, now_ms: u64) -> f64 {
    if node.stats.is_observed() {
        node.stats.ewma_ns_at(now_ms)
    } else {
        seed.unwrap_or_else(|| node.stats.ewma_ns_at(now_ms))
    }
}

/// `latency × (in_flight + 1) / weight`.
#[inline]
fn cost_with(node: &Node, latency: f64) -> f64 {
    latency * (f64::from(node.stats.in_flight()) + 1.0) / f64::from(weight_of(node))
}

/// The cost of a node on its own (unobserved: the fixed seed), for tests.
#[cfg(test)]
pub(crate) fn cost(node: &Node, now_ms: u64) -> f64 {
    cost_with(node, node.stats.ewma_ns_at(now_ms))
}

impl fmt::Debug for P2cEwma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2cEwma")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Strategy for P2cEwma {
    fn name(&self) -> &'static str {
        crate::Kind::P2cEwma.as_str()
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.nodes.len();
        if n == 2 && usable_at(&self.nodes, 0, ctx) && usable_at(&self.nodes, 1, ctx) {
            // "Two distinct random nodes" is the whole pool: compare them (ties by a coin).
            return Some(self.choose(0, 1, ctx));
        }
        if n < 3 {
            return self.cheapest(ctx);
        }
        let mut first: Option<usize> = None;
        for _ in 0..MAX_DRAWS {
            let i = rng::below(n);
            if first == Some(i) {
                continue;
            }
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            match first {
                None => first = Some(i),
                Some(f) => return Some(self.choose(f, i, ctx)),
            }
        }
        self.cheapest(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Strategy;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn prefers_the_faster_node() {
        let n = equal(2);
        n[0].stats.observe_rtt(Duration::from_millis(50));
        n[1].stats.observe_rtt(Duration::from_millis(5));
        let s = P2cEwma::new(n.clone());
        // now_ms close to the observations: no decay to speak of.
        let cx = PickContext {
            hash: 0,
            exclude: &[],
            now_ms: crate::now_ms(),
        };
        for _ in 0..10 {
            assert_eq!(s.pick(&cx), Some(1));
        }
        // 10 requests in flight on the fast node make it the costlier one.
        let _g = hold(&n[1].stats, 10);
        assert_eq!(s.pick(&cx), Some(0));
    }

    #[test]
    fn unobserved_nodes_cost_the_seed_not_zero() {
        let n = equal(2);
        n[0].stats.observe_rtt(Duration::from_millis(20));
        let s = P2cEwma::new(n.clone());
        let cx = PickContext {
            hash: 0,
            exclude: &[],
            now_ms: crate::now_ms(),
        };
        // On its own an unknown node costs the seed, never zero...
        assert!(cost(&n[1], cx.now_ms) >= 100_000_000.0);
        // ...and next to an observed peer it is taken as fast as that peer, never faster:
        // the choice falls to in-flight load.
        {
            let _busy = hold(&n[0].stats, 1);
            assert_eq!(
                s.pick(&cx),
                Some(1),
                "idle unknown node vs a busy 20 ms node"
            );
        }
        let _busy = hold(&n[1].stats, 1);
        assert_eq!(
            s.pick(&cx),
            Some(0),
            "idle 20 ms node vs a busy unknown node"
        );
    }

    #[test]
    fn every_ineligibility_reason_exclusion_and_none() {
        for size in [2, 3, 50] {
            for reason in REASONS {
                let n = equal(size);
                let _g = make_ineligible(&n[0].stats, reason);
                let s = P2cEwma::new(n);
                for _ in 0..50 {
                    let p = s.pick(&ctx(&[size - 1]));
                    if size == 2 {
                        assert_eq!(p, None, "{reason:?}");
                    } else {
                        assert!(!matches!(p, Some(0) | None), "{reason:?}: {p:?}");
                        assert_ne!(p, Some(size - 1));
                    }
                }
            }
            let n = equal(size);
            let _g: Vec<_> = n
                .iter()
                .enumerate()
                .map(|(i, n)| make_ineligible(&n.stats, REASONS[i % 5]))
                .collect();
            assert_eq!(P2cEwma::new(n).pick(&ctx(&[])), None);
        }
        assert_eq!(P2cEwma::new(Vec::new()).pick(&ctx(&[])), None);
        assert_eq!(P2cEwma::new(equal(1)).pick(&ctx(&[])), Some(0));
        assert_eq!(P2cEwma::new(equal(1)).pick(&ctx(&[0])), None);
    }

    #[test]
    fn slow_start_admits_a_warming_node_at_its_factor() {
        // Two idle, unobserved nodes tie; node 0 warming at 0.2 wins the coin half the
        // time and is admitted 20 % of those: about 0.1 of the picks, never 0.
        rng::seed(11);
        let n = equal(2);
        slow_start(&n[0].stats, 0.2);
        let s = P2cEwma::new(n.clone());
        let picks = 20_000;
        let zero =
            (0..picks).filter(|_| s.pick(&ctx(&[])) == Some(0)).count() as f64 / picks as f64;
        assert!((0.07..0.13).contains(&zero), "share {zero}");
        slow_start(&n[1].stats, 0.2);
        assert!(
            (0..100).all(|_| s.pick(&ctx(&[])).is_some()),
            "both slow: still picks"
        );
    }

    #[test]
    fn a_node_added_next_to_observed_peers_gets_traffic() {
        // The regression: peers answering in 1 ms against a new node's 100 ms seed meant
        // the new node lost every comparison and was never observed. It now borrows its
        // peer's latency, so among idle nodes it gets about its fair share.
        rng::seed(3);
        let n = equal(4);
        for node in &n[..3] {
            node.stats.observe_rtt(Duration::from_millis(1));
        }
        let s = P2cEwma::new(n.clone());
        // now_ms at the observations: no decay to speak of.
        let cx = PickContext {
            hash: 0,
            exclude: &[],
            now_ms: crate::now_ms(),
        };
        let picks = 4_000;
        let new = (0..picks).filter(|_| s.pick(&cx) == Some(3)).count() as f64 / picks as f64;
        assert!(new > 0.15, "the unobserved node got {new} of the picks");
        // Once observed as slow, it is avoided like any slow node.
        n[3].stats.observe_rtt(Duration::from_millis(50));
        let slow = (0..picks).filter(|_| s.pick(&cx) == Some(3)).count();
        assert_eq!(
            slow, 0,
            "a node observed 50x slower is never the better of two"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Picks only usable nodes, never the strictly costliest usable node, and picks
        /// the cheapest node more often than a uniform choice would.
        #[test]
        fn prefers_lower_cost(
            seed in any::<u64>(),
            spec in proptest::collection::vec((0u32..8, any::<bool>()), 3..40),
            exclude in proptest::collection::vec(0usize..40, 0..3),
        ) {
            rng::seed(seed);
            let n = equal(spec.len());
            let mut guards = Vec::new();
            for (node, &(inflight, up)) in n.iter().zip(&spec) {
                guards.extend(hold(&node.stats, inflight));
                if !up {
                    guards.extend(make_ineligible(&node.stats, Reason::Draining));
                }
            }
            let s = P2cEwma::new(n.clone());
            let cx = ctx(&exclude);
            let costs: Vec<(usize, f64)> = n.iter().enumerate()
                .filter(|(i, node)| usable(&node.stats, *i, &cx))
                .map(|(i, node)| (i, cost(node, NOW)))
                .collect();
            let max = costs.iter().map(|c| c.1).fold(f64::MIN, f64::max);
            let min = costs.iter().map(|c| c.1).fold(f64::MAX, f64::min);
            let strict_max = costs.iter().filter(|c| c.1 == max).count() == 1 && costs.len() >= 2;
            let mut at_min = 0;
            const PICKS: usize = 300;
            for _ in 0..PICKS {
                match s.pick(&cx) {
                    None => { prop_assert!(costs.is_empty()); return Ok(()); }
                    Some(p) => {
                        prop_assert!(!exclude.contains(&p) && n[p].stats.is_eligible(NOW));
                        let c = cost(&n[p], NOW);
                        prop_assert!(!(strict_max && c == max), "picked the strictly costliest node {}", p);
                        if c == min { at_min += 1; }
                    }
                }
            }
            prop_assert!(!costs.is_empty());
            // A node of minimal cost wins every comparison it is in; the m_min cheapest
            // nodes together are picked with probability ≥ m_min/m (the uniform share),
            // and strictly more when some node is costlier. Allow sampling noise.
            let m = costs.len() as f64;
            let m_min = costs.iter().filter(|c| c.1 == min).count() as f64;
            let uniform = PICKS as f64 * m_min / m;
            prop_assert!(at_min as f64 >= uniform - 4.0 * (uniform.max(1.0)).sqrt() - 1.0,
                "cheapest picked {} times, uniform share {}", at_min, uniform);
        }
    }
}
