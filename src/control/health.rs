//! Active health probes: one task per node per pool with a `health_check`.
//!
//! A probe is one request on a fresh connection, made through the upstream layer exactly as
//! the pool's requests are (HTTPS and/or HTTP/2 when the pool talks to its nodes that way),
//! bounded by `timeout`, every `interval` ±10 % jitter (so probes of many nodes do not
//! align). With `protocol: http` it is `GET path`, and a status in `expect_status` passes;
//! with `protocol: grpc` it is the gRPC health-checking protocol's
//! `grpc.health.v1.Health/Check` for `grpc_service`, and only an OK answer saying SERVING
//! passes. A node goes down after `unhealthy_threshold` consecutive failures (connect
//! error, timeout, a failing answer) and up after `healthy_threshold` successes. A node
//! starts `unknown` and — because probes are configured — takes no traffic until its first
//! successful probe.
//!
//! [`HealthSupervisor::reconcile`] is called after every snapshot swap: it starts probes for
//! new nodes, stops them for nodes that left, and restarts them when a pool's probe settings
//! changed; a surviving node's probe and its state are untouched. The same supervisor task
//! logs nodes returning from passive ejection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, CONTENT_TYPE, HOST, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method};
use http_body_util::BodyExt as _;
use rustls_pki_types::ServerName;
use strategies::{Health, NodeStats};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::snapshot::{HealthAsk, HealthCheck, Snapshot, SnapshotCell};
use crate::metrics::{HealthResult, Metrics};
use crate::upstream::{self, Buffered, Outgoing, RequestBody, Transport, UpstreamError};
use crate::util::clock;
use crate::util::random;
use crate::util::report::error_chain;
use crate::util::sync::lock;

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
    /// The pool's transport settings (protocol, TLS): probes speak the pool's protocol.
    transport: upstream::TransportSettings,
    /// The node's resolved address.
    addr: SocketAddr,
    /// The pool's `health_check`: what to ask, how often, the thresholds.
    check: HealthCheck,
}

/// A probe task that runs: what it probes, and how to stop it.
struct RunningProbe {
    spec: ProbeSpec,
    stop: CancellationToken,
}

/// Owns every probe task.
pub struct HealthSupervisor {
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    probes: Mutex<HashMap<ProbeKey, RunningProbe>>,
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
        let mut wanted: HashMap<ProbeKey, (ProbeSpec, Arc<NodeStats>, NodeTarget)> = HashMap::new();
        for pool in &snap.pools {
            let Some(check) = &pool.health_check else {
                continue;
            };
            for node in &pool.nodes {
                let spec = ProbeSpec {
                    transport: pool.transport.settings.clone(),
                    addr: node.socket_addr,
                    check: check.clone(),
                };
                let target = NodeTarget {
                    transport: pool.transport.clone(),
                    authority: node.authority.clone(),
                    server_name: node.server_name.clone(),
                };
                wanted.insert(
                    ProbeKey {
                        pool: pool.name.clone(),
                        addr: node.addr.clone(),
                    },
                    (spec, Arc::clone(&node.stats), target),
                );
            }
        }
        let mut probes = lock(&self.probes);
        probes.retain(|key, running| {
            let keep = wanted.get(key).is_some_and(|(s, _, _)| *s == running.spec);
            if !keep {
                running.stop.cancel();
            }
            keep
        });
        for (key, (spec, stats, target)) in wanted {
            if probes.contains_key(&key) {
                continue;
            }
            let stop = self.shutdown.child_token();
            let probe = Probe {
                pool: key.pool.clone(),
                addr: key.addr.clone(),
                spec: spec.clone(),
                stats,
                target,
                metrics: self.metrics.clone(),
            };
            self.tracker.spawn(probe.run(stop.clone()));
            probes.insert(key, RunningProbe { spec, stop });
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
                    let now = clock::now_ms();
                    for pool in &snap.pools {
                        crate::balance::outlier::sweep_returns(pool, now);
                    }
                }
            }
        }
    }
}

/// How to reach the node: the pool's transport and the node's names.
struct NodeTarget {
    transport: Transport,
    authority: Authority,
    server_name: Option<ServerName<'static>>,
}

struct Probe {
    pool: String,
    addr: String,
    spec: ProbeSpec,
    stats: Arc<NodeStats>,
    target: NodeTarget,
    metrics: Metrics,
}

