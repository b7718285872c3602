//! The PROXY protocol (HAProxy's, versions 1 and 2): the client address behind an L4 balancer.
//!
//! Why it exists: behind a TCP (layer 4) balancer such as an AWS NLB, every connection comes
//! from the balancer's address, so `X-Forwarded-For`, the access log, rate limiting and
//! `client_ip` hashing would all see the balancer instead of the client. A listener with
//! `proxy_protocol: true` expects the L4 balancer to open each connection with a PROXY header
//! naming the original client; this module reads it, before TLS and before HTTP.
//!
//! Two layers:
//! - [`parse`] is a pure function over bytes (no I/O, no allocation, no panic on any input):
//!   it answers "a complete header of `len` bytes", "not enough bytes yet", or an error. It
//!   rejects as early as the bytes allow (a plain HTTP request fails at its first byte), and
//!   bounds how much it will ever ask for ([`V1_MAX_LEN`], [`V2_MAX_LEN`]). A fuzz target can
//!   call it directly.
//! - [`read_header`] reads one header from a fresh TCP connection **without reading a byte
//!   past it**: it peeks at what has arrived, parses, and then consumes exactly the header's
//!   bytes, so whatever follows (a TLS ClientHello, an HTTP request) stays in the socket for
//!   the next layer. No replay buffer is needed, and TLS still gets a plain `TcpStream`.
//!
//! What the header means for the connection ([`Header::client_addr`]): a v1 `TCP4`/`TCP6` line
//! or a v2 `PROXY` command over `AF_INET`/`AF_INET6` gives the client address; a v2 `LOCAL`
//! command (the balancer's own health check), a v1 `UNKNOWN` line and a v2 `PROXY` with an
//! unspecified or `AF_UNIX` family keep the real peer address, as the specification asks.
//! A v2 `PROXY` over `SOCK_DGRAM` or an unknown family is refused (this is a TCP listener);
//! a `LOCAL` command's family and address block are ignored. v2 TLVs are skipped.
//!
//! Reference: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::metrics::ProxyProtocolFailure;

/// The longest v1 header, `\r\n` included (the specification's worst case: an `UNKNOWN` line
/// with two full-length IPv6 addresses and two 5-digit ports).
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 header accepted, 16-byte fixed part included. The address block needs at
/// most 216 bytes (`AF_UNIX`); the rest is TLVs, which real senders keep small (an AWS NLB
/// adds its VPC endpoint id, HAProxy a few short fields, TLS details at most a few hundred
/// bytes). 4 KiB leaves room for all of that and bounds what one connection can make us read
/// before HTTP starts; the format itself would allow 64 KiB.
pub const V2_MAX_LEN: usize = 4096;

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// How a v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The fixed part of a v2 header: signature, version/command, family/protocol, length.
const V2_FIXED_LEN: usize = 16;

/// v2 address block sizes by family.
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The balancer relays a client connection: `source` is the client, `destination` the
    /// address the client connected to (the balancer's).
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer relays a connection without saying from where (v1 `UNKNOWN`, v2 `PROXY`
    /// with an unspecified or unix-socket family): the real peer address is used.
    Unknown,
    /// v2 `LOCAL`: a connection the balancer made itself (a health check): the real peer
    /// address is used.
    Local,
}

impl Header {
    /// The client address for this connection: the header's source address, or `peer` (the
    /// TCP peer, i.e. the L4 balancer) when the header names none.
    pub fn client_addr(&self, peer: SocketAddr) -> SocketAddr {
        match self {
            Header::Proxied { source, .. } => *source,
            Header::Unknown | Header::Local => peer,
        }
    }
}

/// The outcome of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header: the first `len` bytes of the input. Bytes after them are not part of it.
    Complete { header: Header, len: usize },
    /// Valid so far, but the header continues past the input: read more.
    Incomplete,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxyProtocol,
    #[error("PROXY v1 line longer than {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    #[error("PROXY v2 header version {0} (only 2 exists)")]
    V2Version(u8),
    #[error("PROXY v2 command {0:#x} (only LOCAL and PROXY exist)")]
    V2Command(u8),
    #[error("PROXY v2 address family/protocol {0:#04x} is not supported")]
    V2Family(u8),
    #[error("PROXY v2 address block of {len} bytes is too short for its family (needs {need})")]
    V2ShortAddress { len: usize, need: usize },
    #[error("PROXY v2 header of {0} bytes is longer than the {V2_MAX_LEN} accepted")]
    V2TooLong(usize),
}

