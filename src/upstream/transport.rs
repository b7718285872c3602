//! How a pool talks to its nodes: its settings ([`TransportSettings`]: protocol, connect
//! timeout, idle connections kept, TLS) and what is built from them once per pool
//! ([`Transport`]: the rustls client of a pool with a `tls` section).

use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use rustls_pki_types::ServerName;

use crate::tls::certs::{CaFile, TlsError};
use crate::tls::client::{client_config, node_server_name};

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

/// A pool's `tls` section, with its CA file loaded: a reload after the CA file changed on
/// disk compares unequal, and builds a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The name every node is verified as; `None`: each node's own host.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// The CA file, as config validation loaded and checked it.
    pub ca: Option<Arc<CaFile>>,
}

/// How a pool talks to its nodes: settings, and the TLS client built from them once.
#[derive(Debug, Clone)]
pub struct Transport {
    pub settings: TransportSettings,
    pub(crate) tls: Option<Arc<TlsConnect>>,
}

impl Transport {
    /// `pool` names the pool in logs (TLS settings problems are logged here).
    pub fn new(pool: &str, settings: TransportSettings) -> Transport {
        let h2 = settings.protocol == Protocol::H2;
        let tls = settings
            .tls
            .as_ref()
            .map(|t| Arc::new(tls_connect(pool, t, h2)));
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
        None => node_server_name(node_addr),
    }
}

/// The TLS half of a pool's transport.
pub(crate) struct TlsConnect {
    /// The rustls client, or why the pool's TLS settings could not be built: then every
    /// connect fails with that reason (fail closed) until a reload fixes it.
    pub connector: Result<tokio_rustls::TlsConnector, Arc<TlsError>>,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("usable", &self.connector.is_ok())
            .finish_non_exhaustive()
    }
}

/// The TLS client of a pool, or why it cannot be built.
fn tls_connect(pool: &str, t: &TlsSettings, h2: bool) -> TlsConnect {
    if t.insecure_skip_verify {
        tracing::warn!(pool, "tls.insecure_skip_verify is on: upstream certificates are not verified, so the connection to this pool's nodes is not authenticated");
    }
    let connector = client_config(t.insecure_skip_verify, t.ca.as_deref(), h2)
        .map(tokio_rustls::TlsConnector::from)
        .map_err(Arc::new);
    if let Err(e) = &connector {
        tracing::error!(pool, error = %e, "cannot set up TLS to this pool's nodes; its requests fail (502) until the config is fixed and reloaded");
    }
    TlsConnect { connector }
}
