//! Active health probes: one task per node per pool with a `health_check`.
//!
//! A probe is `GET path` on a fresh connection (HTTPS and/or HTTP/2 when the pool talks
//! to its nodes that way) with `timeout`, every `interval` ±10 %
//! jitter (so probes of many nodes do not align). A node goes down after
//! `unhealthy_threshold` consecutive failures (connect error, timeout, status outside
//! `expect_status`) and up after `healthy_threshold` successes. A node starts `unknown` and
//! — because probes are configured — takes no traffic until its first successful probe.
//!
//! [`HealthSupervisor::reconcile`] is called after every snapshot swap: it starts probes for
//! new nodes, stops them for nodes that left, and restarts them when a pool's probe settings
//! changed; a surviving node's probe and its state are untouched. The same supervisor task
//! logs nodes returning from passive ejection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST, USER_AGENT};
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use strategies::{Health, NodeStats};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HealthCheckConfig, UpstreamProtocol};
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::UpstreamConnector;

/// How often ejection returns are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a running probe: restart it if any of this changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProbeKey {
    pool: String,
    addr: String,
}

#[derive(Debug, Clone, PartialEq)]
struct ProbeSpec {
    /// `http` or `https`: probes speak the pool's protocol.
    scheme: String,
    /// HTTP/2 for `upstream_protocol: h2` pools.
    h2: bool,
    authority: String,
    path: String,
    interval: Duration,
    timeout: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    expect: (u16, u16),
}

struct Running {
    spec: ProbeSpec,
    stop: CancellationToken,
}

/// Owns every probe task.
pub struct HealthSupervisor {
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    probes: Mutex<HashMap<ProbeKey, Running>>,
}

impl HealthSupervisor {
    pub fn new(metrics: Metrics, shutdown: CancellationToken, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(HealthSupervisor {
            metrics,
            shutdown,
            tracker,
            probes: Mutex::new(HashMap::new()),
        })
    }

    /// Bring the probe tasks in line with `snap`.
    pub fn reconcile(&self, snap: &Snapshot) {
        let mut wanted: HashMap<ProbeKey, (ProbeSpec, Arc<NodeStats>, UpstreamConnector)> =
            HashMap::new();
        for pool in &snap.pools {
            let Some(hc) = &pool.config.health_check else {
                continue;
            };
            for node in &pool.nodes {
                let mut spec = spec(hc, node.authority.as_str());
                spec.scheme = pool.client.scheme().as_str().to_string();
                spec.h2 = pool.config.upstream_protocol == UpstreamProtocol::H2;
                wanted.insert(
                    ProbeKey {
                        pool: pool.name.clone(),
                        addr: node.addr.clone(),
                    },
                    (
                        spec,
                        Arc::clone(&node.stats),
                        pool.client.probe_connector(hc.timeout.0),
                    ),
                );
            }
        }
        let mut probes = match self.probes.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        probes.retain(|key, running| {
            let keep = wanted.get(key).is_some_and(|(s, _, _)| *s == running.spec);
            if !keep {
                running.stop.cancel();
            }
            keep
        });
        for (key, (spec, stats, connector)) in wanted {
            if probes.contains_key(&key) {
                continue;
            }
            let stop = self.shutdown.child_token();
            let probe = Probe {
                pool: key.pool.clone(),
                addr: key.addr.clone(),
                spec: spec.clone(),
                stats,
                connector,
                metrics: self.metrics.clone(),
            };
            self.tracker.spawn(probe.run(stop.clone()));
            probes.insert(key, Running { spec, stop });
        }
    }

    /// Log and clear ended ejections, about once a second, until shutdown.
    pub async fn sweep_ejections(self: Arc<Self>, snapshot: Arc<SnapshotCell>) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let snap = snapshot.load();
                    let now = strategies::now_ms();
                    for pool in &snap.pools {
                        crate::outlier::sweep_returns(pool, now);
                    }
                }
            }
        }
    }
}

