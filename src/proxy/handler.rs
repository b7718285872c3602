//! The request path: router → pool → strategy → upstream → response.
//!
//! [`Proxy::handle`] is called once per request by the listener. It loads the snapshot once,
//! routes, picks a node, forwards with the header rules, retries on another node when the
//! pool's policy allows, and returns the upstream's response with a body wrapper that ends
//! the in-flight accounting when the body ends. Protocol upgrades (WebSocket) are tunnelled
//! both ways after the upstream's `101`.
//!
//! Before routing, every request goes through the checks that apply to the listener as a
//! whole, in this order: a head the HTTP/1 framing guard refused ([`crate::downstream::h1guard`]) → 400
//! and the connection closed, or an HTTP/2 header list over `limits.max_header_bytes`
//! ([`h2_header_list_size`]; h2's own cap is set higher, see [`crate::downstream::listener`]) → 431 on
//! that stream; the target form (below); the client's
//! rate limit ([`crate::balance::ratelimit`]) → 429 with `Retry-After`; an announced body length over
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
//! Answers made here are JSON, or gRPC-shaped for gRPC requests ([`crate::proxy::answer`]).
//!
//! HTTP/1.0 clients: HTTP/1.0 has no chunked encoding, so a node's response of unknown
//! length can only be ended by closing the connection — and hyper, asked for keep-alive,
//! would still announce `Connection: keep-alive` and then close, leaving the client waiting
//! for an answer that never comes (`ab -k` counts failures). Such a response is sent as an
//! HTTP/1.0 head with `Connection: close` (`http10_framing`); one with a known length keeps
//! the connection alive as asked. (The answers made here all have a known length.)

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{ready, Either};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, RETRY_AFTER};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use prometheus::IntCounter;
use strategies::PickContext;
use tokio_util::task::TaskTracker;

use crate::balance::outlier;
use crate::balance::ratelimit::Refused;
use crate::balance::snapshot::{HashBy, Pool, SnapshotCell};
use crate::metrics::{Metrics, Outcome, PoolMetrics, NO_POOL};
use crate::proxy::accesslog::{AccessLog, Record};
use crate::proxy::answer::{self, ProxyError, Violation};
use crate::proxy::body::{Completion, PendingLog, ResponseBody};
use crate::proxy::headers::{self, X_REQUEST_ID};
use crate::upstream::{
    self, Buffered, ClientBodyError, Kind, Outgoing, RequestBody, Target, UpstreamError,
};
use crate::util::clock;

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
    /// that shutdown waits for them like for any other connection ([`crate::proxy::tunnel`]).
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
        let grpc = req.version() == Version::HTTP_2 && answer::is_grpc(req.headers());
        let head = req.method() == Method::HEAD;

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
                    head,
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
                        head,
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
        if answer.head {
            let len = resp.body().size_hint().exact().unwrap_or(0);
            if len > 0 {
                resp.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(len));
                *resp.body_mut() = ResponseBody::full("");
            }
        }
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
            let policy = &pool.retry;
            let now_ms = clock::now_ms();
            pool.budget.record_request(now_ms);
            p.out.body = match request_body(
                p.incoming,
                policy.attempts > 0 || p.out.upgrade,
                pool.request_timeout,
                body_limit,
                pool.idle_timeout,
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
            let idempotent = upstream::idempotent(&p.out.method);

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
                let sent_at = Instant::now();
                let target = Target {
                    transport: &pool.transport,
                    conns: &node.conns,
                    addr: node.socket_addr,
                    node: &node.authority,
                    server_name: node.server_name.as_ref(),
                    deadline: tokio::time::Instant::from_std(sent_at) + p.timeout,
                };
                let result = upstream::send(&target, &mut p.out).await;
                // Another attempt needs the request still here, and a try left.
                let can_retry = attempt + 1 < max_attempts && p.out.body.is_sendable();
                let now_ms = clock::now_ms();
                match result {
                    Ok(ex) => {
                        let mut resp = ex.response;
                        let status = resp.status();
                        // The node's latency, without the time spent opening a connection.
                        node.stats.observe_rtt(ex.handed_over.elapsed());
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
                            last_err = ProxyError::UpstreamStatus(status.as_u16());
                            continue;
                        }
                        match (ex.upgraded, p.downstream_upgrade.take()) {
                            (Some(up), Some(down)) => {
                                self.tracker.spawn(crate::proxy::tunnel::run(
                                    down,
                                    up,
                                    pool.idle_timeout,
                                ));
                            }
                            _ => headers::strip_hop_by_hop(resp.headers_mut(), false),
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
                            ResponseBody::upstream(rbody, completion, pool.idle_timeout),
                        ));
                    }
                    Err(e) => {
                        drop(in_flight);
                        let kind = e.kind();
                        if kind == Kind::ClientBody {
                            // The client's body broke (or crossed `max_body_bytes`, or
                            // stalled): the client's doing, not the node's — nothing is
                            // held against the node and nothing is retried.
                            tracing::debug!(pool = %pool.name, error = %crate::util::report::error_chain(&e), "request body failed");
                            return Err((client_body_error(&e), log));
                        }
                        // A node that stops answering must not look fast while its estimate
                        // decays: the time this attempt cost counts as its latency.
                        node.stats.observe_rtt(sent_at.elapsed());
                        let (outcome, retry) = match kind {
                            // Nothing reached the node: safe to retry for any method.
                            Kind::Connect => (Outcome::ConnectError, policy.on_connect_failure),
                            Kind::ConnectTimeout => (
                                Outcome::Timeout,
                                policy.on_connect_failure || policy.on_timeout,
                            ),
                            Kind::Timeout => (Outcome::Timeout, policy.on_timeout && idempotent),
                            // A reset or close after the request was sent counts as a 502.
                            Kind::Broken | Kind::ClientBody => {
                                (Outcome::HttpError, policy.retries_status(502) && idempotent)
                            }
                        };
                        node.metrics.record(outcome);
                        outlier::record(pool, node, true, now_ms);
                        tracing::debug!(pool = %pool.name, node = %node.addr, error = %crate::util::report::error_chain(&e), attempt, "upstream attempt failed");
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

/// The answer to a request whose own body failed.
fn client_body_error(e: &UpstreamError) -> ProxyError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<ClientBodyError>() {
            return match b {
                ClientBodyError::TooLarge => ProxyError::BodyTooLarge,
                ClientBodyError::Idle => ProxyError::RequestTimeout,
                ClientBodyError::Failed(_) => ProxyError::BadRequest,
            };
        }
        cur = err.source();
    }
    ProxyError::BadRequest
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
    /// Answer in gRPC's shape ([`answer::is_grpc`]).
    grpc: bool,
    /// The request is a HEAD: the answer keeps its `Content-Length` and sends no body
    /// (hyper leaves out a HEAD answer's body over HTTP/1.1, but sends it over HTTP/2, where
    /// DATA on a HEAD stream is a protocol error).
    head: bool,
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
    /// What goes to the nodes; its body is filled in by [`request_body`].
    out: Outgoing<headers::Forwarding>,
    /// The client's body, until it is made the outgoing one.
    incoming: Incoming,
    /// The client's side of an HTTP/1.1 upgrade (WebSocket), when it asked for one.
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The `hash_key` value (0 when the pool hashes nothing).
    hash: u64,
    /// Until the response head: `timeouts.request`, or less when a gRPC client's
    /// `grpc-timeout` asks for less.
    timeout: Duration,
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
        // An upgrade goes through when the node speaks HTTP/1.1 (a tunnel needs the
        // connection itself) and the request carries no body (a WebSocket handshake is a
        // GET); otherwise the request is served as a plain one.
        let upgrade = headers::is_upgrade_request(req.headers())
            && req.version() == Version::HTTP_11
            && !pool.transport.is_h2()
            && req.body().is_end_stream();
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let hash = pool
            .hash_by
            .as_ref()
            .map(|k| hash_for(k, &req, client))
            .unwrap_or(0);
        // gRPC is HTTP/2 only: HTTP/1 requests skip the header lookup.
        let timeout = if req.version() == Version::HTTP_2 {
            headers::grpc_timeout(req.headers())
                .map_or(pool.request_timeout, |t| t.min(pool.request_timeout))
        } else {
            pool.request_timeout
        };
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
        if parts.version == Version::HTTP_2 && !pool.transport.is_h2() {
            headers::join_cookies(&mut headers);
        }
        let forwarding = headers::Forwarding::new(&headers, conn.peer.ip(), conn.https)
            .with_request_id(request_id);
        Prepared {
            out: Outgoing::new(
                parts.method,
                path_and_query,
                headers,
                host,
                forwarding,
                RequestBody::Empty,
                upgrade,
            ),
            incoming: body,
            downstream_upgrade,
            hash,
            timeout,
        }
    }
}

