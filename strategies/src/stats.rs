//! Live per-node facts shared by the proxy, the health checker and the strategies.
//!
//! Everything here is an atomic so that the request path reads and updates it without a
//! lock. A `NodeStats` is keyed by (pool, node address) in the proxy and reused when a new
//! routing snapshot still contains the node, so a reload never resets health, ejection,
//! in-flight counts or latency.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the first call in this process, from a monotonic clock. All
/// deadlines in [`NodeStats`] use this time base.
pub fn now_ms() -> u64 {
    // Offset by one so that 0 can mean "never" in the deadline fields.
    epoch().elapsed().as_millis() as u64 + 1
}

/// The one process epoch behind [`now_ms`] and `now_ns`, so that nanosecond stamps taken
/// when a latency is observed can be compared with the caller's `now_ms` when it is read.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What active health checks last concluded about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet (or no probe configured).
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Up => 1,
            Health::Down => 2,
        }
    }
}

/// Peak-EWMA decay time constant: how quickly an old latency observation fades. Finagle and
/// Linkerd use 10 s: long enough to remember a slow node, short enough to forgive it.
const EWMA_DECAY_NS: f64 = 10_000_000_000.0;

/// Latency assumed for a node with no observation yet. Deliberately pessimistic (Linkerd
/// seeds with a similar floor) so that a new node is not flooded before it has answered.
pub const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// The floor of a decayed latency estimate (1 µs). Never zero, so that among nodes whose
/// estimates have fully decayed the in-flight count still orders them.
pub const EWMA_FLOOR_NS: f64 = 1_000.0;

/// The share of its weight a node in slow start gets at the very start of the window.
pub const SLOW_START_FLOOR: f64 = 0.1;

/// `e^-x` in a `const fn`, to build [`DECAY`] at compile time: `x` is divided by 2^10
/// so a 10-term Taylor series is exact to rounding, and the result squared back 10 times.
const fn const_exp_neg(x: f64) -> f64 {
    let y = x / 1024.0;
    let mut sum = 1.0;
    let mut term = 1.0;
    let mut k = 1;
    while k <= 10 {
        term = term * -y / k as f64;
        sum += term;
        k += 1;
    }
    let mut i = 0;
    while i < 10 {
        sum *= sum;
        i += 1;
    }
    sum
}

/// The EWMA decay time constant in milliseconds.
const EWMA_DECAY_MS: f64 = EWMA_DECAY_NS / 1_000_000.0;

/// Decay over `j << (6 * i)` ms: `DECAY[i][j] = e^(-(j · 64^i) / 10 s)`. The decay over any
/// elapsed time below 2^18 ms (262 s, 26 time constants) is the product of three entries,
/// one per 6-bit digit of the elapsed milliseconds.
static DECAY: [[f64; 64]; 3] = {
    let mut t = [[0.0; 64]; 3];
    let mut i = 0;
    while i < 3 {
        let mut j = 0;
        while j < 64 {
            t[i][j] = const_exp_neg((j << (6 * i)) as f64 / EWMA_DECAY_MS);
            j += 1;
        }
        i += 1;
    }
    t
};

/// `e^(-elapsed_ms / 10 s)` from three table reads and two multiplies. The pick path
/// decays two latency estimates per `p2c_ewma` pick: libm's `exp` plus the division would
/// cost a third of the pick's budget, and a polynomial is latency-bound.
#[inline]
fn decay_ms(elapsed_ms: u64) -> f64 {
    if elapsed_ms >= 1 << 18 {
        return 0.0;
    }
    let e = elapsed_ms as usize;
    DECAY[0][e & 63] * DECAY[1][(e >> 6) & 63] * DECAY[2][(e >> 12) & 63]
}

