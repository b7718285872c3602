//! Consistent hashing on a ring of virtual nodes (Karger et al.; ketama-style).
//!
//! Why it exists: session affinity and cache locality. Requests with the same hash key
//! (client IP, a header, a cookie, the path) go to the same node while the pool is stable,
//! and when the pool changes only the keys that must move do: adding one node to `N` moves
//! about `1 / (N + 1)` of the keys, all of them to the new node; removing one moves only
//! that node's keys. A modulo hash would move almost every key.
//!
//! How the ring is built (in [`Ring::new`], off the request path): each node gets
//! [`POINTS_PER_WEIGHT`] points per unit of weight, placed at
//! `hash_key_seeded(node.key, replica)` for `replica = 0, 1, ...`. Placement depends only
//! on the node's address and replica number, so a node lands on the same points in every
//! snapshot, whatever the order or the other members of the pool. Many points per node
//! even out the arc lengths (the load spread shrinks like `1 / sqrt(points)`). The total
//! is bounded by [`MAX_POINTS`] (163,840 points, about 2 MiB with 12 bytes per point; that
//! is 160 points each for 1,000 nodes of weight 1): above it, every node's count is scaled
//! down proportionally (at least one point each). A node keeps its lowest-numbered points
//! when scaled, so a rescale only moves the keys of the points dropped. Points sort by
//! hash, with the node address and replica as tie-breakers so even a 64-bit collision
//! resolves the same way in every snapshot.
//!
//! Lookup: binary search for the first point at or after `ctx.hash` (wrapping past the
//! end to the first point); its owner takes the request. A plain binary search over
//! 160 k points is 17 dependent probes, the last several of them cache misses, so the
//! search is narrowed first by a bucket index on the top bits of the hash (about one
//! bucket per two to four points, 4 bytes per bucket): `index[b]` is the first point whose
//! top bits are at least `b`, so the answer lies in `points[index[b]..=index[b + 1]]` and
//! the binary search covers a handful of points. If the owner cannot take it
//! (ineligible or excluded), walk clockwise to the next point of a *different* node, and so
//! on: the keys of a down node spread over its neighbours, and every other key stays put.
//! The walk is bounded by [`MAX_WALK`] points; if it finds no usable node (most of the
//! pool is down) the pick falls back to weighted rendezvous hashing over all nodes, which
//! is O(n) but still deterministic per key, and answers `None` when nothing qualifies.
//!
//! Slow start: a key is admitted to a warming node when a per-(key, node) hash, mapped
//! into `[0, 1)`, is below the node's slow-start factor; otherwise it continues clockwise
//! as if the node were unusable. Deterministic rather than random so that a key does not
//! bounce between nodes during the ramp, and monotone: as the factor grows, keys only move
//! onto the node, never off it. If every usable node in the walk refuses, the first one is
//! taken, so a pool where every node is warming up still serves.
//!
//! Cost of a pick: one index read plus a binary search over a few points (O(log points)
//! in the worst case of a crowded bucket), plus a short walk when owners are unusable.

use std::fmt;

use crate::hash::{mix64, unit_f64};
use crate::round_robin::wrap;
use crate::{hash_key, hash_key_seeded, usable, weight_of, Node, PickContext, Strategy};

/// Ring points per unit of weight (nginx's and ketama's 160).
pub const POINTS_PER_WEIGHT: u64 = 160;

/// Upper bound on the ring's points; see the module docs.
pub const MAX_POINTS: usize = 160 * 1024;

/// Points walked clockwise past an unusable owner before the rendezvous fallback.
pub const MAX_WALK: usize = 64;

/// The hash ring; see the module docs.
pub struct Ring {
    nodes: Vec<Node>,
    /// Point positions, ascending.
    points: Vec<u64>,
    /// `owners[k]` is the node index of `points[k]`.
    owners: Vec<u32>,
    /// `hash_key(node.key)`, for slow-start admission and the fallback.
    node_hashes: Vec<u64>,
    /// `index[b]` = the first point whose top `64 - shift` bits are `>= b`; one entry per
    /// bucket plus a final `points.len()`.
    index: Vec<u32>,
    /// `64 - bucket bits`; 64 (a single bucket) for tiny rings.
    shift: u32,
}

