//! Weighted random: each attempt goes to a node drawn with probability proportional to
//! its weight.
//!
//! Why it exists: it needs no shared state at all (no cursor, no load counters), so many
//! proxy instances and cores behind the same pool never synchronise or fall into step
//! with one another, and it is the usual baseline. Weighted rather than uniform because a
//! pool with weights is configured that way on purpose; with equal weights (the common
//! case, detected in `new`) it is a plain uniform draw.
//!
//! How it works: `new` builds the prefix sums of the weights; a pick draws `r` uniformly in
//! `0..total` and binary-searches the first prefix sum above `r` (O(log n)); with equal
//! weights it draws the index directly (O(1)).
//!
//! Unusable draws (ineligible or excluded nodes) are redrawn, up to [`MAX_TRIES`] draws;
//! after that the pick falls back to one O(n) weighted scan over the usable nodes, which
//! also answers `None` when none qualifies. A redraw keeps the distribution exactly
//! proportional among usable nodes (rejection sampling), unlike moving to a neighbour,
//! which would hand a down node's share to whichever node follows it.
//!
//! Slow start is rejection sampling too: a drawn node at factor `f < 1` is kept with
//! probability `f`, so its share is exactly proportional to `weight × f`. The fallback scan
//! uses the same effective weights, so a pool entirely in slow start still picks, with the
//! same proportions.

use std::fmt;

use crate::{admit, rng, usable, weight_of, Node, PickContext, Strategy};

/// Random draws per pick before the fallback scan.
pub const MAX_TRIES: usize = 8;

/// Weighted random choice; see the module docs.
pub struct Random {
    nodes: Vec<Node>,
    /// `prefix[i]` = sum of the weights of nodes `0..=i`.
    prefix: Vec<u64>,
    /// All weights equal: draw the index directly.
    uniform: bool,
}

impl Random {
    pub fn new(nodes: Vec<Node>) -> Random {
        let mut acc = 0u64;
        let prefix = nodes
            .iter()
            .map(|n| {
                acc += u64::from(weight_of(n));
                acc
            })
            .collect();
        let uniform = nodes
            .windows(2)
            .all(|w| weight_of(&w[0]) == weight_of(&w[1]));
        Random {
            nodes,
            prefix,
            uniform,
        }
    }

    #[inline]
    fn draw(&self) -> usize {
        if self.uniform {
            return rng::below(self.nodes.len());
        }
        let total = self.prefix.last().copied().unwrap_or(0);
        let r = rng::below_u64(total);
        // r < total = the last prefix sum, so the result is a valid index.
        self.prefix.partition_point(|&p| p <= r)
    }

    /// One weighted draw over the usable nodes with effective weight `weight × factor`.
    fn scan(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let eff = |i: usize, node: &Node| -> f64 {
            if usable(&node.stats, i, ctx) {
                f64::from(weight_of(node)) * node.stats.weight_factor(ctx.now_ms)
            } else {
                0.0
            }
        };
        let total: f64 = self.nodes.iter().enumerate().map(|(i, n)| eff(i, n)).sum();
        if total <= 0.0 {
            return None;
        }
        let mut r = rng::unit() * total;
        let mut last = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let w = eff(i, node);
            if w <= 0.0 {
                continue;
            }
            if r < w {
                return Some(i);
            }
            r -= w;
            last = Some(i);
        }
        // Rounding, or a node turned unusable between the two passes.
        last
    }
}

impl fmt::Debug for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Random")
            .field("nodes", &self.nodes.len())
            .field("uniform", &self.uniform)
            .finish()
    }
}

impl Strategy for Random {
    fn name(&self) -> &'static str {
        crate::Kind::Random.as_str()
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if self.nodes.is_empty() {
            return None;
        }
        for _ in 0..MAX_TRIES {
            let i = self.draw();
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            if usable(&node.stats, i, ctx) && admit(&node.stats, ctx.now_ms) {
                return Some(i);
            }
        }
        self.scan(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Strategy;
    use proptest::prelude::*;

    #[test]
    fn every_ineligibility_reason_exclusion_and_none() {
        for reason in REASONS {
            let n = nodes(&[1, 2, 3]);
            let _g = make_ineligible(&n[1].stats, reason);
            let s = Random::new(n);
            for _ in 0..100 {
                let p = s.pick(&ctx(&[2]));
                assert_eq!(p, Some(0), "{reason:?}");
            }
        }
        let s = Random::new(equal(3));
        assert_eq!(s.pick(&ctx(&[0, 1, 2])), None);
        assert_eq!(Random::new(Vec::new()).pick(&ctx(&[])), None);
        let n = equal(5);
        let _g: Vec<_> = n
            .iter()
            .zip(REASONS)
            .map(|(n, r)| make_ineligible(&n.stats, r))
            .collect();
        assert_eq!(Random::new(n).pick(&ctx(&[])), None);
    }

    #[test]
    fn the_fallback_scan_finds_a_rare_survivor() {
        crate::rng::seed(1);
        let n = equal(1000);
        let _g: Vec<_> = n
            .iter()
            .skip(1)
            .map(|n| make_ineligible(&n.stats, Reason::Down))
            .collect();
        let s = Random::new(n);
        for _ in 0..20 {
            assert_eq!(s.pick(&ctx(&[])), Some(0));
        }
    }

    fn assert_proportional(c: &[usize], weights: &[f64]) -> Result<(), TestCaseError> {
        let picks: usize = c.iter().sum();
        let total: f64 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let p = w / total;
            let expected = picks as f64 * p;
            let tol = 5.0 * sd(picks, p) + 1.0;
            prop_assert!(
                (c[i] as f64 - expected).abs() <= tol,
                "node {}: {} vs {} ± {} ({:?})",
                i,
                c[i],
                expected,
                tol,
                c
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Picks are proportional to weight among usable nodes.
        #[test]
        fn proportional_to_weight(
            seed in any::<u64>(),
            spec in proptest::collection::vec((1u32..10, 0u8..5), 1..10),
        ) {
            rng::seed(seed);
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let n = nodes(&weights);
            let mut guards = Vec::new();
            for (node, &(_, state)) in n.iter().zip(&spec) {
                if state == 0 {
                    guards.extend(make_ineligible(&node.stats, Reason::Ejected));
                }
            }
            let s = Random::new(n);
            let eff: Vec<f64> = spec.iter().map(|&(w, st)| if st == 0 { 0.0 } else { f64::from(w) }).collect();
            if eff.iter().all(|&w| w == 0.0) {
                prop_assert_eq!(s.pick(&ctx(&[])), None);
            } else {
                let c = counts(&s, spec.len(), 6_000, &ctx(&[]));
                assert_proportional(&c, &eff)?;
            }
        }

        /// Slow start scales a node's share by its factor, exactly (rejection sampling),
        /// also when every node is slow (the fallback scan keeps the proportions).
        #[test]
        fn slow_start_is_proportional(
            seed in any::<u64>(),
            spec in proptest::collection::vec((1u32..6, 0.1f64..1.0, any::<bool>()), 2..6),
        ) {
            rng::seed(seed);
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let n = nodes(&weights);
            for (node, &(_, f, slow)) in n.iter().zip(&spec) {
                if slow {
                    slow_start(&node.stats, f);
                }
            }
            let s = Random::new(n.clone());
            let eff: Vec<f64> = n.iter().map(|node| f64::from(node.weight) * node.stats.weight_factor(NOW)).collect();
            let c = counts(&s, spec.len(), 6_000, &ctx(&[]));
            assert_proportional(&c, &eff)?;
        }
    }
}
