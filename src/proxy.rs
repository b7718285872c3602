//! The request path: router → pool → strategy → upstream → response.
//!
//! [`Proxy::handle`] is called once per request by the listener. It loads the snapshot once,
//! routes, picks a node, forwards with the header rules, retries on another node when the
//! pool's policy allows, and returns the upstream's response with a body wrapper that ends
//! the in-flight accounting when the body ends. Protocol upgrades (WebSocket) are tunnelled
//! both ways after the upstream's `101`.
//!
//! Before routing, every request goes through the checks that apply to the listener as a
//! whole, in this order: a head the HTTP/1 framing guard refused ([`crate::h1guard`]) → 400
//! and the connection closed, or an HTTP/2 header list over `limits.max_header_bytes`
//! ([`h2_header_list_size`]; h2's own cap is set higher, see [`crate::listener`]) → 431 on
//! that stream; the target form (below); the client's
//! rate limit ([`crate::ratelimit`]) → 429 with `Retry-After`; an announced body length over
//! `limits.max_body_bytes` → 413. The client address they use is the peer's, or
//! `X-Forwarded-For`'s behind `trusted_proxies` ([`headers::client_addr`]). Their answers
//! are counted under the pool the request would have gone to (`none` without a route).
//!
//! Request targets a reverse proxy cannot forward are refused: `CONNECT` (any protocol
//! version), an authority-form target (`host:port`) with another method, and an
//! asterisk-form target (`*`) with any method but `OPTIONS` → 400, on HTTP/1 with the
//! connection closed (what follows a `CONNECT` head may be tunnel bytes, never to be read as
//! HTTP). `OPTIONS *` asks about the server itself (RFC 9110 §9.3.7), and the server the
//! client talks to is the balancer: it answers `200` with no content, whatever the routes,
//! and no node sees it.
//!
//! Answers made here are JSON, or gRPC-shaped for gRPC requests ([`crate::error`]).
//!
//! HTTP/1.0 clients: HTTP/1.0 has no chunked encoding, so a node's response of unknown
//! length can only be ended by closing the connection — and hyper, asked for keep-alive,
//! would still announce `Connection: keep-alive` and then close, leaving the client waiting
//! for an answer that never comes (`ab -k` counts failures). Such a response is sent as an
//! HTTP/1.0 head with `Connection: close` (`http10_framing`); one with a known length keeps
//! the connection alive as asked. (The answers made here all have a known length.)

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{ready, Either};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, RETRY_AFTER};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::IntCounter;
use strategies::PickContext;
use tokio_util::task::TaskTracker;

use crate::accesslog::{AccessLog, Record};
use crate::body::{
    Completion, LimitedBody, PendingLog, RequestBody, ResponseBody, UpstreamIncoming,
};
use crate::config::HashKey;
use crate::error::{self, ProxyError};
use crate::h1codec;
use crate::h1guard::Violation;
use crate::h1pool::{self, Checkout};
use crate::headers::{self, X_REQUEST_ID};
use crate::metrics::{Metrics, Outcome, PoolMetrics, NO_POOL};
use crate::outlier;
use crate::ratelimit::Refused;
use crate::snapshot::{Node, Pool, SnapshotCell};
use crate::upstream::UpstreamError;

/// The most attempts a request can make (1 + retries).
const MAX_ATTEMPTS: usize = 11;
/// How many nodes one request may skip or try before giving up (503).
const EXCLUDE_CAP: usize = 32;

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub https: bool,
    /// Set for the one request whose head the HTTP/1 framing guard refused: it is answered
    /// 400 and the connection closed, and never forwarded.
    pub malformed: Option<Violation>,
    /// `limits.max_header_bytes` of the listener: HTTP/2 header lists are measured against
    /// it here (HTTP/1 heads by hyper's parser).
    pub max_header_bytes: u64,
}

/// Handles of the listener a request arrived on, resolved once when the listener starts
/// (no label lookup per request).
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// `switchyard_rate_limited_total{listener}`.
    pub rate_limited: IntCounter,
}

