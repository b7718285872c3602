//! A small, fast, thread-local pseudo-random generator for the pick path.
//!
//! The randomized strategies (`p2c_ewma`, `random`, the sampled mode of `least_conn`, and
//! slow-start admission everywhere) need a few random numbers per request. A shared
//! generator behind an atomic or a lock would put one contended cache line in front of
//! every request on every core, so each thread owns its state instead. Quality needs are
//! modest (no security, just no visible bias or correlation between threads), which
//! wyrand meets in one add and one 64×64→128 multiply: it passes BigCrush and PractRand,
//! and its period of 2^64 is far beyond what a proxy draws.
//!
//! Each thread's state is seeded lazily on first use from the address of its thread-local
//! slot, the wall clock and a process-wide counter, all run through a strong finalizer, so
//! threads started in the same nanosecond still get unrelated sequences.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hash::mix64;

/// wyrand's increment and multiplier constant.
const WY_INC: u64 = 0xa076_1d64_78bd_642f;
const WY_XOR: u64 = 0xe703_7ed1_a0b4_28db;

thread_local! {
    /// 0 means "not seeded yet" (a seeded state is never 0; see `seed`). `const`
    /// initialisation and a type without `Drop` make each access a plain TLS load.
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// Bumped on every seeding so two threads never derive the same seed.
static SEEDS: AtomicU64 = AtomicU64::new(0);

fn fresh_seed(salt: u64) -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = SEEDS.fetch_add(1, Ordering::Relaxed);
    let s = mix64(salt ^ mix64(time ^ mix64(count.wrapping_add(WY_INC))));
    if s == 0 {
        WY_XOR
    } else {
        s
    }
}

#[inline(always)]
fn step(state: u64) -> (u64, u64) {
    let s = state.wrapping_add(WY_INC);
    let t = u128::from(s) * u128::from(s ^ WY_XOR);
    (s, ((t >> 64) as u64) ^ (t as u64))
}

/// The next 64 random bits of this thread's sequence.
#[inline]
pub(crate) fn next_u64() -> u64 {
    STATE
        .try_with(|cell| {
            let mut s = cell.get();
            if s == 0 {
                s = fresh_seed(cell as *const Cell<u64> as usize as u64);
            }
            let (next, out) = step(s);
            // A state that wraps to exactly 0 is simply reseeded on the next call.
            cell.set(next);
            out
        })
        // Only reachable while the thread is being torn down: fall back to the shared
        // counter, which is slower but still random enough to pick a node.
        .unwrap_or_else(|_| step(fresh_seed(0)).1)
}

/// A uniform integer in `0..n` (0 when `n == 0`; callers check for empty sets first).
///
/// Lemire's multiply-shift: the top 64 bits of `x * n`. Its bias is at most `n / 2^64`,
/// invisible for node counts, and it needs no division or retry loop.
#[inline]
pub(crate) fn below(n: usize) -> usize {
    below_u64(n as u64) as usize
}

/// [`below`] for `u64` bounds (weight sums).
#[inline]
pub(crate) fn below_u64(n: u64) -> u64 {
    ((u128::from(next_u64()) * u128::from(n)) >> 64) as u64
}

/// A uniform float in `[0, 1)`.
#[inline]
pub(crate) fn unit() -> f64 {
    crate::hash::unit_f64(next_u64())
}

/// True with probability `p` (always for `p >= 1`).
#[inline]
pub(crate) fn chance(p: f64) -> bool {
    p >= 1.0 || unit() < p
}

/// Make this thread's sequence reproducible (tests seed before statistical checks so
/// that a failure replays exactly).
#[cfg(test)]
pub(crate) fn seed(s: u64) {
    STATE.with(|cell| cell.set(if s == 0 { WY_XOR } else { s }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        seed(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let x = below(10);
            assert!(x < 10);
            seen[x] += 1;
        }
        // Expected 1000 each, sd ≈ 30.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(below(0), 0);
        assert_eq!(below(1), 0);
    }

    #[test]
    fn seeded_sequences_repeat_and_threads_differ() {
        seed(42);
        let a: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        seed(42);
        let b: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        assert_eq!(a, b);
        let t1 = std::thread::spawn(next_u64).join().unwrap_or(0);
        let t2 = std::thread::spawn(next_u64).join().unwrap_or(0);
        assert_ne!(t1, t2);
    }

    #[test]
    fn unit_and_chance() {
        seed(3);
        let mut hits = 0;
        for _ in 0..10_000 {
            let u = unit();
            assert!((0.0..1.0).contains(&u));
            if chance(0.25) {
                hits += 1;
            }
        }
        // Expected 2500, sd ≈ 43.
        assert!((2200..2800).contains(&hits), "{hits}");
        assert!(chance(1.0));
        assert!(!chance(0.0));
    }
}
