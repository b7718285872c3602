//! The routing snapshot: routes, pools, nodes and their strategies in one immutable value.
//!
//! A snapshot is published through one `ArcSwap` ([`SnapshotCell`]); the request path loads
//! it once per request without a lock. Config reloads and registry updates build a new one
//! with [`build`] and swap it in. Live per-node stats are `Arc`s looked up by
//! (pool, address) in the previous snapshot, and each pool's strategy counters and upstream
//! client are carried over too, so a swap never resets health, ejection, in-flight counts,
//! EWMA, round-robin position or warm connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use strategies::{Kind, NodeStats, SharedState, Strategy};

use crate::balance::budget::RetryBudget;
use crate::balance::outlier::OutlierState;
use crate::balance::ratelimit::RateLimiter;
use crate::balance::router::{Route, Router};
use crate::config::{HashKey, LoadedConfig, PoolConfig, RetryOn, UpstreamProtocol};
use crate::metrics::{Metrics, NodeMetrics, PoolMetrics};
use crate::upstream::{self, NodeConns, Protocol, TlsSettings, Transport, TransportSettings};
use crate::util::clock;

/// Idle connections kept per node when `max_connections_per_node` is not set.
const DEFAULT_MAX_IDLE_PER_NODE: usize = 256;

/// How long a host-name lookup for a node may take at snapshot build.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// A node registered in Redis (issue: live registration), as the snapshot builder needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryNode {
    pub addr: String,
    pub weight: u32,
}

/// Registry entries per pool name.
pub type Registry = HashMap<String, Vec<RegistryNode>>;

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
    fn new(cfg: &crate::config::RetriesConfig) -> RetryPolicy {
        let mut p = RetryPolicy {
            attempts: cfg.attempts,
            on_connect_failure: false,
            on_timeout: false,
            on_status: 0,
            budget_percent: cfg.budget_percent,
        };
        for on in &cfg.on {
            match on {
                RetryOn::ConnectFailure => p.on_connect_failure = true,
                RetryOn::Timeout => p.on_timeout = true,
                RetryOn::Status(s) if (500..628).contains(s) => p.on_status |= 1u128 << (s - 500),
                RetryOn::Status(_) => {}
            }
        }
        p
    }

    pub fn retries_status(&self, status: u16) -> bool {
        (500..628).contains(&status) && self.on_status & (1u128 << (status - 500)) != 0
    }
}

/// One pool: its nodes, the strategy over them, and how to talk to them.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub kind: Kind,
    pub strategy: Box<dyn Strategy>,
    pub nodes: Vec<Node>,
    pub hash_key: Option<HashKey>,
    /// How the pool talks to its nodes; kept across swaps while its settings are unchanged.
    pub transport: Transport,
    /// Until the response head (`timeouts.request`).
    pub request_timeout: Duration,
    /// Body inactivity, either direction (`timeouts.idle`).
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
    pub metrics: PoolMetrics,
    /// Strategy counters carried across snapshots.
    pub shared: Arc<SharedState>,
    /// The pool's retry budget, carried across snapshots.
    pub budget: Arc<RetryBudget>,
    /// The pool's config, for the background tasks (health checks, ...).
    pub config: PoolConfig,
}

/// Everything the request path needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    pub pools: Vec<Arc<Pool>>,
    /// The per-request limits that apply before routing; in the snapshot so that a reload
    /// changes them.
    pub limits: RequestLimits,
    pub config: Arc<LoadedConfig>,
}

/// `trusted_proxies`, `rate_limit` and `limits.max_body_bytes`, ready for the request path.
#[derive(Debug, Default)]
pub struct RequestLimits {
    /// Peers whose `X-Forwarded-For` is believed (`headers::client_addr`).
    pub trusted_proxies: Vec<crate::config::Cidr>,
    /// `None` without a `rate_limit` section: no cost at all.
    pub rate_limit: Option<RateLimiter>,
    /// `None` without `limits.max_body_bytes`: bodies are not counted.
    pub max_body_bytes: Option<u64>,
}

