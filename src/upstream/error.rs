//! Why an attempt to a node failed, typed, with the cause kept as the error's source.
//!
//! The request path needs two answers from an error: whose fault it was (the node's — it
//! counts against the node's health, its latency estimate and the retry policy — or the
//! client's, whose request body broke), and how far the request got (nothing reached the
//! node, so any request may be sent again; or it may have been seen). [`UpstreamError::kind`]
//! gives both in one value; the variants keep the underlying `io::Error`, `hyper::Error` or
//! codec error as their source for the debug log.

use std::io;
use std::sync::Arc;

use crate::tls::certs::TlsError;

/// What kind of failure, as the retry policy, the metrics and the answer see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No connection could be made (refused, unreachable, TLS handshake failed, TLS
    /// settings unusable): nothing of the request reached the node.
    Connect,
    /// The connect (TCP and TLS) did not finish within `timeouts.connect`.
    ConnectTimeout,
    /// The response head did not arrive within `timeouts.request`.
    Timeout,
    /// The connection broke, or the node answered something that is not HTTP, after the
    /// request was (at least partly) sent.
    Broken,
    /// The client's request body failed while it was being sent (malformed chunked
    /// encoding, the client went away, or the body idled past `timeouts.idle`): not the
    /// node's fault.
    ClientBody,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to the node failed")]
    Connect(#[source] io::Error),
    #[error("connecting to the node timed out")]
    ConnectTimeout,
    #[error("the TLS handshake with `{name}` failed")]
    Handshake {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("this pool's TLS settings cannot be used; requests fail until the config is fixed and reloaded")]
    TlsSettings(#[source] TlsSettingsError),
    #[error("the node did not answer within the request timeout")]
    Timeout,
    #[error("writing the request to the node failed")]
    Write(#[source] io::Error),
    #[error("the connection to the node failed")]
    Read(#[source] io::Error),
    #[error("the node closed the connection without answering")]
    Closed,
    #[error("the node's answer is not valid HTTP/1.1")]
    Invalid(#[source] super::codec::CodecError),
    #[error("the node answered 101 Switching Protocols to a request that did not ask for it")]
    UnexpectedUpgrade,
    #[error("the HTTP connection to the node failed")]
    Http(#[source] hyper::Error),
    #[error("the client's request body failed")]
    ClientBody(#[source] hyper::Error),
}

/// Why a pool's TLS settings cannot carry a connection (fail closed: nothing is sent).
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingsError {
    #[error("the node's host is not a valid TLS server name: set tls.server_name")]
    NoServerName,
    #[error("the pool's TLS client cannot be built")]
    Client(#[source] Arc<TlsError>),
}

impl UpstreamError {
    /// The class the request path acts on.
    pub fn kind(&self) -> Kind {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::Handshake { .. }
            | UpstreamError::TlsSettings(_) => Kind::Connect,
            UpstreamError::ConnectTimeout => Kind::ConnectTimeout,
            UpstreamError::Timeout => Kind::Timeout,
            UpstreamError::ClientBody(_) => Kind::ClientBody,
            UpstreamError::Write(_)
            | UpstreamError::Read(_)
            | UpstreamError::Closed
            | UpstreamError::Invalid(_)
            | UpstreamError::UnexpectedUpgrade
            | UpstreamError::Http(_) => Kind::Broken,
        }
    }

    /// A hyper client error, sorted: a failing request body is the client's doing.
    pub(crate) fn from_hyper(e: hyper::Error) -> UpstreamError {
        if e.is_user() && source_is::<super::request_body::ClientBodyError>(&e) {
            UpstreamError::ClientBody(e)
        } else if e.is_timeout() {
            UpstreamError::Timeout
        } else {
            UpstreamError::Http(e)
        }
    }
}

/// Is any error in `e`'s source chain a `T`?
fn source_is<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}
