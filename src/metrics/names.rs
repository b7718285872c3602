//! Every metric family the process exports: its name, help, labels and label values, in one
//! place so the docs, the dashboard, the alert rules and the code agree.
//!
//! Label values are enums ([`Outcome`], [`ReloadResult`], ...) with the exact strings as
//! `as_str`, so no label string is spelled anywhere else; the families in `families.rs`
//! resolve each labelled series once.

/// A metric family: name, help text and label names.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

// ---- requests -------------------------------------------------------------------------

/// `switchyard_requests_total{pool,status_class}`: pool [`NO_POOL`] for requests that
/// matched no route; status class `1xx` .. `5xx`.
pub const REQUESTS_TOTAL: Family = Family {
    name: "switchyard_requests_total",
    help: "Requests answered, by pool and status class.",
    labels: &["pool", "status_class"],
};
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `pool` label of requests that matched no route.
pub const NO_POOL: &str = "none";

pub const REQUEST_DURATION_SECONDS: Family = Family {
    name: "switchyard_request_duration_seconds",
    help: "Time from request received to response body finished, per pool.",
    labels: &["pool"],
};

/// Latency buckets in seconds: fine-grained below 10 ms, where a balancer's own time and a
/// healthy backend's answer live, and up to a minute for slow uploads.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

pub const UPSTREAM_REQUESTS_TOTAL: Family = Family {
    name: "switchyard_upstream_requests_total",
    help: "Attempts sent to upstream nodes, by outcome.",
    labels: &["pool", "node", "outcome"],
};

/// Upstream attempt outcomes (label `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    HttpError,
    ConnectError,
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::HttpError,
        Outcome::ConnectError,
        Outcome::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::HttpError => "http_error",
            Outcome::ConnectError => "connect_error",
            Outcome::Timeout => "timeout",
        }
    }
}

pub const RETRIES_TOTAL: Family = Family {
    name: "switchyard_retries_total",
    help: "Retries sent to another node.",
    labels: &["pool"],
};

// ---- nodes ------------------------------------------------------------------------------

pub const NODE_UP: Family = Family {
    name: "switchyard_node_up",
    help: "1 when the node may take traffic (healthy, not ejected, not draining).",
    labels: &["pool", "node"],
};

pub const NODE_ACTIVE_REQUESTS: Family = Family {
    name: "switchyard_node_active_requests",
    help: "Requests in flight to the node.",
    labels: &["pool", "node"],
};

pub const HEALTH_CHECKS_TOTAL: Family = Family {
    name: "switchyard_health_checks_total",
    help: "Active health probes, by result.",
    labels: &["pool", "node", "result"],
};

/// Health probe results (label `result` of `switchyard_health_checks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthResult {
    Success,
    Failure,
}

impl HealthResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthResult::Success => "success",
            HealthResult::Failure => "failure",
        }
    }
}

// ---- control plane ------------------------------------------------------------------------

pub const CONFIG_RELOADS_TOTAL: Family = Family {
    name: "switchyard_config_reloads_total",
    help: "Config reloads, by result.",
    labels: &["result"],
};

/// Config reload results (label `result` of `switchyard_config_reloads_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

pub const REDIS_CONNECTED: Family = Family {
    name: "switchyard_redis_connected",
    help: "1 while the Redis registry subscriber is connected.",
    labels: &[],
};

pub const REGISTRY_UPDATES_TOTAL: Family = Family {
    name: "switchyard_registry_updates_total",
    help: "Registry entries read from Redis, by result.",
    labels: &["result"],
};

/// Registry read results (label `result` of `switchyard_registry_updates_total`; what each
/// means: `control::registry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryResult {
    Applied,
    Unchanged,
    Invalid,
    Expired,
    UnknownPool,
    Error,
}

impl RegistryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryResult::Applied => "applied",
            RegistryResult::Unchanged => "unchanged",
            RegistryResult::Invalid => "invalid",
            RegistryResult::Expired => "expired",
            RegistryResult::UnknownPool => "unknown_pool",
            RegistryResult::Error => "error",
        }
    }
}

