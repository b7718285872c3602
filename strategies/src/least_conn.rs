//! Weighted least connections: send the attempt to the node with the fewest requests in
//! flight relative to its weight.
//!
//! Why it exists: when request durations vary a lot (long polls, uploads, slow queries),
//! a rotation keeps feeding a node that is stuck on slow requests; counting what is still
//! in flight adapts within one request. It needs no latency history, unlike `p2c_ewma`.
//!
//! The load of a node is `(in_flight + 1) / weight`: the `+ 1` counts the request being
//! placed, so that among idle nodes the heavier one still wins and weights matter at low
//! load. Slow start is an admission step after the choice: a winner in slow start is
//! admitted with probability equal to its factor (10 % → 100 % over the window), and when
//! refused the runner-up takes the request. So a warming node's share ramps linearly from
//! the floor even in an idle pool — dividing its weight by the factor instead would make it
//! lose every comparison against idle peers and get nothing until the window ends. A pool
//! with a single usable node picks it whatever its factor.
//!
//! Two modes, chosen in `new` by pool size:
//!
//! - **Exact**, for pools of at most [`EXACT_MAX`] nodes: scan every node and take the
//!   lowest load. The scan starts at a random offset and keeps the first node of minimal
//!   load, so ties (an idle pool) spread over the tied nodes instead of always landing on
//!   node 0. Random rather than the pool's shared cursor on purpose: the cursor is one
//!   cache line written by every pick on every core, which costs more than the whole scan
//!   under contention, and least-conn has no rotation to preserve across rebuilds.
//! - **Sampled**, for larger pools: a full scan of 1,000 nodes costs microseconds, far over
//!   the 50 ns budget of a pick, so the pick takes the least-loaded of [`SAMPLE`] distinct
//!   usable nodes drawn at random (Envoy's `least_request` with `choice_count`; Mitzenmacher's
//!   "power of d choices", where already d = 2 improves the maximum load exponentially over
//!   random placement). Unusable draws are redrawn, up to [`MAX_DRAWS`] draws in all; if
//!   none of them was usable (almost the whole pool is down) the pick falls back to the
//!   exact scan, so `None` still means no node qualifies.
//!
//! The threshold and sample size were chosen by measurement on the project's 2-core VM
//! (see the README), when the scan still read the slow-start factor of every node: about
//! 3.5 ns per node (an eligibility check and the load, each reading the node's atomics;
//! slow start is now one admission check on the winner only), so 8 nodes
//! take about 34 ns, while 12 would sit right at the budget and 16 take about 65 ns.
//! With the runner-up tracking and the admission step, 4 samples measured 56–58 ns at 100
//! and 1,000 nodes and 3 samples 41–47 ns (criterion, quiet VM): hence exact up to 8 nodes
//! and 3 choices above (Envoy's default is 2).
//!
//! Cost of a pick: O(n) up to [`EXACT_MAX`] nodes, O([`SAMPLE`]) above (O(n) only in the
//! all-but-unusable fallback).

use std::fmt;
use std::sync::Arc;

use crate::round_robin::wrap;
use crate::{admit, rng, usable, weight_of, Node, PickContext, SharedState, Strategy};

/// Pools up to this size are scanned exactly.
pub const EXACT_MAX: usize = 8;

/// Distinct usable nodes compared per pick in larger pools.
pub const SAMPLE: usize = 3;

/// Random draws per pick before falling back to the exact scan.
pub const MAX_DRAWS: usize = 4 * SAMPLE;

/// Weighted least connections; see the module docs.
pub struct LeastConn {
    nodes: Vec<Node>,
}

impl LeastConn {
    /// `shared` is accepted for uniformity with the rotating strategies and not used (see
    /// the module docs on tie-breaking).
    pub fn new(nodes: Vec<Node>, shared: Arc<SharedState>) -> LeastConn {
        drop(shared);
        LeastConn { nodes }
    }

    /// Is this instance in the sampled mode?
    pub fn is_sampled(&self) -> bool {
        self.nodes.len() > EXACT_MAX
    }

    /// The exact scan from `start`: the first node of minimal load in rotation order (the
    /// runner-up if slow start refuses it).
    fn scan(&self, start: usize, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.nodes.len();
        let mut best = Ranked::default();
        for step in 0..n {
            let i = wrap(start + step, n);
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            best.offer(i, Load::of(node));
        }
        best.decide(&self.nodes, ctx)
    }

    fn sample(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.nodes.len();
        // The usable candidates compared so far, to keep them distinct. An unusable draw
        // is not remembered: drawing it again only costs another eligibility check.
        let mut taken = [usize::MAX; SAMPLE];
        let mut found = 0;
        let mut best = Ranked::default();
        for _ in 0..MAX_DRAWS {
            let i = rng::below(n);
            if taken.get(..found).is_some_and(|t| t.contains(&i)) {
                continue;
            }
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            best.offer(i, Load::of(node));
            if let Some(slot) = taken.get_mut(found) {
                *slot = i;
            }
            found += 1;
            if found == SAMPLE {
                break;
            }
        }
        if found == 0 {
            return self.scan(rng::below(n), ctx);
        }
        best.decide(&self.nodes, ctx)
    }
}