/// Bodies up to this size are read whole before the first attempt so that a retry can
/// send them again; larger or unsized bodies stream and are sent once.
pub const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// Prepare the client's body for the upstream: empty, buffered for retries (or for an
/// upgrade, which needs its request complete), or streaming — cut at `limit` when its length
/// is unknown (an announced length was checked against the limit already), and after `idle`
/// without data. Only buffering waits, in a boxed future: the common cases add nothing to
/// the size of the request's future.
async fn request_body(
    body: Incoming,
    buffer_small: bool,
    timeout: Duration,
    limit: Option<u64>,
    idle: Duration,
) -> Result<RequestBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(RequestBody::Empty);
    }
    let exact = body.size_hint().exact();
    let small = exact.is_some_and(|n| n <= RETRY_BUFFER_LIMIT);
    if !(buffer_small && small) {
        let limit = if exact.is_none() { limit } else { None };
        return Ok(RequestBody::streaming(body, limit, idle));
    }
    Box::pin(buffer_body(body, timeout)).await
}

async fn buffer_body(body: Incoming, timeout: Duration) -> Result<RequestBody, ProxyError> {
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => {
            let trailers = collected.trailers().cloned();
            Ok(RequestBody::Buffered(Buffered::new(
                collected.to_bytes(),
                trailers,
            )))
        }
        // The client stopped sending (or went away) before the body was complete.
        Ok(Err(_)) => Err(ProxyError::BadRequest),
        Err(_) => Err(ProxyError::RequestTimeout),
    }
}

fn host_str(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

/// Hash of the request's `hash_key`; falls back to the client address when the key is
/// absent from the request (documented in the README).
fn hash_for(key: &HashBy, req: &Request<Incoming>, client: IpAddr) -> u64 {
    let ip_hash = || match client {
        IpAddr::V4(v4) => strategies::hash_key(&v4.octets()),
        IpAddr::V6(v6) => strategies::hash_key(&v6.octets()),
    };
    match key {
        HashBy::ClientIp => ip_hash(),
        HashBy::Path => strategies::hash_key(req.uri().path().as_bytes()),
        HashBy::Header(name) => req
            .headers()
            .get(name)
            .map(|v| strategies::hash_key(v.as_bytes()))
            .unwrap_or_else(ip_hash),
        HashBy::Cookie(name) => req
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
