//! The upstream client: a keep-alive connection pool per pool, with connect and request
//! timeouts, and failures sorted into the classes the retry logic and the metrics need.
//!
//! Built on hyper-util's pooled client (the production piece of the hyper ecosystem). One
//! client per pool, kept across snapshot swaps while its settings are unchanged, so that a
//! reload or a Redis update does not throw away warm connections. Requests to pools that
//! speak plain HTTP/1.1 do not use it: they go through each node's own connections
//! ([`crate::h1pool`], [`crate::h1codec`]); this client serves TLS and HTTP/2 pools and
//! protocol upgrades.
//!
//! A pool with a `tls` section speaks HTTPS through [`UpstreamConnector`]: TCP with
//! hyper-util's connector, then a rustls handshake (settings from `tls::client_config`)
//! bounded by the connect timeout. The name sent as SNI and verified is `tls.server_name`,
//! or else each node's own host from its configured `host:port` (an IP address is verified
//! as an IP); nodes are dialled by the address resolved at snapshot build, so the client
//! keeps a map from that address to the node's name ([`UpstreamClient::set_node_names`]).
//! A failed handshake is a connect failure: nothing was sent, so it may be retried, and
//! the client gets 502. `upstream_protocol: h2` is HTTP/2 by ALPN over TLS, or with prior
//! knowledge (h2c) over plain TCP.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Scheme;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::config::{LoadedConfig, UpstreamProtocol, UpstreamTlsConfig};

/// Idle upstream connections are closed after this long; shorter than the usual 60 s+
/// keep-alive of backends so that we close first and never send on a connection the
/// backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Settings that, when changed by a reload, require a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    /// Idle connections kept per node.
    pub max_idle_per_node: usize,
    /// HTTPS to the nodes (the pool's `tls` section).
    pub tls: Option<UpstreamTlsSettings>,
}

/// A pool's `tls` section with its CA file read, so that a reload after the CA file
/// changed on disk builds a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsSettings {
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// `ca_file` resolved against the config file's directory.
    pub ca_file: Option<PathBuf>,
    /// The CA file's content, or why it could not be read.
    pub ca_pem: Option<Result<Vec<u8>, String>>,
}

impl UpstreamTlsSettings {
    pub fn from_config(cfg: &UpstreamTlsConfig, loaded: &LoadedConfig) -> UpstreamTlsSettings {
        let ca_file = cfg.ca_file.as_deref().map(|p| loaded.resolve(p));
        let ca_pem = ca_file.as_ref().map(|p| {
            std::fs::read(p).map_err(|e| format!("cannot read CA file {}: {e}", p.display()))
        });
        UpstreamTlsSettings {
            server_name: cfg.server_name.clone(),
            insecure_skip_verify: cfg.insecure_skip_verify,
            ca_file,
            ca_pem,
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No TCP connection could be made: nothing of the request reached the node, so any
    /// request may be retried.
    #[error("connecting to the upstream failed: {0}")]
    Connect(String),
    /// The TCP connect did not finish within `timeouts.connect`.
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The response headers did not arrive within `timeouts.request`.
    #[error("the upstream did not answer within the request timeout")]
    Timeout,
    /// The connection broke after the request was (at least partly) sent.
    #[error("the upstream connection failed: {0}")]
    Broken(String),
    /// The upstream answered with a retryable 5xx and every retry was used up.
    #[error("the upstream answered {0}")]
    Status(u16),
}

/// A pooled HTTP client for one pool's nodes.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    client: Client<UpstreamConnector, RequestBody>,
    /// A copy of the client's connector, for [`UpstreamClient::probe_connector`].
    client_connector: UpstreamConnector,
    /// `https` for a pool with `tls`.
    scheme: Scheme,
    /// What requests to this pool are sent as.
    version: Version,
    /// Node address → verification name, shared with the connector (TLS pools only).
    names: Option<Arc<NodeNames>>,
    pub settings: ClientSettings,
}

impl UpstreamClient {
    /// `pool` names the pool in logs (TLS settings problems are logged here).
    pub fn new(pool: &str, settings: ClientSettings) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(settings.tls.is_none());
        let tls = settings.tls.as_ref().map(|t| {
            Arc::new(TlsConnect::new(
                pool,
                t,
                settings.protocol,
                settings.connect_timeout,
            ))
        });
        // Per-node names matter only without a `server_name` for every node.
        let names = tls
            .as_ref()
            .filter(|t| t.server_name.is_none())
            .map(|t| Arc::clone(&t.names));
        let connector = UpstreamConnector { http, tls };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(settings.max_idle_per_node)
            // A pooled connection the backend closed just before we used it is retried
            // on a fresh connection by the client itself: nothing was sent.
            .retry_canceled_requests(true)
            .set_host(false);
        if settings.protocol == UpstreamProtocol::H2 {
            builder.http2_only(true);
        }
        UpstreamClient {
            client: builder.build(connector.clone()),
            client_connector: connector,
            scheme: if settings.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            version: match settings.protocol {
                UpstreamProtocol::H2 => Version::HTTP_2,
                UpstreamProtocol::Http1 => Version::HTTP_11,
            },
            names,
            settings,
        }
    }

