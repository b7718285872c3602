//! A reload asked for, and why one is rejected.
//!
//! Reloads come from SIGHUP, the config-file watch and the admin API; all go through the
//! supervisor, which answers with a [`ReloadError`] when the old config keeps serving. The
//! error is logged one line per problem and the admin API returns the same lines, so both
//! say exactly what to fix ([`ReloadError::lines`]).

use tokio::sync::oneshot;

use crate::config::ConfigErrors;
use crate::tls::certs::TlsError;
use crate::util::report::error_chain;

/// A reload asked for through the API; the supervisor answers with the errors, if any.
pub struct ReloadRequest {
    pub respond: oneshot::Sender<Result<(), ReloadError>>,
}

/// Why a reload was rejected (the old config keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this process was not started from a config file")]
    NoConfigFile,
    /// The file cannot be read, or has errors: one `FILE:LINE:COLUMN: message` per line.
    #[error(transparent)]
    Config(ConfigErrors),
    /// A listener of the new config cannot be set up.
    #[error(transparent)]
    Listener(#[from] ListenerError),
}

/// Why a listener cannot be set up, at start-up or on a reload.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot bind listener `{listener}` to {bind}: is another process using the port?")]
    Bind {
        listener: String,
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listener `{listener}`: cannot load its TLS certificates")]
    Certificates {
        listener: String,
        #[source]
        source: TlsError,
    },
}

impl ReloadError {
    /// One line per problem, each with its causes: what the log and the admin API show.
    pub fn lines(&self) -> Vec<String> {
        error_chain(self).lines().map(str::to_string).collect()
    }
}
