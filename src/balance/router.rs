//! Route matching: host and path prefix → pool index. First match wins.
//!
//! Matching rules (the README's configuration reference states them): the host is compared case-insensitively with its
//! port ignored; `*.example.com` matches any name ending in `.example.com` (one or more
//! labels) but not `example.com` itself; `path_prefix: /api` matches `/api`, `/api/` and
//! `/api/x` but not `/apix`. Matching allocates nothing.

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// Lower-case exact name.
    Exact(String),
    /// Lower-case suffix including the leading dot (`.example.com`).
    Suffix(String),
}

impl HostMatch {
    /// Build from a config value: `*.suffix` becomes a suffix match.
    pub fn new(host: Option<&str>) -> HostMatch {
        match host {
            None => HostMatch::Any,
            Some(h) => {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                    None => HostMatch::Exact(h),
                }
            }
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: HostMatch,
    /// Path prefix without a trailing slash (`/api`); empty matches every path.
    pub prefix: String,
    /// Index into the snapshot's pools.
    pub pool: usize,
}

impl Route {
    pub fn new(host: Option<&str>, path_prefix: Option<&str>, pool: usize) -> Route {
        let prefix = path_prefix.unwrap_or("").trim_end_matches('/').to_string();
        Route {
            host: HostMatch::new(host),
            prefix,
            pool,
        }
    }

    fn matches_path(&self, path: &str) -> bool {
        if self.prefix.is_empty() {
            return true;
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// The ordered route table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Router {
        Router { routes }
    }

    /// Pool index for a request, or `None` (→ 404). `host` may carry a port, which is
    /// ignored; `path` is the request path without the query.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port).unwrap_or("");
        self.routes
            .iter()
            .find(|r| r.host.matches(host) && r.matches_path(path))
            .map(|r| r.pool)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`; a trailing dot is dropped so
/// that `example.com.` matches `example.com`.
///
/// Only a port is removed: a `:` followed by digits (RFC 3986 `port = *DIGIT`, so a bare
/// trailing `:` too), after a host that has no `:` of its own or is a bracketed IPv6
/// literal. Anything else (`a.example.com:x`, an unbracketed `::1`, `[::1]junk`) is left as
/// it is, so it matches no route it should not.
pub fn strip_port(host: &str) -> &str {
    fn is_port(s: &str) -> bool {
        s.bytes().all(|b| b.is_ascii_digit())
    }
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => {
                let rest = &host[end + 1..];
                match rest.strip_prefix(':') {
                    Some(port) if is_port(port) => &host[..=end],
                    _ if rest.is_empty() => host,
                    _ => return host,
                }
            }
            None => return host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) && !name.contains(':') => name,
            Some(_) => return host,
            None => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(vec![
            Route::new(Some("api.example.com"), Some("/v1"), 0),
            Route::new(Some("*.example.com"), None, 1),
            Route::new(None, Some("/static/"), 2),
            Route::new(None, None, 3),
        ])
    }

    #[test]
    fn host_is_case_insensitive_and_ignores_the_port() {
        let r = router();
        assert_eq!(r.route(Some("API.Example.COM:8443"), "/v1/users"), Some(0));
        assert_eq!(r.route(Some("api.example.com."), "/v1"), Some(0));
    }

    #[test]
    fn wildcard_needs_at_least_one_label() {
        let r = router();
        assert_eq!(r.route(Some("a.b.example.com"), "/"), Some(1));
        assert_eq!(r.route(Some("example.com"), "/"), Some(3));
        assert_eq!(r.route(Some("badexample.com"), "/"), Some(3));
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let r = router();
        assert_eq!(r.route(Some("api.example.com"), "/v1"), Some(0));
        assert_eq!(r.route(Some("api.example.com"), "/v1/"), Some(0));
        assert_eq!(r.route(Some("api.example.com"), "/v12"), Some(1));
        assert_eq!(r.route(None, "/static"), Some(2));
        assert_eq!(r.route(None, "/staticx"), Some(3));
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(vec![Route::new(Some("a.test"), None, 0)]);
        assert_eq!(r.route(Some("b.test"), "/"), None);
        assert_eq!(r.route(None, "/"), None);
    }

    #[test]
    fn strip_port_handles_ipv6() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("host"), "host");
        assert_eq!(strip_port("[::1]:"), "[::1]");
        assert_eq!(strip_port("[::1]junk"), "[::1]junk");
        assert_eq!(strip_port("[::1]:8x"), "[::1]:8x");
        assert_eq!(strip_port("[::1"), "[::1");
    }

    // Found by fuzzing: anything after the last `:` used to be cut off, so
    // `a.example.com:evil` routed as `a.example.com` and `::1` as `:`.
    #[test]
    fn strip_port_removes_only_a_numeric_port() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com.:8080"), "example.com");
        assert_eq!(strip_port("example.com:"), "example.com");
        assert_eq!(strip_port("example.com:http"), "example.com:http");
        assert_eq!(strip_port("a.example.com:x1"), "a.example.com:x1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a:b:80"), "a:b:80");
        let r = Router::new(vec![Route::new(Some("a.example.com"), None, 0)]);
        assert_eq!(r.route(Some("a.example.com:443"), "/"), Some(0));
        assert_eq!(r.route(Some("a.example.com:evil"), "/"), None);
    }
}