impl RequestLimits {
    fn new(cfg: &crate::config::Config, prev: Option<&RequestLimits>) -> RequestLimits {
        RequestLimits {
            trusted_proxies: cfg.trusted_proxies.clone(),
            rate_limit: cfg
                .rate_limit
                .as_ref()
                .map(|rl| RateLimiter::new(rl, prev.and_then(|p| p.rate_limit.as_ref()))),
            max_body_bytes: cfg.limits.max_body_bytes.map(|s| s.0),
        }
    }
}

impl Snapshot {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// The one published snapshot.
pub type SnapshotCell = ArcSwap<Snapshot>;

/// Which node host names a build looks up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Every node: at start and on a config reload ("re-resolved on reload").
    All,
    /// Only nodes not in the previous snapshot: registry updates.
    NewOnly,
}

/// Build a snapshot from a validated config and the current registry entries, reusing the
/// stats, strategy counters and clients of `prev` for everything that survives.
pub async fn build(
    config: Arc<LoadedConfig>,
    registry: &Registry,
    prev: Option<&Snapshot>,
    metrics: &Metrics,
    names: Resolve,
) -> Snapshot {
    let now = clock::now_ms();
    let mut pools = Vec::with_capacity(config.config.pools.len());
    let mut index = HashMap::new();
    for (name, pcfg) in &config.config.pools {
        let prev_pool = prev.and_then(|s| s.pool(name));
        let prev_nodes: HashMap<&str, &Node> = prev_pool
            .map(|p| p.nodes.iter().map(|n| (n.addr.as_str(), n)).collect())
            .unwrap_or_default();

        // Static nodes first; a registry entry for an address the config already names is
        // ignored (the config's entry wins).
        let mut wanted: Vec<(String, u32, Source)> = pcfg
            .nodes
            .iter()
            .map(|n| (n.addr.clone(), n.weight, Source::Static))
            .collect();
        if let Some(entries) = registry.get(name) {
            for e in entries {
                if !wanted.iter().any(|(a, _, _)| *a == e.addr) {
                    wanted.push((e.addr.clone(), e.weight, Source::Redis));
                }
            }
        }

        let settings = transport_settings(pcfg, &config);
        let transport = match prev_pool {
            Some(p) if p.transport.settings == settings => p.transport.clone(),
            _ => Transport::new(name, settings),
        };
        // Connections made with other settings (protocol, TLS) are not reused.
        let same_transport = prev_pool.is_some_and(|p| p.transport.settings == transport.settings);

        let mut nodes = Vec::with_capacity(wanted.len());
        for (addr, weight, source) in wanted {
            let prev_node = prev_nodes.get(addr.as_str()).copied();
            let looked_up = match (names, prev_node) {
                // A registry update: a node already known keeps its address, so a burst of
                // updates never waits on DNS for nodes that did not change.
                (Resolve::NewOnly, Some(p)) => Some(p.authority.clone()),
                _ => resolve(&addr).await,
            };
            let authority = match looked_up {
                Some(a) => a,
                None => match prev_node {
                    Some(p) => {
                        tracing::warn!(pool = %name, node = %addr, "cannot resolve node address; keeping the previous address");
                        p.authority.clone()
                    }
                    None => {
                        tracing::warn!(pool = %name, node = %addr, "cannot resolve node address; the node is left out until it resolves (on the next reload or registry update)");
                        continue;
                    }
                },
            };
            let Ok(socket_addr) = authority.as_str().parse::<SocketAddr>() else {
                // Not reached: `resolve` makes the authority from a socket address.
                continue;
            };
            // Idle connections lead to the old resolved address: keep them only if the name
            // still resolves there.
            let conns = prev_node
                .filter(|p| same_transport && p.authority == authority)
                .map(|p| Arc::clone(&p.conns))
                .unwrap_or_default();
            let outlier = prev_node
                .map(|p| Arc::clone(&p.outlier))
                .unwrap_or_default();
            let stats = match prev_node {
                Some(p) => Arc::clone(&p.stats),
                None => {
                    let s = Arc::new(NodeStats::new());
                    // A node that appears while we are running starts slowly; at start-up
                    // every node is equally cold, so none does.
                    if prev.is_some() {
                        s.begin_slow_start(now);
                    }
                    s
                }
            };
            configure_stats(&stats, pcfg);
            nodes.push(Node {
                metrics: metrics.node(name, &addr),
                server_name: upstream::server_name(transport.settings.tls.as_ref(), &addr),
                addr,
                socket_addr,
                authority,
                conns,
                weight,
                source,
                stats,
                outlier,
            });
        }

        let kind = pcfg.strategy;
        let shared = prev_pool.map(|p| Arc::clone(&p.shared)).unwrap_or_default();
        let strategy = strategies::build(
            kind,
            nodes
                .iter()
                .map(|n| strategies::Node {
                    key: n.addr.clone(),
                    weight: n.weight,
                    stats: Arc::clone(&n.stats),
                })
                .collect(),
            Arc::clone(&shared),
        );
        let hash_key = match kind {
            Kind::ConsistentHash => Some(pcfg.hash_key.clone().unwrap_or(HashKey::ClientIp)),
            _ => None,
        };
        index.insert(name.clone(), pools.len());
        pools.push(Arc::new(Pool {
            name: name.clone(),
            kind,
            strategy,
            nodes,
            hash_key,
            transport,
            request_timeout: pcfg.timeouts.request.0,
            idle_timeout: pcfg.timeouts.idle.0,
            retry: RetryPolicy::new(&pcfg.retries),
            metrics: metrics.pool(name),
            shared,
            budget: prev_pool.map(|p| Arc::clone(&p.budget)).unwrap_or_default(),
            config: pcfg.clone(),
        }));
    }

    let routes = config
        .config
        .routes
        .iter()
        .filter_map(|r| {
            // Validation guarantees the pool exists; a route that still names none is
            // dropped rather than trusted.
            let pool = *index.get(&r.pool)?;
            Some(Route::new(
                r.host.as_deref(),
                r.path_prefix.as_deref(),
                pool,
            ))
        })
        .collect();

    Snapshot {
        router: Router::new(routes),
        pools,
        limits: RequestLimits::new(&config.config, prev.map(|p| &p.limits)),
        config,
    }
}

