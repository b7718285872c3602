//! Arbitrary routes (host exact or `*.suffix`, path prefix) and an arbitrary request (Host
//! header, absolute-form/`:authority` URI authority, path) → host normalisation
//! (`headers::request_host`, `router::strip_port`) and the router.
//!
//! Checks, besides "never panics" (on any routes, valid or not):
//! - the host the router sees never carries a `userinfo@`;
//! - `strip_port` only ever removes a `:digits` port and a trailing dot;
//! - when every route passes the config's checks (`check_host_pattern`,
//!   `check_path_prefix`), the router's answer is the one a plain model of DESIGN.md's rules
//!   gives: first match wins; hosts compare case-insensitively with the port ignored;
//!   `*.example.com` needs at least one more label; `path_prefix: /api` matches `/api`,
//!   `/api/` and `/api/x` but not `/apix` (segment boundary);
//! - the answer does not change when the request host's letters change case or a numeric
//!   port is added to a bare name.
#![no_main]

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderValue, HOST};
use http::Uri;
use libfuzzer_sys::fuzz_target;
use switchyard::config::values::{check_host_pattern, check_path_prefix};
use switchyard::proxy::headers::request_host;
use switchyard::balance::router::{strip_port, Route, Router};

#[derive(Arbitrary, Debug)]
struct RouteIn {
    host: Option<String>,
    prefix: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<RouteIn>,
    host_header: Option<String>,
    authority: Option<String>,
    path: String,
    port: u16,
}

/// DESIGN.md's host rule, written plainly: `host` is already normalised (no port, no
/// trailing dot) and `pattern` passed the config's check.
fn model_host(pattern: Option<&str>, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match pattern.map(str::to_ascii_lowercase) {
        None => true,
        Some(p) => match p.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .and_then(|labels| labels.strip_suffix('.'))
                .is_some_and(|labels| !labels.is_empty()),
            None => host == p,
        },
    }
}

/// DESIGN.md's path rule: a prefix matches on a segment boundary; a trailing `/` in the
/// prefix is not part of it (`/static/` is `/static`), and `/` matches everything.
fn model_path(prefix: Option<&str>, path: &str) -> bool {
    let p = prefix.unwrap_or("").trim_end_matches('/');
    p.is_empty()
        || path == p
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
}

fuzz_target!(|input: Input| {
    let routes: Vec<Route> = input
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| Route::new(r.host.as_deref(), r.prefix.as_deref(), i))
        .collect();
    let router = Router::new(routes);

    // The request's host, as the proxy takes it.
    let mut headers = HeaderMap::new();
    if let Some(h) = input
        .host_header
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(HOST, h);
    }
    let uri = match input.authority.as_deref() {
        Some(a) => Uri::builder()
            .scheme("http")
            .authority(a)
            .path_and_query("/")
            .build()
            .unwrap_or_default(),
        None => Uri::default(),
    };
    let host_value = request_host(&uri, &headers);
    let host = host_value.as_ref().and_then(|v| v.to_str().ok());
    if uri.authority().is_some() {
        let h = host.unwrap_or("");
        assert!(
            !h.contains('@'),
            "userinfo in the request host {h:?} from {uri}"
        );
    }
    let path = input.path.as_str();
    let got = router.route(host, path);
    assert!(got.is_none_or(|i| i < input.routes.len()));

    // strip_port removes at most a `:digits` port and then one trailing dot.
    for h in [
        host,
        input.host_header.as_deref(),
        input.authority.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        let s = strip_port(h);
        assert!(h.starts_with(s), "{h:?} → {s:?}");
        let cut = &h[s.len()..];
        let cut = cut.strip_prefix('.').unwrap_or(cut);
        assert!(
            cut.is_empty()
                || cut
                    .strip_prefix(':')
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())),
            "{h:?} → {s:?} removed {cut:?}"
        );
    }

    let valid = input.routes.iter().all(|r| {
        r.host
            .as_deref()
            .is_none_or(|h| check_host_pattern(h).is_ok())
            && r.prefix
                .as_deref()
                .is_none_or(|p| check_path_prefix(p).is_ok())
    });
    if !valid {
        return;
    }
    let bare = host.map(strip_port).unwrap_or("");
    let want = input
        .routes
        .iter()
        .position(|r| model_host(r.host.as_deref(), bare) && model_path(r.prefix.as_deref(), path));
    assert_eq!(got, want, "host {host:?} (bare {bare:?}) path {path:?}");

    if let Some(h) = host {
        assert_eq!(router.route(Some(&h.to_ascii_uppercase()), path), got);
        assert_eq!(router.route(Some(&h.to_ascii_lowercase()), path), got);
        if !h.contains(':') && !h.starts_with('[') {
            assert_eq!(
                router.route(Some(&format!("{h}:{}", input.port)), path),
                got,
                "{h:?} with port {}",
                input.port
            );
        }
    }
});