/// Why a request is refused before routing.
enum Refusal {
    Malformed(Violation),
    /// An HTTP/2 header list over `limits.max_header_bytes` ([`h2_header_list_size`]).
    HeadersTooLarge,
    /// `CONNECT`, or a target form the method does not allow ([`target_refusal`]).
    Target(ProxyError),
    RateLimited(Refused),
    BodyTooLarge,
}

/// State shared by every connection of every listener.
pub struct Proxy {
    pub snapshot: Arc<SnapshotCell>,
    pub metrics: Metrics,
    /// The supervisor's task tracker: upgraded (WebSocket) tunnels are spawned on it so
    /// that shutdown waits for them like for any other connection.
    tracker: TaskTracker,
    /// The access log, when it is on.
    access_log: Option<AccessLog>,
    /// Handles for requests that matched no route.
    no_route: PoolMetrics,
}

impl Proxy {
    pub fn new(
        snapshot: Arc<SnapshotCell>,
        metrics: Metrics,
        tracker: TaskTracker,
        access_log: Option<AccessLog>,
    ) -> Proxy {
        let no_route = metrics.pool(NO_POOL);
        Proxy {
            snapshot,
            metrics,
            tracker,
            access_log,
            no_route,
        }
    }

    /// Serve one request. Everything up to the upstream exchange happens here, before the
    /// returned future is first polled: a refused or unroutable request is answered at
    /// once, and the future of a forwarded one holds only what the exchange needs.
    pub fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        listener: &ListenerInfo,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        let start = Instant::now();
        // A request without an id gets one: sent upstream (see `Forwarding`) and answered.
        let (request_id, generated) = headers::request_id(req.headers());
        // Answers made here take the shape the client reads: gRPC (which exists over HTTP/2
        // only; HTTP/1 requests skip the look-up) or JSON.
        let grpc = req.version() == Version::HTTP_2 && error::is_grpc(req.headers());

        // One load of the snapshot per request; only the matched pool is kept past here.
        let (pool, host, client, refusal, body_limit) = {
            let snap = self.snapshot.load();
            let limits = &snap.limits;
            let client =
                headers::client_addr(conn.peer.ip(), &limits.trusted_proxies, req.headers());
            let host = headers::request_host(req.uri(), req.headers());
            let pool = snap
                .router
                .route(host_str(host.as_ref()), req.uri().path())
                .and_then(|i| snap.pools.get(i).cloned());
            let refusal = if let Some(v) = conn.malformed {
                Some(Refusal::Malformed(v))
            } else if req.version() == Version::HTTP_2
                && h2_header_list_size(&req) > conn.max_header_bytes
            {
                Some(Refusal::HeadersTooLarge)
            } else if let Some(e) = target_refusal(req.method(), req.uri()) {
                Some(Refusal::Target(e))
            } else if let Some(Err(r)) =
                limits.rate_limit.as_ref().map(|rl| rl.check(client, start))
            {
                Some(Refusal::RateLimited(r))
            } else if limits
                .max_body_bytes
                .is_some_and(|max| req.body().size_hint().lower() > max)
            {
                Some(Refusal::BodyTooLarge)
            } else {
                None
            };
            (pool, host, client, refusal, limits.max_body_bytes)
        };
        // Boxed: it lives across the upstream exchange, and inline it would add its size to the
        // request's future twice (here and in `forward`) even with the access log off.
        let log = self.access_log.as_ref().map(|sink| {
            Box::new(PendingLog {
                sink: sink.clone(),
                record: Record {
                    time: SystemTime::now(),
                    client,
                    method: req.method().clone(),
                    host: host_str(host.as_ref()).unwrap_or("").to_string(),
                    path: req.uri().path().to_string(),
                    status: 0,
                    bytes: 0,
                    duration: Duration::ZERO,
                    pool: pool
                        .as_ref()
                        .map_or(NO_POOL, |p| p.name.as_str())
                        .to_string(),
                    node: String::new(),
                    attempts: 0,
                    request_id: request_id.to_str().unwrap_or("").to_string(),
                },
            })
        });
        let http1 = req.version() < Version::HTTP_2;
        // HTTP/1.0 only: whether the request is a HEAD (its answer has no body).
        let http10_head = (req.version() == Version::HTTP_10).then(|| req.method() == Method::HEAD);
        // Answered here: refused, `OPTIONS *`, or no route.
        let asterisk_options = req.method() == Method::OPTIONS && is_asterisk(req.uri());
        let pool = match (refusal, pool) {
            (None, Some(pool)) if !asterisk_options => pool,
            (refusal, pool) => {
                let answer = Answer {
                    grpc,
                    start,
                    request_id,
                    log,
                };
                let metrics = pool.as_ref().map_or(&self.no_route, |p| &p.metrics);
                let resp = match refusal {
                    Some(r) => self.refuse(r, metrics, listener, http1, answer),
                    None if asterisk_options => self.options_asterisk(metrics, answer),
                    None => self.local_answer(ProxyError::NoRoute, metrics, answer),
                };
                return Either::Left(ready(resp));
            }
        };
        let prepared = Prepared::new(
            req,
            &pool,
            &conn,
            client,
            host,
            generated.then(|| request_id.clone()),
        );
        let this = Arc::clone(self);
        Either::Right(async move {
            match this.forward(&pool, prepared, body_limit, start, log).await {
                Ok(mut resp) => {
                    resp.headers_mut().insert(&X_REQUEST_ID, request_id);
                    if let Some(head) = http10_head {
                        http10_framing(&mut resp, head);
                    }
                    resp
                }
                Err((e, log)) => {
                    // The rest of an oversized body is never read: do not wait for it.
                    let close = http1 && matches!(e, ProxyError::BodyTooLarge);
                    let answer = Answer {
                        grpc,
                        start,
                        request_id,
                        log,
                    };
                    let mut resp = this.local_answer(e, &pool.metrics, answer);
                    if close {
                        resp.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    resp
                }
            }
        })
    }

