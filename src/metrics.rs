//! Prometheus metrics: the names fixed by DESIGN.md, and cheap handles for the request path.
//!
//! Looking up a labelled series (`with_label_values`) hashes the labels and takes the
//! family's read lock, so the request path never does it: the snapshot builder resolves
//! every per-pool and per-node handle once ([`PoolMetrics`], [`NodeMetrics`]) and requests
//! only touch atomics. Gauges that mirror live state (node up, active requests) are filled
//! in at scrape time from the snapshot instead of being updated per request.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric names, in one place so the docs, the alert rules and the code agree.
pub mod names {
    pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
    pub const REQUEST_DURATION_SECONDS: &str = "switchyard_request_duration_seconds";
    pub const UPSTREAM_REQUESTS_TOTAL: &str = "switchyard_upstream_requests_total";
    pub const NODE_UP: &str = "switchyard_node_up";
    pub const NODE_ACTIVE_REQUESTS: &str = "switchyard_node_active_requests";
    pub const RETRIES_TOTAL: &str = "switchyard_retries_total";
    pub const HEALTH_CHECKS_TOTAL: &str = "switchyard_health_checks_total";
    pub const CONFIG_RELOADS_TOTAL: &str = "switchyard_config_reloads_total";
    pub const REDIS_CONNECTED: &str = "switchyard_redis_connected";
    pub const REGISTRY_UPDATES_TOTAL: &str = "switchyard_registry_updates_total";
    pub const DOWNSTREAM_CONNECTIONS_ACTIVE: &str = "switchyard_downstream_connections_active";
    pub const RATE_LIMITED_TOTAL: &str = "switchyard_rate_limited_total";
    pub const RATE_LIMIT_BUCKETS: &str = "switchyard_rate_limit_buckets";
    pub const ACCESS_LOG_DROPPED_TOTAL: &str = "switchyard_access_log_dropped_total";
    pub const TLS_HANDSHAKE_ERRORS_TOTAL: &str = "switchyard_tls_handshake_errors_total";
    pub const DOWNSTREAM_CONNECTIONS_REFUSED_TOTAL: &str =
        "switchyard_downstream_connections_refused_total";
    pub const DOWNSTREAM_TIMEOUTS_TOTAL: &str = "switchyard_downstream_timeouts_total";
    pub const PROXY_PROTOCOL_ERRORS_TOTAL: &str = "switchyard_proxy_protocol_errors_total";
}

/// The label value used for requests that matched no route.
pub const NO_POOL: &str = "none";

