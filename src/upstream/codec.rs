//! HTTP/1.1 to nodes, written and parsed in the request's own task.
//!
//! Why: with hyper's client connection every upstream request crosses tasks three times —
//! the request is handed to the connection's task through a channel, the response head
//! comes back through a oneshot, and the body through another channel — and each crossing
//! is a wake-up and a poll of two state machines. Profiling showed that hand-off to be the
//! largest single cost of a proxied request. Here the request's task writes the request
//! head and its (already complete) body itself, reads the response head itself, and the
//! response body is read from the socket by whoever polls [`H1Body`] — hyper's server
//! connection, in the same task. nginx and HAProxy work the same way: one event loop owns
//! both sides of a request.
//!
//! Scope: requests whose body is complete before sending (no body, or one buffered for
//! retries), over plain TCP or TLS, and protocol upgrades (after a `101` the connection
//! itself becomes the node's side of the tunnel). A streamed request body needs full
//! duplex — a node may answer while the body is still arriving, and an echo service
//! streams its answer while reading — which hyper's client connection does well; those
//! requests use it (`h1.rs`).
//!
//! Parsing follows RFC 9112: `httparse` for the head; the body is empty for a `HEAD`
//! request and for 1xx/204/304, else chunked when `Transfer-Encoding` ends in `chunked`,
//! else `Content-Length` (several different values are an error), else until the node
//! closes. Interim 1xx answers (`100 Continue`) are skipped. A connection is reused only
//! when the answer is HTTP/1.1 without `Connection: close`, its body had a length and was
//! read to the end, and nothing follows it on the wire. Chunked trailers are parsed and
//! passed on as a trailers frame (invalid trailer lines are an error, like invalid header
//! lines).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::conn::Conn;
use super::conns::NodeConns;

/// Largest response head accepted (status line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer fields accepted.
const MAX_TRAILERS: usize = 64;

/// What went wrong with a node's answer.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("invalid response from the node: {0}")]
    Invalid(&'static str),
    #[error("the response head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the node closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// May the connection carry another request once the body is read?
    pub keep_alive: bool,
}

/// Parse one response head from the front of `buf`, removing it. `Ok(None)`: incomplete.
/// Interim 1xx answers other than 101 are consumed and skipped.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, CodecError> {
    loop {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut storage);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(CodecError::HeadTooLarge);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(CodecError::Invalid("too many headers"))
            }
            Err(_) => return Err(CodecError::Invalid("malformed status line or header")),
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| CodecError::Invalid("status code out of range"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let http11 = resp.version == Some(1);
        // One spare slot: the proxy adds `x-request-id`.
        let mut headers = HeaderMap::with_capacity(resp.headers.len() + 1);
        let mut close = !http11;
        let mut chunked = false;
        let mut te = false;
        let mut length: Option<u64> = None;
        for h in resp.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| CodecError::Invalid("bad header name"))?;
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| CodecError::Invalid("bad header value"))?;
            if name == CONTENT_LENGTH {
                let n = parse_length(h.value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(CodecError::Invalid("conflicting content-length"));
                }
                length = Some(n);
            } else if name == TRANSFER_ENCODING {
                te = true;
                chunked = last_token_is(h.value, b"chunked");
            } else if name == CONNECTION {
                if has_token(h.value, b"close") {
                    close = true;
                } else if !http11 && has_token(h.value, b"keep-alive") {
                    close = false;
                }
            }
            headers.append(name, value);
        }
        let framing = if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            Framing::Empty
        } else if te {
            // A length beside Transfer-Encoding is ignored (RFC 9112 §6.3); an encoding
            // that does not end in chunked runs to the close.
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        if te && length.is_some() {
            headers.remove(CONTENT_LENGTH);
            close = true;
        }
        buf.advance(len);
        // After a 101 the connection speaks another protocol: never reuse it.
        let keep_alive =
            !close && framing != Framing::Close && status != StatusCode::SWITCHING_PROTOCOLS;
        return Ok(Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

fn parse_length(v: &[u8]) -> Result<u64, CodecError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(CodecError::Invalid("bad content-length"));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

fn last_token_is(v: &[u8], token: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// Where a finished connection goes back to.
#[derive(Debug)]
pub struct ReturnTo {
    pub conns: Arc<NodeConns>,
    pub max_idle: usize,
}

/// A response body read from the node's connection by whoever polls it. At the end of a
/// reusable answer the connection goes back to its node's pool; dropped before that, the
/// connection is closed.
#[derive(Debug)]
pub struct H1Body {
    conn: Option<Conn>,
    state: Decode,
    keep_alive: bool,
    home: Option<ReturnTo>,
    /// Trailer fields of a chunked body, gathered until the empty line ends them. Boxed:
    /// rare, and a map would double the size of every response moved through the layers.
    trailers: Option<Box<HeaderMap>>,
}

impl H1Body {
    pub fn new(conn: Conn, framing: Framing, keep_alive: bool, home: ReturnTo) -> H1Body {
        let state = match framing {
            Framing::Empty => Decode::Done,
            Framing::Length(n) => Decode::Length(n),
            Framing::Chunked => Decode::Chunked(Chunk::Size),
            Framing::Close => Decode::Close,
        };
        let mut body = H1Body {
            conn: Some(conn),
            state,
            keep_alive,
            home: Some(home),
            trailers: None,
        };
        if state == Decode::Done {
            body.finish();
        }
        body
    }

    /// The body has been read: the connection goes home if it may carry another request.
    fn finish(&mut self) {
        self.state = Decode::Done;
        let (Some(mut conn), Some(home)) = (self.conn.take(), self.home.take()) else {
            return;
        };
        if self.keep_alive && conn.buf.is_empty() {
            conn.idle_since = Instant::now();
            home.conns.put_codec(conn, home.max_idle);
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                // Done: the trailers, if the body had any, are the last frame.
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))));
            };
            match self.state {
                Decode::Done => return Poll::Ready(None),
                Decode::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = (conn.buf.len() as u64).min(left) as usize;
                        let data = take(&mut conn.buf, n);
                        self.state = Decode::Length(left - n as u64);
                        if left == n as u64 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decode::Close => {
                    if !conn.buf.is_empty() {
                        let n = conn.buf.len();
                        return Poll::Ready(Some(Ok(Frame::data(take(&mut conn.buf, n)))));
                    }
                    if ready!(conn.poll_fill(cx))? == 0 {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    continue;
                }
                Decode::Chunked(chunk) => match decode_chunk(&mut conn.buf, chunk)? {
                    Step::Data(data, next) => {
                        self.state = Decode::Chunked(next);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Step::Next(next) => {
                        self.state = Decode::Chunked(next);
                        continue;
                    }
                    Step::Trailer(line) => {
                        add_trailer(self.trailers.get_or_insert_with(Box::default), &line)?;
                        continue;
                    }
                    Step::End => {
                        self.finish();
                        return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))));
                    }
                    Step::NeedMore => {}
                },
            }
            // The buffer does not hold what the state needs: read more.
            if ready!(conn.poll_fill(cx))? == 0 {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection before the response body ended",
                ))));
            }
        }
    }
}

