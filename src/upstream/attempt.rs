//! One attempt: the node and bounds the request path hands in ([`Target`]), the answer it
//! gets back ([`Exchange`]), and which requests may be sent twice ([`idempotent`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::Authority;
use http::{Method, Response};
use rustls_pki_types::ServerName;

use super::conn::Upgraded;
use super::conns::NodeConns;
use super::response_body::Body;
use super::transport::Transport;

/// One attempt's node and bounds.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub transport: &'a Transport,
    pub conns: &'a Arc<NodeConns>,
    /// The address to connect to (resolved when the snapshot was built).
    pub addr: SocketAddr,
    /// The same as an authority: the `:authority` of last resort for HTTP/2.
    pub node: &'a Authority,
    /// The TLS name to verify ([`crate::upstream::server_name`]).
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

/// Methods that may be sent twice (RFC 9110 §9.2.2 idempotent methods).
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}
