//! Smooth weighted round robin (nginx's algorithm), precomputed and lock-free.
//!
//! Why it exists: pools whose nodes differ in capacity need traffic in proportion to
//! weight, and a naive weighted rotation (a a a a a b c for weights 5, 1, 1) sends bursts
//! to the heavy node. nginx's smooth algorithm interleaves instead: a a b a c a a.
//!
//! The algorithm (nginx `ngx_http_upstream_get_peer`): every node keeps a current weight,
//! starting at 0. For each pick, add each node's weight to its current weight, choose the
//! node with the largest current weight (the lowest index on a tie), and subtract the
//! total weight from the chosen node's current weight. After `total` picks every current
//! weight is back to 0 and the sequence repeats. It is smooth: in every window of the
//! (cyclic) sequence each node's count stays within 2 of its exact share (a property test
//! checks this), so there are no bursts.
//!
//! nginx runs that per request under a lock. Here it runs once, in [`SmoothWeighted::new`]:
//! the weights are divided by their greatest common divisor (10, 10 is the same policy as
//! 1, 1, with a cycle of 2), one full cycle is written into a table of node indices, and a
//! pick reads `table[cursor % len]` after one `fetch_add` on the pool's shared cursor, so
//! the position also survives a rebuild.
//!
//! Table size: the cycle is `sum(weights / gcd)` long. When that exceeds
//! [`MAX_SCHEDULE`] (65,536 slots: 256 KiB of table plus as much for the per-node slot
//! lists), the weights are scaled down proportionally
//! (rounded, each at least 1) so the table stays bounded; ratios are then exact to within
//! rounding of one slot per node per cycle, and the table holds at most
//! `MAX_SCHEDULE + n` slots. Building costs O(len × (d + log n)) for d distinct weights
//! (see `smooth_schedule`), a few milliseconds for 1,000 nodes, off the request path.
//!
//! Skipping: a slot whose node cannot take the attempt (ineligible, excluded, or refused
//! by slow start) is skipped by moving to the next slot, and the cursor is moved past the
//! slot chosen, so over one pass of the table every usable node gets exactly its weight's
//! worth of picks, in the same smooth order with the unusable entries left out. At most
//! [`PROBE_LIMIT`] slots are probed one by one; past that (a heavy node is down and its
//! slots form long runs) the next usable slot is found per node by binary search in a
//! per-node list of slot positions, so a pick stays O(PROBE_LIMIT + n log len) in the
//! worst case instead of O(len).
//!
//! Slow start: a node at factor `f < 1` accepts a slot with probability `f`; a refused
//! slot is skipped like an unusable one. If every usable slot in the probe window is
//! refused, the first usable one is taken so a pool in slow start still serves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::round_robin::wrap;
use crate::{admit, usable, weight_of, Node, PickContext, SharedState, Strategy};

/// The largest cycle table kept before weights are scaled down (see the module docs).
pub const MAX_SCHEDULE: usize = 1 << 16;

/// How many slots a pick probes one by one before switching to the per-node search.
pub const PROBE_LIMIT: usize = 32;

/// Smooth weighted round robin; see the module docs.
pub struct SmoothWeighted {
    nodes: Vec<Node>,
    /// One full cycle of node indices.
    schedule: Vec<u32>,
    /// The slots of node `i` are `positions[offsets[i]..offsets[i + 1]]`, ascending.
    offsets: Vec<usize>,
    positions: Vec<u32>,
    shared: Arc<SharedState>,
}

impl SmoothWeighted {
    pub fn new(nodes: Vec<Node>, shared: Arc<SharedState>) -> SmoothWeighted {
        let weights = cycle_weights(&nodes);
        let schedule = smooth_schedule(&weights);
        let mut offsets = Vec::with_capacity(nodes.len() + 1);
        offsets.push(0);
        let mut acc = 0usize;
        for &w in &weights {
            acc += w as usize;
            offsets.push(acc);
        }
        // Every node appears exactly `weights[i]` times in the schedule, so filling the
        // lists in slot order leaves each one sorted.
        let mut positions = vec![0u32; schedule.len()];
        let mut fill: Vec<usize> = offsets.iter().take(nodes.len()).copied().collect();
        for (slot, &i) in schedule.iter().enumerate() {
            if let Some(next) = fill.get_mut(i as usize) {
                if let Some(p) = positions.get_mut(*next) {
                    *p = slot as u32;
                }
                *next += 1;
            }
        }
        SmoothWeighted {
            nodes,
            schedule,
            offsets,
            positions,
            shared,
        }
    }

