//! Header rules of a reverse proxy (DESIGN.md "Proxy behaviour"):
//! hop-by-hop stripping, `X-Forwarded-*`, `X-Request-Id`.
//!
//! Hop-by-hop headers describe one connection, not the message, so they are removed in both
//! directions: `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` — except that a protocol upgrade keeps
//! `Connection: upgrade` and `Upgrade` so the upstream can answer 101.

use std::net::IpAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Does this request ask for a protocol upgrade (`Connection: upgrade` + `Upgrade`)?
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has_token(headers, "upgrade")
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Is this one of the fixed hop-by-hop header names (not counting those `Connection` names)?
#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Remove hop-by-hop headers. With `keep_upgrade`, `Upgrade` survives and `Connection` is
/// reduced to `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names instead of seven hash lookups
    // and removals (this runs twice per proxied request).
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        // Headers named in Connection are hop-by-hop too. Collect first: we cannot remove
        // while borrowing the Connection values.
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == UPGRADE {
                continue;
            }
            headers.remove(&name);
        }
        headers.remove(CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TE);
    headers.remove(TRAILER);
    headers.remove(TRANSFER_ENCODING);
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Longest textual IP address (IPv6 with an embedded IPv4 tail).
const IP_TEXT_MAX: usize = 45;

/// `ip` as text into `buf`, returning the used part. IPv4 — nearly every request — is
/// written by hand: `Display` goes through the formatting machinery and costs more than the
/// rest of the forwarding headers together.
fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes hold any IPv6 text, so the write cannot fail.
            let _ = write!(cursor, "{v6}");
            let n = usize::try_from(cursor.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

/// Apply the forwarding headers to a request going upstream.
///
/// - `X-Forwarded-For`: the client's value kept and the peer address appended (nginx's
///   `$proxy_add_x_forwarded_for`);
/// - `X-Forwarded-Proto`: the scheme the client used with us;
/// - `X-Forwarded-Host`: the host as received, port included;
/// - `Host`: kept as received; an HTTP/2 request carries it as `:authority`, which becomes
///   the `Host` of the HTTP/1.1 request upstream.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    peer: IpAddr,
    https: bool,
    host: Option<&HeaderValue>,
) {
    let mut ip_buf = [0u8; IP_TEXT_MAX];
    let peer_text = ip_text(peer, &mut ip_buf);
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            // Multiple XFF header lines are joined into one, in order.
            let mut joined = Vec::with_capacity(prev.len() + peer_text.len() + 2);
            for (i, v) in headers.get_all(&X_FORWARDED_FOR).iter().enumerate() {
                if let Ok(s) = v.to_str() {
                    if i > 0 {
                        joined.extend_from_slice(b", ");
                    }
                    joined.extend_from_slice(s.trim().as_bytes());
                }
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer_text);
            HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
        }
        _ => HeaderValue::from_bytes(peer_text).ok(),
    };
    if let Some(v) = xff {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if let Some(h) = host {
        headers.insert(&X_FORWARDED_HOST, h.clone());
        if !headers.contains_key(HOST) {
            headers.insert(HOST, h.clone());
        }
    }
}

/// The request's id: the client's `X-Request-Id` if it sent one, else a new one, which is
/// inserted into the request.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        return v.clone();
    }
    let id = new_request_id();
    headers.insert(&X_REQUEST_ID, id.clone());
    id
}

/// A random 128-bit id as 32 lower-case hex digits: a few nanoseconds, no shared state.
pub fn new_request_id() -> HeaderValue {
    let (a, b) = (strategies::random_u64(), strategies::random_u64());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, byte) in a
        .to_be_bytes()
        .iter()
        .chain(b.to_be_bytes().iter())
        .enumerate()
    {
        out[2 * i] = HEX[(byte >> 4) as usize];
        out[2 * i + 1] = HEX[(byte & 0xf) as usize];
    }
    // 32 hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(TE).is_none());
        assert_eq!(h.get("x-kept").map(|v| v.as_bytes()), Some(&b"1"[..]));
    }

    #[test]
    fn upgrade_keeps_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn xff_appends_the_peer() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        add_forwarding(&mut h, "10.0.0.9".parse().expect("ip"), false, None);
        assert_eq!(
            h.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()),
            Some(&b"1.1.1.1, 2.2.2.2, 10.0.0.9"[..])
        );
        assert_eq!(
            h.get(&X_FORWARDED_PROTO).map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
    }

    #[test]
    fn ip_text_matches_display() {
        let mut buf = [0u8; IP_TEXT_MAX];
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.9",
            "99.100.199.255",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.168.100.200",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let parsed: IpAddr = ip.parse().expect("ip");
            assert_eq!(
                std::str::from_utf8(ip_text(parsed, &mut buf)).expect("ascii"),
                parsed.to_string()
            );
        }
    }

    #[test]
    fn ip_text_matches_display_for_every_octet_value() {
        let mut buf = [0u8; IP_TEXT_MAX];
        for o in 0..=255u8 {
            for octets in [[o, 0, 0, 0], [1, o, 10, 100], [255, 99, o, 9], [o, o, o, o]] {
                let ip = IpAddr::from(octets);
                assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn strip_leaves_ordinary_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("example.com"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        for hop in [
            "transfer-encoding",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
        ] {
            let mut h = before.clone();
            h.insert(HeaderName::from_static(hop), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h, before, "{hop} must be stripped");
        }
    }

    #[test]
    fn request_ids_are_distinct_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(|c| c.is_ascii_hexdigit()));
    }
}