/// The lightest and second-lightest candidates seen so far.
#[derive(Default)]
struct Ranked {
    best: Option<(usize, Load)>,
    second: Option<(usize, Load)>,
}

impl Ranked {
    #[inline]
    fn offer(&mut self, i: usize, l: Load) {
        if self.best.is_none_or(|(_, b)| l.lighter_than(b)) {
            self.second = self.best;
            self.best = Some((i, l));
        } else if self.second.is_none_or(|(_, b)| l.lighter_than(b)) {
            self.second = Some((i, l));
        }
    }

    /// The lightest, unless slow start refuses it and there is a runner-up.
    #[inline]
    fn decide(self, nodes: &[Node], ctx: &PickContext<'_>) -> Option<usize> {
        let (b, _) = self.best?;
        match self.second {
            Some((s, _)) if !nodes.get(b).is_none_or(|n| admit(&n.stats, ctx.now_ms)) => Some(s),
            _ => Some(b),
        }
    }
}

/// A node's normalized load `(in_flight + 1) / weight`, kept as a
/// fraction: comparing by cross-multiplication spares a division per node in the scan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    num: f64,
    den: f64,
}

impl Load {
    #[inline]
    pub(crate) fn of(node: &Node) -> Load {
        Load {
            num: f64::from(node.stats.in_flight()) + 1.0,
            den: f64::from(weight_of(node)),
        }
    }

    /// `self < other`: `a/b < c/d ⇔ a·d < c·b` for the positive denominators here.
    #[inline]
    pub(crate) fn lighter_than(self, other: Load) -> bool {
        self.num * other.den < other.num * self.den
    }
}

impl fmt::Debug for LeastConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeastConn")
            .field("nodes", &self.nodes.len())
            .field("sampled", &self.is_sampled())
            .finish()
    }
}