/// One `name: value` trailer line into `map`.
fn add_trailer(map: &mut HeaderMap, line: &[u8]) -> io::Result<()> {
    if map.len() >= MAX_TRAILERS {
        return Err(invalid("too many trailer fields"));
    }
    let colon = memchr::memchr(b':', line).ok_or_else(|| invalid("bad trailer line"))?;
    let name =
        HeaderName::from_bytes(&line[..colon]).map_err(|_| invalid("bad trailer field name"))?;
    let value = HeaderValue::from_bytes(trim(&line[colon + 1..]))
        .map_err(|_| invalid("bad trailer field value"))?;
    map.append(name, value);
    Ok(())
}

/// Bodies up to this size are copied out of the read buffer rather than split off it: a
/// split shares the buffer with the body until the client has been sent it, so the next
/// read would need a new buffer; a small copy keeps the one buffer in use.
const COPY_MAX: usize = 4096;

/// The first `n` buffered bytes.
fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n <= COPY_MAX {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

enum Step {
    Data(Bytes, Chunk),
    Next(Chunk),
    /// A trailer line (after the last chunk), without its CRLF.
    Trailer(BytesMut),
    End,
    NeedMore,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One step of the chunked decoder over what is buffered.
fn decode_chunk(buf: &mut BytesMut, state: Chunk) -> io::Result<Step> {
    match state {
        Chunk::Size => {
            let Some(line) = take_line(buf)? else {
                return Ok(Step::NeedMore);
            };
            let digits = line[..].split(|&b| b == b';').next().unwrap_or(&[]);
            let digits = trim(digits);
            if digits.is_empty() || digits.len() > 15 {
                return Err(invalid("bad chunk size"));
            }
            let mut size: u64 = 0;
            for &d in digits {
                let v = (d as char)
                    .to_digit(16)
                    .ok_or_else(|| invalid("bad chunk size"))?;
                size = size * 16 + u64::from(v);
            }
            Ok(Step::Next(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = (buf.len() as u64).min(left) as usize;
            let data = take(buf, n);
            let next = if left == n as u64 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n as u64)
            };
            Ok(Step::Data(data, next))
        }
        Chunk::DataEnd => match take_line(buf)? {
            None => Ok(Step::NeedMore),
            Some(line) if line.is_empty() => Ok(Step::Next(Chunk::Size)),
            Some(_) => Err(invalid("chunk data longer than its size")),
        },
        Chunk::Trailers => match take_line(buf)? {
            None => Ok(Step::NeedMore),
            Some(line) if line.is_empty() => Ok(Step::End),
            Some(line) => Ok(Step::Trailer(line)),
        },
    }
}

/// The next CRLF-terminated line, without its CRLF; `None` if none is complete yet.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    match memchr::memchr(b'\n', buf) {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            } else {
                return Err(invalid("chunk line not ended by CRLF"));
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_CHUNK_LINE => Err(invalid("chunk line too long")),
        None => Ok(None),
    }
}