impl Ring {
    pub fn new(nodes: Vec<Node>) -> Ring {
        let counts = point_counts(&nodes);
        let total: usize = counts.iter().sum();
        let mut pts: Vec<(u64, u32, u32)> = Vec::with_capacity(total);
        for (i, (node, &count)) in nodes.iter().zip(&counts).enumerate() {
            let key = node.key.as_bytes();
            for replica in 0..count {
                pts.push((
                    hash_key_seeded(key, replica as u64),
                    i as u32,
                    replica as u32,
                ));
            }
        }
        let key_of = |i: u32| nodes.get(i as usize).map(|n| n.key.as_bytes());
        pts.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| key_of(a.1).cmp(&key_of(b.1)))
                .then(a.2.cmp(&b.2))
                .then(a.1.cmp(&b.1))
        });
        let points: Vec<u64> = pts.iter().map(|p| p.0).collect();
        let owners = pts.iter().map(|p| p.1).collect();
        let node_hashes = nodes.iter().map(|n| hash_key(n.key.as_bytes())).collect();
        let (index, shift) = bucket_index(&points);
        Ring {
            nodes,
            points,
            owners,
            node_hashes,
            index,
            shift,
        }
    }

    /// The number of points on the ring.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The index of the first point at or after `hash`, wrapping to 0 past the last one.
    #[inline]
    fn first_point(&self, hash: u64) -> usize {
        let b = bucket(hash, self.shift);
        let lo = self.index.get(b).map_or(0, |&x| x as usize);
        let hi = self
            .index
            .get(b + 1)
            .map_or(self.points.len(), |&x| x as usize);
        let k = match self.points.get(lo..hi) {
            Some(slice) => lo + slice.partition_point(|&p| p < hash),
            // Unreachable with a well-formed index; the full search is always correct.
            None => self.points.partition_point(|&p| p < hash),
        };
        if k >= self.points.len() {
            0
        } else {
            k
        }
    }

    /// Deterministic slow-start admission of key `hash` to node `i`.
    #[inline]
    fn admit(&self, i: usize, ctx: &PickContext<'_>) -> bool {
        let Some(node) = self.nodes.get(i) else {
            return false;
        };
        let f = node.stats.weight_factor(ctx.now_ms);
        if f >= 1.0 {
            return true;
        }
        let salt = self.node_hashes.get(i).copied().unwrap_or(0);
        unit_f64(mix64(ctx.hash ^ salt)) < f
    }

    /// Weighted rendezvous hashing over every usable node: the node minimising
    /// `-ln(u) / weight`, with `u` a per-(key, node) uniform value in (0, 1).
    fn rendezvous(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, (node, &nh)) in self.nodes.iter().zip(&self.node_hashes).enumerate() {
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            // Shift into (0, 1): ln(0) would be -inf.
            let u = ((mix64(ctx.hash ^ nh) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -u.ln() / f64::from(weight_of(node));
            if best.is_none_or(|(_, b)| score < b) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// The bucket of `hash`: its top `64 - shift` bits (0 when `shift` is 64).
#[inline(always)]
fn bucket(hash: u64, shift: u32) -> usize {
    hash.checked_shr(shift).unwrap_or(0) as usize
}

/// Build the bucket index over sorted `points`: about one bucket per two to four points.
fn bucket_index(points: &[u64]) -> (Vec<u32>, u32) {
    let len = points.len();
    // floor(log2(len)) - 1 bits, so 2..4 points per bucket on average; at most 20 bits.
    let bits = (usize::BITS - 1 - len.max(1).leading_zeros())
        .saturating_sub(1)
        .min(20);
    let shift = 64 - bits;
    let buckets = 1usize << bits;
    let mut index = Vec::with_capacity(buckets + 1);
    let mut k = 0usize;
    for b in 0..buckets {
        while points.get(k).is_some_and(|&p| bucket(p, shift) < b) {
            k += 1;
        }
        index.push(k as u32);
    }
    index.push(len as u32);
    (index, shift)
}

/// Points per node: `weight × POINTS_PER_WEIGHT`, scaled down proportionally (at least
/// one each) when the total would exceed [`MAX_POINTS`].
fn point_counts(nodes: &[Node]) -> Vec<usize> {
    let raw: Vec<u128> = nodes
        .iter()
        .map(|n| u128::from(weight_of(n)) * u128::from(POINTS_PER_WEIGHT))
        .collect();
    let total: u128 = raw.iter().sum();
    let cap = MAX_POINTS as u128;
    raw.iter()
        .map(|&r| {
            if total <= cap {
                r as usize
            } else {
                ((r * cap / total) as usize).max(1)
            }
        })
        .collect()
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes.len())
            .field("points", &self.points.len())
            .field("buckets", &self.index.len().saturating_sub(1))
            .finish()
    }
}

impl Strategy for Ring {
    fn name(&self) -> &'static str {
        crate::Kind::ConsistentHash.as_str()
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let start = self.first_point(ctx.hash);
        let walk = len.min(MAX_WALK);
        let mut refused: Option<usize> = None;
        let mut last = u32::MAX;
        for step in 0..walk {
            let Some(&owner) = self.owners.get(wrap(start + step, len)) else {
                continue;
            };
            // Consecutive points of one node: it was just checked.
            if owner == last {
                continue;
            }
            last = owner;
            let i = owner as usize;
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            if !usable(&node.stats, i, ctx) {
                continue;
            }
            if self.admit(i, ctx) {
                return Some(i);
            }
            refused.get_or_insert(i);
        }
        if refused.is_some() || walk == len {
            // The whole ring was walked, or a usable node was found but refused by slow
            // start (the first one refused is still the key's clockwise successor).
            return refused;
        }
        self.rendezvous(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Strategy;
    use proptest::prelude::*;

    fn hctx(hash: u64, exclude: &[usize]) -> PickContext<'_> {
        PickContext {
            hash,
            exclude,
            now_ms: NOW,
        }
    }

    fn key_hash(k: usize, salt: u64) -> u64 {
        hash_key_seeded(format!("session-{k}").as_bytes(), salt)
    }

    /// For each key, the address of the node it maps to.
    fn owners_of<'a>(ring: &'a Ring, keys: &[u64]) -> Vec<&'a str> {
        keys.iter()
            .map(|&h| {
                let i = ring.pick(&hctx(h, &[])).expect("all nodes usable");
                ring.nodes[i].key.as_str()
            })
            .collect()
    }

    /// Adding an (N+1)th node; returns (moved share, whether all moved keys went to it).
    fn remap(n: usize, keys: &[u64], prefix: &str) -> (f64, bool) {
        let mk = |k: usize| -> Vec<Node> {
            (0..k)
                .map(|i| node(&format!("{prefix}{i}:80"), 1))
                .collect()
        };
        let before = Ring::new(mk(n));
        let after = Ring::new(mk(n + 1));
        let new_key = format!("{prefix}{n}:80");
        let a = owners_of(&before, keys);
        let b = owners_of(&after, keys);
        let mut moved = 0;
        let mut all_to_new = true;
        for (x, y) in a.iter().zip(&b) {
            if x != y {
                moved += 1;
                all_to_new &= *y == new_key;
            }
        }
        (moved as f64 / keys.len() as f64, all_to_new)
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_plus_one() {
        let keys: Vec<u64> = (0..100_000).map(|k| key_hash(k, 0)).collect();
        let (share, all_to_new) = remap(10, &keys, "10.0.0.");
        let ideal = 1.0 / 11.0;
        assert!(all_to_new, "a key moved between two old nodes");
        assert!(
            (share - ideal).abs() < 0.2 * ideal,
            "moved {share}, ideal {ideal}"
        );
    }

    #[test]
    fn placement_ignores_node_order() {
        let n = equal(12);
        let mut rev = n.clone();
        rev.reverse();
        let a = Ring::new(n);
        let b = Ring::new(rev);
        let keys: Vec<u64> = (0..5_000).map(|k| key_hash(k, 1)).collect();
        assert_eq!(owners_of(&a, &keys), owners_of(&b, &keys));
        // And the same key always gives the same node.
        assert_eq!(owners_of(&a, &keys), owners_of(&a, &keys));
    }

    #[test]
    fn weights_scale_points_and_share() {
        let ring = Ring::new(nodes(&[1, 3]));
        assert_eq!(ring.points(), 4 * POINTS_PER_WEIGHT as usize);
        let c = counts_hashed(&ring, 2, 20_000);
        let share1 = c[1] as f64 / 20_000.0;
        assert!((0.68..0.82).contains(&share1), "{c:?}");
    }

    #[test]
    fn point_total_is_bounded() {
        let ring = Ring::new(nodes(&vec![100; 300]));
        assert!(ring.points() <= MAX_POINTS);
        assert!(ring.points() >= MAX_POINTS - 300);
        let ring = Ring::new(nodes(&[1000, 1]));
        assert!(ring.points() <= MAX_POINTS);
    }

    #[test]
    fn an_unusable_owner_hands_its_keys_to_its_clockwise_neighbours_only() {
        let n = equal(8);
        let ring = Ring::new(n.clone());
        let keys: Vec<u64> = (0..5_000).map(|k| key_hash(k, 2)).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|&h| ring.pick(&hctx(h, &[])).unwrap_or(99))
            .collect();
        for reason in REASONS {
            let _g = make_ineligible(&n[3].stats, reason);
            for (&h, &b) in keys.iter().zip(&before) {
                let p = ring.pick(&hctx(h, &[])).unwrap_or(99);
                if b == 3 {
                    assert!(p != 3 && p < 8, "{reason:?}");
                } else {
                    assert_eq!(p, b, "{reason:?}: a key of a healthy node moved");
                }
            }
            // Reset what `make_ineligible` changed.
            let s = &n[3].stats;
            s.set_health(crate::Health::Unknown);
            s.set_health_gated(false);
            s.set_ejected_until_ms(0);
            s.set_draining(false);
            s.set_max_in_flight(0);
        }
    }

    #[test]
    fn exclusion_walks_to_the_next_distinct_node() {
        let ring = Ring::new(equal(5));
        for k in 0..500 {
            let h = key_hash(k, 3);
            let first = ring.pick(&hctx(h, &[])).unwrap_or(99);
            let second = ring.pick(&hctx(h, &[first])).unwrap_or(99);
            assert_ne!(first, second);
            assert!(second < 5);
            // Deterministic: the retry of a key always goes to the same next node.
            assert_eq!(ring.pick(&hctx(h, &[first])), Some(second));
        }
        assert_eq!(ring.pick(&hctx(7, &[0, 1, 2, 3, 4])), None);
        assert_eq!(Ring::new(Vec::new()).pick(&hctx(7, &[])), None);
    }

    #[test]
    fn all_ineligible_is_none_and_the_fallback_finds_survivors() {
        let n = equal(60);
        let guards: Vec<_> = n
            .iter()
            .enumerate()
            .map(|(i, n)| make_ineligible(&n.stats, REASONS[i % 5]))
            .collect();
        let ring = Ring::new(n.clone());
        assert_eq!(ring.pick(&hctx(42, &[])), None);
        drop(guards);
        // One survivor among 60: most walks of 64 points miss it, so the rendezvous
        // fallback must find it.
        let n = equal(60);
        let _g: Vec<_> = n
            .iter()
            .skip(1)
            .map(|n| make_ineligible(&n.stats, Reason::Down))
            .collect();
        let ring = Ring::new(n);
        for k in 0..200 {
            assert_eq!(ring.pick(&hctx(key_hash(k, 4), &[])), Some(0));
        }
    }

    #[test]
    fn slow_start_admits_a_stable_growing_share() {
        let n = equal(4);
        let ring = Ring::new(n.clone());
        let keys: Vec<u64> = (0..20_000).map(|k| key_hash(k, 5)).collect();
        let on0 = |ring: &Ring| -> Vec<bool> {
            keys.iter()
                .map(|&h| ring.pick(&hctx(h, &[])) == Some(0))
                .collect()
        };
        let full = on0(&ring);
        slow_start(&n[0].stats, 0.3);
        let part = on0(&ring);
        slow_start(&n[0].stats, 0.6);
        let more = on0(&ring);
        let count = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64;
        let ratio = count(&part) / count(&full);
        assert!((0.25..0.35).contains(&ratio), "{ratio}");
        // Monotone: every key admitted at 0.3 is still admitted at 0.6, and all were
        // node 0's keys to begin with.
        for k in 0..keys.len() {
            assert!(!part[k] || more[k]);
            assert!(!more[k] || full[k]);
        }
        // A pool entirely in slow start still answers every key.
        for node in &n {
            slow_start(&node.stats, 0.1);
        }
        assert!(keys.iter().all(|&h| ring.pick(&hctx(h, &[])).is_some()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Adding a node to N moves about 1/(N+1) of the keys, all to the new node.
        #[test]
        fn remap_share(n in 2usize..16, salt in any::<u64>(), prefix in "[a-z]{1,8}\\.") {
            let keys: Vec<u64> = (0..4_000).map(|k| key_hash(k, salt)).collect();
            let (share, all_to_new) = remap(n, &keys, &prefix);
            let ideal = 1.0 / (n as f64 + 1.0);
            prop_assert!(all_to_new);
            // Arc-length spread with 160 points ≈ 8 % of the share, plus key sampling
            // noise: 45 % is over 5 sd.
            prop_assert!((share - ideal).abs() < 0.45 * ideal, "moved {}, ideal {}", share, ideal);
        }

        /// The bucketed search finds exactly the first point at or after the hash.
        #[test]
        fn bucketed_search_matches_plain_search(n in 1usize..40, hashes in proptest::collection::vec(any::<u64>(), 1..64)) {
            let ring = Ring::new(equal(n));
            let mut probes = hashes.clone();
            probes.extend([0, 1, u64::MAX, u64::MAX - 1]);
            probes.extend(ring.points.iter().take(8).copied());
            probes.extend(ring.points.iter().take(8).map(|p| p.wrapping_add(1)));
            for h in probes {
                let plain = ring.points.partition_point(|&p| p < h);
                let plain = if plain == ring.points.len() { 0 } else { plain };
                prop_assert_eq!(ring.first_point(h), plain, "hash {:#x}", h);
            }
        }

        /// The same key always maps to the same node, across picks and rebuilds in any
        /// node order.
        #[test]
        fn stability(n in 1usize..20, rot in 0usize..20, hashes in proptest::collection::vec(any::<u64>(), 1..50)) {
            let a = Ring::new(equal(n));
            let mut shuffled = equal(n);
            shuffled.rotate_left(rot % n);
            let b = Ring::new(shuffled);
            prop_assert_eq!(owners_of(&a, &hashes), owners_of(&b, &hashes));
            prop_assert_eq!(owners_of(&a, &hashes), owners_of(&a, &hashes));
        }
    }
}
