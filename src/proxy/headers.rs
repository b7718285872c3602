//! Header rules of a reverse proxy:
//! hop-by-hop stripping, `X-Forwarded-*`, `X-Request-Id`, and the client address behind
//! trusted proxies ([`client_addr`]).
//!
//! Hop-by-hop headers describe one connection, not the message, so they are removed in both
//! directions: `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`,
//! `TE`, `Transfer-Encoding`, `Upgrade` — with two exceptions. A protocol upgrade keeps
//! `Connection: upgrade` and `Upgrade` so the upstream can answer 101. A request's `TE` that
//! lists `trailers` is kept as exactly `te: trailers`: the client says it accepts trailers,
//! which every hop of ours passes on, and gRPC servers require it (RFC 9113 §8.2.2 allows
//! that one value on HTTP/2). `Trailer` is not hop-by-hop (RFC 9110 §6.6.2 makes it
//! end-to-end; it was in RFC 2616's list only): it announces the trailer fields that follow,
//! and HTTP/1.1 senders — hyper included — send only the fields it announces.

use std::net::IpAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, COOKIE, HOST, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Uri};

use crate::config::Cidr;
use crate::upstream::ExtraHeaders;
use crate::util::random;

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
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), token))
}

/// Does a comma-separated list hold `token` (case-insensitive; parameters after `;` are
/// ignored, as in `trailers;q=1`)?
fn has_token(list: &[u8], token: &str) -> bool {
    list.split(|&b| b == b',').any(|t| {
        let t = t.split(|&b| b == b';').next().unwrap_or(&[]);
        t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())
    })
}

/// The gRPC deadline a client sent (`grpc-timeout: 1S`, at most 8 digits and a unit of
/// `H M S m u n`), or `None`. The request's head must arrive within it, if that is sooner
/// than the pool's `timeouts.request`.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    use std::time::Duration;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Join the `Cookie` fields of an HTTP/2 request into one, separated by `"; "`: HTTP/2
/// clients may send each cookie as its own field (RFC 9113 §8.2.3), and that is how a
/// request forwarded as HTTP/1.1 must carry them — one `Cookie` line (RFC 6265 §5.4).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Made of valid header values and "; ": valid too.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// Is this one of the fixed hop-by-hop header names (not counting those `Connection` names)?
#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Remove hop-by-hop headers. With `keep_upgrade`, `Upgrade` survives and `Connection` is
/// reduced to `upgrade`. A `TE` listing `trailers` becomes `te: trailers`.
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
    if let Some(te) = headers.remove(TE) {
        if has_token(te.as_bytes(), "trailers") {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
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

/// The host and port of an authority (`user:pw@host:port` → `host:port`): a `userinfo@`
/// part is never the host, and must neither steer routing nor reach a backend.
pub fn authority_host(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// The host the client asked for: the URI's authority (HTTP/2 `:authority`, or an
/// absolute-form HTTP/1.1 target such as `http://a.example.com/`) without any userinfo,
/// or else the `Host` header.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(a) = uri.authority() {
        return HeaderValue::from_str(authority_host(a.as_str())).ok();
    }
    headers.get(HOST).cloned()
}

/// The forwarding headers of one request, computed once: inserted into the header map for
/// hyper's client, or written straight onto the HTTP/1.1 wire by the upstream codec without
/// touching the map (both through [`ExtraHeaders`]).
///
/// - `X-Forwarded-For`: the client's value kept and the peer address appended (nginx's
///   `$proxy_add_x_forwarded_for`);
/// - `X-Forwarded-Proto`: the scheme the client used with us;
/// - `X-Forwarded-Host`: the host as received, port included;
/// - `X-Request-Id`: the one the balancer made, for a request that came without one.
///
/// (`Host` is the upstream layer's: the authority the request is routed by goes out as
/// `Host` to HTTP/1.1 nodes and as `:authority` to HTTP/2 nodes.)
#[derive(Debug)]
pub struct Forwarding {
    xff: Xff,
    https: bool,
    /// The `X-Request-Id` the balancer made for a request that came without one.
    request_id: Option<HeaderValue>,
}

/// The new `X-Forwarded-For` value.
#[derive(Debug)]
enum Xff {
    /// Just the peer's address (the usual case: no earlier proxy), as text.
    Peer { buf: [u8; IP_TEXT_MAX], len: usize },
    /// The client's value with the peer's address appended.
    Joined(Vec<u8>),
}

impl Forwarding {
    pub fn new(headers: &HeaderMap, peer: IpAddr, https: bool) -> Forwarding {
        let mut buf = [0u8; IP_TEXT_MAX];
        let len = ip_text(peer, &mut buf).len();
        let peer_text = &buf[..len];
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
                Xff::Joined(joined)
            }
            _ => Xff::Peer { buf, len },
        };
        Forwarding {
            xff,
            https,
            request_id: None,
        }
    }

    /// Also send `X-Request-Id: id` (for a request that came without one).
    pub fn with_request_id(mut self, id: Option<HeaderValue>) -> Forwarding {
        self.request_id = id;
        self
    }

    fn xff(&self) -> &[u8] {
        match &self.xff {
            Xff::Peer { buf, len } => &buf[..*len],
            Xff::Joined(v) => v,
        }
    }

    fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

