//! The header rules of the wire, HTTP/1.1 and HTTP/2, written once.
//!
//! The request path hands over end-to-end headers (hop-by-hop ones already removed, except
//! `te: trailers`, `Upgrade` for an upgrade request, and `Trailer`, which is end-to-end),
//! the authority the request goes upstream for, and the headers it adds itself
//! ([`ExtraHeaders`]: `X-Forwarded-*`, a generated `X-Request-Id`). What goes on the wire:
//!
//! | | HTTP/1.1 node | HTTP/2 node (RFC 9113 §8.2–8.3) |
//! | --- | --- | --- |
//! | authority | `Host` (the client's, or the authority as `Host` when it had none) | `:authority`, and no `host` field |
//! | `te: trailers` (when the client sent it) | sent, with `Connection: te` (RFC 9110 §10.1.4): many servers send trailers only when asked | sent, the only `te` allowed; gRPC servers require it |
//! | connection-specific fields | only `Connection: upgrade`/`te` as needed | never |
//! | body framing | `Content-Length`, or chunked when trailers follow | DATA frames |
//!
//! An added header replaces a client header of the same name (the client's
//! `X-Forwarded-Proto` is not believed); `X-Forwarded-For` was built from the client's own.

use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TE, TRANSFER_ENCODING,
};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri, Version};

use super::request_body::RequestBody;

/// Headers the request path adds to every attempt, written straight onto the HTTP/1.1
/// wire by the codec (no map insertions on the hot path), or inserted into the header map
/// for hyper's client.
/// Each call is given the request's authority (the host it is sent for).
pub trait ExtraHeaders {
    /// Does a client header of this name give way to an added one?
    fn replaces(&self, authority: Option<&HeaderValue>, name: &HeaderName) -> bool;
    /// Write the added headers as HTTP/1.1 header lines.
    fn write_h1(&self, authority: Option<&HeaderValue>, out: &mut Vec<u8>);
    /// Insert the added headers into a header map.
    fn insert_into(&self, authority: Option<&HeaderValue>, headers: &mut HeaderMap);
}

/// No added headers (health probes).
impl ExtraHeaders for () {
    fn replaces(&self, _: Option<&HeaderValue>, _: &HeaderName) -> bool {
        false
    }
    fn write_h1(&self, _: Option<&HeaderValue>, _: &mut Vec<u8>) {}
    fn insert_into(&self, _: Option<&HeaderValue>, _: &mut HeaderMap) {}
}

/// A request on its way to the pool's nodes: what every attempt sends.
#[derive(Debug)]
pub struct Outgoing<E> {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    /// End-to-end headers.
    pub headers: HeaderMap,
    /// The host the request goes upstream for: `Host` on HTTP/1.1, `:authority` on HTTP/2.
    pub authority: Option<HeaderValue>,
    /// What the request path adds.
    pub extra: E,
    pub body: RequestBody,
    /// The client asked for a protocol upgrade (`Connection: upgrade` + `Upgrade` are in
    /// `headers`).
    pub upgrade: bool,
    /// The HTTP/1.1 bytes of the request, made once for every attempt that needs them.
    pub(crate) h1_wire: Vec<u8>,
}

impl<E: ExtraHeaders> Outgoing<E> {
    pub fn new(
        method: Method,
        path_and_query: PathAndQuery,
        headers: HeaderMap,
        authority: Option<HeaderValue>,
        extra: E,
        body: RequestBody,
        upgrade: bool,
    ) -> Outgoing<E> {
        Outgoing {
            method,
            path_and_query,
            headers,
            authority,
            extra,
            body,
            upgrade,
            h1_wire: Vec::new(),
        }
    }

    /// The request as HTTP/1.1 bytes, head and complete body, for the codec (made on the
    /// first call, reused by later attempts). `None` when the body is not complete.
    pub(crate) fn h1_bytes(&mut self) -> Option<&[u8]> {
        if self.h1_wire.is_empty() {
            let (body, trailers) = self.body.complete()?;
            encode_h1(
                &self.method,
                self.path_and_query.as_str(),
                &self.headers,
                self.authority.as_ref(),
                &self.extra,
                body,
                trailers,
                &mut self.h1_wire,
            );
        }
        Some(&self.h1_wire)
    }

    /// The request for hyper's client: HTTP/1.1 with an origin-form target, or HTTP/2 with
    /// an absolute URI (`scheme://authority/path`). The headers are copied when the body
    /// can be sent again, and moved otherwise ([`Outgoing::restore`] puts them back when
    /// the request comes back unsent).
    pub(crate) fn hyper_request(
        &mut self,
        h2: bool,
        scheme: Scheme,
        node: &Authority,
    ) -> Request<RequestBody> {
        let body = self.body.take_for_send();
        let mut headers = if self.body.is_sendable() {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        self.extra
            .insert_into(self.authority.as_ref(), &mut headers);
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        if h2 {
            let authority = headers
                .remove(HOST)
                .or_else(|| self.authority.clone())
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| node.clone());
            headers.remove(CONNECTION);
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = Some(authority);
            parts.path_and_query = Some(self.path_and_query.clone());
            *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
            *req.version_mut() = Version::HTTP_2;
        } else {
            if !headers.contains_key(HOST) {
                if let Some(h) = &self.authority {
                    headers.insert(HOST, h.clone());
                }
            }
            if headers.contains_key(TE) {
                headers.append(CONNECTION, HeaderValue::from_static("te"));
            }
            *req.uri_mut() = Uri::from(self.path_and_query.clone());
            *req.version_mut() = Version::HTTP_11;
        }
        *req.headers_mut() = headers;
        req
    }