pub const ACCESS_LOG_DROPPED_TOTAL: Family = Family {
    name: "switchyard_access_log_dropped_total",
    help: "Access-log lines dropped because the writer could not keep up.",
    labels: &[],
};

// ---- downstream -----------------------------------------------------------------------------

pub const DOWNSTREAM_CONNECTIONS_ACTIVE: Family = Family {
    name: "switchyard_downstream_connections_active",
    help: "Client connections open, per listener.",
    labels: &["listener"],
};

pub const RATE_LIMITED_TOTAL: Family = Family {
    name: "switchyard_rate_limited_total",
    help: "Requests refused by the rate limiter, per listener.",
    labels: &["listener"],
};

pub const RATE_LIMIT_BUCKETS: Family = Family {
    name: "switchyard_rate_limit_buckets",
    help: "Client buckets held by the rate limiter (bounded; 0 without rate_limit).",
    labels: &[],
};

pub const TLS_HANDSHAKE_ERRORS_TOTAL: Family = Family {
    name: "switchyard_tls_handshake_errors_total",
    help: "Downstream TLS handshakes that failed, by reason (no_tls, protocol_version, \
           incompatible, cert_rejected, timeout, eof, other).",
    labels: &["reason"],
};

/// Why a downstream TLS handshake failed (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client spoke something other than TLS (plain HTTP on the TLS port).
    NoTls,
    /// The client offered only TLS versions below 1.2.
    ProtocolVersion,
    /// No cipher suite, group or signature scheme in common.
    Incompatible,
    /// The client rejected our certificate (an alert such as `unknown_ca`).
    CertRejected,
    /// The handshake did not finish within `limits.header_read_timeout`.
    Timeout,
    /// The client closed or reset the connection during the handshake.
    Eof,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::NoTls,
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::Incompatible,
        HandshakeFailure::CertRejected,
        HandshakeFailure::Timeout,
        HandshakeFailure::Eof,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoTls => "no_tls",
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::CertRejected => "cert_rejected",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Other => "other",
        }
    }
}

pub const DOWNSTREAM_CONNECTIONS_REFUSED_TOTAL: Family = Family {
    name: "switchyard_downstream_connections_refused_total",
    help: "Client connections closed at once because the listener was at \
           limits.max_connections.",
    labels: &["listener"],
};

pub const DOWNSTREAM_TIMEOUTS_TOTAL: Family = Family {
    name: "switchyard_downstream_timeouts_total",
    help: "Client connections closed by a timeout: header_read (a request head, or the \
           first request, too slow) or idle (keep-alive connection unused for \
           limits.idle_timeout).",
    labels: &["listener", "timeout"],
};

/// Which client-connection timeout closed a connection (label `timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamTimeout {
    /// A request head (or the first request) did not arrive in time.
    HeaderRead,
    /// Nothing happened on an idle connection for `idle_timeout`.
    Idle,
}

impl DownstreamTimeout {
    pub const ALL: [DownstreamTimeout; 2] =
        [DownstreamTimeout::HeaderRead, DownstreamTimeout::Idle];

    pub fn as_str(self) -> &'static str {
        match self {
            DownstreamTimeout::HeaderRead => "header_read",
            DownstreamTimeout::Idle => "idle",
        }
    }
}

pub const PROXY_PROTOCOL_ERRORS_TOTAL: Family = Family {
    name: "switchyard_proxy_protocol_errors_total",
    help: "Connections closed on a proxy_protocol listener because the PROXY header was \
           invalid (or missing), not complete within limits.header_read_timeout \
           (timeout), or cut short by the client (eof).",
    labels: &["listener", "reason"],
};

/// Why a PROXY header failed (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolFailure {
    /// Missing or malformed.
    Invalid,
    /// Not complete within `limits.header_read_timeout`.
    Timeout,
    /// The client closed or the read failed first.
    Eof,
}

impl ProxyProtocolFailure {
    pub const ALL: [ProxyProtocolFailure; 3] = [
        ProxyProtocolFailure::Invalid,
        ProxyProtocolFailure::Timeout,
        ProxyProtocolFailure::Eof,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocolFailure::Invalid => "invalid",
            ProxyProtocolFailure::Timeout => "timeout",
            ProxyProtocolFailure::Eof => "eof",
        }
    }
}
