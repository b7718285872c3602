//! The syntax of the values a config names as text: bind addresses, node addresses, route
//! host patterns and path prefixes. Each check says exactly what is wrong and what to write
//! instead; validation reports the message at the value's position, and the Redis registry
//! judges a registered node's address by the same rule as a static one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A listener or admin address: a literal `IP:PORT`.
pub fn parse_bind(text: &str) -> Result<SocketAddr, BindError> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let hint = match text.rsplit_once(':') {
        None if text.parse::<u16>().is_ok() => BindHint::AddIp(text.to_string()),
        None => BindHint::None,
        Some(("", port)) => BindHint::AddIp(port.to_string()),
        Some((_, port)) if port.parse::<u16>().is_err() => BindHint::Port,
        Some(("localhost", port)) => BindHint::Localhost(port.to_string()),
        Some((host, _)) if host.contains(':') && !host.starts_with('[') => BindHint::Ipv6Brackets,
        Some(_) => BindHint::HostName,
    };
    Err(BindError {
        text: text.to_string(),
        hint,
    })
}

/// A `bind` that is not an `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bind address `{text}`: expected IP:PORT such as 0.0.0.0:8080 or [::]:8080{hint}")]
pub struct BindError {
    text: String,
    hint: BindHint,
}

/// What the bind looks like it meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BindHint {
    #[error("")]
    None,
    /// A port alone (`8080`, `:8080`).
    #[error(" (add the IP: 0.0.0.0:{0} listens on every interface)")]
    AddIp(String),
    #[error(" (the port must be a number from 0 to 65535)")]
    Port,
    #[error(" (a host name is not allowed; write 127.0.0.1:{0})")]
    Localhost(String),
    #[error(" (an IPv6 address needs brackets, as in [::1]:8080)")]
    Ipv6Brackets,
    #[error(" (a host name is not allowed here; write the IP address)")]
    HostName,
}

/// A node address `HOST:PORT`: a host name, an IPv4 address or a bracketed IPv6 address,
/// and a port 1-65535.
pub fn check_node_addr(s: &str) -> Result<(), NodeAddrError> {
    let addr = || s.to_string();
    if let Some((scheme, rest)) = s.split_once("://") {
        return Err(NodeAddrError::Scheme {
            addr: addr(),
            scheme: scheme.to_string(),
            rest: rest.trim_end_matches('/').to_string(),
        });
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(NodeAddrError::NoPort { addr: addr() });
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(NodeAddrError::Ipv6Brackets { addr: addr() });
    }
    // Digits only: `u16::from_str` also takes a leading `+`, which no resolver does.
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => {
            return Err(NodeAddrError::Port {
                addr: addr(),
                port: port.to_string(),
            })
        }
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok())
    } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<Ipv4Addr>().is_ok()
    } else {
        is_dns_name(host.strip_suffix('.').unwrap_or(host))
    };
    if host_ok {
        Ok(())
    } else {
        Err(NodeAddrError::Host {
            addr: addr(),
            host: host.to_string(),
        })
    }
}

/// A node address that is not a `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeAddrError {
    #[error("invalid node address `{addr}`: write it without the `{scheme}://` scheme, as `{rest}`; for HTTPS to the nodes add a `tls` section to the pool")]
    Scheme {
        addr: String,
        scheme: String,
        rest: String,
    },
    #[error("invalid node address `{addr}`: the port is missing; expected HOST:PORT such as 127.0.0.1:9001, backend.internal:8080 or [::1]:9001")]
    NoPort { addr: String },
    #[error("invalid node address `{addr}`: an IPv6 address needs brackets, as in [::1]:9001")]
    Ipv6Brackets { addr: String },
    #[error("invalid node address `{addr}`: port `{port}` is not a number from 1 to 65535")]
    Port { addr: String, port: String },
    #[error("invalid node address `{addr}`: `{host}` is not a valid host; expected HOST:PORT such as 127.0.0.1:9001, backend.internal:8080 or [::1]:9001")]
    Host { addr: String, host: String },
}

/// A route's `host`: an exact name or `*.suffix`; case-insensitive, no port.
pub fn check_host_pattern(h: &str) -> Result<(), HostPatternError> {
    let host = || h.to_string();
    if h.is_empty() {
        return Err(HostPatternError::Empty);
    }
    if h.contains("://") {
        return Err(HostPatternError::Scheme(host()));
    }
    if h == "*" {
        return Err(HostPatternError::Star);
    }
    let rest = h.strip_prefix("*.").unwrap_or(h);
    if rest.contains('*') {
        return Err(if h.starts_with('*') && !h.starts_with("*.") {
            HostPatternError::WildcardNotALabel(host())
        } else {
            HostPatternError::WildcardNotFirst(host())
        });
    }
    if let Some(inner) = rest.strip_prefix('[') {
        let ok = h == rest
            && inner
                .strip_suffix(']')
                .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok());
        return if ok {
            Ok(())
        } else {
            Err(HostPatternError::BadIpv6(host()))
        };
    }
    if let Some((_, port)) = rest.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostPatternError::Port {
                host: host(),
                without: h.trim_end_matches(port).trim_end_matches(':').to_string(),
            });
        }
    }
    if rest.ends_with('.') {
        return Err(HostPatternError::TrailingDot {
            host: host(),
            without: h.trim_end_matches('.').to_string(),
        });
    }
    if rest.parse::<IpAddr>().is_ok() || is_dns_name(rest) {
        Ok(())
    } else {
        Err(HostPatternError::Invalid(host()))
    }
}