/// `X-Forwarded-Host` is the authority the request is sent for (the host it was routed by).
impl ExtraHeaders for Forwarding {
    fn insert_into(&self, authority: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_bytes(self.xff()) {
            headers.insert(&X_FORWARDED_FOR, v);
        }
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(self.proto()));
        if let Some(h) = authority {
            headers.insert(&X_FORWARDED_HOST, h.clone());
        }
        if let Some(id) = &self.request_id {
            headers.insert(&X_REQUEST_ID, id.clone());
        }
    }

    fn replaces(&self, authority: Option<&HeaderValue>, name: &HeaderName) -> bool {
        *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_PROTO
            || (authority.is_some() && *name == X_FORWARDED_HOST)
    }

    fn write_h1(&self, authority: Option<&HeaderValue>, out: &mut Vec<u8>) {
        // The joined value is made of header-value text and an address: always valid.
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(self.xff());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto().as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(h) = authority {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(id) = &self.request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The client address of a request: the peer, or — when
/// the peer is in `trusted_proxies` — the last untrusted hop of `X-Forwarded-For`.
///
/// `X-Forwarded-For` is walked from the right (every header line, in order, as one list):
/// each trusted hop is stepped over, and the first untrusted address is the client. Every
/// hop trusted: the leftmost. An entry that is not an address (`unknown`, an obfuscated
/// name, garbage, a non-ASCII header) stops the walk: nothing to its left can be attributed,
/// so the client is the nearest trusted hop seen so far — never an address the client could
/// have written itself. `1.2.3.4:80`, `[2001:db8::1]` and `[2001:db8::1]:80` are read as
/// their address. IPv4-mapped IPv6 addresses become IPv4. Costs nothing when
/// `trusted_proxies` is empty or the peer is not in it.
pub fn client_addr(peer: IpAddr, trusted: &[Cidr], headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for entry in line.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                // `a,,b` or a trailing comma: an empty list element, allowed by RFC 9110.
                continue;
            }
            let Some(ip) = parse_forwarded_ip(entry) else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                return client;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry as an address: `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return if port_ok {
            v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            None
        };
    }
    entry
        .parse::<std::net::SocketAddrV4>()
        .ok()
        .map(|sa| IpAddr::V4(*sa.ip()))
}

/// The request's id: the client's `X-Request-Id` if it sent one, else a new one (`true`:
/// generated here, and to be sent upstream with [`Forwarding::with_request_id`]).
pub fn request_id(headers: &HeaderMap) -> (HeaderValue, bool) {
    match headers.get(&X_REQUEST_ID) {
        Some(v) => (v.clone(), false),
        None => (new_request_id(), true),
    }
}

/// A random 128-bit id as 32 lower-case hex digits: a few nanoseconds, no shared state.
/// Always inlined: it is on every request's path, and with a second (rare) caller, the
/// framing guard, the compiler would otherwise call it out of line.
#[inline(always)]
pub fn new_request_id() -> HeaderValue {
    let (a, b) = (random::next_u64(), random::next_u64());
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
        h.insert(TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(TE).is_none());
        assert_eq!(h.get("x-kept").map(|v| v.as_bytes()), Some(&b"1"[..]));
    }

    #[test]
    fn te_trailers_and_trailer_survive() {
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("gzip, Trailers;q=1"));
        h.insert(http::header::TRAILER, HeaderValue::from_static("x-sum"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get(TE).unwrap(), "trailers");
        assert_eq!(h.get(http::header::TRAILER).unwrap(), "x-sum");
    }

    #[test]
    fn grpc_timeouts_parse() {
        use std::time::Duration;
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "1", "123456789S", "1s", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cookie_fields_are_joined_into_one() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        h.append(COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = HeaderMap::new();
        one.insert(COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one.get(COOKIE).unwrap(), "a=1");
        join_cookies(&mut HeaderMap::new());
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
        let fwd = Forwarding::new(&h, "10.0.0.9".parse().expect("ip"), false);
        fwd.insert_into(None, &mut h);
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
    fn forwarding_is_the_same_on_the_wire_and_in_the_map() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("spoofed"));
        let host = HeaderValue::from_static("a.example");
        let fwd = Forwarding::new(&h, ip("10.0.0.7"), true)
            .with_request_id(Some(HeaderValue::from_static("abc")));
        let mut wire = Vec::new();
        fwd.write_h1(Some(&host), &mut wire);
        assert_eq!(
            String::from_utf8_lossy(&wire),
            "x-forwarded-for: 192.0.2.1, 10.0.0.7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: a.example\r\nx-request-id: abc\r\n"
        );
        let mut mapped = h.clone();
        fwd.insert_into(Some(&host), &mut mapped);
        let mut lines = 0;
        for line in String::from_utf8_lossy(&wire).split("\r\n") {
            if let Some((k, v)) = line.split_once(": ") {
                assert_eq!(mapped.get(k).map(|v| v.to_str().unwrap()), Some(v), "{k}");
                assert!(
                    fwd.replaces(Some(&host), &HeaderName::from_bytes(k.as_bytes()).unwrap())
                        || k == "x-request-id"
                );
                lines += 1;
            }
        }
        assert_eq!(lines, 4);
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_static(v));
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| Cidr::parse(s).expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn client_is_the_peer_unless_the_peer_is_trusted() {
        let h = xff(&["1.1.1.1"]);
        // No trusted proxies: X-Forwarded-For is not believed.
        assert_eq!(client_addr(ip("10.0.0.1"), &[], &h), ip("10.0.0.1"));
        // An untrusted peer: not believed either.
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_addr(ip("192.0.2.9"), &t, &h), ip("192.0.2.9"));
        // A trusted peer: the last untrusted hop.
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("1.1.1.1"));
        // A trusted peer without X-Forwarded-For: the peer.
        assert_eq!(
            client_addr(ip("10.0.0.1"), &t, &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn client_walks_right_to_left_over_trusted_hops() {
        let t = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        // The client may prepend anything; only the hops our proxies appended count.
        let h = xff(&["6.6.6.6, 2.2.2.2", "10.1.1.1, 192.168.3.4"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("2.2.2.2"));
        // Every hop trusted: the leftmost.
        let h = xff(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("10.9.9.9"));
        // Ports, brackets, spaces, empty elements, IPv4-mapped IPv6.
        let h = xff(&["[2001:db8::7]:443 , ,10.2.2.2:8080"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("2001:db8::7"));
        let h = xff(&["::ffff:203.0.113.5"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("203.0.113.5"));
        // A peer given as IPv4-mapped IPv6 is matched against IPv4 networks.
        let h = xff(&["198.51.100.1"]);
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.1"), &t, &h),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn client_walk_stops_at_garbage() {
        let t = nets(&["10.0.0.0/8"]);
        // `unknown` written by a trusted hop: the address left of it cannot be attributed;
        // the nearest trusted hop is the answer.
        let h = xff(&["1.1.1.1, unknown, 10.3.3.3"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("10.3.3.3"));
        let h = xff(&["1.1.1.1, ;DROP TABLE"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("10.0.0.1"));
        for bad in [
            "[::1",
            "[::1]x",
            "[::1]:",
            "1.2.3.4:",
            "1.2.3.4:x",
            "999.1.1.1",
        ] {
            let mut h = HeaderMap::new();
            h.insert(&X_FORWARDED_FOR, HeaderValue::from_str(bad).expect("value"));
            assert_eq!(
                client_addr(ip("10.0.0.1"), &t, &h),
                ip("10.0.0.1"),
                "{bad:?}"
            );
        }
        // Non-ASCII bytes in the header: not readable, the peer.
        let mut h = HeaderMap::new();
        h.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"1.1.1.1, \xff").expect("value"),
        );
        assert_eq!(client_addr(ip("10.0.0.1"), &t, &h), ip("10.0.0.1"));
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

    // The host of `GET http://user@a.example.com/` once was
    // `user@a.example.com`, which routed by the userinfo and forwarded it upstream.
    #[test]
    fn request_host_drops_userinfo() {
        let none = HeaderMap::new();
        for (target, want) in [
            ("http://user@a.example.com/", "a.example.com"),
            ("http://user:pw@a.example.com:8080/x", "a.example.com:8080"),
            ("http://a.example.com/", "a.example.com"),
            ("http://u@[::1]:80/", "[::1]:80"),
        ] {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(request_host(&uri, &none).unwrap(), want, "{target}");
        }
        let mut host = HeaderMap::new();
        host.insert(HOST, HeaderValue::from_static("b.example.com"));
        let origin: Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&origin, &host).unwrap(), "b.example.com");
        assert_eq!(request_host(&origin, &none), None);
        assert_eq!(authority_host("a@b@c:1"), "c:1");
    }
}
