//! Opening a connection to a node: TCP, then TLS for a pool with a `tls` section.
//!
//! Both steps together are bounded by `timeouts.connect` (and by the attempt's deadline,
//! whichever comes first). A failed handshake is a connect failure: nothing was sent, so
//! the request may go to another node. The name sent as SNI and verified is the pool's
//! `tls.server_name`, or else the node's own host from its configured `host:port` (an IP
//! address is verified as an IP); the snapshot computes it once per node
//! ([`super::transport::server_name`]). ALPN offers exactly the pool's `upstream_protocol`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::attempt::Target;
use super::conn::Stream;
use super::error::{TlsSettingsError, UpstreamError};
use super::transport::Transport;

/// A new connection to the target's node, within the connect timeout and the deadline.
pub(crate) async fn connect(t: &Target<'_>) -> Result<Stream, UpstreamError> {
    let timeout = t.transport.settings.connect_timeout;
    let deadline = (tokio::time::Instant::now() + timeout).min(t.deadline);
    match tokio::time::timeout_at(deadline, open(t.transport, t.addr, t.server_name)).await {
        Err(_) => Err(UpstreamError::ConnectTimeout),
        Ok(r) => r,
    }
}

/// TCP, then TLS if the transport has it.
pub(crate) async fn open(
    transport: &Transport,
    addr: SocketAddr,
    server_name: Option<&ServerName<'static>>,
) -> Result<Stream, UpstreamError> {
    let tcp = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(UpstreamError::ConnectTimeout),
        Err(e) => return Err(UpstreamError::Connect(e)),
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = transport.tls.as_ref() else {
        return Ok(Stream::Plain(tcp));
    };
    let connector = tls
        .connector
        .as_ref()
        .map_err(|e| UpstreamError::TlsSettings(TlsSettingsError::Client(Arc::clone(e))))?;
    let name = server_name.ok_or(UpstreamError::TlsSettings(TlsSettingsError::NoServerName))?;
    match connector.connect(name.clone(), tcp).await {
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
        Err(source) => Err(UpstreamError::Handshake {
            name: name.to_str().into_owned(),
            source,
        }),
    }
}