    /// Answer a request refused before routing (see the module docs).
    fn refuse(
        &self,
        refusal: Refusal,
        metrics: &PoolMetrics,
        listener: &ListenerInfo,
        http1: bool,
        answer: Answer,
    ) -> Response<ResponseBody> {
        let mut retry_after = None;
        let (err, close) = match refusal {
            Refusal::Malformed(v) => {
                tracing::debug!(violation = v.as_str(), "malformed request refused");
                (ProxyError::BadRequest, true)
            }
            // HTTP/2 only: the stream is refused, the connection carries on.
            Refusal::HeadersTooLarge => (ProxyError::HeadersTooLarge, false),
            Refusal::Target(e) => (e, http1),
            Refusal::RateLimited(r) => {
                listener.rate_limited.inc();
                retry_after = Some(r.retry_after_secs);
                (ProxyError::RateLimited, false)
            }
            // The body is not read: on HTTP/1.1 the connection cannot carry another request.
            Refusal::BodyTooLarge => (ProxyError::BodyTooLarge, http1),
        };
        let mut resp = self.local_answer(err, metrics, answer);
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if close {
            // hyper closes an HTTP/1 connection after a response carrying this.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// An error answer, JSON or gRPC-shaped. Metrics and the access log record the HTTP
    /// status it stands for even when it is gRPC-shaped (sent as 200): alerts on 5xx see it.
    fn local_answer(
        &self,
        err: ProxyError,
        metrics: &PoolMetrics,
        answer: Answer,
    ) -> Response<ResponseBody> {
        let status = err.status().as_u16();
        let resp = err.into_response_for(answer.grpc);
        self.answered(resp, status, metrics, answer)
    }

    /// `OPTIONS *`: the balancer is the server asked about (see the module docs). RFC 9110
    /// asks for `Content-Length: 0` on an OPTIONS answer without content.
    fn options_asterisk(&self, metrics: &PoolMetrics, answer: Answer) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::full(""));
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.answered(resp, StatusCode::OK.as_u16(), metrics, answer)
    }

