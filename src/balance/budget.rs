//! The retry budget: retries may add at most `budget_percent` of a pool's recent requests.
//!
//! When every node is failing, unbounded retries multiply the load on a service that is
//! already down (a retry storm). The budget is measured over a sliding 10-second window of
//! one-second buckets, with a floor of 3 retries per second so that a quiet pool can still
//! retry. Buckets are atomics: recording a request is one add.

use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds in the sliding window.
const WINDOW_SECS: u64 = 10;
/// Retries always allowed per second, whatever the request rate.
const FLOOR_PER_SEC: u64 = 3;

#[derive(Debug, Default)]
struct Bucket {
    /// The second (since the process epoch) this bucket counts; stale buckets are reset.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// One pool's budget; carried across snapshot swaps so a reload does not reset it.
#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl RetryBudget {
    fn bucket(&self, now_ms: u64) -> &Bucket {
        let sec = now_ms / 1000;
        let b = &self.buckets[(sec % WINDOW_SECS) as usize];
        let seen = b.second.load(Ordering::Relaxed);
        if seen != sec
            && b.second
                .compare_exchange(seen, sec, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // We won the race to recycle this bucket for the new second.
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Count one original request.
    pub fn record_request(&self, now_ms: u64) {
        self.bucket(now_ms).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Take one retry from the budget if there is room; false means "do not retry".
    pub fn try_retry(&self, now_ms: u64, percent: u32) -> bool {
        let sec = now_ms / 1000;
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Relaxed);
            if s + WINDOW_SECS > sec && s <= sec {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = (requests * percent as u64 / 100).max(FLOOR_PER_SEC * WINDOW_SECS);
        if retries >= allowed {
            return false;
        }
        self.bucket(now_ms).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_allows_a_quiet_pool_to_retry() {
        let b = RetryBudget::default();
        let now = 5_000;
        let granted = (0..100).filter(|_| b.try_retry(now, 20)).count();
        assert_eq!(granted as u64, FLOOR_PER_SEC * WINDOW_SECS);
    }

    #[test]
    fn budget_scales_with_requests() {
        let b = RetryBudget::default();
        let now = 100_000;
        for _ in 0..1000 {
            b.record_request(now);
        }
        let granted = (0..1000).filter(|_| b.try_retry(now, 20)).count();
        assert_eq!(granted, 200);
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let b = RetryBudget::default();
        for _ in 0..1000 {
            b.record_request(10_000);
        }
        let early = (0..1000).filter(|_| b.try_retry(10_000, 20)).count();
        assert_eq!(early, 200);
        // 11 s later the old second is out of the window: only the floor remains.
        let later = (0..1000).filter(|_| b.try_retry(21_000, 20)).count();
        assert_eq!(later as u64, FLOOR_PER_SEC * WINDOW_SECS);
    }
}