/// Why a probe failed (logged when the node goes down).
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the node address is not a valid Host header")]
    Host,
    #[error("bad probe path")]
    Path(#[source] http::uri::InvalidUri),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("status {status} outside {}-{}", expect.0, expect.1)]
    Status { status: u16, expect: (u16, u16) },
    #[error("gRPC health check answered HTTP {0}")]
    GrpcHttpStatus(u16),
    #[error("gRPC health check body failed")]
    GrpcBody(#[source] hyper::Error),
    #[error("gRPC health check failed with status {0}")]
    GrpcStatus(u32),
    #[error("gRPC health check answered without grpc-status")]
    GrpcNoStatus,
    #[error("gRPC health status {0} (not SERVING)")]
    NotServing(u64),
    #[error("gRPC health check answer cannot be parsed")]
    GrpcUnparsable,
}

/// The gRPC health service's method.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const GRPC_SERVING: u64 = 1;

impl Probe {
    async fn run(self, stop: CancellationToken) {
        let host = HeaderValue::from_str(&self.addr).ok();
        let ok_counter = self
            .metrics
            .health_checks(&self.pool, &self.addr, HealthResult::Success);
        let fail_counter =
            self.metrics
                .health_checks(&self.pool, &self.addr, HealthResult::Failure);
        let (mut successes, mut failures) = (0u32, 0u32);

        // First probe soon after the node appears, spread a little so a pool's probes do
        // not all fire at once.
        let mut delay = jitter(self.spec.check.interval / 10);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = self.spec.check.interval.mul_f64(0.9) + jitter(self.spec.check.interval / 5);

            let result = match &host {
                Some(host) => {
                    match tokio::time::timeout(self.spec.check.timeout, self.probe_once(host)).await
                    {
                        Err(_) => Err(ProbeError::Timeout(self.spec.check.timeout)),
                        Ok(r) => r,
                    }
                }
                None => Err(ProbeError::Host),
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
                        self.spec.check.healthy_threshold
                    };
                    if h != Health::Up && successes >= needed {
                        self.stats.set_health(Health::Up);
                        if h == Health::Down {
                            self.stats.begin_slow_start(clock::now_ms());
                        }
                        tracing::info!(pool = %self.pool, node = %self.addr, previous = h.as_str(), successes, "node up: health check passed");
                    }
                }
                Err(e) => {
                    fail_counter.inc();
                    successes = 0;
                    failures = failures.saturating_add(1);
                    let h = self.stats.health();
                    if h != Health::Down && failures >= self.spec.check.unhealthy_threshold {
                        self.stats.set_health(Health::Down);
                        let reason = error_chain(&e);
                        tracing::warn!(pool = %self.pool, node = %self.addr, previous = h.as_str(), failures, %reason, "node down: health check failed");
                    }
                }
            }
        }
    }

    /// One probe; `Err` says why it failed.
    async fn probe_once(&self, host: &HeaderValue) -> Result<(), ProbeError> {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, host.clone());
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static("switchyard-health-check"),
        );
        let (method, path, body) = match &self.spec.check.ask {
            HealthAsk::Http { path, .. } => (Method::GET, path.as_str(), RequestBody::Empty),
            HealthAsk::Grpc { service } => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert(TE, HeaderValue::from_static("trailers"));
                let body = Buffered::new(grpc_health_request(service), None);
                (Method::POST, GRPC_HEALTH_CHECK, RequestBody::Buffered(body))
            }
        };
        let path = PathAndQuery::try_from(path).map_err(ProbeError::Path)?;
        let mut out = Outgoing::new(method, path, headers, Some(host.clone()), (), body, false);
        let t = &self.target;
        let resp = upstream::probe(
            &t.transport,
            self.spec.addr,
            &t.authority,
            t.server_name.as_ref(),
            &mut out,
        )
        .await?;
        let status = resp.status().as_u16();
        match &self.spec.check.ask {
            // The body is dropped unread: the connection is not reused anyway.
            HealthAsk::Http { expect, .. } if (expect.0..=expect.1).contains(&status) => Ok(()),
            HealthAsk::Http { expect, .. } => Err(ProbeError::Status {
                status,
                expect: *expect,
            }),
            HealthAsk::Grpc { .. } => {
                if status != 200 {
                    return Err(ProbeError::GrpcHttpStatus(status));
                }
                let head_status = grpc_status(resp.headers());
                let collected = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(ProbeError::GrpcBody)?;
                let trailers_status = collected.trailers().and_then(grpc_status);
                match trailers_status.or(head_status) {
                    Some(0) => {}
                    Some(code) => return Err(ProbeError::GrpcStatus(code)),
                    None => return Err(ProbeError::GrpcNoStatus),
                }
                match grpc_health_status(collected.to_bytes()) {
                    Some(GRPC_SERVING) => Ok(()),
                    Some(s) => Err(ProbeError::NotServing(s)),
                    None => Err(ProbeError::GrpcUnparsable),
                }
            }
        }
    }
}

/// `grpc-status` of a header or trailer block.
fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A gRPC message (uncompressed, length-prefixed) holding `HealthCheckRequest { service }`.
fn grpc_health_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        // Field 1 (string): tag 0x0a, varint length, bytes.
        msg.push(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `HealthCheckResponse.status` from one length-prefixed, uncompressed gRPC message; an
/// absent field is proto3's default, UNKNOWN (0).
fn grpc_health_status(mut body: Bytes) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    let mut msg = body.get(..len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let tag = get_varint(&mut msg)?;
        match tag & 7 {
            0 => {
                let v = get_varint(&mut msg)?;
                if tag >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let n = usize::try_from(get_varint(&mut msg)?).ok()?;
                msg = msg.get(n..)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// A random duration in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos() as u64;
    Duration::from_nanos(random::below(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_messages_encode_and_decode() {
        assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_health_request("db")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(grpc_health_status(serving), Some(GRPC_SERVING));
        // An empty message is status UNKNOWN; unknown fields are skipped.
        assert_eq!(
            grpc_health_status(Bytes::from_static(&[0, 0, 0, 0, 0])),
            Some(0)
        );
        let with_extra = Bytes::from_static(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 2]);
        assert_eq!(grpc_health_status(with_extra), Some(2));
        // Compressed, truncated or garbage: no answer.
        assert_eq!(
            grpc_health_status(Bytes::from_static(&[1, 0, 0, 0, 0])),
            None
        );
        assert_eq!(
            grpc_health_status(Bytes::from_static(&[0, 0, 0, 0, 3, 0x08])),
            None
        );
        assert_eq!(
            grpc_health_status(Bytes::from_static(&[0, 0, 0, 0, 1, 0xff])),
            None
        );
    }
}