    /// Record an answer made here through the same path as proxied ones (metrics, access
    /// log) and give it the request's id.
    fn answered(
        &self,
        mut resp: Response<ResponseBody>,
        status: u16,
        metrics: &PoolMetrics,
        answer: Answer,
    ) -> Response<ResponseBody> {
        drop(Completion {
            in_flight: None,
            metrics: metrics.clone(),
            status,
            start: answer.start,
            bytes: resp.body().size_hint().exact().unwrap_or(0),
            log: answer.log,
        });
        resp.headers_mut().insert(&X_REQUEST_ID, answer.request_id);
        resp
    }

    /// Send the prepared request to the pool's nodes, retrying as the pool's policy allows.
    /// (A plain `fn` returning an `async` block: an `async fn` would keep a second copy of
    /// each argument in its state, and this future is moved on every poll set-up.)
    #[allow(clippy::manual_async_fn)]
    fn forward<'a>(
        &'a self,
        pool: &'a Pool,
        mut p: Prepared,
        body_limit: Option<u64>,
        start: Instant,
        mut log: Option<Box<PendingLog>>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, (ProxyError, Option<Box<PendingLog>>)>>
           + Send
           + 'a {
        async move {
            // The request's bytes for the codec (plain HTTP/1.1 nodes, complete body): the same
            // for every node, so made once, on the first attempt that needs them.
            let mut wire: Vec<u8> = Vec::new();

            let policy = &pool.retry;
            let now_ms = strategies::now_ms();
            pool.budget.record_request(now_ms);
            let (mut body, body_cut) = match request_body(
                p.body,
                policy.attempts > 0,
                pool.request_timeout,
                body_limit,
            )
            .await
            {
                Ok(b) => b,
                Err(e) => return Err((e, log)),
            };

            let max_attempts = (policy.attempts as usize + 1).min(MAX_ATTEMPTS);
            // Nodes this request must not be sent to again: tried ones, and ones found full.
            let mut excluded = [usize::MAX; EXCLUDE_CAP];
            let mut n_excluded = 0;
            let mut last_err = ProxyError::NoHealthyNode;
            let idempotent = retryable_method(&p.method);

            for attempt in 0..max_attempts {
                // Pick a node and claim an in-flight slot atomically: a node that reached
                // `max_connections_per_node` between the pick and the claim is skipped like
                // any saturated node, so concurrent requests never overshoot the cap.
                let picked = loop {
                    let ctx = PickContext {
                        hash: p.hash,
                        exclude: &excluded[..n_excluded],
                        now_ms,
                    };
                    let Some(idx) = pool.strategy.pick(&ctx) else {
                        break None;
                    };
                    let Some(node) = pool.nodes.get(idx) else {
                        break None;
                    };
                    if n_excluded < EXCLUDE_CAP {
                        excluded[n_excluded] = idx;
                        n_excluded += 1;
                    }
                    if let Some(guard) = node.stats.try_start_request() {
                        break Some((node, guard));
                    }
                    if n_excluded == EXCLUDE_CAP {
                        break None;
                    }
                };
                let Some((node, in_flight)) = picked else {
                    break;
                };
                if attempt > 0 {
                    pool.metrics.retries.inc();
                }

                if let Some(l) = log.as_mut() {
                    l.record.attempts = attempt as u32 + 1;
                    l.record.node.clear();
                    l.record.node.push_str(&node.addr);
                }
                let more = attempt + 1 < max_attempts;
                let sent_at = Instant::now();
                let deadline = tokio::time::Instant::from_std(sent_at) + pool.request_timeout;
                // Plain HTTP/1.1 nodes take the per-node pool, which speaks to one node with an
                // origin-form target: through the codec in this task when the body is complete
                // (the request stays here, ready for another attempt), through hyper's
                // connection when it streams. Everything else: the pooled client, absolute URI.
                let pooled = match node.socket_addr {
                    Some(sa) if pool.client.plain_http1() && p.downstream_upgrade.is_none() => {
                        Some(h1pool::Target {
                            conns: &node.conns,
                            addr: sa,
                            deadline,
                            connect_timeout: pool.connect_timeout,
                            max_idle: pool.client.settings.max_idle_per_node,
                        })
                    }
                    _ => None,
                };
                let (result, handed_over, checkout, can_retry) = match (pooled, body.complete()) {
                    (Some(target), Some(data)) => {
                        if wire.is_empty() {
                            h1codec::encode_request(
                                &p.method,
                                p.path_and_query.as_str(),
                                &p.headers,
                                p.forwarding.as_ref(),
                                data.len(),
                                &mut wire,
                            );
                            wire.extend_from_slice(data);
                        }
                        match h1pool::send_wire(target, &wire, &p.method).await {
                            Ok(sent) => (Ok(sent.response), sent.handed_over, None, more),
                            Err(e) => (Err(e), sent_at, None, more),
                        }
                    }
                    (pooled, _) => {
                        if let Some(fwd) = p.forwarding.take() {
                            fwd.apply(&mut p.headers);
                        }
                        // Boxed: the rarer paths, with large futures.
                        Box::pin(self.send_through_hyper(
                            pool,
                            node,
                            pooled,
                            &p.method,
                            &p.path_and_query,
                            &mut p.headers,
                            &mut body,
                            more,
                            idempotent && (policy.on_timeout || policy.on_status != 0),
                            deadline,
                        ))
                        .await
                    }
                };
                let can_retry = more && can_retry;
                let now_ms = strategies::now_ms();
                match result {
                    Ok(mut resp) => {
                        let status = resp.status();
                        // The node's latency, without the time spent opening a connection.
                        node.stats.observe_rtt(handed_over.elapsed());
                        let failed = status.is_server_error();
                        node.metrics.record(if failed {
                            Outcome::HttpError
                        } else {
                            Outcome::Success
                        });
                        outlier::record(pool, node, failed, now_ms);
                        if failed
                            && can_retry
                            && idempotent
                            && policy.retries_status(status.as_u16())
                            && pool.budget.try_retry(now_ms, policy.budget_percent)
                        {
                            last_err = ProxyError::Upstream(UpstreamError::Status(status.as_u16()));
                            continue;
                        }
                        if status == StatusCode::SWITCHING_PROTOCOLS {
                            if let Some(down) = p.downstream_upgrade {
                                let up = hyper::upgrade::on(&mut resp);
                                self.tracker.spawn(tunnel(down, up));
                            }
                        } else {
                            headers::strip_hop_by_hop(resp.headers_mut(), false);
                        }
                        let (rparts, rbody) = resp.into_parts();
                        let completion = Completion {
                            in_flight: Some(in_flight),
                            metrics: pool.metrics.clone(),
                            status: rparts.status.as_u16(),
                            start,
                            bytes: 0,
                            log,
                        };
                        return Ok(Response::from_parts(
                            rparts,
                            ResponseBody::upstream(rbody, completion, deadline, checkout),
                        ));
                    }
                    Err(e) => {
                        drop(in_flight);
                        if body_cut.as_ref().is_some_and(|c| c.load(Ordering::Acquire)) {
                            // The client's body crossed `max_body_bytes` and the request was
                            // aborted: the client's doing, not the node's.
                            return Err((ProxyError::BodyTooLarge, log));
                        }
                        // A node that stops answering must not look fast while its estimate
                        // decays: the time this attempt cost counts as its latency.
                        node.stats.observe_rtt(sent_at.elapsed());
                        let (outcome, retry) = match &e {
                            // Nothing reached the node: safe to retry for any method.
                            UpstreamError::Connect(_) => {
                                (Outcome::ConnectError, policy.on_connect_failure)
                            }
                            UpstreamError::ConnectTimeout => (
                                Outcome::Timeout,
                                policy.on_connect_failure || policy.on_timeout,
                            ),
                            UpstreamError::Timeout => {
                                (Outcome::Timeout, policy.on_timeout && idempotent)
                            }
                            // A reset or close after the request was sent counts as a 502.
                            UpstreamError::Broken(_) | UpstreamError::Status(_) => {
                                (Outcome::HttpError, policy.retries_status(502) && idempotent)
                            }
                        };
                        node.metrics.record(outcome);
                        outlier::record(pool, node, true, now_ms);
                        tracing::debug!(pool = %pool.name, node = %node.addr, error = %e, attempt, "upstream attempt failed");
                        last_err = ProxyError::Upstream(e);
                        if !(can_retry
                            && retry
                            && pool.budget.try_retry(now_ms, policy.budget_percent))
                        {
                            break;
                        }
                    }
                }
            }
            Err((last_err, log))
        }
    }
}

