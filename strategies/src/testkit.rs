//! Shared helpers for the unit and property tests: node sets, the ways a node can be
//! ineligible, slow start at a chosen factor, and pick counting.

use std::sync::Arc;
use std::time::Duration;

use crate::{Health, InFlight, Node, NodeStats, PickContext, Strategy};

/// A fixed "now" well past 0, so deadlines before and after it are representable.
pub const NOW: u64 = 1_000_000;

/// The slow-start window the tests configure.
pub const WINDOW_MS: u64 = 10_000;

pub fn node(key: &str, weight: u32) -> Node {
    Node {
        key: key.to_string(),
        weight,
        stats: Arc::new(NodeStats::new()),
    }
}

/// Nodes `10.0.0.<i>:80` with the given weights.
pub fn nodes(weights: &[u32]) -> Vec<Node> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| node(&format!("10.0.{}.{}:80", i / 250, i % 250), w))
        .collect()
}

/// `n` nodes of weight 1.
pub fn equal(n: usize) -> Vec<Node> {
    nodes(&vec![1; n])
}

pub fn ctx(exclude: &[usize]) -> PickContext<'_> {
    PickContext {
        hash: 0,
        exclude,
        now_ms: NOW,
    }
}

/// Every way a node can be ineligible at [`NOW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Down,
    Ejected,
    Draining,
    AtCap,
    UnknownWhileGated,
}

pub const REASONS: [Reason; 5] = [
    Reason::Down,
    Reason::Ejected,
    Reason::Draining,
    Reason::AtCap,
    Reason::UnknownWhileGated,
];

/// Make `stats` ineligible for `reason`. The returned guard (for [`Reason::AtCap`]) must
/// be kept alive while the node should stay at its cap.
#[must_use]
pub fn make_ineligible(stats: &Arc<NodeStats>, reason: Reason) -> Option<InFlight> {
    match reason {
        Reason::Down => {
            stats.set_health(Health::Down);
            None
        }
        Reason::Ejected => {
            stats.set_ejected_until_ms(NOW + 30_000);
            None
        }
        Reason::Draining => {
            stats.set_draining(true);
            None
        }
        Reason::AtCap => {
            stats.set_max_in_flight(1);
            Some(stats.start_request())
        }
        Reason::UnknownWhileGated => {
            stats.set_health(Health::Unknown);
            stats.set_health_gated(true);
            None
        }
    }
}

/// Put `stats` in slow start so that `weight_factor(NOW)` is `factor` (in [0.1, 1]).
pub fn slow_start(stats: &NodeStats, factor: f64) {
    stats.set_slow_start_window(Duration::from_millis(WINDOW_MS));
    let ramp = (factor - crate::stats::SLOW_START_FLOOR) / (1.0 - crate::stats::SLOW_START_FLOOR);
    let elapsed = (ramp * WINDOW_MS as f64).round() as u64;
    stats.begin_slow_start(NOW - elapsed);
}

/// Hold `k` in-flight requests on `stats`.
pub fn hold(stats: &Arc<NodeStats>, k: u32) -> Vec<InFlight> {
    (0..k).map(|_| stats.start_request()).collect()
}

/// Pick `picks` times and count the picks per node; panics on `None`.
pub fn counts(s: &dyn Strategy, n: usize, picks: usize, ctx: &PickContext<'_>) -> Vec<usize> {
    let mut c = vec![0; n];
    for _ in 0..picks {
        let i = s.pick(ctx).expect("a node qualifies");
        c[i] += 1;
    }
    c
}

/// `picks` picks with a different hash each (for `consistent_hash`).
pub fn counts_hashed(s: &dyn Strategy, n: usize, picks: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for k in 0..picks {
        let key = format!("client-{k}");
        let cx = PickContext {
            hash: crate::hash_key(key.as_bytes()),
            exclude: &[],
            now_ms: NOW,
        };
        let i = s.pick(&cx).expect("a node qualifies");
        c[i] += 1;
    }
    c
}

/// Binomial standard deviation of a count with probability `p` over `n` trials.
pub fn sd(n: usize, p: f64) -> f64 {
    (n as f64 * p * (1.0 - p)).sqrt()
}
