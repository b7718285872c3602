//! Prometheus metrics: the families the process exports and cheap handles for recording.
//!
//! - `names.rs`: every family's name, help and labels, and each label's values, together;
//! - `families.rs`: the registry, the families in it, and the pre-resolved handles the
//!   request path records through (atomics only).
//!
//! This layer imports nothing from the rest of the crate but `util`.

mod families;
pub mod names;

pub use families::{Metrics, NodeMetrics, PoolMetrics};
pub use names::{
    DownstreamTimeout, HandshakeFailure, HealthResult, Outcome, ProxyProtocolFailure,
    RegistryResult, ReloadResult, NO_POOL,
};