    /// The number of slots in one cycle (the reduced, possibly scaled, total weight).
    pub fn cycle_len(&self) -> usize {
        self.schedule.len()
    }

    #[inline]
    fn skip_to(&self, c: u64, step: usize) {
        if step > 0 {
            self.shared
                .cursor
                .fetch_max(c.wrapping_add(step as u64 + 1), Ordering::Relaxed);
        }
    }

    /// The usable node whose next slot at or after `from` is nearest, and that distance:
    /// the same answer a slot-by-slot walk would give, in O(n log len).
    fn nearest_usable(&self, from: usize, ctx: &PickContext<'_>) -> Option<(usize, usize)> {
        let len = self.schedule.len();
        let mut best: Option<(usize, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            let (Some(&lo), Some(&hi)) = (self.offsets.get(i), self.offsets.get(i + 1)) else {
                continue;
            };
            let Some(slots) = self.positions.get(lo..hi) else {
                continue;
            };
            let k = slots.partition_point(|&p| (p as usize) < from);
            let dist = match (slots.get(k), slots.first()) {
                (Some(&p), _) => p as usize - from,
                (None, Some(&p)) => p as usize + len - from,
                (None, None) => continue,
            };
            if best.is_none_or(|(d, _)| dist < d) {
                best = Some((dist, i));
            }
        }
        best
    }
}

/// The per-node slot counts of one cycle: weights (at least 1) divided by their GCD, and
/// scaled down proportionally when their sum exceeds [`MAX_SCHEDULE`].
pub(crate) fn cycle_weights(nodes: &[Node]) -> Vec<u64> {
    let raw: Vec<u64> = nodes.iter().map(|n| u64::from(weight_of(n))).collect();
    let reduced = reduce(raw);
    let total: u64 = reduced.iter().sum();
    if total as usize <= MAX_SCHEDULE {
        return reduced;
    }
    let cap = MAX_SCHEDULE as u128;
    let total = u128::from(total);
    let scaled = reduced
        .iter()
        .map(|&w| ((u128::from(w) * cap + total / 2) / total).max(1) as u64)
        .collect();
    reduce(scaled)
}

fn reduce(mut w: Vec<u64>) -> Vec<u64> {
    let g = w.iter().copied().fold(0, gcd);
    if g > 1 {
        for x in &mut w {
            *x /= g;
        }
    }
    w
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One full cycle of nginx's smooth weighted round robin over `weights` (all ≥ 1).
///
/// The textbook loop costs O(n) per slot. This computes the same sequence in
/// O(d + log n) per slot, where d is the number of *distinct* weights (usually a handful):
/// at step `t` (1-based) node `i`'s current weight is `t·w_i + base_i`, where `base_i` is
/// `-total` times the node's picks so far. Nodes of equal weight grow at the same rate, so
/// within one weight class the order of their current weights only changes when one is
/// picked: a max-heap on `(base, lowest index)` per class yields the class's leader, and
/// the pick is the best leader across classes, with nginx's tie-break (the lowest index
/// among equal current weights) preserved exactly.
pub(crate) fn smooth_schedule(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let total_i = total as i64;
    // One heap per distinct weight: entries (base, Reverse(index)).
    type Class = (i64, BinaryHeap<(i64, Reverse<u32>)>);
    let mut classes: Vec<Class> = Vec::new();
    let mut sorted: Vec<(u64, u32)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (w, i as u32))
        .collect();
    sorted.sort_unstable();
    for group in sorted.chunk_by(|a, b| a.0 == b.0) {
        let w = group.first().map_or(0, |g| g.0) as i64;
        classes.push((w, group.iter().map(|&(_, i)| (0, Reverse(i))).collect()));
    }
    let mut out = Vec::with_capacity(total as usize);
    for t in 1..=total_i {
        // The best class leader: highest current weight, then lowest index.
        let mut best: Option<(i64, u32, usize)> = None;
        for (c, (w, heap)) in classes.iter().enumerate() {
            if let Some(&(base, Reverse(i))) = heap.peek() {
                let cw = t * w + base;
                if best.is_none_or(|(bcw, bi, _)| cw > bcw || (cw == bcw && i < bi)) {
                    best = Some((cw, i, c));
                }
            }
        }
        let Some((_, i, c)) = best else {
            break;
        };
        if let Some((_, heap)) = classes.get_mut(c) {
            if let Some((base, idx)) = heap.pop() {
                heap.push((base - total_i, idx));
            }
        }
        out.push(i);
    }
    out
}

impl fmt::Debug for SmoothWeighted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmoothWeighted")
            .field("nodes", &self.nodes.len())
            .field("cycle_len", &self.schedule.len())
            .field("cursor", &self.shared.cursor.load(Ordering::Relaxed))
            .finish()
    }
}

