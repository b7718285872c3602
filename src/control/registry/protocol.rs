//! The registry protocol that the balancer and `switchyard node` share: where a pool's nodes
//! are kept in Redis (hash `{key_prefix}:pool:{pool}`, field `host:port`, value
//! `{"weight": 2, "expires_at_ms": ...}`), how an entry is judged, and how Redis is reached
//! (timeouts, TLS for `rediss://`, passwords kept out of logs).

use std::time::Duration;

use redis::AsyncConnectionConfig;

use crate::balance::build::RegistryNode;
use crate::config::validate::MAX_WEIGHT;
use crate::config::values::{check_node_addr, NodeAddrError};

/// How long a TCP (and TLS) connection to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any one command (or pipeline) may take to answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The Redis hash that holds a pool's registered nodes.
pub fn pool_key(key_prefix: &str, pool: &str) -> String {
    format!("{key_prefix}:pool:{pool}")
}

/// Check a registry field: the same rule as a static node's `addr` in the config
/// ([`check_node_addr`]: `host:port` with a host name, an IPv4 address or a bracketed IPv6
/// address, and a port in 1..=65535), so a node is valid or not whichever way it was added.
pub fn validate_addr(addr: &str) -> Result<(), NodeAddrError> {
    check_node_addr(addr)
}

/// A registry value, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryValue {
    pub weight: u32,
    /// Unix time in ms after which the entry is ignored.
    pub expires_at_ms: Option<u64>,
}

impl EntryValue {
    /// The JSON written to Redis: `{"weight":N}` or `{"weight":N,"expires_at_ms":T}`.
    pub fn to_json(&self) -> String {
        match self.expires_at_ms {
            Some(t) => format!("{{\"weight\":{},\"expires_at_ms\":{t}}}", self.weight),
            None => format!("{{\"weight\":{}}}", self.weight),
        }
    }
}

/// Why a registry value is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("the value is not valid JSON: {0}")]
    NotJson(String),
    #[error("the value must be a JSON object such as {{\"weight\":1}}")]
    NotObject,
    #[error("weight {0} is not an integer in 1..={MAX_WEIGHT}")]
    Weight(String),
    #[error("expires_at_ms {0} is not a unix time in milliseconds")]
    Expiry(String),
}

/// Why a registry entry (field and value) is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Addr(#[from] NodeAddrError),
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Parse a registry value: a JSON object with an optional `weight` (integer 1..=1000,
/// default 1) and an optional `expires_at_ms` (unix ms). Other keys are ignored, so other
/// programs may store more.
pub fn parse_value(value: &str) -> Result<EntryValue, ValueError> {
    let v: serde_json::Value =
        serde_json::from_str(value).map_err(|e| ValueError::NotJson(e.to_string()))?;
    let obj = v.as_object().ok_or(ValueError::NotObject)?;
    let weight = match obj.get("weight") {
        None | Some(serde_json::Value::Null) => 1,
        Some(w) => match w.as_u64() {
            Some(n) if (1..=u64::from(MAX_WEIGHT)).contains(&n) => n as u32,
            _ => return Err(ValueError::Weight(w.to_string())),
        },
    };
    let expires_at_ms = match obj.get("expires_at_ms") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => Some(
            e.as_u64()
                .or_else(|| {
                    e.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| ValueError::Expiry(e.to_string()))?,
        ),
    };
    Ok(EntryValue {
        weight,
        expires_at_ms,
    })
}

/// A whole entry: its field (the address) and its value.
pub fn parse_entry(field: &str, value: &str) -> Result<EntryValue, EntryError> {
    validate_addr(field)?;
    Ok(parse_value(value)?)
}

/// What an entry of a pool's hash turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid node, with its expiry if it has one.
    Node(RegistryNode, Option<u64>),
    /// Valid, but its `expires_at_ms` (kept here) is not after `now_ms`.
    Expired(u64),
    /// Skipped: why.
    Invalid(EntryError),
}

