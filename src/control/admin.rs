//! The admin listener: health, readiness, metrics and the JSON API (the README lists
//! every call).
//!
//! It runs on its own bind (loopback by default) so that operators can reach it when the
//! public listeners are saturated. Read-only calls are open; mutating calls need
//! `Authorization: Bearer <token>` with the token from the environment variable named in
//! `admin.token_env`, compared in constant time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::snapshot::SnapshotCell;
use crate::control::reload::ReloadRequest;
use crate::metrics::Metrics;
use crate::proxy::answer::json_response;
use crate::proxy::body::ResponseBody;
use crate::util::clock;

/// How long an admin connection may take to send its request headers.
const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the admin handlers read.
pub struct AdminState {
    pub snapshot: Arc<SnapshotCell>,
    pub metrics: Metrics,
    /// True once listeners are bound and the config loaded; false again while draining.
    pub ready: Arc<AtomicBool>,
    /// The bearer token; `None` refuses every mutating call.
    pub token: Option<String>,
    /// The name of the variable the token comes from, for the error message.
    pub token_env: Option<String>,
    pub reload: mpsc::Sender<ReloadRequest>,
}

/// Serve the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let res = tokio::select! {
                res = conn.as_mut() => res,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// Bind the admin listener; warns when it is reachable from other hosts.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let local = l.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(addr = %local, "the admin API is bound to a non-loopback address: protect it with a firewall and set admin.token_env");
    }
    Ok((l, local))
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => json_response(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, ["readyz"]) => {
            if state.ready.load(Ordering::Relaxed) {
                json_response(StatusCode::OK, r#"{"status":"ready"}"#)
            } else {
                json_response(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#)
            }
        }
        (&Method::GET, ["metrics"]) => metrics(state),
        (&Method::GET, ["api", "v1", "pools"]) => pools(state),
        (
            &Method::POST,
            ["api", "v1", "pools", pool, "nodes", addr, action @ ("drain" | "undrain")],
        ) => {
            if let Some(denied) = authorize(state, &req) {
                return denied;
            }
            let addr = percent_decode(addr);
            drain(state, pool, &addr, *action == "drain")
        }
        (&Method::POST, ["api", "v1", "reload"]) => {
            if let Some(denied) = authorize(state, &req) {
                return denied;
            }
            reload(state).await
        }
        (_, ["healthz" | "readyz" | "metrics"]) | (_, ["api", "v1", ..]) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method not allowed"}"#,
        ),
        _ => json_response(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
    }
}

fn metrics(state: &AdminState) -> Response<ResponseBody> {
    // Gauges that mirror live node state are filled in now rather than on every request.
    let snap = state.snapshot.load();
    let now = clock::now_ms();
    for pool in &snap.pools {
        for node in &pool.nodes {
            let labels = [pool.name.as_str(), node.addr.as_str()];
            state
                .metrics
                .node_up
                .with_label_values(&labels)
                .set(node.stats.is_eligible(now) as i64);
            state
                .metrics
                .node_active_requests
                .with_label_values(&labels)
                .set(node.stats.in_flight() as i64);
        }
    }
    let buckets = snap.limits.rate_limit.as_ref().map_or(0, |rl| rl.buckets());
    state
        .metrics
        .rate_limit_buckets
        .set(i64::try_from(buckets).unwrap_or(i64::MAX));
    let mut resp = Response::new(ResponseBody::full(state.metrics.encode()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

#[derive(Serialize)]
struct PoolsDoc<'a> {
    pools: Vec<PoolDoc<'a>>,
}

#[derive(Serialize)]
struct PoolDoc<'a> {
    name: &'a str,
    strategy: &'static str,
    nodes: Vec<NodeDoc<'a>>,
}

#[derive(Serialize)]
struct NodeDoc<'a> {
    addr: &'a str,
    weight: u32,
    source: &'static str,
    health: &'static str,
    ejected: bool,
    draining: bool,
    active_requests: u32,
}

fn pools(state: &AdminState) -> Response<ResponseBody> {
    let snap = state.snapshot.load();
    let now = clock::now_ms();
    let doc = PoolsDoc {
        pools: snap
            .pools
            .iter()
            .map(|p| PoolDoc {
                name: &p.name,
                strategy: p.kind.as_str(),
                nodes: p
                    .nodes
                    .iter()
                    .map(|n| NodeDoc {
                        addr: &n.addr,
                        weight: n.weight,
                        source: n.source.as_str(),
                        health: n.stats.health().as_str(),
                        ejected: n.stats.is_ejected(now),
                        draining: n.stats.is_draining(),
                        active_requests: n.stats.in_flight(),
                    })
                    .collect(),
            })
            .collect(),
    };
    match serde_json::to_vec(&doc) {
        Ok(body) => {
            let mut resp = Response::new(ResponseBody::full(body));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"encoding failed"}"#,
        ),
    }
}

fn drain(state: &AdminState, pool: &str, addr: &str, on: bool) -> Response<ResponseBody> {
    let snap = state.snapshot.load();
    let Some(p) = snap.pool(pool) else {
        return json_response(StatusCode::NOT_FOUND, r#"{"error":"no such pool"}"#);
    };
    let Some(node) = p.nodes.iter().find(|n| n.addr == addr) else {
        return json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such node in this pool"}"#,
        );
    };
    node.stats.set_draining(on);
    tracing::info!(pool = %pool, node = %addr, draining = on, "node drain state changed by the admin API");
    if on {
        json_response(StatusCode::OK, r#"{"draining":true}"#)
    } else {
        json_response(StatusCode::OK, r#"{"draining":false}"#)
    }
}

async fn reload(state: &AdminState) -> Response<ResponseBody> {
    let (tx, rx) = oneshot::channel();
    if state
        .reload
        .send(ReloadRequest { respond: tx })
        .await
        .is_err()
    {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"shutting down"}"#,
        );
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), rx).await;
    let (status, body) = match answer {
        Ok(Ok(Ok(()))) => (StatusCode::OK, serde_json::json!({"status": "reloaded"})),
        Ok(Ok(Err(errors))) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "the new config is invalid; the old one keeps serving", "errors": errors.lines()}),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "reload did not complete"}),
        ),
    };
    let mut resp = Response::new(ResponseBody::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Check the bearer token; `Some` is the refusal to send.
fn authorize(state: &AdminState, req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    let Some(token) = state.token.as_deref() else {
        let msg = match &state.token_env {
            Some(var) => format!(
                r#"{{"error":"mutating calls are disabled: the environment variable {var} is not set; set it to a secret token and restart"}}"#
            ),
            None => r#"{"error":"mutating calls are disabled: set admin.token_env in the config to the name of an environment variable holding a secret token"}"#.to_string(),
        };
        let mut resp = Response::new(ResponseBody::full(msg));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Some(resp);
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        None
    } else {
        Some(json_response(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"missing or wrong bearer token"}"#,
        ))
    }
}

/// Compare without an early exit on the first differing byte, so the time taken says
/// nothing about where the inputs differ (only the token's length can be learnt).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = 0u8;
    for (i, &y) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ y;
    }
    diff == 0 && a.len() == b.len()
}

/// Decode `%XX` escapes (an address may arrive as `127.0.0.1%3A9001`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("127.0.0.1%3A9001"), "127.0.0.1:9001");
        assert_eq!(percent_decode("127.0.0.1:9001"), "127.0.0.1:9001");
        assert_eq!(percent_decode("a%3"), "a%3");
        assert_eq!(percent_decode("%"), "%");
    }
}
