//! Random numbers for the binary: request ids and the jitter of health probes and Redis
//! reconnects. Spread, not secrecy: nothing here is a secret or a key.
//!
//! One generator per thread (no shared state, so no contended cache line per request):
//! SplitMix64, one add and two multiply-xorshift rounds per number, which passes BigCrush
//! and has a period of 2^64. Each thread's state is seeded on first use from std's
//! per-process random hash keys (`RandomState`) mixed with the thread's id and the time.

use std::cell::Cell;
use std::hash::BuildHasher as _;

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    /// 0: not seeded yet (a seed is never 0).
    static STATE: Cell<u64> = const { Cell::new(0) };
}

#[cold]
fn seed() -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let s = std::collections::hash_map::RandomState::new()
        .hash_one((std::thread::current().id(), time));
    s.max(1)
}

/// The next 64 random bits of this thread's sequence.
#[inline]
pub fn next_u64() -> u64 {
    let state = STATE
        .try_with(|cell| {
            let mut s = cell.get();
            if s == 0 {
                s = seed();
            }
            s = s.wrapping_add(GAMMA);
            // A state that wraps to exactly 0 is reseeded on the next call.
            cell.set(s);
            s
        })
        // Only while the thread is being torn down.
        .unwrap_or_else(|_| seed());
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random number in `0..n`; 0 when `n` is 0. (The modulo's bias is below `n / 2^64`.)
#[inline]
pub fn below(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_spread_and_threads_differ() {
        let mut seen = [0u32; 8];
        for _ in 0..8_000 {
            let x = below(8);
            assert!(x < 8);
            seen[x as usize] += 1;
        }
        // Expected 1000 each, sd ≈ 30.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(below(0), 0);
        let other = std::thread::spawn(next_u64).join().unwrap_or(0);
        assert_ne!(other, next_u64());
    }
}
