//! Passive outlier detection: eject a node after consecutive failures seen on live traffic.
//!
//! A connect error, a timeout or a 5xx on a real request counts as a failure; any other
//! answer resets the streak. After `consecutive_failures` in a row the node is ejected for
//! `base_ejection_time × 2^(n-1)` (n = how many times it was ejected recently, capped at
//! [`MAX_EJECTION`]), unless that would put more than `max_ejection_percent` of the pool
//! out at once — counted *after* the ejection, so 3 failing nodes at 50 % eject exactly one.
//! When probes are configured, an ejected node must also pass a probe before it is trusted
//! again (its health goes back to `unknown`, which a gated node may not serve).
//!
//! The per-node state ([`crate::balance::snapshot::OutlierState`]) and the pool's settings
//! live in the snapshot's types; this file holds the rules.

use std::sync::atomic::Ordering;
use std::time::Duration;

use strategies::Health;

use crate::balance::snapshot::{Node, OutlierSettings, Pool};

/// The longest an ejection lasts however often a node is ejected (Envoy's default cap).
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Record one attempt's result. Cheap on success: one load, and a store only when a streak
/// was running.
pub fn record(pool: &Pool, node: &Node, failed: bool, now_ms: u64) {
    let state = &node.outlier;
    if !failed {
        if state.consecutive_failures.load(Ordering::Relaxed) != 0 {
            state.consecutive_failures.store(0, Ordering::Relaxed);
        }
        let ejections = state.ejections.load(Ordering::Relaxed);
        if ejections != 0 {
            let end = state.last_ejection_end_ms.load(Ordering::Relaxed);
            let len = state.last_ejection_ms.load(Ordering::Relaxed);
            if now_ms > end.saturating_add(len) {
                state.ejections.store(0, Ordering::Relaxed);
            }
        }
        return;
    }
    let Some(cfg) = pool.outlier.as_ref() else {
        return;
    };
    let streak = state.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
    if streak < cfg.consecutive_failures || node.stats.is_ejected(now_ms) {
        return;
    }
    try_eject(pool, node, cfg, now_ms);
}

fn try_eject(pool: &Pool, node: &Node, cfg: &OutlierSettings, now_ms: u64) {
    let ejected = pool
        .nodes
        .iter()
        .filter(|n| n.stats.is_ejected(now_ms))
        .count();
    let total = pool.nodes.len();
    if (ejected + 1) * 100 > cfg.max_ejection_percent as usize * total {
        tracing::debug!(pool = %pool.name, node = %node.addr, ejected, total, "not ejecting: max_ejection_percent reached");
        return;
    }
    let state = &node.outlier;
    let n = state.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let base = cfg.base_ejection_time;
    let factor = 1u32
        .checked_shl(n.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    let cap = MAX_EJECTION.max(base);
    let duration = base.saturating_mul(factor).min(cap);
    let ms = duration.as_millis() as u64;
    let until = now_ms.saturating_add(ms);
    node.stats.set_ejected_until_ms(until);
    state.consecutive_failures.store(0, Ordering::Relaxed);
    state.last_ejection_end_ms.store(until, Ordering::Relaxed);
    state.last_ejection_ms.store(ms, Ordering::Relaxed);
    if node.stats.health_gated() {
        // Probed before it is trusted again.
        node.stats.set_health(Health::Unknown);
    }
    tracing::warn!(
        pool = %pool.name,
        node = %node.addr,
        reason = "consecutive failures on live traffic",
        ejection_seconds = duration.as_secs_f64(),
        ejection_count = n,
        "node ejected"
    );
}

/// Log nodes whose ejection has ended, once each, and clear the deadline. Called by the
/// health supervisor about once a second.
pub fn sweep_returns(pool: &Pool, now_ms: u64) {
    for node in &pool.nodes {
        let until = node.stats.ejected_until_ms();
        if until != 0 && until <= now_ms {
            node.stats.set_ejected_until_ms(0);
            tracing::info!(pool = %pool.name, node = %node.addr, reason = "ejection time over", "node returned from ejection");
        }
    }
}
