//! A request taken apart for forwarding ([`Prepared`]): what every attempt needs, computed
//! once before the first — the outgoing head with the forwarding headers, the hash of the
//! pool's `hash_key`, the deadline for the response head — and the client's body made ready
//! to send: empty, buffered for retries, or streamed.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{HeaderValue, COOKIE, HOST};
use http::uri::PathAndQuery;
use http::{Request, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::balance::snapshot::{HashBy, Pool};
use crate::proxy::answer::ProxyError;
use crate::proxy::headers;
use crate::upstream::{Buffered, Outgoing, RequestBody};

/// A request taken apart for forwarding: what every attempt needs, computed once.
pub(super) struct Prepared {
    /// What goes to the nodes; its body is filled in by [`request_body`].
    pub(super) out: Outgoing<headers::Forwarding>,
    /// The client's body, until it is made the outgoing one.
    pub(super) incoming: Incoming,
    /// The client's side of an HTTP/1.1 upgrade (WebSocket), when it asked for one.
    pub(super) downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The `hash_key` value (0 when the pool hashes nothing).
    pub(super) hash: u64,
    /// Until the response head: `timeouts.request`, or less when a gRPC client's
    /// `grpc-timeout` asks for less.
    pub(super) timeout: Duration,
}

impl Prepared {
    /// `host` is the host the request was routed by ([`headers::request_host`]); `peer` and
    /// `https` describe the client connection; `request_id` is a generated id to send.
    pub(super) fn new(
        mut req: Request<Incoming>,
        pool: &Pool,
        (peer, https): (IpAddr, bool),
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
        let forwarding =
            headers::Forwarding::new(&headers, peer, https).with_request_id(request_id);
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
pub(super) async fn request_body(
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