    /// A connector to this pool's nodes (TCP, plus TLS for a `tls` pool) with its own TCP
    /// connect timeout: for health probes, which must speak HTTPS to HTTPS nodes too
    /// (use it with [`UpstreamClient::scheme`] in the probe URL).
    pub fn probe_connector(&self, connect_timeout: Duration) -> UpstreamConnector {
        let mut c = self.client_connector.clone();
        c.http.set_connect_timeout(Some(connect_timeout));
        c
    }

    /// Does this pool speak plain HTTP/1.1 to its nodes (no TLS, no HTTP/2)? Those requests
    /// take the per-node connection pool of [`crate::h1pool`].
    pub fn plain_http1(&self) -> bool {
        self.settings.protocol == UpstreamProtocol::Http1 && self.settings.tls.is_none()
    }

    /// The scheme of upstream request URIs.
    pub fn scheme(&self) -> Scheme {
        self.scheme.clone()
    }

    /// The HTTP version upstream requests are sent with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Tell a TLS client which name each node is verified as: `(resolved ip:port,
    /// configured host:port)` per node. Called at every snapshot build (the client is kept
    /// across builds while nodes come and go); a no-op for plain pools and for pools with a
    /// `server_name`.
    pub fn set_node_names<'a>(&self, nodes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let Some(names) = &self.names else { return };
        let map: HashMap<String, ServerName<'static>> = nodes
            .into_iter()
            .filter_map(|(authority, addr)| {
                Some((authority.to_string(), crate::tls::node_server_name(addr)?))
            })
            .collect();
        names.store(Arc::new(map));
    }

    /// Send one request and wait for the response headers until `deadline` (the response
    /// body is held to the same deadline by the proxy's body wrapper).
    pub async fn send(
        &self,
        req: Request<RequestBody>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let detail = error_chain(e);
    if e.is_connect() {
        if has_io_kind(e, std::io::ErrorKind::TimedOut) {
            UpstreamError::ConnectTimeout
        } else {
            UpstreamError::Connect(detail)
        }
    } else {
        UpstreamError::Broken(detail)
    }
}