/// Live stats of one node in one pool.
///
/// Aligned to a cache line: the whole struct (under 64 bytes) then sits on one line of its
/// own, so a pick reads every field it needs with one cache miss at most, and the counters
/// that every request writes (`in_flight`) never share a line with another node's stats.
#[derive(Debug)]
#[repr(align(64))]
pub struct NodeStats {
    /// Requests sent to the node whose response body has not ended yet.
    in_flight: AtomicU32,
    /// Cap on `in_flight` (`max_connections_per_node`); 0 = unlimited. Atomic because a
    /// reload may change it while requests hold the stats.
    max_in_flight: AtomicU32,
    /// Peak-EWMA cost in nanoseconds, stored as `f64` bits.
    ewma_ns: AtomicU64,
    /// `now_ns` of the last EWMA update, for decay; 0 until the first observation.
    ewma_stamp_ns: AtomicU64,
    /// [`Health`] as a u8.
    health: AtomicU8,
    /// True when an active health check is configured: then `Unknown` is not eligible
    /// (a new node takes traffic only after its first successful probe).
    health_gated: AtomicBool,
    /// Passive outlier ejection deadline in [`now_ms`] time; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Operator drain: no new requests, in-flight ones finish.
    draining: AtomicBool,
    /// When slow start began for this node ([`now_ms`]); 0 = not in slow start.
    slow_start_since_ms: AtomicU64,
    /// Slow-start window in ms; 0 = slow start disabled for the pool.
    slow_start_window_ms: AtomicU64,
}

impl Default for NodeStats {
    fn default() -> Self {
        NodeStats::new()
    }
}

/// Nanoseconds since [`epoch`], never 0 (0 marks "no observation yet").
fn now_ns() -> u64 {
    (epoch().elapsed().as_nanos() as u64).max(1)
}

impl NodeStats {
    pub fn new() -> NodeStats {
        NodeStats {
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            ewma_stamp_ns: AtomicU64::new(0),
            health: AtomicU8::new(Health::Unknown.to_u8()),
            health_gated: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            slow_start_since_ms: AtomicU64::new(0),
            slow_start_window_ms: AtomicU64::new(0),
        }
    }

