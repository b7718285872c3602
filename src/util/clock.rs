//! The binary's clocks: the monotonic milliseconds node statistics keep their deadlines in,
//! and the wall clock of the Redis registry's expiry times.
//!
//! [`now_ms`] is the time base of `strategies::NodeStats`: ejection deadlines, slow-start
//! starts and the stamps of latency observations are all stored and compared in it, and the
//! strategies crate stamps observations itself. A second monotonic clock with its own epoch
//! would put the binary's deadlines and the crate's stamps on different scales, so the binary
//! reads the crate's clock, and reads it only through here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the process's clock epoch (monotonic, never 0): what node deadlines,
/// slow start and `PickContext::now_ms` use.
#[inline]
pub fn now_ms() -> u64 {
    strategies::now_ms()
}

/// Milliseconds since the unix epoch, wall clock (what a registry entry's `expires_at_ms`
/// is compared with); 0 for a clock set before 1970.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