/// The size of an HTTP/2 request's header list as RFC 7541 §4.1 counts it and h2 enforces
/// `SETTINGS_MAX_HEADER_LIST_SIZE`: name + value + 32 for every field, the pseudo-header
/// fields (`:method`, `:scheme`, `:authority`, `:path`) included.
pub fn h2_header_list_size<B>(req: &Request<B>) -> u64 {
    const FIELD: usize = 32;
    let uri = req.uri();
    let mut n = ":method".len() + req.method().as_str().len() + FIELD;
    if let Some(s) = uri.scheme_str() {
        n += ":scheme".len() + s.len() + FIELD;
    }
    if let Some(a) = uri.authority() {
        n += ":authority".len() + a.as_str().len() + FIELD;
    }
    if let Some(pq) = uri.path_and_query() {
        n += ":path".len() + pq.as_str().len() + FIELD;
    }
    for (name, value) in req.headers() {
        n += name.as_str().len() + value.len() + FIELD;
    }
    n as u64
}

/// An HTTP/1.0 client cannot be sent a chunked body: unless the response's length is known
/// (a `Content-Length`, an exact body size, or no body at all), the connection has to end it,
/// and the response says so (`Connection: close`) instead of the `keep-alive` hyper would
/// otherwise announce (see the module docs).
#[cold]
fn http10_framing(resp: &mut Response<ResponseBody>, head: bool) {
    let status = resp.status();
    let known = head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || resp.headers().contains_key(CONTENT_LENGTH)
        || resp.body().size_hint().exact().is_some();
    if !known {
        // hyper adds `keep-alive` to an HTTP/1.1 response head for a client that asked for
        // it, even next to `close` (`fix_keep_alive`); an HTTP/1.0 head without `keep-alive`
        // makes it drop keep-alive instead. (hyper answers an HTTP/1.0 request in HTTP/1.0
        // whatever the response says.)
        *resp.version_mut() = Version::HTTP_10;
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// What an answer made by the balancer needs from its request.
struct Answer {
    /// Answer in gRPC's shape ([`error::is_grpc`]).
    grpc: bool,
    start: Instant,
    request_id: HeaderValue,
    log: Option<Box<PendingLog>>,
}

/// `CONNECT`, an authority-form target (`host:port`) without `CONNECT`, or an
/// asterisk-form target (`*`; HTTP/2's `:path` `*`) without `OPTIONS`: a reverse proxy has
/// nothing to forward them to (see the module docs).
fn target_refusal(method: &Method, uri: &Uri) -> Option<ProxyError> {
    if *method == Method::CONNECT {
        return Some(ProxyError::Connect);
    }
    if is_asterisk(uri) {
        return (*method != Method::OPTIONS).then_some(ProxyError::BadTarget);
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Some(ProxyError::BadTarget);
    }
    None
}

/// `*` as the target (HTTP/1) or `:path` (HTTP/2, whose URI also has a scheme and host).
fn is_asterisk(uri: &Uri) -> bool {
    uri.path() == "*"
}

/// A request taken apart for forwarding: what every attempt needs, computed once.
struct Prepared {
    method: Method,
    path_and_query: PathAndQuery,
    /// The client's headers, hop-by-hop ones removed.
    headers: HeaderMap,
    body: Incoming,
    /// The client's side of an HTTP/1.1 upgrade (WebSocket), when it asked for one.
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The `hash_key` value (0 when the pool hashes nothing).
    hash: u64,
    /// Computed once; inserted into `headers` only if a request goes out through hyper's
    /// client, written straight onto the wire by the codec otherwise.
    forwarding: Option<headers::Forwarding>,
}

impl Prepared {
    /// `host` is the host the request was routed by ([`headers::request_host`]).
    fn new(
        mut req: Request<Incoming>,
        pool: &Pool,
        conn: &ConnInfo,
        client: IpAddr,
        host: Option<HeaderValue>,
        request_id: Option<HeaderValue>,
    ) -> Prepared {
        let upgrade =
            headers::is_upgrade_request(req.headers()) && req.version() == Version::HTTP_11;
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let hash = pool
            .hash_key
            .as_ref()
            .map(|k| hash_for(k, &req, client))
            .unwrap_or(0);
        let (parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The host the request was routed by is the one it goes upstream for: an
        // absolute-form target's or HTTP/2's authority wins over a `Host` header (RFC 9112
        // §3.2.2, RFC 9113 §8.3.1), and a `Host` that disagrees with it is replaced.
        let mut headers = parts.headers;
        if let (Some(_), Some(h)) = (parts.uri.authority(), &host) {
            if headers.get(HOST).is_some_and(|sent| sent != h) {
                headers.insert(HOST, h.clone());
            }
        }
        headers::strip_hop_by_hop(&mut headers, upgrade);
        if parts.version == Version::HTTP_2 {
            headers::join_cookies(&mut headers);
        }
        let forwarding =
            headers::Forwarding::new(&headers, conn.peer.ip(), conn.https, host.as_ref())
                .with_request_id(request_id);
        Prepared {
            method: parts.method,
            path_and_query,
            headers,
            body,
            downstream_upgrade,
            hash,
            forwarding: Some(forwarding),
        }
    }
}

impl Proxy {
    /// One attempt through hyper: the per-node pool's hyper connection (a streamed body to
    /// a plain HTTP/1.1 node) or the pooled client (TLS, HTTP/2, upgrades). A copy of the
    /// body and headers is kept for another attempt only when one may be needed after the
    /// request left (`retry_after_send`) or the client cannot hand an unsent request back;
    /// so with the default policy (retry connect failures only) nothing is copied.
    /// Returns the result, when the request was handed over, the pooled connection, and
    /// whether the request is still here for another attempt.
    #[allow(clippy::too_many_arguments)]
    async fn send_through_hyper(
        &self,
        pool: &Pool,
        node: &Node,
        pooled: Option<h1pool::Target<'_>>,
        method: &Method,
        pq: &PathAndQuery,
        headers: &mut HeaderMap,
        body: &mut RequestBody,
        more: bool,
        retry_after_send: bool,
        deadline: tokio::time::Instant,
    ) -> Attempt {
        let sent_at = Instant::now();
        let copy = if more && (retry_after_send || pooled.is_none()) {
            body.try_clone()
        } else {
            None
        };
        let copied = copy.is_some();
        let this_body = std::mem::replace(body, copy.unwrap_or(RequestBody::Empty));
        let mut up_req = Request::new(this_body);
        *up_req.method_mut() = method.clone();
        *up_req.uri_mut() = match pooled {
            Some(_) => Uri::from(pq.clone()),
            None => upstream_uri(pool.client.scheme(), &node.authority, pq),
        };
        *up_req.version_mut() = pool.client.version();
        *up_req.headers_mut() = if copied {
            headers.clone()
        } else {
            std::mem::take(headers)
        };
        let Some(target) = pooled else {
            let result = pool.client.send(up_req, deadline).await;
            return (
                result.map(|r| r.map(UpstreamIncoming::Hyper)),
                sent_at,
                None,
                copied,
            );
        };
        match h1pool::send_streaming(target, up_req).await {
            Ok((resp, checkout)) => (
                Ok(resp.map(UpstreamIncoming::Hyper)),
                checkout.handed_over,
                Some(checkout),
                copied,
            ),
            Err(h1pool::SendError { error, unsent }) => {
                // The request came back unsent: it can go to another node as it is.
                let returned = match (unsent, copied) {
                    (Some(unsent), false) => {
                        let (parts, unsent_body) = unsent.into_parts();
                        *headers = parts.headers;
                        *body = unsent_body;
                        true
                    }
                    _ => false,
                };
                (Err(error), sent_at, None, copied || returned)
            }
        }
    }
}

/// One attempt's result, when the request was handed to a connection, the pooled hyper
/// connection its body arrives on, and whether the request can be sent again.
type Attempt = (
    Result<Response<UpstreamIncoming>, UpstreamError>,
    Instant,
    Option<Checkout>,
    bool,
);

/// Bodies up to this size are read whole before the first attempt so that a retry can
/// send them again; larger or unsized bodies stream and are sent once.
pub const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// Prepare the client's body for the upstream: empty, buffered for retries, or streaming —
/// cut at `limit` when its length is unknown (an announced length was checked against the
/// limit already). The flag says whether the cut happened.
/// Only buffering waits, in a boxed future: the common cases add nothing to the size of
/// the request's future.
async fn request_body(
    body: Incoming,
    retries_enabled: bool,
    timeout: std::time::Duration,
    limit: Option<u64>,
) -> Result<(RequestBody, Option<Arc<AtomicBool>>), ProxyError> {
    if body.is_end_stream() {
        return Ok((RequestBody::Empty, None));
    }
    let exact = body.size_hint().exact();
    let small = exact.is_some_and(|n| n <= RETRY_BUFFER_LIMIT);
    if !(retries_enabled && small) {
        return Ok(match (limit, exact) {
            (Some(max), None) => {
                let (limited, cut) = LimitedBody::new(body, max);
                (RequestBody::Limited(limited), Some(cut))
            }
            _ => (RequestBody::Streaming(body), None),
        });
    }
    Box::pin(buffer_body(body, timeout)).await
}

async fn buffer_body(
    body: Incoming,
    timeout: Duration,
) -> Result<(RequestBody, Option<Arc<AtomicBool>>), ProxyError> {
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok((RequestBody::Buffered(Some(collected.to_bytes())), None)),
        // The client stopped sending (or went away) before the body was complete.
        Ok(Err(_)) | Err(_) => Err(ProxyError::BadRequest),
    }
}

/// Methods that may be sent twice (RFC 9110 idempotent methods).
pub fn retryable_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// `http://ip:port/path?query` (`https://` for a pool with `tls`) for the pooled client.
fn upstream_uri(scheme: Scheme, authority: &http::uri::Authority, pq: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(pq.clone());
    // Scheme, authority and path are each valid, so the parts always form a URI.
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

fn host_str(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

/// Hash of the request's `hash_key`; falls back to the client address when the key is
/// absent from the request (documented in the README).
fn hash_for(key: &HashKey, req: &Request<Incoming>, client: IpAddr) -> u64 {
    let ip_hash = || match client {
        IpAddr::V4(v4) => strategies::hash_key(&v4.octets()),
        IpAddr::V6(v6) => strategies::hash_key(&v6.octets()),
    };
    match key {
        HashKey::ClientIp => ip_hash(),
        HashKey::Path => strategies::hash_key(req.uri().path().as_bytes()),
        HashKey::Header(name) => req
            .headers()
            .get(name.as_str())
            .map(|v| strategies::hash_key(v.as_bytes()))
            .unwrap_or_else(ip_hash),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| strategies::hash_key(v.as_bytes()))
            })
            .unwrap_or_else(ip_hash),
    }
}

/// Copy bytes both ways between the client and the upstream after a `101`.
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_header_list_size_counts_like_rfc_7541() {
        let req = Request::builder()
            .method("GET")
            .uri("http://a.example/p?q")
            .header("x-a", "12345")
            .header("x-a", "6")
            .body(())
            .expect("request");
        let want = (7 + 3 + 32)
            + (7 + 4 + 32)
            + (10 + 9 + 32)
            + (5 + 4 + 32)
            + (3 + 5 + 32)
            + (3 + 1 + 32);
        assert_eq!(h2_header_list_size(&req), want);
    }
}