impl Strategy for LeastConn {
    fn name(&self) -> &'static str {
        crate::Kind::LeastConn.as_str()
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.nodes.len();
        if n == 0 {
            return None;
        }
        if n <= EXACT_MAX {
            self.scan(rng::below(n), ctx)
        } else {
            self.sample(ctx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::NodeStats;
    use crate::Strategy;
    use proptest::prelude::*;

    fn lc(nodes: Vec<Node>) -> LeastConn {
        LeastConn::new(nodes, Arc::new(SharedState::default()))
    }

    #[test]
    fn picks_the_least_loaded() {
        let n = equal(3);
        let _a = load_on(&n[0].stats, 3);
        let _b = load_on(&n[1].stats, 1);
        let _c = load_on(&n[2].stats, 2);
        let s = lc(n);
        for _ in 0..10 {
            assert_eq!(s.pick(&ctx(&[])), Some(1));
        }
        assert_eq!(s.pick(&ctx(&[1])), Some(2));
    }

    fn load_on(stats: &Arc<NodeStats>, k: u32) -> Vec<crate::InFlight> {
        crate::testkit::hold(stats, k)
    }

    #[test]
    fn weights_scale_the_load() {
        // Node 0 (weight 3) with 2 in flight: 3/3 = 1; node 1 (weight 1) idle: 1/1 = 1;
        // node 2 (weight 1) with 1 in flight: 2. With 5 in flight node 0 is at 2.
        let n = nodes(&[3, 1, 1]);
        let _a = load_on(&n[0].stats, 1);
        let _c = load_on(&n[2].stats, 1);
        let s = lc(n);
        // Loads: 2/3, 1, 2 → node 0.
        assert_eq!(s.pick(&ctx(&[])), Some(0));
    }

    #[test]
    fn ties_spread() {
        rng::seed(9);
        let s = lc(equal(3));
        let c = counts(&s, 3, 3_000, &ctx(&[]));
        assert!(c.iter().all(|&k| (800..1200).contains(&k)), "{c:?}");
    }

    #[test]
    fn every_ineligibility_reason_exclusion_and_none() {
        for size in [4, 40] {
            for reason in REASONS {
                let n = equal(size);
                let _g = make_ineligible(&n[0].stats, reason);
                let s = lc(n);
                for _ in 0..50 {
                    let p = s.pick(&ctx(&[1]));
                    assert!(!matches!(p, Some(0 | 1) | None), "{reason:?}: {p:?}");
                }
            }
            let n = equal(size);
            let _g: Vec<_> = n
                .iter()
                .enumerate()
                .map(|(i, n)| make_ineligible(&n.stats, REASONS[i % 5]))
                .collect();
            assert_eq!(lc(n).pick(&ctx(&[])), None);
            let all: Vec<usize> = (0..size).collect();
            assert_eq!(lc(equal(size)).pick(&ctx(&all)), None);
        }
        assert_eq!(lc(Vec::new()).pick(&ctx(&[])), None);
    }

    #[test]
    fn sampled_mode_finds_the_only_usable_node() {
        let n = equal(300);
        let _g: Vec<_> = n
            .iter()
            .skip(1)
            .map(|n| make_ineligible(&n.stats, Reason::Down))
            .collect();
        let s = lc(n);
        assert!(s.is_sampled());
        for _ in 0..20 {
            assert_eq!(s.pick(&ctx(&[])), Some(0));
        }
        assert_eq!(s.pick(&ctx(&[0])), None);
    }

    #[test]
    fn slow_start_admits_a_warming_node_at_its_factor() {
        // Two idle nodes tie; node 0 is warming at factor 0.2. It wins the tie half the
        // time and is admitted 20 % of those: a share of about 0.1 — not zero (the floor
        // holds in an idle pool), not the 0.5 it gets at full weight.
        rng::seed(7);
        let n = equal(2);
        slow_start(&n[0].stats, 0.2);
        let s = lc(n.clone());
        let picks = 20_000;
        let zero =
            (0..picks).filter(|_| s.pick(&ctx(&[])) == Some(0)).count() as f64 / picks as f64;
        assert!((0.07..0.13).contains(&zero), "share {zero}");
        // Every node warming: still picks; a lone warming node is picked every time.
        slow_start(&n[1].stats, 0.1);
        assert!((0..100).all(|_| s.pick(&ctx(&[])).is_some()));
        assert!((0..100).all(|_| s.pick(&ctx(&[1])) == Some(0)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Exact mode picks a node of minimal normalized load, except that a lightest
        /// node in slow start may be refused in favour of the runner-up: so at most one
        /// usable node is strictly lighter than the pick, and that one is warming.
        #[test]
        fn exact_mode_picks_a_minimum(
            spec in proptest::collection::vec((1u32..10, 0u32..6, 0u8..4, 0.1f64..1.0), 1..=EXACT_MAX),
            exclude in proptest::collection::vec(0usize..EXACT_MAX, 0..3),
            seed in any::<u64>(),
        ) {
            rng::seed(seed);
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let n = nodes(&weights);
            let mut guards = Vec::new();
            for (node, &(_, inflight, state, factor)) in n.iter().zip(&spec) {
                guards.extend(load_on(&node.stats, inflight));
                match state {
                    0 => guards.extend(make_ineligible(&node.stats, Reason::Down)),
                    1 => slow_start(&node.stats, factor),
                    _ => {}
                }
            }
            let s = lc(n.clone());
            let cx = ctx(&exclude);
            let usable_loads: Vec<(usize, Load)> = n.iter().enumerate()
                .filter(|(i, node)| usable(&node.stats, *i, &cx))
                .map(|(i, node)| (i, Load::of(node)))
                .collect();
            match s.pick(&cx) {
                None => prop_assert!(usable_loads.is_empty()),
                Some(p) => {
                    prop_assert!(!exclude.contains(&p) && n[p].stats.is_eligible(NOW));
                    let lp = Load::of(&n[p]);
                    let lighter: Vec<usize> = usable_loads
                        .iter()
                        .filter(|(_, l)| l.lighter_than(lp))
                        .map(|&(i, _)| i)
                        .collect();
                    prop_assert!(lighter.len() <= 1, "picked {} ({:?}) over {:?}", p, lp, lighter);
                    for &i in &lighter {
                        prop_assert!(
                            n[i].stats.weight_factor(NOW) < 1.0,
                            "picked {} ({:?}) over {}, which is not in slow start", p, lp, i
                        );
                    }
                }
            }
        }

        /// Sampled mode only ever picks usable nodes, and with one node much less loaded
        /// than the rest it picks that node far more often than its 1/n share.
        #[test]
        fn sampled_mode_prefers_the_idle_node(seed in any::<u64>(), size in (EXACT_MAX + 1)..80, down in 0usize..10) {
            rng::seed(seed);
            let n = equal(size);
            let mut guards = Vec::new();
            for node in n.iter().skip(1) {
                guards.extend(load_on(&node.stats, 3));
            }
            for node in n.iter().skip(1).take(down) {
                guards.extend(make_ineligible(&node.stats, Reason::Ejected));
            }
            let s = lc(n.clone());
            let mut idle = 0;
            for _ in 0..400 {
                let p = s.pick(&ctx(&[])).expect("usable nodes exist");
                prop_assert!(n[p].stats.is_eligible(NOW));
                if p == 0 { idle += 1; }
            }
            // P(node 0 in a sample of 4) ≥ 4/size ≥ 0.05 → ≥ 20 of 400 on average; the
            // uniform share would be 400/size. Require well over a third of the expected.
            let expected = 400.0 * SAMPLE as f64 / size as f64;
            prop_assert!(idle as f64 > expected / 3.0, "idle picked {} times, expected ~{}", idle, expected);
        }
    }
}