/// A route `host` that is no host pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    #[error("host must not be empty; omit `host` to match any host")]
    Empty,
    #[error("host `{0}` must be a bare name without a scheme, such as api.example.com")]
    Scheme(String),
    #[error("`*` alone is not a host pattern; omit `host` to match every host")]
    Star,
    #[error("invalid wildcard host `{0}`: `*` must be a whole label followed by a dot, as in `*.example.com` (which matches a.example.com but not example.com)")]
    WildcardNotALabel(String),
    #[error("invalid wildcard host `{0}`: `*` is only allowed as the whole first label, as in `*.example.com`")]
    WildcardNotFirst(String),
    #[error("invalid host `{0}`: expected a name such as api.example.com, or an IPv6 address in brackets")]
    BadIpv6(String),
    #[error("host `{host}` must not include a port: the port is ignored when matching, so write `{without}`")]
    Port { host: String, without: String },
    #[error("host `{host}` must not end with a dot; write `{without}`")]
    TrailingDot { host: String, without: String },
    #[error("invalid host `{0}`: expected a name such as api.example.com or a wildcard such as *.example.com (letters, digits, `-`, `.`)")]
    Invalid(String),
}

/// A route's `path_prefix`: an absolute path, without query or fragment.
pub fn check_path_prefix(p: &str) -> Result<(), PathPrefixError> {
    if p.is_empty() {
        return Err(PathPrefixError::Empty);
    }
    if !p.starts_with('/') {
        return Err(PathPrefixError::NoSlash(p.to_string()));
    }
    if p.contains(['?', '#']) {
        return Err(PathPrefixError::Query(p.to_string()));
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PathPrefixError::Whitespace(p.to_string()));
    }
    Ok(())
}

/// A route `path_prefix` that is no path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathPrefixError {
    #[error("path_prefix must not be empty; write `/` or omit it to match every path")]
    Empty,
    #[error("path_prefix `{0}` must start with `/`, e.g. `/{0}`")]
    NoSlash(String),
    #[error("path_prefix `{0}` must be a path only: matching ignores the query string, so remove the `?` or `#` part")]
    Query(String),
    #[error("path_prefix `{0}` contains whitespace; percent-encode it (e.g. %20)")]
    Whitespace(String),
}

fn is_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A host name (`a.example.com`) with labels of letters, digits, `-` and `_`.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        assert!(parse_bind("0.0.0.0:8080").is_ok());
        assert!(parse_bind("[::]:8443").is_ok());
        assert!(parse_bind("127.0.0.1:0").is_ok());
        let e = parse_bind("localhost:8080").unwrap_err().to_string();
        assert!(e.contains("expected IP:PORT such as 0.0.0.0:8080"), "{e}");
        assert!(e.contains("127.0.0.1:8080"), "{e}");
        let err = |text: &str| parse_bind(text).unwrap_err().to_string();
        assert!(err(":8080").contains("0.0.0.0:8080"));
        assert!(err("8080").contains("0.0.0.0:8080"));
        assert!(err("1.2.3.4:99999").contains("0 to 65535"));
        assert!(err("::1:80").contains("brackets"));
    }

    #[test]
    fn node_addrs() {
        for ok in [
            "127.0.0.1:9001",
            "backend.internal:8443",
            "[::1]:9001",
            "a_b-c:1",
            "svc.:80",
        ] {
            assert!(check_node_addr(ok).is_ok(), "{ok}");
        }
        for (bad, want) in [
            ("127.0.0.1", "port is missing"),
            ("127.0.0.1:0", "from 1 to 65535"),
            ("127.0.0.1:70000", "from 1 to 65535"),
            ("::1:80", "brackets"),
            ("http://a:80/", "without the `http://` scheme, as `a:80`"),
            ("256.1.1.1:80", "not a valid host"),
            ("a b:80", "not a valid host"),
            ("[zz]:80", "not a valid host"),
            // `+80` parses as a u16 but is no port (it once passed).
            ("127.0.0.1:+80", "from 1 to 65535"),
        ] {
            let e = check_node_addr(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn host_patterns() {
        for ok in [
            "example.com",
            "*.example.com",
            "API.Example.com",
            "127.0.0.1",
            "[::1]",
            "localhost",
        ] {
            assert!(check_host_pattern(ok).is_ok(), "{ok}");
        }
        for (bad, want) in [
            ("", "must not be empty"),
            ("*", "alone"),
            ("*example.com", "whole label followed by a dot"),
            ("a.*.com", "only allowed as the whole first label"),
            ("*.*.com", "only allowed as the whole first label"),
            ("example.com:8080", "must not include a port"),
            ("http://example.com", "without a scheme"),
            ("example.com.", "must not end with a dot"),
            ("exa mple.com", "invalid host"),
            ("a..b", "invalid host"),
        ] {
            let e = check_host_pattern(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn path_prefixes() {
        assert!(check_path_prefix("/").is_ok());
        assert!(check_path_prefix("/api/v1").is_ok());
        assert!(check_path_prefix("api")
            .unwrap_err()
            .to_string()
            .contains("e.g. `/api`"));
        assert!(check_path_prefix("").is_err());
        assert!(check_path_prefix("/a?b=1").is_err());
        assert!(check_path_prefix("/a b").is_err());
    }
}
