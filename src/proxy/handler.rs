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
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, RETRY_AFTER};
use http::uri::Uri;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio_util::task::TaskTracker;

use crate::balance::ratelimit::Refused;
use crate::balance::snapshot::{Pool, SnapshotCell};
use crate::metrics::{Metrics, PoolMetrics, NO_POOL};
use crate::proxy::accesslog::{AccessLog, Record};
use crate::proxy::answer::{self, ProxyError, Violation};
use crate::proxy::body::{Completion, PendingLog, ResponseBody};
use crate::proxy::forward::forward;
use crate::proxy::headers::{self, X_REQUEST_ID};
use crate::proxy::prepare::Prepared;

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

/// What the checks before routing and the route found.
struct Routed {
    /// The matched pool; `None`: no route.
    pool: Option<Arc<Pool>>,
    /// The host the request was routed by (`headers::request_host`).
    host: Option<HeaderValue>,
    /// The client address (`X-Forwarded-For`'s behind `trusted_proxies`).
    client: IpAddr,
    refusal: Option<Refusal>,
    /// `limits.max_body_bytes`.
    body_limit: Option<u64>,
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
        let routed = self.route(&req, &conn, start);
        let log = self.pending_log(&req, &routed, &request_id);
        let http1 = req.version() < Version::HTTP_2;
        // HTTP/1.0 only: whether the request is a HEAD (its answer has no body).
        let http10_head = (req.version() == Version::HTTP_10).then(|| req.method() == Method::HEAD);
        // Answered here: refused, `OPTIONS *`, or no route.
        let asterisk_options = req.method() == Method::OPTIONS && is_asterisk(req.uri());
        let Routed {
            pool,
            host,
            client,
            refusal,
            body_limit,
        } = routed;
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
            (conn.peer.ip(), conn.https),
            client,
            host,
            generated.then(|| request_id.clone()),
        );
        let this = Arc::clone(self);
        Either::Right(async move {
            match forward(&this.tracker, &pool, prepared, body_limit, start, log).await {
                Ok(mut resp) => {
                    resp.headers_mut().insert(&X_REQUEST_ID, request_id);
                    if let Some(head) = http10_head {
                        http10_framing(&mut resp, head);
                    }
                    resp
                }
                Err((e, log)) => {
                    let answer = Answer {
                        grpc,
                        head,
                        start,
                        request_id,
                        log,
                    };
                    this.failed(e, &pool.metrics, http1, answer)
                }
            }
        })
    }

    /// The checks before routing, and the route: one load of the snapshot per request, and
    /// only the matched pool is kept past here.
    fn route(&self, req: &Request<Incoming>, conn: &ConnInfo, start: Instant) -> Routed {
        let snap = self.snapshot.load();
        let limits = &snap.limits;
        let client = headers::client_addr(conn.peer.ip(), &limits.trusted_proxies, req.headers());
        let host = headers::request_host(req.uri(), req.headers());
        let pool = snap
            .router
            .route(host_str(host.as_ref()), req.uri().path())
            .and_then(|i| snap.pools.get(i).cloned());
        let refusal = if let Some(v) = conn.malformed {
            Some(Refusal::Malformed(v))
        } else if req.version() == Version::HTTP_2
            && h2_header_list_size(req) > conn.max_header_bytes
        {
            Some(Refusal::HeadersTooLarge)
        } else if let Some(e) = target_refusal(req.method(), req.uri()) {
            Some(Refusal::Target(e))
        } else if let Some(Err(r)) = limits.rate_limit.as_ref().map(|rl| rl.check(client, start)) {
            Some(Refusal::RateLimited(r))
        } else if limits
            .max_body_bytes
            .is_some_and(|max| req.body().size_hint().lower() > max)
        {
            Some(Refusal::BodyTooLarge)
        } else {
            None
        };
        Routed {
            pool,
            host,
            client,
            refusal,
            body_limit: limits.max_body_bytes,
        }
    }

    /// The access-log line of this request, when the access log is on. Boxed: it lives
    /// across the upstream exchange, and inline it would add its size to the request's
    /// future twice (here and in `forward`) even with the access log off.
    fn pending_log(
        &self,
        req: &Request<Incoming>,
        routed: &Routed,
        request_id: &HeaderValue,
    ) -> Option<Box<PendingLog>> {
        let sink = self.access_log.as_ref()?;
        Some(Box::new(PendingLog {
            sink: sink.clone(),
            record: Record {
                time: SystemTime::now(),
                client: routed.client,
                method: req.method().clone(),
                host: host_str(routed.host.as_ref()).unwrap_or("").to_string(),
                path: req.uri().path().to_string(),
                status: 0,
                bytes: 0,
                duration: Duration::ZERO,
                pool: routed
                    .pool
                    .as_ref()
                    .map_or(NO_POOL, |p| p.name.as_str())
                    .to_string(),
                node: String::new(),
                attempts: 0,
                request_id: request_id.to_str().unwrap_or("").to_string(),
            },
        }))
    }

    /// The answer to a forwarded request that got no answer to pass on.
    fn failed(
        &self,
        err: ProxyError,
        metrics: &PoolMetrics,
        http1: bool,
        answer: Answer,
    ) -> Response<ResponseBody> {
        // The rest of an oversized body is never read: do not wait for it.
        let close = http1 && matches!(err, ProxyError::BodyTooLarge);
        closing(self.local_answer(err, metrics, answer), close)
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
        closing(resp, close)
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

/// `resp`, with `Connection: close` when `close`: hyper closes an HTTP/1 connection after a
/// response carrying it.
fn closing(mut resp: Response<ResponseBody>, close: bool) -> Response<ResponseBody> {
    if close {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
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

fn host_str(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
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
