//! Balancing state: the routing snapshot the request path reads, and the per-node and per-pool state that survives its swaps.

pub mod budget;
pub mod build;
pub mod outlier;
pub mod ratelimit;
pub mod router;
pub mod snapshot;