    // ---- in-flight accounting -------------------------------------------------------

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count one request in flight until the returned guard is dropped, ignoring the cap:
    /// for tests that hold a node busy. (The proxy uses [`NodeStats::try_start_request`].)
    #[cfg(test)]
    pub(crate) fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: Arc::clone(self),
        }
    }

    /// Count one request in flight until the returned guard is dropped, respecting
    /// `max_in_flight` atomically: `None` when the node is at its cap (checking
    /// [`NodeStats::is_eligible`] first and counting after would let concurrent requests
    /// overshoot the cap by a few; this does not). The proxy drops the guard when the
    /// response *body* ends (not at the headers), so long downloads count as load.
    pub fn try_start_request(self: &Arc<Self>) -> Option<InFlight> {
        let max = self.max_in_flight.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (max == 0 || n < max).then(|| n.saturating_add(1))
            })
            .ok()
            .map(|_| InFlight {
                stats: Arc::clone(self),
            })
    }

    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    pub fn set_max_in_flight(&self, max: u32) {
        self.max_in_flight.store(max, Ordering::Relaxed);
    }

    // ---- latency ------------------------------------------------------------------------

    /// Record one observed round-trip time into the peak EWMA: a higher observation
    /// replaces the cost at once (peak), a lower one is blended in with a time-based decay.
    /// The very first observation replaces the [`DEFAULT_RTT`] seed outright: the seed is a
    /// placeholder for "unknown", not a measurement to average with.
    /// Concurrent updates may lose one another's observation; that is acceptable for a
    /// load estimate and keeps this lock-free.
    ///
    /// The proxy should also observe the elapsed time of attempts that failed or timed out,
    /// so that a node that stops answering does not look fast while its estimate decays.
    pub fn observe_rtt(&self, rtt: Duration) {
        let now = now_ns();
        let rtt = rtt.as_nanos() as f64;
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp_ns.swap(now, Ordering::Relaxed);
        let next = if stamp == 0 || rtt > prev {
            rtt
        } else {
            let elapsed = now.saturating_sub(stamp) as f64;
            let w = (-elapsed / EWMA_DECAY_NS).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Has any round trip been observed yet? Before that the EWMA is only the seed.
    #[inline]
    pub fn is_observed(&self) -> bool {
        self.ewma_stamp_ns.load(Ordering::Relaxed) != 0
    }

    /// Peak-EWMA cost in nanoseconds as of the last observation ([`DEFAULT_RTT`] before
    /// the first one), without decay for the time since. See [`NodeStats::ewma_ns_at`].
    pub fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed))
    }

    /// Peak-EWMA cost in nanoseconds as seen at `now_ms`: the stored cost decayed toward
    /// zero for the time since the last observation (time constant 10 s, as in Finagle's
    /// and Linkerd's peak EWMA), floored at [`EWMA_FLOOR_NS`]. Without this decay on read,
    /// a node that once answered slowly would keep a high cost, get almost no traffic and
    /// so never get the observation that would clear it. A node never observed reports
    /// the [`DEFAULT_RTT`] seed, undecayed, so new nodes are not flooded.
    ///
    /// Read-only (no store on the pick path) and cheap: within the millisecond of the last
    /// observation, as on a busy node, it skips the `exp`.
    #[inline]
    pub fn ewma_ns_at(&self, now_ms: u64) -> f64 {
        let cost = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let stamp_ns = self.ewma_stamp_ns.load(Ordering::Relaxed);
        if stamp_ns == 0 {
            return cost;
        }
        // The stamp in `now_ms` units (same epoch, same +1 offset).
        let stamp_ms = stamp_ns / 1_000_000 + 1;
        let elapsed_ms = now_ms.saturating_sub(stamp_ms);
        if elapsed_ms == 0 {
            return cost.max(EWMA_FLOOR_NS);
        }
        (cost * decay_ms(elapsed_ms)).max(EWMA_FLOOR_NS)
    }

    // ---- health, ejection, draining -----------------------------------------------------

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Set the health; returns the previous value.
    pub fn set_health(&self, h: Health) -> Health {
        Health::from_u8(self.health.swap(h.to_u8(), Ordering::Relaxed))
    }

    pub fn health_gated(&self) -> bool {
        self.health_gated.load(Ordering::Relaxed)
    }

    pub fn set_health_gated(&self, gated: bool) {
        self.health_gated.store(gated, Ordering::Relaxed);
    }

    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Eject until `until_ms` ([`now_ms`] time); 0 clears the ejection.
    pub fn set_ejected_until_ms(&self, until_ms: u64) {
        self.ejected_until_ms.store(until_ms, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    // ---- slow start ---------------------------------------------------------------------

    /// Configure the pool's slow-start window (0 disables it).
    pub fn set_slow_start_window(&self, window: Duration) {
        self.slow_start_window_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
    }

    /// Begin (or restart) slow start at `now_ms`: called when a node is new or comes back up.
    pub fn begin_slow_start(&self, now_ms: u64) {
        self.slow_start_since_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The share of its weight the node should get now, in `[SLOW_START_FLOOR, 1.0]`;
    /// 1.0 outside slow start. Ramps linearly over the window.
    pub fn weight_factor(&self, now_ms: u64) -> f64 {
        // Checked one at a time: with slow start off (the common case) only one load.
        let window = self.slow_start_window_ms.load(Ordering::Relaxed);
        if window == 0 {
            return 1.0;
        }
        let since = self.slow_start_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now_ms.saturating_sub(since);
        if elapsed >= window {
            return 1.0;
        }
        let ramp = elapsed as f64 / window as f64;
        SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * ramp
    }

    /// May this node take a new request at `now_ms`? Not when it is down (or not yet
    /// probed while probes are configured), ejected, draining, or at its in-flight cap.
    pub fn is_eligible(&self, now_ms: u64) -> bool {
        match self.health() {
            Health::Down => return false,
            Health::Unknown if self.health_gated() => return false,
            _ => {}
        }
        if self.is_draining() || self.is_ejected(now_ms) {
            return false;
        }
        let max = self.max_in_flight();
        max == 0 || self.in_flight() < max
    }
}

/// Drop guard for one in-flight request (see [`NodeStats::try_start_request`]).
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<NodeStats>,
}

impl InFlight {
    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_reasons() {
        let now = 10_000;
        let s = Arc::new(NodeStats::new());
        assert!(s.is_eligible(now), "unknown and not gated is eligible");
        s.set_health_gated(true);
        assert!(!s.is_eligible(now), "unknown while gated");
        s.set_health(Health::Up);
        assert!(s.is_eligible(now));
        assert_eq!(s.set_health(Health::Down), Health::Up);
        assert!(!s.is_eligible(now));
        s.set_health(Health::Up);
        s.set_ejected_until_ms(now + 1);
        assert!(!s.is_eligible(now) && s.is_ejected(now));
        assert!(s.is_eligible(now + 1), "ejection ends at its deadline");
        s.set_ejected_until_ms(0);
        s.set_draining(true);
        assert!(!s.is_eligible(now));
        s.set_draining(false);
        s.set_max_in_flight(1);
        let guard = s.start_request();
        assert!(!s.is_eligible(now), "at cap");
        drop(guard);
        assert!(s.is_eligible(now));
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn try_start_request_respects_cap() {
        let s = Arc::new(NodeStats::new());
        s.set_max_in_flight(2);
        let a = s.try_start_request();
        let b = s.try_start_request();
        assert!(a.is_some() && b.is_some());
        assert!(s.try_start_request().is_none());
        drop(a);
        assert!(s.try_start_request().is_some());
        s.set_max_in_flight(0);
        let many: Vec<_> = (0..10).filter_map(|_| s.try_start_request()).collect();
        assert_eq!(many.len(), 10);
    }

    #[test]
    fn slow_start_ramps_linearly_between_floor_and_one() {
        let s = NodeStats::new();
        assert_eq!(s.weight_factor(5), 1.0, "no window configured");
        s.set_slow_start_window(Duration::from_millis(1000));
        assert_eq!(s.weight_factor(5), 1.0, "never begun");
        s.begin_slow_start(1000);
        assert!((s.weight_factor(1000) - SLOW_START_FLOOR).abs() < 1e-12);
        assert!((s.weight_factor(1500) - 0.55).abs() < 1e-12);
        assert_eq!(s.weight_factor(2000), 1.0);
        assert!(
            (s.weight_factor(500) - SLOW_START_FLOOR).abs() < 1e-12,
            "clock skew"
        );
    }

    #[test]
    fn ewma_seed_peak_and_decay_on_read() {
        let s = NodeStats::new();
        let seed = DEFAULT_RTT.as_nanos() as f64;
        assert_eq!(s.ewma_ns(), seed);
        assert_eq!(
            s.ewma_ns_at(u64::MAX),
            seed,
            "an unobserved node keeps its seed"
        );

        s.observe_rtt(Duration::from_millis(5));
        let stamp_ms = now_ms();
        assert_eq!(
            s.ewma_ns(),
            5_000_000.0,
            "first observation replaces the seed"
        );
        s.observe_rtt(Duration::from_millis(50));
        assert_eq!(
            s.ewma_ns(),
            50_000_000.0,
            "a higher observation is a new peak"
        );
        s.observe_rtt(Duration::from_millis(1));
        let blended = s.ewma_ns();
        assert!(
            blended > 1_000_000.0 && blended <= 50_000_000.0,
            "{blended}"
        );

        // Reading decays toward zero with a 10 s time constant, never below the floor.
        let at = |dt: u64| s.ewma_ns_at(stamp_ms + 1 + dt);
        assert!(at(0) <= blended);
        let ten_s = at(10_000);
        assert!(
            ten_s < blended * 0.40 && ten_s > blended * 0.30,
            "{ten_s} vs {blended}"
        );
        assert_eq!(at(10_000_000), EWMA_FLOOR_NS);
        // The read did not change the stored value.
        assert_eq!(s.ewma_ns(), blended);
    }

    #[test]
    fn decay_table_matches_exp() {
        let mut ms = 0u64;
        while ms < 1 << 18 {
            let want = (-(ms as f64) / EWMA_DECAY_MS).exp();
            let got = decay_ms(ms);
            assert!(
                (got - want).abs() <= want * 1e-12,
                "{ms} ms: {got} vs {want}"
            );
            ms += 1 + ms / 50;
        }
        assert_eq!(decay_ms(0), 1.0);
        assert_eq!(decay_ms(1 << 18), 0.0);
        assert_eq!(decay_ms(u64::MAX), 0.0);
    }

    #[test]
    fn one_cache_line_per_node() {
        assert_eq!(std::mem::align_of::<NodeStats>(), 64);
        assert_eq!(std::mem::size_of::<NodeStats>(), 64);
    }

    #[test]
    fn clocks_share_an_epoch() {
        let ms = now_ms();
        let ns = now_ns();
        let later_ms = now_ms();
        let ns_as_ms = ns / 1_000_000 + 1;
        assert!(ms <= ns_as_ms && ns_as_ms <= later_ms);
    }
}
