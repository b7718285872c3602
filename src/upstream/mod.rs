//! The upstream layer: every way of talking to a node, behind one entry.
//!
//! The request path calls [`send`] once per attempt with the node ([`Target`]) and the
//! request ([`Outgoing`]: method, target, end-to-end headers, the authority, the headers it
//! adds, the body), and gets back the response head and body ([`Exchange`]) or a typed
//! [`UpstreamError`] that says whose fault it was and how far the request got. Which
//! transport carries the request is decided here, from the pool's settings and the body:
//!
//! | pool speaks | body | transport |
//! | --- | --- | --- |
//! | HTTP/1.1 (plain or TLS) | complete (none, or buffered for retries), or an upgrade | [`codec`]: written and read in the request's own task |
//! | HTTP/1.1 (plain or TLS) | streamed | [`h1`]: hyper's client connection, full duplex |
//! | HTTP/2 (h2c, or h2 by ALPN) | any | [`h2`]: the node's one multiplexed hyper connection |
//!
//! All three keep their connections per node ([`NodeConns`]), open them the same way
//! ([`connect`]: TCP, then TLS), and put headers on the wire by the same rules ([`wire`]).
//! Nothing here knows about routing, retries or metrics: those stay with the request path,
//! which calls down into this layer and never the other way round.
//!
//! Timeouts: the connect (TCP and TLS) is bounded by `timeouts.connect`; the response head
//! by the attempt's deadline (`timeouts.request`, or less when a gRPC client asks for
//! less). The body is bounded by inactivity (`timeouts.idle`) in both directions: the request
//! body here ([`body::IdleTimer`]), the response body where the request path relays it.

pub mod body;
pub mod codec;
mod connect;
mod conns;
mod error;
mod h1;
mod h2;
pub mod wire;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Method, Response};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use body::{Body, BodyError, Buffered, ClientBodyError, IdleTimer, RequestBody};
pub use conns::NodeConns;
pub use error::{error_chain, Kind, UpstreamError};
pub use wire::{ExtraHeaders, Outgoing};

/// Idle upstream connections are closed after this long; shorter than the usual 60 s+
/// keep-alive of backends so that we close first and never send on a connection the
/// backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// The protocol a pool speaks to its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
}

/// A pool's transport settings. A reload that changes them makes a new [`Transport`], and
/// the nodes' connections are not carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    pub connect_timeout: Duration,
    pub protocol: Protocol,
    /// Idle connections kept per node.
    pub max_idle_per_node: usize,
    /// HTTPS to the nodes.
    pub tls: Option<TlsSettings>,
}

/// A pool's `tls` section, with its CA file read: a reload after the CA file changed on
/// disk compares unequal, and builds a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The name every node is verified as; `None`: each node's own host.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// The CA file (resolved path) and its content, or why it could not be read.
    pub ca: Option<Result<(PathBuf, Vec<u8>), String>>,
}

/// How a pool talks to its nodes: settings, and the TLS client built from them once.
#[derive(Debug, Clone)]
pub struct Transport {
    pub settings: TransportSettings,
    tls: Option<Arc<connect::TlsConnect>>,
}

impl Transport {
    /// `pool` names the pool in logs (TLS settings problems are logged here).
    pub fn new(pool: &str, settings: TransportSettings) -> Transport {
        let h2 = settings.protocol == Protocol::H2;
        let tls = settings
            .tls
            .as_ref()
            .map(|t| Arc::new(connect::tls_connect(pool, t, h2)));
        Transport { settings, tls }
    }

    /// `https` for a pool with TLS.
    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    pub fn is_h2(&self) -> bool {
        self.settings.protocol == Protocol::H2
    }
}

/// The name a node's certificate is verified as: the pool's `tls.server_name`, or the host
/// of the node's configured `host:port`. `None` for a plain pool, or a name that is no valid
/// DNS name or IP address (then connecting fails with that reason).
pub fn server_name(tls: Option<&TlsSettings>, node_addr: &str) -> Option<ServerName<'static>> {
    let tls = tls?;
    match &tls.server_name {
        Some(n) => ServerName::try_from(n.clone()).ok(),
        None => crate::tls::node_server_name(node_addr),
    }
}

/// One attempt's node and bounds.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub transport: &'a Transport,
    pub conns: &'a Arc<NodeConns>,
    /// The address to connect to (resolved when the snapshot was built).
    pub addr: SocketAddr,
    /// The same as an authority: the `:authority` of last resort for HTTP/2.
    pub node: &'a Authority,
    /// The TLS name to verify ([`server_name`]).
    pub server_name: Option<&'a ServerName<'static>>,
    /// The response head must have arrived by then.
    pub deadline: tokio::time::Instant,
}

/// A node's answer.
#[derive(Debug)]
pub struct Exchange {
    pub response: Response<Body>,
    /// When the request was handed to a connection: the node's latency is measured from
    /// here, so opening a new connection does not count as the node being slow.
    pub handed_over: Instant,
    /// After a `101` to an upgrade request: the node's side of the tunnel. Boxed: rare, and
    /// the exchange is moved up through the layers on every request.
    pub upgraded: Option<Box<Upgraded>>,
}

/// Send one attempt to the target's node. On an error, `out` still holds the request when
/// it can be sent again ([`RequestBody::is_sendable`]).
pub async fn send<E: ExtraHeaders>(
    t: &Target<'_>,
    out: &mut Outgoing<E>,
) -> Result<Exchange, UpstreamError> {
    if t.transport.is_h2() {
        // Boxed, like the streamed case below: the codec's plain HTTP/1.1 requests are the
        // hot path, and their future should not carry the size of the others.
        return Box::pin(h2::send(t, out)).await;
    }
    if out.body.complete().is_some() {
        h1::send_codec(t, out).await
    } else {
        Box::pin(h1::send_streaming(t, out)).await
    }
}

/// One request on a fresh connection that is not kept (health probes): so a node that
/// stopped accepting connections is noticed even while an old connection still works. The
/// caller bounds the whole exchange with its own timeout.
pub async fn probe(
    transport: &Transport,
    addr: SocketAddr,
    node: &Authority,
    server_name: Option<&ServerName<'static>>,
    out: &mut Outgoing<()>,
) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
    let stream = connect::open(transport, addr, server_name).await?;
    let req = out.hyper_request(transport.is_h2(), transport.scheme(), node);
    if transport.is_h2() {
        let mut sender = h2::handshake(stream).await?;
        sender
            .send_request(req)
            .await
            .map_err(UpstreamError::from_hyper)
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender
            .send_request(req)
            .await
            .map_err(UpstreamError::from_hyper)
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2 idempotent methods).
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The node's side of an upgraded connection (a WebSocket after `101`): bytes the node sent
/// right after its `101` are read first.
#[derive(Debug)]
pub struct Upgraded(codec::Conn);

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
