//! Building a snapshot from a validated config and the registry's entries.
//!
//! The supervisor calls [`build`] at start, on every config reload and on every registry
//! update, and swaps the result in; nothing else builds snapshots, so builds never race.
//! Each pool is built in named steps: the node list it wants (static nodes, then registered
//! ones), its transport (kept while its settings are unchanged), each node (address looked
//! up, state carried over from the previous snapshot by address), its strategy, and its
//! settings digested for the request path. What carries over is listed in `snapshot.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;
use strategies::{Kind, NodeStats};

use crate::balance::ratelimit::RateLimiter;
use crate::balance::router::{Route, Router};
use crate::balance::snapshot::{
    HashBy, HealthAsk, HealthCheck, Node, OutlierSettings, Pool, RequestLimits, RetryPolicy,
    Snapshot, Source,
};
use crate::config::{
    Config, HashKey, HealthCheckConfig, HealthProtocol, LoadedConfig, PoolConfig, RetriesConfig,
    RetryOn, UpstreamProtocol,
};
use crate::metrics::Metrics;
use crate::upstream::{self, Protocol, TlsSettings, Transport, TransportSettings};
use crate::util::clock;

/// Idle connections kept per node when `max_connections_per_node` is not set.
const DEFAULT_MAX_IDLE_PER_NODE: usize = 256;

/// How long a host-name lookup for a node may take at snapshot build.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A node registered in Redis, as the snapshot builder needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryNode {
    pub addr: String,
    pub weight: u32,
}

/// Registry entries per pool name.
pub type Registry = HashMap<String, Vec<RegistryNode>>;

/// Which node host names a build looks up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Every node: at start and on a config reload ("re-resolved on reload").
    All,
    /// Only nodes not in the previous snapshot: registry updates.
    NewOnly,
}

/// What one build shares across its pools.
struct Build<'a> {
    config: &'a LoadedConfig,
    registry: &'a Registry,
    prev: Option<&'a Snapshot>,
    metrics: &'a Metrics,
    names: Resolve,
    now_ms: u64,
}

/// Build a snapshot from a validated config and the current registry entries, reusing the
/// stats, strategy counters and clients of `prev` for everything that survives.
pub async fn build(
    config: &LoadedConfig,
    registry: &Registry,
    prev: Option<&Snapshot>,
    metrics: &Metrics,
    names: Resolve,
) -> Snapshot {
    let b = Build {
        config,
        registry,
        prev,
        metrics,
        names,
        now_ms: clock::now_ms(),
    };
    let mut pools = Vec::with_capacity(config.config.pools.len());
    for (name, pcfg) in &config.config.pools {
        pools.push(Arc::new(b.pool(name, pcfg).await));
    }
    Snapshot {
        router: router(&config.config, &pools),
        pools,
        limits: request_limits(&config.config, prev.map(|p| &p.limits)),
    }
}

/// One node a pool wants: its address and weight, and where it came from.
struct Wanted {
    addr: String,
    weight: u32,
    source: Source,
}