fn spec(hc: &HealthCheckConfig, authority: &str) -> ProbeSpec {
    ProbeSpec {
        scheme: "http".to_string(),
        h2: false,
        authority: authority.to_string(),
        path: hc.path.clone(),
        interval: hc.interval.0,
        timeout: hc.timeout.0,
        healthy_threshold: hc.healthy_threshold.max(1),
        unhealthy_threshold: hc.unhealthy_threshold.max(1),
        expect: (hc.expect_status.lo, hc.expect_status.hi),
    }
}

struct Probe {
    pool: String,
    addr: String,
    spec: ProbeSpec,
    stats: Arc<NodeStats>,
    /// The pool's connector (TCP, plus TLS for a `tls` pool) with the probe's timeout.
    connector: UpstreamConnector,
    metrics: Metrics,
}

impl Probe {
    async fn run(self, stop: CancellationToken) {
        // No idle pool: every probe makes a new connection, so a node that stopped
        // accepting connections is noticed even while an old connection still works.
        let client: Client<UpstreamConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .pool_timer(TokioTimer::new())
            .http2_only(self.spec.h2)
            .build(self.connector.clone());
        let uri: Option<Uri> = format!(
            "{}://{}{}",
            self.spec.scheme, self.spec.authority, self.spec.path
        )
        .parse()
        .ok();
        let host = HeaderValue::from_str(&self.addr).ok();
        let ok_counter = self
            .metrics
            .health_checks_total
            .with_label_values(&[&self.pool, &self.addr, "success"]);
        let fail_counter = self
            .metrics
            .health_checks_total
            .with_label_values(&[&self.pool, &self.addr, "failure"]);
        let (mut successes, mut failures) = (0u32, 0u32);

        // First probe soon after the node appears, spread a little so a pool's probes do
        // not all fire at once.
        let mut delay = jitter(self.spec.interval / 10);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = self.spec.interval.mul_f64(0.9) + jitter(self.spec.interval / 5);

            let result = match (&uri, &host) {
                (Some(uri), Some(host)) => self.probe_once(&client, uri, host).await,
                _ => Err("the node address does not form a valid probe URL".to_string()),
            };
            match result {
                Ok(()) => {
                    ok_counter.inc();
                    failures = 0;
                    successes = successes.saturating_add(1);
                    let h = self.stats.health();
                    let needed = if h == Health::Unknown {
                        1
                    } else {
                        self.spec.healthy_threshold
                    };
                    if h != Health::Up && successes >= needed {
                        self.stats.set_health(Health::Up);
                        if h == Health::Down {
                            self.stats.begin_slow_start(strategies::now_ms());
                        }
                        tracing::info!(pool = %self.pool, node = %self.addr, previous = h.as_str(), successes, "node up: health check passed");
                    }
                }
                Err(reason) => {
                    fail_counter.inc();
                    successes = 0;
                    failures = failures.saturating_add(1);
                    let h = self.stats.health();
                    if h != Health::Down && failures >= self.spec.unhealthy_threshold {
                        self.stats.set_health(Health::Down);
                        tracing::warn!(pool = %self.pool, node = %self.addr, previous = h.as_str(), failures, %reason, "node down: health check failed");
                    }
                }
            }
        }
    }

    async fn probe_once(
        &self,
        client: &Client<UpstreamConnector, Empty<Bytes>>,
        uri: &Uri,
        host: &HeaderValue,
    ) -> Result<(), String> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert(HOST, host.clone());
        req.headers_mut().insert(
            USER_AGENT,
            HeaderValue::from_static("switchyard-health-check"),
        );
        match tokio::time::timeout(self.spec.timeout, client.request(req)).await {
            Err(_) => Err(format!("no answer within {:?}", self.spec.timeout)),
            Ok(Err(e)) => Err(crate::upstream::error_chain(&e)),
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                // The body is dropped unread: the connection is not reused anyway.
                if (self.spec.expect.0..=self.spec.expect.1).contains(&status) {
                    Ok(())
                } else {
                    Err(format!(
                        "status {status} outside {}-{}",
                        self.spec.expect.0, self.spec.expect.1
                    ))
                }
            }
        }
    }
}

/// A random duration in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(strategies::random_u64() % nanos)
}