fn has_io_kind(e: &(dyn StdError + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == kind {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// "a: b: c" from an error and its sources, for logs.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}

/// Resolved `ip:port` → the name a node is verified as.
type NodeNames = ArcSwap<HashMap<String, ServerName<'static>>>;

/// TCP, then TLS for a pool with a `tls` section. Cloned by the pooled client per connect.
#[derive(Clone, Debug)]
pub struct UpstreamConnector {
    http: HttpConnector,
    tls: Option<Arc<TlsConnect>>,
}

/// The TLS half of [`UpstreamConnector`].
struct TlsConnect {
    /// The rustls client, or why the pool's TLS settings could not be built: then every
    /// connect fails with that reason (fail closed) until a reload fixes it.
    connector: Result<tokio_rustls::TlsConnector, String>,
    /// `tls.server_name`, for every node.
    server_name: Option<ServerName<'static>>,
    /// Each node's own name otherwise.
    names: Arc<NodeNames>,
    /// The handshake's own bound (the pool's connect timeout).
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("usable", &self.connector.is_ok())
            .field("server_name", &self.server_name)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnect {
    fn new(
        pool: &str,
        t: &UpstreamTlsSettings,
        protocol: UpstreamProtocol,
        handshake_timeout: Duration,
    ) -> TlsConnect {
        if t.insecure_skip_verify {
            tracing::warn!(pool, "tls.insecure_skip_verify is on: upstream certificates are not verified, so the connection to this pool's nodes is not authenticated");
        }
        let ca = match (&t.ca_file, &t.ca_pem) {
            (Some(path), Some(Ok(pem))) => Ok(Some((path.as_path(), pem.as_slice()))),
            (_, Some(Err(e))) => Err(e.clone()),
            _ => Ok(None),
        };
        let cfg = crate::config::UpstreamTlsConfig {
            server_name: t.server_name.clone(),
            ca_file: t.ca_file.clone(),
            insecure_skip_verify: t.insecure_skip_verify,
        };
        let server_name = match t.server_name.as_deref() {
            None => Ok(None),
            Some(n) => ServerName::try_from(n.to_string()).map(Some).map_err(|_| {
                format!("tls.server_name `{n}` is neither a valid DNS name nor an IP address")
            }),
        };
        let connector = server_name.clone().and_then(|_| {
            ca.and_then(|ca| {
                crate::tls::client_config(&cfg, ca, protocol).map_err(|e| e.to_string())
            })
            .map(tokio_rustls::TlsConnector::from)
        });
        if let Err(e) = &connector {
            tracing::error!(pool, error = %e, "cannot set up TLS to this pool's nodes; its requests fail (502) until the config is fixed and reloaded");
        }
        let server_name = server_name.ok().flatten();
        TlsConnect {
            connector,
            server_name,
            names: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            handshake_timeout,
        }
    }

    /// The name to send and verify for a connection to `uri`.
    fn name_for(&self, uri: &Uri) -> Option<ServerName<'static>> {
        if let Some(n) = &self.server_name {
            return Some(n.clone());
        }
        let authority = uri.authority()?;
        if let Some(n) = self.names.load().get(authority.as_str()) {
            return Some(n.clone());
        }
        // Not a known node (cannot happen for the proxy's own requests): verify the address.
        crate::tls::node_server_name(authority.as_str())
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let name = tls.as_ref().map(|t| t.name_for(&uri));
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some(tls) = tls else {
                return Ok(UpstreamStream::Plain(tcp));
            };
            let connector = tls
                .connector
                .as_ref()
                .map_err(|e| io::Error::other(e.clone()))?;
            let name = name.flatten().ok_or_else(|| {
                io::Error::other("no valid TLS server name for this node: set tls.server_name")
            })?;
            let shown = name.to_str().into_owned();
            match tokio::time::timeout(
                tls.handshake_timeout,
                connector.connect(name, tcp.into_inner()),
            )
            .await
            {
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake with `{shown}` timed out"),
                )
                .into()),
                Ok(Err(e)) => Err(io::Error::new(
                    e.kind(),
                    format!("TLS handshake with `{shown}` failed: {e}"),
                )
                .into()),
                Ok(Ok(s)) => Ok(UpstreamStream::Tls(Box::new(TokioIo::new(s)))),
            }
        })
    }
}

/// A connection to a node: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TokioIo<TcpStream>),
    /// Boxed: a rustls connection is large, and a plain stream need not carry its size.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(s) => s.connected(),
            UpstreamStream::Tls(s) => {
                let (tcp, tls) = s.inner().get_ref();
                let c = tcp.connected();
                if tls.alpn_protocol() == Some(crate::tls::ALPN_H2) {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl hyper::rt::Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}