impl Build<'_> {
    async fn pool(&self, name: &str, pcfg: &PoolConfig) -> Pool {
        let prev_pool = self.prev.and_then(|s| s.pool(name));
        let settings = transport_settings(name, pcfg, self.config);
        let transport = match prev_pool {
            Some(p) if p.transport.settings == settings => p.transport.clone(),
            _ => Transport::new(name, settings),
        };
        // Connections made with other settings (protocol, TLS) are not reused.
        let same_transport = prev_pool.is_some_and(|p| p.transport.settings == transport.settings);
        let prev_nodes: HashMap<&str, &Node> = prev_pool
            .map(|p| p.nodes.iter().map(|n| (n.addr.as_str(), n)).collect())
            .unwrap_or_default();

        let mut nodes = Vec::new();
        for wanted in wanted_nodes(pcfg, self.registry.get(name)) {
            let prev_node = prev_nodes.get(wanted.addr.as_str()).copied();
            let prev_conns = prev_node.filter(|_| same_transport);
            if let Some(node) = self
                .node(name, pcfg, &transport, wanted, prev_node, prev_conns)
                .await
            {
                nodes.push(node);
            }
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
        Pool {
            name: name.to_string(),
            kind,
            strategy,
            nodes,
            hash_by: (kind == Kind::ConsistentHash).then(|| hash_by(pcfg.hash_key.as_ref())),
            transport,
            request_timeout: pcfg.timeouts.request.0,
            idle_timeout: pcfg.timeouts.idle.0,
            retry: retry_policy(&pcfg.retries),
            outlier: pcfg.outlier_detection.as_ref().map(|o| OutlierSettings {
                consecutive_failures: o.consecutive_failures,
                base_ejection_time: o.base_ejection_time.0,
                max_ejection_percent: o.max_ejection_percent,
            }),
            health_check: pcfg.health_check.as_ref().map(health_check),
            metrics: self.metrics.pool(name),
            shared,
            budget: prev_pool.map(|p| Arc::clone(&p.budget)).unwrap_or_default(),
        }
    }

    /// One node: its address looked up (or kept), its state carried over from `prev` (its
    /// idle connections only from `prev_conns`, a node of the same transport). `None` when
    /// a new node's address does not resolve: it is left out until it does.
    async fn node(
        &self,
        pool: &str,
        pcfg: &PoolConfig,
        transport: &Transport,
        wanted: Wanted,
        prev: Option<&Node>,
        prev_conns: Option<&Node>,
    ) -> Option<Node> {
        let Wanted {
            addr,
            weight,
            source,
        } = wanted;
        let authority = self.authority(pool, &addr, prev).await?;
        // Not reached when `None`: `resolve` makes the authority from a socket address.
        let socket_addr = authority.as_str().parse::<SocketAddr>().ok()?;
        // Idle connections lead to the old resolved address: keep them only if the name
        // still resolves there.
        let conns = prev_conns
            .filter(|p| p.authority == authority)
            .map(|p| Arc::clone(&p.conns))
            .unwrap_or_default();
        let outlier = prev.map(|p| Arc::clone(&p.outlier)).unwrap_or_default();
        let stats = match prev {
            Some(p) => Arc::clone(&p.stats),
            None => {
                let s = Arc::new(NodeStats::new());
                // A node that appears while we are running starts slowly; at start-up
                // every node is equally cold, so none does.
                if self.prev.is_some() {
                    s.begin_slow_start(self.now_ms);
                }
                s
            }
        };
        configure_stats(&stats, pcfg);
        Some(Node {
            metrics: self.metrics.node(pool, &addr),
            server_name: upstream::server_name(transport.settings.tls.as_ref(), &addr),
            addr,
            socket_addr,
            authority,
            conns,
            weight,
            source,
            stats,
            outlier,
        })
    }

    /// The node's address: looked up again, or kept from `prev` on a registry update (so a
    /// burst of updates never waits on DNS for nodes that did not change) and when the
    /// lookup fails.
    async fn authority(&self, pool: &str, addr: &str, prev: Option<&Node>) -> Option<Authority> {
        let looked_up = match (self.names, prev) {
            (Resolve::NewOnly, Some(p)) => Some(p.authority.clone()),
            _ => resolve(addr).await,
        };
        match (looked_up, prev) {
            (Some(a), _) => Some(a),
            (None, Some(p)) => {
                tracing::warn!(pool = %pool, node = %addr, "cannot resolve node address; keeping the previous address");
                Some(p.authority.clone())
            }
            (None, None) => {
                tracing::warn!(pool = %pool, node = %addr, "cannot resolve node address; the node is left out until it resolves (on the next reload or registry update)");
                None
            }
        }
    }
}

