//! Opening a connection to a node: TCP, then TLS for a pool with a `tls` section.
//!
//! Both steps together are bounded by `timeouts.connect` (and by the attempt's deadline,
//! whichever comes first). A failed handshake is a connect failure: nothing was sent, so
//! the request may go to another node. The name sent as SNI and verified is the pool's
//! `tls.server_name`, or else the node's own host from its configured `host:port` (an IP
//! address is verified as an IP); the snapshot computes it once per node
//! ([`super::server_name`]). ALPN offers exactly the pool's `upstream_protocol`.
//!
//! [`Stream`] is what every transport reads and writes: plain TCP or TLS over TCP.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::error::UpstreamError;
use super::{Target, Transport};

/// A connection to a node.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: a rustls connection is large, and a plain stream need not carry its size.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The TLS half of a pool's transport.
pub(crate) struct TlsConnect {
    /// The rustls client, or why the pool's TLS settings could not be built: then every
    /// connect fails with that reason (fail closed) until a reload fixes it.
    pub connector: Result<tokio_rustls::TlsConnector, String>,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("usable", &self.connector.is_ok())
            .finish_non_exhaustive()
    }
}

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
        .map_err(|e| UpstreamError::TlsSettings(e.clone()))?;
    let name = server_name.ok_or_else(|| {
        UpstreamError::TlsSettings(
            "the node's host is not a valid TLS server name: set tls.server_name".to_string(),
        )
    })?;
    match connector.connect(name.clone(), tcp).await {
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
        Err(source) => Err(UpstreamError::Handshake {
            name: name.to_str().into_owned(),
            source,
        }),
    }
}

impl Stream {
    /// Did TLS negotiate HTTP/2 (ALPN `h2`)?
    pub fn alpn_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2),
        }
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

/// The TLS client of a pool, or why it cannot be built.
pub(crate) fn tls_connect(pool: &str, t: &super::TlsSettings, h2: bool) -> TlsConnect {
    if t.insecure_skip_verify {
        tracing::warn!(pool, "tls.insecure_skip_verify is on: upstream certificates are not verified, so the connection to this pool's nodes is not authenticated");
    }
    let connector = match &t.ca {
        Some(Err(e)) => Err(e.clone()),
        _ => crate::tls::client_config(
            t.insecure_skip_verify,
            t.ca.as_ref()
                .and_then(|r| r.as_ref().ok())
                .map(|(p, pem)| (p.as_path(), pem.as_slice())),
            h2,
        )
        .map(tokio_rustls::TlsConnector::from)
        .map_err(|e| e.to_string()),
    };
    if let Err(e) = &connector {
        tracing::error!(pool, error = %e, "cannot set up TLS to this pool's nodes; its requests fail (502) until the config is fixed and reloaded");
    }
    TlsConnect { connector }
}
