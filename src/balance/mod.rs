//! Balancing state: the routing snapshot the request path reads, and the per-node and
//! per-pool state that survives its swaps.
//!
//! - [`snapshot`]: the types — `Snapshot` (router, pools, per-request limits) behind one
//!   `ArcSwap` (`SnapshotCell`), `Pool` with its settings digested for the request path,
//!   `Node` with its live stats, outlier state and idle connections;
//! - [`build`]: building a snapshot from a validated config and the registry's entries,
//!   carrying state over by pool name and node address;
//! - [`router`]: host and path prefix → pool; [`ratelimit`]: the per-client token buckets
//!   the snapshot holds; [`outlier`]: passive ejection; [`budget`]: the retry budget.
//!
//! May import: `upstream` (each pool's transport, each node's connections), `config` (read
//! by `build` and by the rate limiter's constructor; the snapshot itself keeps only the
//! `Cidr` values of `trusted_proxies`), `metrics` and `util`. The request path above reads the snapshot; the control plane
//! builds it; this layer imports neither.

pub mod budget;
pub mod build;
pub mod outlier;
pub mod ratelimit;
pub mod router;
pub mod snapshot;
