//! The control plane: the supervisor and the background work it owns.
//!
//! - [`supervisor`]: start-up in named steps, the one loop that reloads and swaps
//!   snapshots, shutdown;
//! - [`listeners`]: the listeners that run, and what a reload does to them;
//! - [`reload`]: a reload asked for, and why one is rejected;
//! - [`files`]: the one file-watching mechanism, for the config file and certificates;
//! - [`registry`]: live node registration through Redis;
//! - [`health`]: active health probes, restarted as snapshots change;
//! - [`admin`]: the admin API (health, readiness, metrics, pools, drain, reload).
//!
//! May import every layer below it. Nothing below imports it: the request path reads the
//! snapshot this layer builds, and learns of nothing else.

pub mod admin;
pub mod files;
pub mod health;
pub mod listeners;
pub mod registry;
pub mod reload;
pub mod supervisor;