    /// A request that came back unsent from hyper's client: its headers and body are
    /// this request's again.
    pub(crate) fn restore(&mut self, unsent: Request<RequestBody>) {
        let (parts, body) = unsent.into_parts();
        if self.headers.is_empty() {
            self.headers = parts.headers;
            // `hyper_request` adds it again on the next attempt (a request with a streamed
            // body, the only kind that comes back, never carries an upgrade's own).
            self.headers.remove(CONNECTION);
        }
        self.body.restore(body);
    }
}

/// Write `method target HTTP/1.1`, the headers, `Host` when the headers lack one, the added
/// headers, and the complete body with its framing into `out`.
#[allow(clippy::too_many_arguments)]
pub fn encode_h1(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    authority: Option<&HeaderValue>,
    extra: &dyn ExtraHeaders,
    body: &[u8],
    trailers: Option<&HeaderMap>,
    out: &mut Vec<u8>,
) {
    // Sized up front: growing the buffer header by header costs more than this pass.
    let lines: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + target.len() + lines + body.len() + 256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let chunked = trailers.is_some();
    // Noted on the way through rather than looked up: each lookup hashes the name.
    let (mut has_host, mut has_te, mut has_length) = (false, false, false);
    for (name, value) in headers {
        if name == HOST {
            has_host = true;
        } else if name == TE {
            has_te = true;
        } else if name == CONTENT_LENGTH {
            has_length = true;
        }
        if extra.replaces(authority, name)
            || (chunked && (name == CONTENT_LENGTH || name == TRANSFER_ENCODING))
        {
            continue;
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(h) = authority.filter(|_| !has_host) {
        line(out, b"host", h.as_bytes());
    }
    if has_te {
        line(out, b"connection", b"te");
    }
    extra.write_h1(authority, out);
    match trailers {
        Some(trailers) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            if !body.is_empty() {
                let mut hex = [0u8; 16];
                out.extend_from_slice(hex_len(body.len(), &mut hex));
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            for (name, value) in trailers {
                line(out, name.as_str().as_bytes(), value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        None => {
            if !body.is_empty() && !has_length {
                line(
                    out,
                    b"content-length",
                    itoa::Buffer::new().format(body.len()).as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
    }
}

#[inline]
fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in hexadecimal, for a chunk-size line.
fn hex_len(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fwd;
    impl ExtraHeaders for Fwd {
        fn replaces(&self, _: Option<&HeaderValue>, name: &HeaderName) -> bool {
            name == "x-forwarded-proto"
        }
        fn write_h1(&self, _: Option<&HeaderValue>, out: &mut Vec<u8>) {
            out.extend_from_slice(b"x-forwarded-proto: http\r\n");
        }
        fn insert_into(&self, _: Option<&HeaderValue>, headers: &mut HeaderMap) {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
    }

    fn h1(
        headers: &HeaderMap,
        authority: Option<&str>,
        body: &[u8],
        trailers: Option<&HeaderMap>,
    ) -> String {
        let authority = authority.map(HeaderValue::from_str).and_then(Result::ok);
        let mut out = Vec::new();
        encode_h1(
            &Method::POST,
            "/x?y=1",
            headers,
            authority.as_ref(),
            &Fwd,
            body,
            trailers,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn http1_head_has_one_host_and_the_added_headers() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("a.example"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("spoofed"));
        assert_eq!(
            h1(&h, Some("a.example"), b"abc", None),
            "POST /x?y=1 HTTP/1.1\r\nhost: a.example\r\nx-forwarded-proto: http\r\n\
             content-length: 3\r\n\r\nabc"
        );
        // No Host (an HTTP/2 client): the authority is sent as Host.
        assert_eq!(
            h1(&HeaderMap::new(), Some("b.example:8443"), b"", None),
            "POST /x?y=1 HTTP/1.1\r\nhost: b.example:8443\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn http1_te_trailers_is_announced_and_trailers_are_chunked() {
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        let mut t = HeaderMap::new();
        t.insert("x-sum", HeaderValue::from_static("7"));
        assert_eq!(
            h1(&h, None, b"abc", Some(&t)),
            "POST /x?y=1 HTTP/1.1\r\nte: trailers\r\nconnection: te\r\nx-forwarded-proto: http\r\n\
             transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 7\r\n\r\n"
        );
        let mut buf = [0u8; 16];
        assert_eq!(hex_len(0x1f2e, &mut buf), b"1f2e");
        assert_eq!(hex_len(0, &mut buf), b"0");
    }

    #[test]
    fn http2_request_has_one_authority_and_no_connection_headers() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("svc.example:8080"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        let mut out = Outgoing::new(
            Method::GET,
            PathAndQuery::from_static("/p?q"),
            h,
            Some(HeaderValue::from_static("svc.example:8080")),
            Fwd,
            RequestBody::Empty,
            false,
        );
        let node = Authority::from_static("10.0.0.1:80");
        let req = out.hyper_request(true, Scheme::HTTP, &node);
        assert_eq!(req.uri(), "http://svc.example:8080/p?q");
        assert!(req.headers().get(HOST).is_none());
        assert_eq!(req.headers().get(TE).unwrap(), "trailers");
        assert!(req.headers().get(CONNECTION).is_none());
        assert_eq!(req.headers().get("x-forwarded-proto").unwrap(), "http");
        // The request keeps its own headers for another attempt.
        assert!(out.headers.contains_key(HOST));
        // HTTP/1.1 through hyper: Host kept, `connection: te` added.
        let req = out.hyper_request(false, Scheme::HTTP, &node);
        assert_eq!(req.uri(), "/p?q");
        assert_eq!(req.headers().get(HOST).unwrap(), "svc.example:8080");
        assert_eq!(req.headers().get(CONNECTION).unwrap(), "te");
    }
}