/// Static nodes first; a registry entry for an address the config already names is
/// ignored (the config's entry wins).
fn wanted_nodes(pcfg: &PoolConfig, registered: Option<&Vec<RegistryNode>>) -> Vec<Wanted> {
    let mut wanted: Vec<Wanted> = pcfg
        .nodes
        .iter()
        .map(|n| Wanted {
            addr: n.addr.clone(),
            weight: n.weight,
            source: Source::Static,
        })
        .collect();
    for e in registered.into_iter().flatten() {
        if !wanted.iter().any(|w| w.addr == e.addr) {
            wanted.push(Wanted {
                addr: e.addr.clone(),
                weight: e.weight,
                source: Source::Redis,
            });
        }
    }
    wanted
}

/// The routes, each pointing at its pool's index.
fn router(cfg: &Config, pools: &[Arc<Pool>]) -> Router {
    let routes = cfg
        .routes
        .iter()
        .filter_map(|r| {
            // Validation guarantees the pool exists; a route that still names none is
            // dropped rather than trusted.
            let pool = pools.iter().position(|p| p.name == r.pool)?;
            Some(Route::new(
                r.host.as_deref(),
                r.path_prefix.as_deref(),
                pool,
            ))
        })
        .collect();
    Router::new(routes)
}

/// `trusted_proxies`, `rate_limit` (its buckets carried over from `prev`) and
/// `limits.max_body_bytes`.
fn request_limits(cfg: &Config, prev: Option<&RequestLimits>) -> RequestLimits {
    RequestLimits {
        trusted_proxies: cfg.trusted_proxies.clone(),
        rate_limit: cfg
            .rate_limit
            .as_ref()
            .map(|rl| RateLimiter::new(rl, prev.and_then(|p| p.rate_limit.as_ref()))),
        max_body_bytes: cfg.limits.max_body_bytes.map(|s| s.0),
    }
}

fn retry_policy(cfg: &RetriesConfig) -> RetryPolicy {
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

/// `hash_key` of a `consistent_hash` pool; omitted, the client address. A header name that
/// does not parse (validation refuses those) could never be present, so it hashes the
/// client address like a request without the header.
fn hash_by(key: Option<&HashKey>) -> HashBy {
    match key {
        None | Some(HashKey::ClientIp) => HashBy::ClientIp,
        Some(HashKey::Path) => HashBy::Path,
        Some(HashKey::Header(name)) => HeaderName::from_bytes(name.as_bytes())
            .map(HashBy::Header)
            .unwrap_or(HashBy::ClientIp),
        Some(HashKey::Cookie(name)) => HashBy::Cookie(name.clone()),
    }
}

fn health_check(hc: &HealthCheckConfig) -> HealthCheck {
    HealthCheck {
        ask: match hc.protocol {
            HealthProtocol::Http => HealthAsk::Http {
                path: hc.path.clone(),
                expect: (hc.expect_status.lo, hc.expect_status.hi),
            },
            HealthProtocol::Grpc => HealthAsk::Grpc {
                service: hc.grpc_service.clone().unwrap_or_default(),
            },
        },
        interval: hc.interval.0,
        timeout: hc.timeout.0,
        healthy_threshold: hc.healthy_threshold.max(1),
        unhealthy_threshold: hc.unhealthy_threshold.max(1),
    }
}

/// The pool's transport settings, with the CA file validation loaded (a changed file is a
/// change).
fn transport_settings(pool: &str, pcfg: &PoolConfig, config: &LoadedConfig) -> TransportSettings {
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
        tls: pcfg.tls.as_ref().map(|t| TlsSettings {
            server_name: t.server_name.clone(),
            insecure_skip_verify: t.insecure_skip_verify,
            ca: config.tls.ca_files.get(pool).cloned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_hash_without_hash_key_hashes_the_client_address() {
        assert_eq!(hash_by(None), HashBy::ClientIp);
        assert_eq!(
            hash_by(Some(&HashKey::Header("x-user".into()))),
            HashBy::Header(HeaderName::from_static("x-user"))
        );
    }
}