/// Upstream attempt outcomes (label `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    HttpError,
    ConnectError,
    Timeout,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::HttpError,
        Outcome::ConnectError,
        Outcome::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::HttpError => "http_error",
            Outcome::ConnectError => "connect_error",
            Outcome::Timeout => "timeout",
        }
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Config reload results (label `result` of `switchyard_config_reloads_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// Latency buckets in seconds: fine-grained below 10 ms, where a balancer's own time and a
/// healthy backend's answer live, and up to a minute for slow uploads.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Every metric family the process exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests_total: IntCounterVec,
    request_duration: HistogramVec,
    upstream_requests_total: IntCounterVec,
    pub node_up: IntGaugeVec,
    pub node_active_requests: IntGaugeVec,
    retries_total: IntCounterVec,
    pub health_checks_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub redis_connected: IntGauge,
    pub registry_updates_total: IntCounterVec,
    downstream_connections_active: IntGaugeVec,
    rate_limited_total: IntCounterVec,
    /// Client buckets the rate limiter holds (set at scrape time from the snapshot).
    pub rate_limit_buckets: IntGauge,
    pub access_log_dropped_total: IntCounter,
    /// Failed downstream TLS handshakes, by reason (`tls::HandshakeFailure`).
    tls_handshake_errors_total: IntCounterVec,
    /// Connections closed at once because the listener was at `limits.max_connections`.
    downstream_connections_refused_total: IntCounterVec,
    /// Client connections closed by `header_read_timeout` or `idle_timeout`.
    downstream_timeouts_total: IntCounterVec,
    /// Connections closed because their PROXY header was missing, invalid or late.
    proxy_protocol_errors_total: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| panic!("metric {name} definition: {e}"));
            r.register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("metric {name} registration: {e}"));
            c
        }
        fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| panic!("metric {name} definition: {e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("metric {name} registration: {e}"));
            g
        }
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                names::REQUEST_DURATION_SECONDS,
                "Time from request received to response body finished, per pool.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["pool"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        registry
            .register(Box::new(request_duration.clone()))
            .unwrap_or_else(|e| panic!("metric registration: {e}"));
        let redis_connected = IntGauge::new(
            names::REDIS_CONNECTED,
            "1 while the Redis registry subscriber is connected.",
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        registry
            .register(Box::new(redis_connected.clone()))
            .unwrap_or_else(|e| panic!("metric registration: {e}"));
        let rate_limit_buckets = IntGauge::new(
            names::RATE_LIMIT_BUCKETS,
            "Client buckets held by the rate limiter (bounded; 0 without rate_limit).",
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        registry
            .register(Box::new(rate_limit_buckets.clone()))
            .unwrap_or_else(|e| panic!("metric registration: {e}"));
        let access_log_dropped_total = IntCounter::new(
            names::ACCESS_LOG_DROPPED_TOTAL,
            "Access-log lines dropped because the writer could not keep up.",
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        registry
            .register(Box::new(access_log_dropped_total.clone()))
            .unwrap_or_else(|e| panic!("metric registration: {e}"));

        Metrics {
            requests_total: counter(
                &registry,
                names::REQUESTS_TOTAL,
                "Requests answered, by pool and status class.",
                &["pool", "status_class"],
            ),
            request_duration,
            upstream_requests_total: counter(
                &registry,
                names::UPSTREAM_REQUESTS_TOTAL,
                "Attempts sent to upstream nodes, by outcome.",
                &["pool", "node", "outcome"],
            ),
            node_up: gauge(
                &registry,
                names::NODE_UP,
                "1 when the node may take traffic (healthy, not ejected, not draining).",
                &["pool", "node"],
            ),
            node_active_requests: gauge(
                &registry,
                names::NODE_ACTIVE_REQUESTS,
                "Requests in flight to the node.",
                &["pool", "node"],
            ),
            retries_total: counter(
                &registry,
                names::RETRIES_TOTAL,
                "Retries sent to another node.",
                &["pool"],
            ),
            health_checks_total: counter(
                &registry,
                names::HEALTH_CHECKS_TOTAL,
                "Active health probes, by result.",
                &["pool", "node", "result"],
            ),
            config_reloads_total: counter(
                &registry,
                names::CONFIG_RELOADS_TOTAL,
                "Config reloads, by result.",
                &["result"],
            ),
            redis_connected,
            registry_updates_total: counter(
                &registry,
                names::REGISTRY_UPDATES_TOTAL,
                "Registry entries read from Redis, by result.",
                &["result"],
            ),
            downstream_connections_active: gauge(
                &registry,
                names::DOWNSTREAM_CONNECTIONS_ACTIVE,
                "Client connections open, per listener.",
                &["listener"],
            ),
            rate_limited_total: counter(
                &registry,
                names::RATE_LIMITED_TOTAL,
                "Requests refused by the rate limiter, per listener.",
                &["listener"],
            ),
            rate_limit_buckets,
            access_log_dropped_total,
            tls_handshake_errors_total: counter(
                &registry,
                names::TLS_HANDSHAKE_ERRORS_TOTAL,
                "Downstream TLS handshakes that failed, by reason (no_tls, protocol_version, \
                 incompatible, cert_rejected, timeout, eof, other).",
                &["reason"],
            ),
            downstream_connections_refused_total: counter(
                &registry,
                names::DOWNSTREAM_CONNECTIONS_REFUSED_TOTAL,
                "Client connections closed at once because the listener was at \
                 limits.max_connections.",
                &["listener"],
            ),
            downstream_timeouts_total: counter(
                &registry,
                names::DOWNSTREAM_TIMEOUTS_TOTAL,
                "Client connections closed by a timeout: header_read (a request head, or the \
                 first request, too slow) or idle (keep-alive connection unused for \
                 limits.idle_timeout).",
                &["listener", "timeout"],
            ),
            proxy_protocol_errors_total: counter(
                &registry,
                names::PROXY_PROTOCOL_ERRORS_TOTAL,
                "Connections closed on a proxy_protocol listener because the PROXY header was \
                 invalid (or missing), not complete within limits.header_read_timeout \
                 (timeout), or cut short by the client (eof).",
                &["listener", "reason"],
            ),
            registry,
        }
    }

    /// Handles for one pool.
    pub fn pool(&self, pool: &str) -> PoolMetrics {
        PoolMetrics {
            status: STATUS_CLASSES.map(|c| self.requests_total.with_label_values(&[pool, c])),
            duration: self.request_duration.with_label_values(&[pool]),
            retries: self.retries_total.with_label_values(&[pool]),
        }
    }

    /// Handles for one node of one pool.
    pub fn node(&self, pool: &str, node: &str) -> NodeMetrics {
        NodeMetrics {
            outcomes: Outcome::ALL.map(|o| {
                self.upstream_requests_total
                    .with_label_values(&[pool, node, o.as_str()])
            }),
        }
    }

    pub fn downstream_connections(&self, listener: &str) -> IntGauge {
        self.downstream_connections_active
            .with_label_values(&[listener])
    }

    pub fn rate_limited(&self, listener: &str) -> IntCounter {
        self.rate_limited_total.with_label_values(&[listener])
    }

    /// Connections refused at `limits.max_connections` (resolved once per listener).
    pub fn connections_refused(&self, listener: &str) -> IntCounter {
        self.downstream_connections_refused_total
            .with_label_values(&[listener])
    }

    /// Connections closed by a timeout (`timeout`: `header_read` or `idle`).
    pub fn downstream_timeouts(&self, listener: &str, timeout: &str) -> IntCounter {
        self.downstream_timeouts_total
            .with_label_values(&[listener, timeout])
    }

    /// PROXY header failures (`reason`: `invalid`, `timeout`, `eof`).
    pub fn proxy_protocol_errors(&self, listener: &str, reason: &str) -> IntCounter {
        self.proxy_protocol_errors_total
            .with_label_values(&[listener, reason])
    }

    /// The handshake-failure counter for one `reason` (resolved once per TLS listener).
    pub fn tls_handshake_errors(&self, reason: &str) -> IntCounter {
        self.tls_handshake_errors_total.with_label_values(&[reason])
    }

    /// Count one config reload.
    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads_total
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Prometheus text exposition of everything registered.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for I/O reasons; a family that fails to encode
        // is skipped rather than failing the whole scrape.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Pre-resolved per-pool handles (see the module docs for why).
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    status: [IntCounter; 5],
    duration: Histogram,
    pub retries: IntCounter,
}

impl PoolMetrics {
    /// Count one answered request and its duration.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.status[class].inc();
        self.duration.observe(seconds);
    }
}

/// Pre-resolved per-node handles.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    outcomes: [IntCounter; 4],
}

impl NodeMetrics {
    pub fn record(&self, outcome: Outcome) {
        let i = match outcome {
            Outcome::Success => 0,
            Outcome::HttpError => 1,
            Outcome::ConnectError => 2,
            Outcome::Timeout => 3,
        };
        self.outcomes[i].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_series_appear_in_the_exposition() {
        let m = Metrics::new();
        m.pool("web").record(204, 0.003);
        m.node("web", "127.0.0.1:9001")
            .record(Outcome::ConnectError);
        let text = String::from_utf8(m.encode()).expect("exposition is UTF-8");
        assert!(text.contains(r#"switchyard_requests_total{pool="web",status_class="2xx"} 1"#));
        assert!(text.contains(
            r#"switchyard_upstream_requests_total{node="127.0.0.1:9001",outcome="connect_error",pool="web"} 1"#
        ));
        assert!(text.contains("switchyard_request_duration_seconds_bucket"));
    }
}
