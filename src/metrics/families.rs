//! The registry and every family in it, with the handles the rest of the process records
//! through.
//!
//! Looking up a labelled series (`with_label_values`) hashes the labels and takes the
//! family's read lock, so the request path never does it: the snapshot builder resolves
//! every per-pool and per-node handle once ([`PoolMetrics`], [`NodeMetrics`]), listeners
//! resolve theirs when they start, and requests only touch atomics. Gauges that mirror live
//! state (node up, active requests) are filled in at scrape time from the snapshot instead
//! of being updated per request.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::names::*;

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
    health_checks_total: IntCounterVec,
    config_reloads_total: IntCounterVec,
    pub redis_connected: IntGauge,
    registry_updates_total: IntCounterVec,
    downstream_connections_active: IntGaugeVec,
    rate_limited_total: IntCounterVec,
    /// Client buckets the rate limiter holds (set at scrape time from the snapshot).
    pub rate_limit_buckets: IntGauge,
    pub access_log_dropped_total: IntCounter,
    /// Failed downstream TLS handshakes, by reason.
    tls_handshake_errors_total: IntCounterVec,
    /// Connections closed at once because the listener was at `limits.max_connections`.
    downstream_connections_refused_total: IntCounterVec,
    /// Client connections closed by `header_read_timeout` or `idle_timeout`.
    downstream_timeouts_total: IntCounterVec,
    /// Connections closed because their PROXY header was missing, invalid or late.
    proxy_protocol_errors_total: IntCounterVec,
}

/// Register `c` in `r`. The families are fixed in this file, so a failure is a programming
/// error found by the first test that builds a [`Metrics`], never by a running process.
fn register<C: Collector + Clone + 'static>(r: &Registry, f: &Family, c: C) -> C {
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {} registration: {e}", f.name));
    c
}

fn counters(r: &Registry, f: &Family) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(f.name, f.help), f.labels)
        .unwrap_or_else(|e| panic!("metric {} definition: {e}", f.name));
    register(r, f, c)
}

fn gauges(r: &Registry, f: &Family) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(f.name, f.help), f.labels)
        .unwrap_or_else(|e| panic!("metric {} definition: {e}", f.name));
    register(r, f, g)
}

fn counter(r: &Registry, f: &Family) -> IntCounter {
    let c = IntCounter::new(f.name, f.help)
        .unwrap_or_else(|e| panic!("metric {} definition: {e}", f.name));
    register(r, f, c)
}

fn gauge(r: &Registry, f: &Family) -> IntGauge {
    let g = IntGauge::new(f.name, f.help)
        .unwrap_or_else(|e| panic!("metric {} definition: {e}", f.name));
    register(r, f, g)
}

fn histograms(r: &Registry, f: &Family, buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(f.name, f.help).buckets(buckets.to_vec()),
        f.labels,
    )
    .unwrap_or_else(|e| panic!("metric {} definition: {e}", f.name));
    register(r, f, h)
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            requests_total: counters(&r, &REQUESTS_TOTAL),
            request_duration: histograms(&r, &REQUEST_DURATION_SECONDS, DURATION_BUCKETS),
            upstream_requests_total: counters(&r, &UPSTREAM_REQUESTS_TOTAL),
            node_up: gauges(&r, &NODE_UP),
            node_active_requests: gauges(&r, &NODE_ACTIVE_REQUESTS),
            retries_total: counters(&r, &RETRIES_TOTAL),
            health_checks_total: counters(&r, &HEALTH_CHECKS_TOTAL),
            config_reloads_total: counters(&r, &CONFIG_RELOADS_TOTAL),
            redis_connected: gauge(&r, &REDIS_CONNECTED),
            registry_updates_total: counters(&r, &REGISTRY_UPDATES_TOTAL),
            downstream_connections_active: gauges(&r, &DOWNSTREAM_CONNECTIONS_ACTIVE),
            rate_limited_total: counters(&r, &RATE_LIMITED_TOTAL),
            rate_limit_buckets: gauge(&r, &RATE_LIMIT_BUCKETS),
            access_log_dropped_total: counter(&r, &ACCESS_LOG_DROPPED_TOTAL),
            tls_handshake_errors_total: counters(&r, &TLS_HANDSHAKE_ERRORS_TOTAL),
            downstream_connections_refused_total: counters(
                &r,
                &DOWNSTREAM_CONNECTIONS_REFUSED_TOTAL,
            ),
            downstream_timeouts_total: counters(&r, &DOWNSTREAM_TIMEOUTS_TOTAL),
            proxy_protocol_errors_total: counters(&r, &PROXY_PROTOCOL_ERRORS_TOTAL),
            registry: r,
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

    /// The probe counter of one node for one result (resolved once per probe task).
    pub fn health_checks(&self, pool: &str, node: &str, result: HealthResult) -> IntCounter {
        self.health_checks_total
            .with_label_values(&[pool, node, result.as_str()])
    }

    /// Count one config reload.
    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads_total
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Count `n` registry reads with `result`.
    pub fn registry_updates(&self, result: RegistryResult, n: u64) {
        self.registry_updates_total
            .with_label_values(&[result.as_str()])
            .inc_by(n);
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

    /// The timeout counters of one listener, in [`DownstreamTimeout::ALL`] order.
    pub fn downstream_timeouts(&self, listener: &str) -> [IntCounter; 2] {
        DownstreamTimeout::ALL.map(|t| {
            self.downstream_timeouts_total
                .with_label_values(&[listener, t.as_str()])
        })
    }

    /// The PROXY header failure counters of one listener, in [`ProxyProtocolFailure::ALL`]
    /// order.
    pub fn proxy_protocol_errors(&self, listener: &str) -> [IntCounter; 3] {
        ProxyProtocolFailure::ALL.map(|r| {
            self.proxy_protocol_errors_total
                .with_label_values(&[listener, r.as_str()])
        })
    }

    /// The handshake-failure counters, in [`HandshakeFailure::ALL`] order (resolved once
    /// per TLS listener).
    pub fn tls_handshake_errors(&self) -> [IntCounter; 7] {
        HandshakeFailure::ALL.map(|r| {
            self.tls_handshake_errors_total
                .with_label_values(&[r.as_str()])
        })
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