impl Strategy for SmoothWeighted {
    fn name(&self) -> &'static str {
        crate::Kind::WeightedRoundRobin.as_str()
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let c = self.shared.cursor.fetch_add(1, Ordering::Relaxed);
        let pos = (c % len as u64) as usize;
        let probes = len.min(PROBE_LIMIT);
        let mut refused: Option<(usize, usize)> = None;
        for step in 0..probes {
            let Some(&i) = self.schedule.get(wrap(pos + step, len)) else {
                continue;
            };
            let i = i as usize;
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
        if let Some((step, i)) = refused {
            self.skip_to(c, step);
            return Some(i);
        }
        if probes == len {
            return None;
        }
        // probes < len here, so pos + probes < 2 × len.
        let from = wrap(pos + probes, len);
        let (dist, i) = self.nearest_usable(from, ctx)?;
        self.skip_to(c, probes + dist);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Strategy;
    use proptest::prelude::*;

    fn swrr(weights: &[u32]) -> SmoothWeighted {
        SmoothWeighted::new(nodes(weights), Arc::new(SharedState::default()))
    }

    fn picks(s: &SmoothWeighted, k: usize) -> Vec<usize> {
        (0..k).map(|_| s.pick(&ctx(&[])).expect("a node")).collect()
    }

    #[test]
    fn nginx_order_for_5_1_1() {
        let s = swrr(&[5, 1, 1]);
        assert_eq!(picks(&s, 14), [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn three_to_one_is_smooth_and_exact() {
        let s = swrr(&[3, 1]);
        assert_eq!(picks(&s, 8), [0, 0, 1, 0, 0, 0, 1, 0]);
        let s = swrr(&[30, 10]);
        assert_eq!(s.cycle_len(), 4, "weights reduced by their gcd");
    }

    /// nginx's loop, verbatim, as the reference for the class-heap version.
    fn nginx_reference(weights: &[u64]) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::new();
        for _ in 0..total {
            // ngx_http_upstream_get_peer: `if (best == NULL || peer->current_weight >
            // best->current_weight) best = peer;`
            let mut best: Option<usize> = None;
            for i in 0..weights.len() {
                current[i] += weights[i] as i64;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.expect("non-empty");
            current[b] -= total;
            out.push(b as u32);
        }
        out
    }

    #[test]
    fn zero_weight_counts_as_one() {
        let s = swrr(&[0, 1]);
        assert_eq!(picks(&s, 4), [0, 1, 0, 1]);
    }

    #[test]
    fn skipped_slots_leave_the_others_in_order() {
        let n = nodes(&[5, 1, 1]);
        let _g = make_ineligible(&n[0].stats, Reason::Draining);
        let s = SmoothWeighted::new(n, Arc::new(SharedState::default()));
        assert_eq!(picks(&s, 6), [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn every_ineligibility_reason_exclusion_and_none() {
        for reason in REASONS {
            let n = nodes(&[4, 2, 1]);
            let _g = make_ineligible(&n[0].stats, reason);
            let s = SmoothWeighted::new(n, Arc::new(SharedState::default()));
            for p in picks(&s, 30) {
                assert_ne!(p, 0, "{reason:?}");
            }
        }
        let s = swrr(&[4, 2, 1]);
        for _ in 0..20 {
            assert_eq!(s.pick(&ctx(&[0, 1])), Some(2));
        }
        assert_eq!(s.pick(&ctx(&[0, 1, 2])), None);
        assert_eq!(swrr(&[]).pick(&ctx(&[])), None);
        let n = nodes(&[4, 2, 1, 1, 1]);
        let _g: Vec<_> = n
            .iter()
            .zip(REASONS)
            .map(|(n, r)| make_ineligible(&n.stats, r))
            .collect();
        assert_eq!(
            SmoothWeighted::new(n, Arc::new(SharedState::default())).pick(&ctx(&[])),
            None
        );
    }

    /// A heavy node that is down leaves runs far longer than the probe window; the
    /// per-node search must find the light nodes in the same order a walk would.
    #[test]
    fn long_unusable_runs_use_the_per_node_search() {
        let n = nodes(&[1000, 1, 1]);
        let _g = make_ineligible(&n[0].stats, Reason::Down);
        let s = SmoothWeighted::new(n, Arc::new(SharedState::default()));
        assert_eq!(picks(&s, 6), [1, 2, 1, 2, 1, 2]);
        assert_eq!(s.pick(&ctx(&[1, 2])), None);
    }

    #[test]
    fn huge_weight_sums_are_capped_and_stay_proportional() {
        let weights: Vec<u32> = (0..200).map(|i| 300 + i * 7 % 200).collect();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        assert!(total as usize > MAX_SCHEDULE);
        let s = swrr(&weights);
        assert!(s.cycle_len() <= MAX_SCHEDULE + weights.len());
        let c = counts(&s, weights.len(), s.cycle_len(), &ctx(&[]));
        for (i, &w) in weights.iter().enumerate() {
            let ideal = w as f64 / total as f64 * s.cycle_len() as f64;
            assert!(
                (c[i] as f64 - ideal).abs() <= 1.0,
                "node {i}: {} vs {ideal}",
                c[i]
            );
        }
    }

    #[test]
    fn slow_start_reduces_share_but_a_slow_pool_still_picks() {
        crate::rng::seed(5);
        let n = nodes(&[2, 1, 1]);
        slow_start(&n[0].stats, 0.2);
        let s = SmoothWeighted::new(n.clone(), Arc::new(SharedState::default()));
        let c = counts(&s, 3, 40_000, &ctx(&[]));
        // Unslowed share 1/2; with slot skipping it becomes 0.4 / (0.4 + 2) = 1/6.
        let share0 = c[0] as f64 / 40_000.0;
        assert!((0.14..0.20).contains(&share0), "{c:?}");
        for node in &n {
            slow_start(&node.stats, 0.1);
        }
        let c = counts(&s, 3, 4_000, &ctx(&[]));
        assert!(c.iter().all(|&k| k > 400), "{c:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Over one full cycle every node gets exactly its reduced weight; the schedule is
        /// smooth: in every window of the (cyclic) sequence each node's count is within 2
        /// of its exact share.
        #[test]
        fn exact_ratios_and_smooth(weights in proptest::collection::vec(1u32..30, 1..10)) {
            let s = swrr(&weights);
            let len = s.cycle_len();
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let seq = picks(&s, len);
            for (i, &w) in weights.iter().enumerate() {
                let count = seq.iter().filter(|&&p| p == i).count() as u64;
                prop_assert_eq!(count * total, u64::from(w) * len as u64, "node {} of {:?}", i, weights);
                let share = w as f64 / total as f64;
                let doubled: Vec<usize> = seq.iter().chain(seq.iter()).copied().collect();
                for win in 1..=len {
                    let mut c = doubled[..win].iter().filter(|&&p| p == i).count() as i64;
                    for start in 0..len {
                        let dev = (c as f64 - win as f64 * share).abs();
                        prop_assert!(dev < 2.0, "node {} window {} at {}: dev {}", i, win, start, dev);
                        c += i64::from(doubled[start + win] == i) - i64::from(doubled[start] == i);
                    }
                }
            }
        }

        /// The class-heap construction is nginx's sequence exactly, ties included (few
        /// distinct weights make many ties).
        #[test]
        fn schedule_is_nginx(weights in proptest::collection::vec(1u64..6, 1..30)) {
            prop_assert_eq!(smooth_schedule(&weights), nginx_reference(&weights));
        }

        /// With some nodes down, one pass over the table (Σ weights of the usable nodes
        /// picks) gives every usable node exactly its weight, from any cursor position.
        #[test]
        fn exact_ratios_with_ineligible_nodes(
            spec in proptest::collection::vec((1u32..60, any::<bool>()), 1..10),
            start in any::<u32>(),
        ) {
            let weights: Vec<u32> = spec.iter().map(|&(w, _)| w).collect();
            let n = nodes(&weights);
            let _g: Vec<_> = n.iter().zip(&spec).filter(|(_, &(_, up))| !up)
                .map(|(n, _)| make_ineligible(&n.stats, Reason::Down)).collect();
            let shared = Arc::new(SharedState::default());
            shared.cursor.store(u64::from(start), Ordering::Relaxed);
            let s = SmoothWeighted::new(n, shared);
            let reduced = cycle_weights(&nodes(&weights));
            let usable_total: u64 = reduced.iter().zip(&spec).filter(|(_, &(_, up))| up).map(|(&w, _)| w).sum();
            if usable_total == 0 {
                prop_assert_eq!(s.pick(&ctx(&[])), None);
            } else {
                let c = counts(&s, weights.len(), usable_total as usize, &ctx(&[]));
                for (i, &(_, up)) in spec.iter().enumerate() {
                    let want = if up { reduced[i] as usize } else { 0 };
                    prop_assert_eq!(c[i], want, "node {}: {:?}", i, c);
                }
            }
        }
    }
}
