//! The routing snapshot: routes, pools, nodes and their strategies in one immutable value.
//!
//! A snapshot is published through one `ArcSwap` ([`SnapshotCell`]); the request path loads
//! it once per request without a lock. Config reloads and registry updates build a new one
//! (`build.rs`) and swap it in. What a snapshot holds is digested for its readers: a pool
//! carries its retry policy, outlier and health-check settings and hash key in the form
//! they are used, never the config's types, so the request path reads no config.
//!
//! What survives a swap (carried over by the builder, by pool name and node address): each
//! node's live stats, outlier state and idle connections, each pool's strategy counters,
//! retry budget and upstream transport, and the rate limiter's buckets — so a swap never
//! resets health, ejection, in-flight counts, EWMA, round-robin position or warm
//! connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderName;
use http::uri::Authority;
use strategies::{Kind, NodeStats, SharedState, Strategy};

use crate::balance::budget::RetryBudget;
use crate::balance::ratelimit::RateLimiter;
use crate::balance::router::Router;
use crate::config::Cidr;
use crate::metrics::{NodeMetrics, PoolMetrics};
use crate::upstream::{NodeConns, Transport};

/// The one published snapshot.
pub type SnapshotCell = ArcSwap<Snapshot>;

/// Everything the request path needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    pub pools: Vec<Arc<Pool>>,
    /// The per-request limits that apply before routing; in the snapshot so that a reload
    /// changes them.
    pub limits: RequestLimits,
}

impl Snapshot {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// `trusted_proxies`, `rate_limit` and `limits.max_body_bytes`, ready for the request path.
#[derive(Debug, Default)]
pub struct RequestLimits {
    /// Peers whose `X-Forwarded-For` is believed (`proxy::headers::client_addr`).
    pub trusted_proxies: Vec<Cidr>,
    /// `None` without a `rate_limit` section: no cost at all.
    pub rate_limit: Option<RateLimiter>,
    /// `None` without `limits.max_body_bytes`: bodies are not counted.
    pub max_body_bytes: Option<u64>,
}

/// One pool: its nodes, the strategy over them, and how to talk to them.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub kind: Kind,
    pub strategy: Box<dyn Strategy>,
    pub nodes: Vec<Node>,
    /// What `consistent_hash` hashes; `None` for every other strategy.
    pub hash_by: Option<HashBy>,
    /// How the pool talks to its nodes; kept across swaps while its settings are unchanged.
    pub transport: Transport,
    /// Until the response head (`timeouts.request`).
    pub request_timeout: Duration,
    /// Body inactivity, either direction (`timeouts.idle`).
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
    /// `outlier_detection`; `None`: failures on live traffic eject nobody.
    pub outlier: Option<OutlierSettings>,
    /// `health_check`; `None`: no probes, nodes are up until passive failures eject them.
    pub health_check: Option<HealthCheck>,
    pub metrics: PoolMetrics,
    /// Strategy counters carried across snapshots.
    pub shared: Arc<SharedState>,
    /// The pool's retry budget, carried across snapshots.
    pub budget: Arc<RetryBudget>,
}

/// One backend node of one pool.
#[derive(Debug)]
pub struct Node {
    /// `host:port` as configured or registered (metric label, admin API).
    pub addr: String,
    /// Resolved `ip:port` the client connects to.
    pub authority: Authority,
    /// The same as a socket address.
    pub socket_addr: SocketAddr,
    /// The name its TLS certificate is verified as (pools with `tls`).
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
    /// Keep-alive connections to the node; carried across swaps with the stats so that a
    /// reload or a registry update keeps them warm.
    pub conns: Arc<NodeConns>,
    pub weight: u32,
    pub source: Source,
    pub stats: Arc<NodeStats>,
    /// Passive outlier-detection state; survives swaps with `stats`.
    pub outlier: Arc<OutlierState>,
    pub metrics: NodeMetrics,
}

/// Where a node came from (admin API field `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Static,
    Redis,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::Redis => "redis",
        }
    }
}

/// What `consistent_hash` hashes (`hash_key`), with a header name parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashBy {
    ClientIp,
    Path,
    /// A header's value; requests without it hash the client address.
    Header(HeaderName),
    /// A cookie's value; requests without it hash the client address.
    Cookie(String),
}

/// The retry rules of a pool, pre-digested for the request path.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_timeout: bool,
    /// Bit `s - 500` set for each retryable 5xx status.
    pub on_status: u128,
    pub budget_percent: u32,
}

impl RetryPolicy {
    pub fn retries_status(&self, status: u16) -> bool {
        (500..628).contains(&status) && self.on_status & (1u128 << (status - 500)) != 0
    }
}

/// `outlier_detection` of a pool (see `outlier.rs` for the rules).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSettings {
    /// Failures in a row that eject a node.
    pub consecutive_failures: u32,
    /// The first ejection's length; doubles per repeated ejection, capped.
    pub base_ejection_time: Duration,
    /// Most of the pool that may be out at once, counted after the ejection.
    pub max_ejection_percent: u32,
}

/// Per-node passive state; lives beside `NodeStats` and survives snapshot swaps with it.
/// Atomics: every request to the node may update it, on any worker thread. Read and written
/// by `outlier.rs` only.
#[derive(Debug, Default)]
pub struct OutlierState {
    /// Failures in a row on live traffic.
    pub(super) consecutive_failures: AtomicU32,
    /// Ejections since the node last served well; drives the exponential back-off.
    pub(super) ejections: AtomicU32,
    /// When the last ejection ends ([`crate::util::clock::now_ms`] time), to reset
    /// `ejections` once the node has behaved for as long again.
    pub(super) last_ejection_end_ms: AtomicU64,
    /// Length of the last ejection in ms.
    pub(super) last_ejection_ms: AtomicU64,
}

/// `health_check` of a pool, as the probes use it.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub ask: HealthAsk,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that mark a node up (at least 1).
    pub healthy_threshold: u32,
    /// Consecutive failures that mark a node down (at least 1).
    pub unhealthy_threshold: u32,
}

/// What a probe asks, and what passes.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthAsk {
    /// `GET path`; a status in the range passes.
    Http { path: String, expect: (u16, u16) },
    /// `grpc.health.v1.Health/Check` for this service; SERVING passes.
    Grpc { service: String },
}