/// The pool's transport settings, with its CA file read (so a changed file is a change).
fn transport_settings(pcfg: &PoolConfig, config: &LoadedConfig) -> TransportSettings {
    TransportSettings {
        connect_timeout: pcfg.timeouts.connect.0,
        protocol: match pcfg.upstream_protocol {
            UpstreamProtocol::H2 => Protocol::H2,
            UpstreamProtocol::Http1 => Protocol::Http1,
        },
        max_idle_per_node: pcfg
            .max_connections_per_node
            .map(|m| m as usize)
            .unwrap_or(DEFAULT_MAX_IDLE_PER_NODE),
        tls: pcfg.tls.as_ref().map(|t| {
            let ca = t.ca_file.as_deref().map(|p| {
                let path = config.resolve(p);
                std::fs::read(&path)
                    .map(|pem| (path.clone(), pem))
                    .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))
            });
            TlsSettings {
                server_name: t.server_name.clone(),
                insecure_skip_verify: t.insecure_skip_verify,
                ca,
            }
        }),
    }
}

/// Apply the pool's settings to a node's live stats (they may change on reload).
fn configure_stats(stats: &NodeStats, pcfg: &PoolConfig) {
    stats.set_max_in_flight(pcfg.max_connections_per_node.unwrap_or(0));
    stats.set_slow_start_window(pcfg.slow_start.map(|d| d.0).unwrap_or_default());
    let gated = pcfg.health_check.is_some();
    if stats.health_gated() && !gated {
        // Probes were switched off: their last verdict no longer applies.
        stats.set_health(strategies::Health::Unknown);
    }
    stats.set_health_gated(gated);
}

/// `host:port` → an authority with an IP address, so connecting needs no DNS on the request
/// path. Host names are looked up here, at snapshot build.
async fn resolve(addr: &str) -> Option<Authority> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Authority::try_from(sa.to_string()).ok();
    }
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(addr)).await;
    let sa = lookup.ok()?.ok()?.next()?;
    Authority::try_from(sa.to_string()).ok()
}