/// Judge one entry (hash field, value) of a pool's hash at `now_ms`. Never fails: any
/// field and value, however malformed, gets a verdict.
pub fn judge(field: &str, value: &str, now_ms: u64) -> Verdict {
    match parse_entry(field, value) {
        Err(e) => Verdict::Invalid(e),
        Ok(v) => match v.expires_at_ms {
            Some(t) if t <= now_ms => Verdict::Expired(t),
            exp => Verdict::Node(
                RegistryNode {
                    addr: field.to_string(),
                    weight: v.weight,
                },
                exp,
            ),
        },
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                // `redis://PASSWORD@host` is not a form the redis crate reads as a
                // password, but hide it anyway.
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

/// Make sure rustls has a process-wide crypto provider before a `rediss://` connection is
/// made (the redis crate uses the default one). Leaves an installed provider alone.
pub fn ensure_tls_provider(url: &str) {
    if url.starts_with("rediss://") && rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Open a client for `url` (parsing it, and preparing TLS for `rediss://`).
pub fn open_client(url: &str) -> redis::RedisResult<redis::Client> {
    ensure_tls_provider(url);
    redis::Client::open(url)
}

/// Connection settings with the timeouts above.
pub fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in [
            "10.0.0.7:8080",
            "backend.internal:443",
            "[::1]:80",
            "[2001:db8::1]:65535",
            "a:1",
            "my_host-1.example.com:9000",
        ] {
            assert_eq!(validate_addr(ok), Ok(()), "{ok}");
        }
        for bad in [
            "10.0.0.7",
            ":8080",
            "10.0.0.7:0",
            "10.0.0.7:65536",
            "10.0.0.7:-1",
            "10.0.0.7:",
            "10.0.0.7:80a",
            "::1:80",
            "[::1]80",
            // These once passed here but not as a static node in the config; both use
            // the config's check now.
            "10.0.0.7:+80",
            "256.1.1.1:80",
            "a..b:80",
            "[nothost]:80",
            "bad host:80",
            "http://x:80",
            "",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn values() {
        assert_eq!(
            parse_value("{}"),
            Ok(EntryValue {
                weight: 1,
                expires_at_ms: None
            })
        );
        assert_eq!(
            parse_value(r#"{"weight":2,"expires_at_ms":1732312345000,"owner":"x"}"#),
            Ok(EntryValue {
                weight: 2,
                expires_at_ms: Some(1732312345000)
            })
        );
        assert_eq!(
            parse_value(r#"{"weight":1000}"#).map(|v| v.weight),
            Ok(1000)
        );
        for bad in [
            "",
            "{",
            "[]",
            "1",
            r#"{"weight":0}"#,
            r#"{"weight":1001}"#,
            r#"{"weight":-1}"#,
            r#"{"weight":"2"}"#,
            r#"{"weight":1.5}"#,
            r#"{"expires_at_ms":"soon"}"#,
        ] {
            assert!(parse_value(bad).is_err(), "{bad:?} should be rejected");
        }
        let v = EntryValue {
            weight: 3,
            expires_at_ms: Some(42),
        };
        assert_eq!(parse_value(&v.to_json()), Ok(v));
    }

    #[test]
    fn judging_entries() {
        assert!(matches!(
            judge("10.0.0.1:80", r#"{"expires_at_ms":100}"#, 100),
            Verdict::Expired(100)
        ));
        assert!(matches!(
            judge("10.0.0.1:80", r#"{"expires_at_ms":101}"#, 100),
            Verdict::Node(_, Some(101))
        ));
        assert!(matches!(judge("nope", "{}", 0), Verdict::Invalid(_)));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:s3cret@host/0"),
            "rediss://user:***@host/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("redis://tok@host"), "redis://***@host");
    }

    #[test]
    fn keys() {
        assert_eq!(pool_key("switchyard", "web"), "switchyard:pool:web");
    }
}
