//! Small helpers of the binary that every layer may use. They import nothing from the rest
//! of the crate.
//!
//! - [`clock`]: the monotonic milliseconds of node deadlines, and the wall clock;
//! - [`io`]: a byte stream that says when bytes move through it;
//! - [`random`]: a per-thread generator for request ids and jitter;
//! - [`report`]: an error and its causes as one line;
//! - [`sync`]: the poison-tolerant lock;
//! - [`timefmt`]: RFC 3339 timestamps.

pub mod clock;
pub mod io;
pub mod random;
pub mod report;
pub mod sync;
pub mod timefmt;
