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
//! | HTTP/1.1 (plain or TLS) | streamed | `h1.rs`: hyper's client connection, full duplex |
//! | HTTP/2 (h2c, or h2 by ALPN) | any | `h2.rs`: the node's one multiplexed hyper connection |
//!
//! All three keep their connections per node ([`NodeConns`]), open them the same way
//! (`connect.rs`: TCP, then TLS), and put headers on the wire by the same rules ([`wire`]).
//! Nothing here knows about routing, retries, metrics or the config file: those stay with
//! the layers above, which call down into this one and never the other way round. What it
//! may import: the TLS client configuration (`crate::tls`) and `crate::util`.
//!
//! The files, each importing only the ones listed before it (this `mod.rs` defines nothing
//! they import):
//! - `conn.rs`: a connection's byte stream (TCP or TLS), the codec's keep-alive
//!   connection, and the tunnel it becomes after a `101`;
//! - `request_body.rs`: the request body on its way out, and the inactivity timer of
//!   streamed bodies; `conns.rs`: the idle connections of one node;
//! - `transport.rs`: a pool's settings and the TLS client built from them once;
//! - `codec.rs`: the own HTTP/1.1 codec; `response_body.rs`: the node's answer's body;
//! - `attempt.rs`: one attempt's node and bounds, and its answer; `error.rs`: why an
//!   attempt failed; `wire.rs`: header rules on the wire;
//! - `connect.rs`: TCP, then TLS; `h1.rs`, `h2.rs`: the two hyper transports.
//!
//! Timeouts: the connect (TCP and TLS) is bounded by `timeouts.connect`; the response head
//! by the attempt's deadline (`timeouts.request`, or less when a gRPC client asks for
//! less). The body is bounded by inactivity (`timeouts.idle`) in both directions: the request
//! body here ([`IdleTimer`]), the response body where the request path relays it.

mod attempt;
pub mod codec;
mod conn;
mod connect;
mod conns;
mod error;
mod h1;
mod h2;
mod request_body;
mod response_body;
mod transport;
pub mod wire;

use std::net::SocketAddr;

use http::uri::Authority;
use http::Response;
use rustls_pki_types::ServerName;

pub use attempt::{idempotent, Exchange, Target};
pub use conn::Upgraded;
pub use conns::NodeConns;
pub use error::{Kind, TlsSettingsError, UpstreamError};
pub use request_body::{BodyError, Buffered, ClientBodyError, IdleTimer, RequestBody};
pub use response_body::Body;
pub use transport::{server_name, Protocol, TlsSettings, Transport, TransportSettings};
pub use wire::{ExtraHeaders, Outgoing};

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
