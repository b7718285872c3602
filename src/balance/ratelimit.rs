//! Per-client rate limiting (`rate_limit`): one token bucket per client address.
//!
//! Each client address owns a bucket of `burst` tokens that refills at
//! `requests_per_second`; a request takes one token, and a request that finds less than one
//! is refused with 429 and a `Retry-After` saying when the next token will be there. A new
//! bucket starts full, so a client's first burst is not refused. The client address is the one
//! [`crate::proxy::headers::client_addr`] derives (the peer, or the last untrusted
//! `X-Forwarded-For` hop behind `trusted_proxies`). IPv6 clients are keyed by their /64
//! network: one subscriber usually holds a whole /64 and could otherwise step through 2^64
//! addresses to dodge the limit. IPv4-mapped IPv6 addresses count as the IPv4 address.
//!
//! The limit is process-wide and applies before routing: one table for every listener, so a
//! client is one client whichever listener it uses (refusals are counted per listener).
//!
//! **Bounded memory.** The table is [`SHARDS`] independently locked shards of at most
//! [`SHARD_CAPACITY`] buckets each ([`MAX_BUCKETS`] in all, under 5 MiB). A new
//! client in a full shard first drops every bucket that has refilled to full — such a bucket
//! carries no information: a new bucket would start in the same state — and, when that frees
//! less than an eighth of the shard (a flood of distinct addresses, all of them recent), the
//! eighth of the shard seen least recently. Eviction is amortised: each round frees at least
//! an eighth of the shard, so a flood costs a bounded amount of work per request, and a
//! client that is being throttled right now is seen recently and is evicted last.
//!
//! **Cost.** A check is one cheap hash to pick the shard, one lock held for a hash-map
//! lookup and a few float operations, and nothing else: no allocation except when a new
//! client joins, no global lock, no I/O. Without a `rate_limit` section there is no limiter
//! at all (`Option::None` on the snapshot). `benches/request_checks.rs` measures it.
//!
//! The table survives config reloads (the snapshot builder hands the previous table to the
//! new limiter), so changing `requests_per_second` or `burst` applies at reload without
//! forgetting who has used what; removing the section drops the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::config::RateLimitConfig;
use crate::util::sync::lock;

/// Shards of the bucket table: enough that worker threads rarely meet on one lock.
pub const SHARDS: usize = 64;

/// Buckets per shard. With [`SHARDS`] this bounds the table to [`MAX_BUCKETS`] clients at
/// about 70 bytes each (key, bucket, hash-map slack, eviction scratch): under 5 MiB.
/// Only clients seen within the last `burst / requests_per_second` seconds hold a bucket
/// that is not full, so this covers 65 536 clients active at once.
pub const SHARD_CAPACITY: usize = 1024;

/// The most buckets the table ever holds.
pub const MAX_BUCKETS: usize = SHARDS * SHARD_CAPACITY;

/// An eviction round frees at least `SHARD_CAPACITY / EVICT_FRACTION` slots.
const EVICT_FRACTION: usize = 8;

/// A refused request: how long until the client has a token again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Whole seconds, rounded up, at least 1 (the `Retry-After` value).
    pub retry_after_secs: u64,
}

/// The limiter of one snapshot: the configured rate and the shared bucket table.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per nanosecond.
    per_ns: f64,
    /// Bucket capacity (`burst`).
    burst: f64,
    /// Shared with the limiters of earlier and later snapshots, so a reload keeps state.
    table: Arc<BucketTable>,
}

impl RateLimiter {
    /// A limiter for `cfg` (validated: a positive finite rate, `burst >= 1`), reusing
    /// `prev`'s table when there is one.
    pub fn new(cfg: &RateLimitConfig, prev: Option<&RateLimiter>) -> RateLimiter {
        RateLimiter {
            per_ns: cfg.requests_per_second / 1e9,
            burst: f64::from(cfg.burst.max(1)),
            table: prev
                .map(|p| Arc::clone(&p.table))
                .unwrap_or_else(|| Arc::new(BucketTable::new())),
        }
    }