/// A whole answer: the head, the body and the trailers (empty without any).
pub type Parsed = (Head, Vec<u8>, HeaderMap);

/// Why [`parse_response`] refused an answer.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Head(#[from] CodecError),
    #[error(transparent)]
    Body(#[from] io::Error),
}

/// Parse a whole answer held in `wire` — the head, then the body by its framing — the way
/// [`parse_head`] and [`H1Body`] do over a socket, without one: for tests and fuzzing.
/// `Ok(None)`: the answer is not complete yet. A close-delimited body is all that follows.
/// Returns the head, the body and the trailers (empty without any).
pub fn parse_response(wire: &[u8], method: &Method) -> Result<Option<Parsed>, ParseError> {
    let mut buf = BytesMut::from(wire);
    let Some(head) = parse_head(&mut buf, method)? else {
        return Ok(None);
    };
    let mut body = Vec::new();
    let mut trailers = HeaderMap::new();
    match head.framing {
        Framing::Empty => {}
        Framing::Length(n) => {
            if (buf.len() as u64) < n {
                return Ok(None);
            }
            body.extend_from_slice(&buf[..n as usize]);
        }
        Framing::Close => body.extend_from_slice(&buf),
        Framing::Chunked => {
            let mut state = Chunk::Size;
            loop {
                match decode_chunk(&mut buf, state)? {
                    Step::Data(data, next) => {
                        body.extend_from_slice(&data);
                        state = next;
                    }
                    Step::Next(next) => state = next,
                    Step::Trailer(line) => add_trailer(&mut trailers, &line)?,
                    Step::End => break,
                    Step::NeedMore => return Ok(None),
                }
            }
        }
    }
    Ok(Some((head, body, trailers)))
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        let res = ready!(this.poll_next(cx));
        if let Some(Err(_)) = &res {
            // A broken body: the connection is not reused.
            this.conn = None;
            this.state = Decode::Done;
            this.trailers = None;
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, Decode::Done | Decode::Length(0)) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Decode::Done => SizeHint::with_exact(0),
            Decode::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], method: Method) -> Result<Option<Head>, CodecError> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, &method)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let h = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(h.headers.get(CONTENT_LENGTH).unwrap(), "5");
        let h = head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.headers.get(CONTENT_LENGTH).is_none());
        assert!(!h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        let h = head(
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = head(
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
        let h = head(
            b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\n\r\nx",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn interim_answers_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"[..],
        );
        let h = parse_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(buf.is_empty());
        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_heads_are_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 099 Nope\r\n\r\n",
            b"HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(
                head(raw, Method::GET).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        assert!(matches!(
            head(&big, Method::GET),
            Err(CodecError::HeadTooLarge)
        ));
    }

    #[test]
    fn whole_answers_parse_without_io() {
        let (h, body, trailers) = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.framing, body.as_slice()),
            (Framing::Chunked, &b"abc"[..])
        );
        assert!(trailers.is_empty());
        let (_, body, trailers) = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\
              grpc-status: 0\r\nx-sum:  7 \r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(body, b"x");
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert_eq!(trailers.get("x-sum").unwrap(), "7");
        for bad in [&b"no colon"[..], b"bad name: 1", b"x: \x01"] {
            let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n".to_vec();
            wire.extend_from_slice(bad);
            wire.extend_from_slice(b"\r\n\r\n");
            assert!(parse_response(&wire, &Method::GET).is_err(), "{bad:?}");
        }
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabc",
            &Method::GET
        )
        .unwrap()
        .is_none());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            &Method::GET
        )
        .is_err());
    }

    fn dechunk(wire: &[u8], split: usize) -> io::Result<(Vec<u8>, bool)> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut state = Chunk::Size;
        let mut fed = 0;
        loop {
            match decode_chunk(&mut buf, state)? {
                Step::Data(d, next) => {
                    out.extend_from_slice(&d);
                    state = next;
                }
                Step::Next(next) => state = next,
                Step::Trailer(_) => {}
                Step::End => return Ok((out, buf.is_empty())),
                Step::NeedMore => {
                    if fed == wire.len() {
                        return Ok((out, false));
                    }
                    let end = (fed + split).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5;ext=1\r\nhello\r\nB\r\n, world!!!!\r\n0\r\ntrailer: x\r\n\r\n";
        for split in 1..wire.len() {
            let (out, clean) = dechunk(wire, split).unwrap();
            assert_eq!(out, b"hello, world!!!!", "split {split}");
            assert!(clean);
        }
        assert!(dechunk(b"zz\r\n", 4).is_err());
        assert!(dechunk(b"2\r\nabc\r\n", 16).is_err());
        assert!(dechunk(b"2\nab\r\n", 16).is_err());
    }
}