/// Parse a PROXY header (v1 or v2) at the start of `buf`.
///
/// Pure: looks only at `buf`, never panics, never indexes out of bounds, whatever the input.
/// `Ok(Incomplete)` means every byte so far is consistent with a header that has not ended
/// yet — and therefore that all of `buf` belongs to the header. The answer for a prefix never
/// contradicts the answer for the whole: an error stays an error as bytes are added.
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    if is_prefix_of(buf, &V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if is_prefix_of(buf, V1_PREFIX) {
        return parse_v1(buf);
    }
    Err(Error::NotProxyProtocol)
}

/// `true` when `buf` and `pattern` agree on their common length (`buf` may be shorter or
/// longer than `pattern`).
fn is_prefix_of(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf[..n] == pattern[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Error> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    // Everything before `\r\n` must be printable ASCII: garbage fails now, not at the timeout.
    let Some(cr) = window.iter().position(|&b| !(0x20..0x7f).contains(&b)) else {
        return if buf.len() >= V1_MAX_LEN {
            Err(Error::V1TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if window[cr] != b'\r' {
        return Err(Error::V1Malformed("control character before CRLF"));
    }
    match window.get(cr + 1) {
        None if buf.len() < V1_MAX_LEN => return Ok(Parsed::Incomplete),
        None => return Err(Error::V1TooLong),
        Some(b'\n') => {}
        Some(_) => return Err(Error::V1Malformed("CR not followed by LF")),
    }
    let len = cr + 2;
    // `window[..cr]` is printable ASCII, hence valid UTF-8.
    let line = std::str::from_utf8(&window[..cr]).map_err(|_| Error::V1Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    // The prefix check guarantees "PROXY " here.
    let _proxy = fields.next();
    let header = match fields.next() {
        // Anything may follow UNKNOWN on the line; the receiver ignores it.
        Some("UNKNOWN") => Header::Unknown,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Err(Error::V1Malformed(
                    "expected `PROXY TCP4|TCP6 SRC DST SPORT DPORT`",
                ));
            };
            let v6 = proto == "TCP6";
            let source = SocketAddr::new(v1_ip(src, v6)?, v1_port(sport)?);
            let destination = SocketAddr::new(v1_ip(dst, v6)?, v1_port(dport)?);
            Header::Proxied {
                source,
                destination,
            }
        }
        _ => return Err(Error::V1Malformed("protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Complete { header, len })
}

fn v1_ip(s: &str, v6: bool) -> Result<IpAddr, Error> {
    if v6 {
        s.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| Error::V1Malformed("not an IPv6 address"))
    } else {
        s.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| Error::V1Malformed("not an IPv4 address"))
    }
}

/// A decimal port, 0..=65535, digits only (no sign, as `u16::from_str` would accept).
fn v1_port(s: &str) -> Result<u16, Error> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::V1Malformed("not a port number"));
    }
    s.parse::<u16>()
        .map_err(|_| Error::V1Malformed("port out of range"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Error> {
    let Some(fixed) = buf.get(..V2_FIXED_LEN) else {
        // Check what has arrived of the fixed part, so garbage fails early.
        if let Some(&ver_cmd) = buf.get(12) {
            let local = check_v2_ver_cmd(ver_cmd)?;
            if let (false, Some(&fam)) = (local, buf.get(13)) {
                check_v2_family(fam)?;
            }
        }
        return Ok(Parsed::Incomplete);
    };
    let ver_cmd = fixed[12];
    let fam = fixed[13];
    let rest = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let local = check_v2_ver_cmd(ver_cmd)?;
    if !local {
        check_v2_family(fam)?;
    }
    let len = V2_FIXED_LEN + rest;
    if len > V2_MAX_LEN {
        return Err(Error::V2TooLong(len));
    }
    let Some(block) = buf.get(V2_FIXED_LEN..len) else {
        return Ok(Parsed::Incomplete);
    };
    if local {
        // LOCAL: the address block (if any) is ignored; the real endpoints are used.
        return Ok(Parsed::Complete {
            header: Header::Local,
            len,
        });
    }
    let header = match fam {
        // AF_INET, STREAM
        0x11 => {
            let a = v2_block(block, V2_INET_LEN)?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            Header::Proxied {
                source: SocketAddr::new(ip(0), be16(a, 8)),
                destination: SocketAddr::new(ip(4), be16(a, 10)),
            }
        }
        // AF_INET6, STREAM
        0x21 => {
            let a = v2_block(block, V2_INET6_LEN)?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(0), be16(a, 32)),
                destination: SocketAddr::new(ip(16), be16(a, 34)),
            }
        }
        // UNSPEC, or AF_UNIX STREAM: no address we can use; keep the real peer.
        _ => Header::Unknown,
    };
    Ok(Parsed::Complete { header, len })
}

/// Version 2 and a known command; `true` for LOCAL.
fn check_v2_ver_cmd(ver_cmd: u8) -> Result<bool, Error> {
    match (ver_cmd >> 4, ver_cmd & 0x0f) {
        (2, 0) => Ok(true),
        (2, 1) => Ok(false),
        (2, cmd) => Err(Error::V2Command(cmd)),
        (v, _) => Err(Error::V2Version(v)),
    }
}

/// Families a PROXY command may name here: UNSPEC, or INET/INET6/UNIX over STREAM. DGRAM
/// and unknown values are refused: such a sender is not describing a TCP connection. (A
/// LOCAL command's family is ignored, as the specification says.)
fn check_v2_family(fam: u8) -> Result<(), Error> {
    match fam {
        0x00 | 0x11 | 0x21 | 0x31 => Ok(()),
        other => Err(Error::V2Family(other)),
    }
}

/// The first `need` bytes of the address block (the rest are TLVs, skipped).
fn v2_block(block: &[u8], need: usize) -> Result<&[u8], Error> {
    block.get(..need).ok_or(Error::V2ShortAddress {
        len: block.len(),
        need,
    })
}

fn be16(a: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([a[o], a[o + 1]])
}

/// Why [`read_header`] failed; each variant is a `reason` label of
/// `switchyard_proxy_protocol_errors_total`.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("invalid PROXY header: {0}")]
    Invalid(#[from] Error),
    #[error("connection closed before the PROXY header ended")]
    Eof,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The metric label for this failure.
    pub fn reason(&self) -> ProxyProtocolFailure {
        match self {
            ReadError::Invalid(_) => ProxyProtocolFailure::Invalid,
            ReadError::Eof | ReadError::Io(_) => ProxyProtocolFailure::Eof,
        }
    }
}

/// Bytes peeked at once: a whole v1 header, or a typical v2 one with its TLVs.
const PEEK_CHUNK: usize = 512;

/// Read one PROXY header from the start of `stream`, consuming exactly its bytes.
///
/// Peeks at what has arrived and parses it: when the header is complete, reads exactly its
/// length (bytes already peeked, so the read returns at once); when it is not, consumes what
/// was peeked (all of it belongs to the header) and waits for more. Each round consumes
/// bytes, so the loop never spins, and it ends within [`V2_MAX_LEN`] bytes. Not bounded in
/// time: the caller wraps it in `limits.header_read_timeout`.
pub async fn read_header(stream: &mut TcpStream) -> Result<Header, ReadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(V1_MAX_LEN);
    let mut chunk = [0u8; PEEK_CHUNK];
    loop {
        let room = V2_MAX_LEN.saturating_sub(buf.len()).min(PEEK_CHUNK);
        if room == 0 {
            // Unreachable: `parse` fails before the input exceeds its bounds.
            return Err(ReadError::Invalid(Error::V2TooLong(buf.len())));
        }
        let n = stream.peek(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(ReadError::Eof);
        }
        let consumed = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf)? {
            Parsed::Complete { header, len } => {
                // `len` lies within what was peeked: take exactly the rest of the header.
                let take = len.saturating_sub(consumed).min(n);
                stream.read_exact(&mut chunk[..take]).await?;
                return Ok(header);
            }
            Parsed::Incomplete => {
                stream.read_exact(&mut chunk[..n]).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Header, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { header, len }) => (header, len),
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// A v2 header: version/command, family, address block, TLVs.
    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(ver_cmd);
        v.push(fam);
        v.extend_from_slice(&u16::try_from(block.len()).expect("len").to_be_bytes());
        v.extend_from_slice(block);
        v
    }

    fn inet_block() -> Vec<u8> {
        let mut b = vec![203, 0, 113, 7, 10, 0, 0, 1];
        b.extend_from_slice(&51234u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    #[test]
    fn v1_tcp4_and_what_follows_is_not_consumed() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (h, len) = complete(&buf);
        assert_eq!(len, line.len());
        assert_eq!(
            h,
            Header::Proxied {
                source: sa("203.0.113.7:51234"),
                destination: sa("10.0.0.1:443")
            }
        );
        assert_eq!(h.client_addr(sa("10.9.9.9:1")), sa("203.0.113.7:51234"));
    }

    #[test]
    fn v1_tcp6() {
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
        let (h, len) = complete(line);
        assert_eq!(len, line.len());
        assert_eq!(
            h,
            Header::Proxied {
                source: sa("[2001:db8::7]:65535"),
                destination: sa("[2001:db8::1]:0")
            }
        );
    }

    #[test]
    fn v1_longest_line_is_accepted() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {ip} {ip} 65535 65535\r\n");
        assert_eq!(line.len(), V1_MAX_LEN);
        assert_eq!(complete(line.as_bytes()), (Header::Unknown, V1_MAX_LEN));
        let tcp6 = line.replace("UNKNOWN", "TCP6");
        assert!(matches!(
            complete(tcp6.as_bytes()).0,
            Header::Proxied { .. }
        ));
    }

    #[test]
    fn v1_unknown_keeps_the_peer() {
        let (h, len) = complete(b"PROXY UNKNOWN\r\nGET");
        assert_eq!((h, len), (Header::Unknown, 15));
        let (h, _) = complete(b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n");
        assert_eq!(h, Header::Unknown);
        assert_eq!(h.client_addr(sa("10.1.2.3:4")), sa("10.1.2.3:4"));
    }

    #[test]
    fn v1_every_prefix_is_incomplete() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        for n in 0..line.len() {
            assert_eq!(
                parse(&line[..n]),
                Ok(Parsed::Incomplete),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443 extra\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 +1 443\r\n",
            b"PROXY TCP4 203.0.113.7  10.0.0.1 1 443\r\n",
            b"PROXY TCP4 203.0.113.007 10.0.0.1 1 443\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 1.2.3.4\x005.6.7.8",
            b"PROXY TCP4 1.2.3.4 \xff",
        ];
        for b in bad {
            assert!(
                matches!(parse(b), Err(Error::V1Malformed(_))),
                "{:?} gave {:?}",
                String::from_utf8_lossy(b),
                parse(b)
            );
        }
    }

    #[test]
    fn v1_without_crlf_within_107_bytes_is_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN, b'a');
        assert_eq!(parse(&line), Err(Error::V1TooLong));
        assert_eq!(parse(&line[..V1_MAX_LEN - 1]), Ok(Parsed::Incomplete));
        // CR as the 107th byte: the LF would be the 108th.
        line[V1_MAX_LEN - 1] = b'\r';
        line.push(b'\n');
        assert_eq!(parse(&line), Err(Error::V1TooLong));
    }

    #[test]
    fn garbage_and_plain_http_fail_at_once() {
        for b in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"G",
            b"\x16\x03\x01",
            b"PROXX",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX",
        ] {
            assert_eq!(parse(b), Err(Error::NotProxyProtocol), "{b:?}");
        }
    }

    #[test]
    fn v2_proxy_inet_with_tlvs_skipped() {
        let mut block = inet_block();
        // An AWS-like TLV (type 0xEA) and a NOOP, skipped.
        block.extend_from_slice(&[0xEA, 0, 5, 1, b'v', b'p', b'c', b'e', 0x04, 0, 0]);
        let mut buf = v2(0x21, 0x11, &block);
        let header_len = buf.len();
        buf.extend_from_slice(b"\x16\x03\x01 TLS follows");
        let (h, len) = complete(&buf);
        assert_eq!(len, header_len);
        assert_eq!(
            h,
            Header::Proxied {
                source: sa("203.0.113.7:51234"),
                destination: sa("10.0.0.1:443")
            }
        );
    }

    #[test]
    fn v2_proxy_inet6() {
        let src: Ipv6Addr = "2001:db8::7".parse().expect("ip");
        let dst: Ipv6Addr = "2001:db8::1".parse().expect("ip");
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&8080u16.to_be_bytes());
        block.extend_from_slice(&80u16.to_be_bytes());
        let buf = v2(0x21, 0x21, &block);
        let (h, len) = complete(&buf);
        assert_eq!(len, 16 + 36);
        assert_eq!(
            h,
            Header::Proxied {
                source: sa("[2001:db8::7]:8080"),
                destination: sa("[2001:db8::1]:80")
            }
        );
    }

    #[test]
    fn v2_local_and_unspecified_keep_the_peer() {
        // LOCAL with no address block (what an NLB health check sends) and with one.
        assert_eq!(complete(&v2(0x20, 0x00, &[])), (Header::Local, 16));
        assert_eq!(complete(&v2(0x20, 0x11, &inet_block())).0, Header::Local);
        // LOCAL ignores the family byte, whatever it says.
        assert_eq!(complete(&v2(0x20, 0x12, &[])).0, Header::Local);
        // PROXY over UNSPEC, and over AF_UNIX: nothing usable, the peer stays.
        assert_eq!(complete(&v2(0x21, 0x00, &[])).0, Header::Unknown);
        assert_eq!(complete(&v2(0x21, 0x31, &[0u8; 216])).0, Header::Unknown);
        assert_eq!(
            Header::Local.client_addr(sa("10.0.0.9:5")),
            sa("10.0.0.9:5")
        );
    }

    #[test]
    fn v2_every_prefix_is_incomplete() {
        let buf = v2(0x21, 0x11, &inet_block());
        for n in 0..buf.len() {
            assert_eq!(
                parse(&buf[..n]),
                Ok(Parsed::Incomplete),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn v2_errors() {
        assert_eq!(
            parse(&v2(0x11, 0x11, &inet_block())),
            Err(Error::V2Version(1))
        );
        assert_eq!(
            parse(&v2(0x22, 0x11, &inet_block())),
            Err(Error::V2Command(2))
        );
        assert_eq!(
            parse(&v2(0x21, 0x12, &inet_block())),
            Err(Error::V2Family(0x12))
        );
        assert_eq!(parse(&v2(0x21, 0x41, &[])), Err(Error::V2Family(0x41)));
        // Early: the version byte is wrong before the length has arrived.
        assert_eq!(
            parse(&[&V2_SIGNATURE[..], &[0x31]].concat()),
            Err(Error::V2Version(3))
        );
        assert_eq!(
            parse(&v2(0x21, 0x11, &[1, 2, 3])),
            Err(Error::V2ShortAddress { len: 3, need: 12 })
        );
        assert_eq!(
            parse(&v2(0x21, 0x21, &inet_block())),
            Err(Error::V2ShortAddress { len: 12, need: 36 })
        );
    }

    #[test]
    fn v2_length_is_bounded_before_the_bytes_arrive() {
        let mut fixed = V2_SIGNATURE.to_vec();
        fixed.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&fixed), Err(Error::V2TooLong(16 + 0xffff)));
        let ok = v2(0x21, 0x11, &vec![0u8; V2_MAX_LEN - 16]);
        assert_eq!(complete(&ok).1, V2_MAX_LEN);
        let over = v2(0x21, 0x11, &vec![0u8; V2_MAX_LEN - 15]);
        assert_eq!(parse(&over[..16]), Err(Error::V2TooLong(V2_MAX_LEN + 1)));
    }

    /// Every input of a few bytes, and prefixes of valid headers with each byte changed:
    /// never a panic, and a complete header never claims more bytes than it was given.
    #[test]
    fn parse_never_panics_nor_overreads() {
        let check = |b: &[u8]| {
            if let Ok(Parsed::Complete { len, .. }) = parse(b) {
                assert!(len <= b.len(), "len {len} > input {}", b.len());
            }
        };
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                check(&[a, b]);
            }
        }
        let seeds = [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n".to_vec(),
            v2(0x21, 0x11, &inet_block()),
            v2(0x20, 0x00, &[]),
        ];
        for seed in &seeds {
            for i in 0..seed.len() {
                for x in [0u8, 0x0a, 0x0d, 0x20, 0x21, 0x31, 0x7f, 0xff] {
                    let mut s = seed.clone();
                    s[i] = x;
                    for n in 0..=s.len() {
                        check(&s[..n]);
                    }
                }
            }
        }
    }
}