    /// Take a token for `client` at `now`, or say how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Refused> {
        self.check_at(key(client), nanos_since_epoch(now))
    }

    /// Buckets held now (the `switchyard_rate_limit_buckets` gauge).
    pub fn buckets(&self) -> usize {
        self.table.len()
    }

    /// [`RateLimiter::check`] on a precomputed key and time (nanoseconds on any monotonic
    /// base): the whole algorithm, testable without a clock.
    pub fn check_at(&self, key: u128, now: u64) -> Result<(), Refused> {
        let mut shard = self.table.shard(key);
        if let Some(b) = shard.map.get_mut(&key) {
            let tokens = self.refilled(b, now);
            b.stamp = now;
            if tokens >= 1.0 {
                b.tokens = tokens - 1.0;
                return Ok(());
            }
            b.tokens = tokens;
            return Err(self.refused(tokens));
        }
        if shard.map.len() >= SHARD_CAPACITY {
            self.evict(&mut shard, now);
        }
        // A new bucket starts full and this request takes one token from it.
        shard.map.insert(
            key,
            Bucket {
                tokens: self.burst - 1.0,
                stamp: now,
            },
        );
        Ok(())
    }

    /// The bucket's tokens at `now`, capped at `burst`.
    fn refilled(&self, b: &Bucket, now: u64) -> f64 {
        let elapsed = now.saturating_sub(b.stamp) as f64;
        (b.tokens + elapsed * self.per_ns).min(self.burst)
    }

    fn refused(&self, tokens: f64) -> Refused {
        let wait_ns = (1.0 - tokens) / self.per_ns;
        let secs = (wait_ns / 1e9).ceil();
        // `as` saturates: an absurdly slow rate gives a huge but valid number.
        Refused {
            retry_after_secs: (secs as u64).max(1),
        }
    }

    /// Make room in a full shard: drop the buckets that have refilled to full, then, if
    /// that freed less than an eighth of the shard, the least recently seen eighth.
    fn evict(&self, shard: &mut Shard, now: u64) {
        let before = shard.map.len();
        shard.map.retain(|_, b| self.refilled(b, now) < self.burst);
        let want = SHARD_CAPACITY / EVICT_FRACTION;
        let freed = before - shard.map.len();
        if freed >= want {
            return;
        }
        let k = want - freed;
        let scratch = &mut shard.scratch;
        scratch.clear();
        scratch.extend(shard.map.values().map(|b| b.stamp));
        if scratch.len() <= k {
            shard.map.clear();
            return;
        }
        // The k-th oldest stamp: everything older goes, and stamps equal to it until k
        // buckets have gone.
        let (_, cut, _) = scratch.select_nth_unstable(k - 1);
        let cut = *cut;
        let mut at_cut = k - scratch.iter().filter(|&&s| s < cut).count();
        shard.map.retain(|_, b| {
            if b.stamp < cut {
                false
            } else if b.stamp == cut && at_cut > 0 {
                at_cut -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// The table key of a client: an IPv4 address (IPv4-mapped IPv6 included) as its
/// IPv4-mapped IPv6 value, an IPv6 address as its /64 network. The two never collide: a /64
/// key has its low 64 bits clear, an IPv4 key has `ffff` in them.
pub fn key(client: IpAddr) -> u128 {
    match client.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

/// Nanoseconds since the first call, on the monotonic clock.
fn nanos_since_epoch(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    now.saturating_duration_since(epoch).as_nanos() as u64
}

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens at `stamp` (may be fractional).
    tokens: f64,
    /// When the bucket was last touched (nanoseconds): the refill base and the
    /// least-recently-seen order for eviction.
    stamp: u64,
}

/// One lock's worth of the table.
#[derive(Debug, Default)]
struct Shard {
    /// Client key → bucket. The map's hasher is std's per-process random SipHash, so
    /// addresses chosen by an attacker cannot be made to collide.
    map: HashMap<u128, Bucket>,
    /// Reused by eviction, so a flood does not allocate on every round.
    scratch: Vec<u64>,
}

/// A shard alone on its cache line(s), so that two threads working on neighbouring shards
/// do not slow each other down.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(Mutex<Shard>);

/// Every bucket, in [`SHARDS`] shards of at most [`SHARD_CAPACITY`].
#[derive(Debug)]
struct BucketTable {
    shards: Box<[Padded]>,
}

impl BucketTable {
    fn new() -> BucketTable {
        BucketTable {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }

    fn shard(&self, key: u128) -> MutexGuard<'_, Shard> {
        // A cheap multiplicative mix picks the shard; the map inside uses a keyed hash. A
        // poisoned lock only means another thread panicked mid-update of plain numbers:
        // the data is still usable.
        let folded = (key as u64) ^ ((key >> 64) as u64);
        let i = (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS;
        lock(&self.shards[i].0)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).map.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: u64 = 1_000_000_000;

    fn limiter(rps: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(
            &RateLimitConfig {
                requests_per_second: rps,
                burst,
            },
            None,
        )
    }

    fn v4(i: u32) -> u128 {
        key(IpAddr::V4(Ipv4Addr::from(i)))
    }

    #[test]
    fn burst_then_refused_then_refilled() {
        let rl = limiter(5.0, 3);
        let k = v4(1);
        let t0 = 10 * SEC;
        for _ in 0..3 {
            assert_eq!(rl.check_at(k, t0), Ok(()), "a new bucket starts full");
        }
        let refused = rl
            .check_at(k, t0)
            .expect_err("the fourth request is over the burst");
        assert_eq!(
            refused.retry_after_secs, 1,
            "one token comes back in 200 ms"
        );
        // 200 ms later exactly one token is back.
        assert_eq!(rl.check_at(k, t0 + SEC / 5), Ok(()));
        assert!(rl.check_at(k, t0 + SEC / 5).is_err());
        // After a long pause the bucket is full again, not fuller.
        let t1 = t0 + 100 * SEC;
        for _ in 0..3 {
            assert_eq!(rl.check_at(k, t1), Ok(()));
        }
        assert!(rl.check_at(k, t1).is_err());
        // Other clients are not affected.
        assert_eq!(rl.check_at(v4(2), t1), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        // One token every 4 s.
        let rl = limiter(0.25, 1);
        let k = v4(7);
        assert_eq!(rl.check_at(k, SEC), Ok(()));
        assert_eq!(rl.check_at(k, SEC).map_err(|r| r.retry_after_secs), Err(4));
        // 1.5 s later 2.5 s are left: rounded up to 3.
        assert_eq!(
            rl.check_at(k, SEC + SEC * 3 / 2)
                .map_err(|r| r.retry_after_secs),
            Err(3)
        );
        // A fast rate still says at least 1.
        let fast = limiter(1000.0, 1);
        assert_eq!(fast.check_at(k, SEC), Ok(()));
        assert_eq!(
            fast.check_at(k, SEC).map_err(|r| r.retry_after_secs),
            Err(1)
        );
    }

    #[test]
    fn refused_requests_do_not_take_tokens() {
        let rl = limiter(1.0, 1);
        let k = v4(3);
        assert_eq!(rl.check_at(k, SEC), Ok(()));
        // Hammering while empty must not push the next token further away.
        for i in 0..100 {
            assert!(rl.check_at(k, SEC + i * SEC / 200).is_err());
        }
        assert_eq!(rl.check_at(k, 2 * SEC), Ok(()));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(key(mapped), key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        // An IPv4 key never equals an IPv6 /64 key, not even for ::/64.
        assert_ne!(key(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), v4(0));
    }

    #[test]
    fn table_stays_bounded_under_a_flood_of_distinct_addresses() {
        // Every address is new and takes a token, so no bucket is full: eviction has to fall
        // back to the least recently seen ones.
        let rl = limiter(1.0, 10);
        for i in 0..1_000_000u32 {
            assert_eq!(rl.check_at(v4(i), SEC + u64::from(i)), Ok(()));
            if i % 100_000 == 99_999 {
                assert!(
                    rl.buckets() <= MAX_BUCKETS,
                    "{} buckets after {} addresses",
                    rl.buckets(),
                    i + 1
                );
            }
        }
        let n = rl.buckets();
        assert!(
            n <= MAX_BUCKETS && n > MAX_BUCKETS / 2,
            "{n} buckets: bounded, and not emptied by eviction"
        );
    }

    #[test]
    fn a_throttled_client_survives_a_flood() {
        // One token per 1000 s: nobody's bucket refills during the test, so eviction has to
        // choose by age, and the attacker, who keeps knocking, is always among the recent.
        let rl = limiter(0.001, 2);
        let attacker = v4(0xdead_beef);
        let t0 = SEC;
        assert_eq!(rl.check_at(attacker, t0), Ok(()));
        assert_eq!(rl.check_at(attacker, t0), Ok(()));
        let mut t = t0;
        for i in 0..200_000u32 {
            t += 1_000;
            assert_eq!(rl.check_at(v4(i), t), Ok(()), "a new client starts full");
            if i % 64 == 0 {
                // Evicted and re-created, the bucket would start full and let this through.
                assert!(
                    rl.check_at(attacker, t).is_err(),
                    "the throttled client was evicted after {i} other clients"
                );
            }
        }
        assert!(rl.buckets() <= MAX_BUCKETS);
    }

    #[test]
    fn eviction_prefers_full_buckets() {
        let rl = limiter(1000.0, 5);
        // A first wave fills the table; each of its buckets refills within 1 ms.
        for i in 0..(MAX_BUCKETS as u32) {
            let _ = rl.check_at(v4(i), SEC);
        }
        // A second later one client drains its bucket, then a second wave of half the
        // table's size arrives at the same instant: the room must come from the first
        // wave's full buckets, never from the drained one (nor the second wave).
        let recent = v4(u32::MAX);
        let t = 2 * SEC;
        for _ in 0..5 {
            assert_eq!(rl.check_at(recent, t), Ok(()));
        }
        for i in 0..(MAX_BUCKETS as u32 / 2) {
            let _ = rl.check_at(v4(1 << 31 | i), t);
        }
        assert!(
            rl.check_at(recent, t).is_err(),
            "the drained bucket survived"
        );
        assert!(rl.buckets() <= MAX_BUCKETS);
    }

    #[test]
    fn reload_keeps_the_table() {
        let rl = limiter(1.0, 1);
        let k = v4(9);
        assert_eq!(rl.check_at(k, SEC), Ok(()));
        let again = RateLimiter::new(
            &RateLimitConfig {
                requests_per_second: 1.0,
                burst: 1,
            },
            Some(&rl),
        );
        assert!(again.check_at(k, SEC).is_err(), "state carried over");
        assert_eq!(again.buckets(), 1);
    }
}
