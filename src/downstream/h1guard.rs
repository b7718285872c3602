//! The HTTP/1 framing guard: request-smuggling checks hyper does not make, and JSON in place
//! of the empty answers hyper's parser writes itself.
//!
//! hyper's HTTP/1 parser already answers 400 and closes the connection for most malformed
//! input: invalid bytes in names or values (NUL included), obs-fold, a bad request line or
//! version, an invalid `Content-Length`, two different `Content-Length` values, and a
//! `Transfer-Encoding` whose last coding is not `chunked`. What it does *not* refuse, and
//! the balancer does (a smuggling attempt gets 400, the connection closed, and never
//! reaches a node):
//!
//! - `Content-Length` **and** `Transfer-Encoding`: hyper drops the `Content-Length`,
//!   decodes the body as chunked and closes the connection after the response — but the
//!   request still reaches a node, and the dropped header is invisible to us afterwards;
//! - a `Transfer-Encoding` that is anything but exactly one `chunked` (`gzip, chunked`,
//!   `chunked, chunked`, two header lines): hyper accepts any list ending in `chunked`, and
//!   the proxy would then forward the still-encoded bytes as if they were the content;
//! - a bare LF (no CR) ending the request line or a header line, which hyper accepts;
//! - a method longer than [`MAX_METHOD_LEN`] bytes.
//!
//! [`GuardedIo`] wraps a downstream connection below hyper and reads the same bytes hyper
//! reads, with a small state machine that follows HTTP/1.1 framing exactly as hyper does
//! (request heads; `Content-Length` bodies; chunked bodies with hyper's own chunk grammar,
//! trailers included), keeping no buffer: a few bytes of state per connection, and body
//! data is skipped, not scanned. When a head breaks one of the rules above, the guard notes
//! its ordinal; hyper calls the service once per head, in order, so [`GuardHandle`] tells the
//! service exactly which request that was, and the proxy answers it 400 with
//! `Connection: close` before anything else (hyper closes the connection after a response
//! carrying it; the bytes after the head — a smuggled request — are never parsed).
//!
//! The guard stops watching (and costs one branch per read from then on) after the first
//! violation, after an HTTP/2 preface (`PRI`), after a `CONNECT` or a head with `Upgrade`
//! (the bytes may become a tunnel), and whenever the bytes stop making sense (hyper
//! refuses those itself and closes the connection). HTTP/2 connections negotiated by ALPN
//! are not wrapped at all: HTTP/2 frames its messages without these headers.
//!
//! **hyper's own answers, made JSON.** What hyper's parser refuses itself (a bad method,
//! target, version, header name or value; obs-fold; a head over `max_buf_size`; a target
//! over 65,534 bytes) it answers before any request exists, with an empty body: `400`,
//! `431` or `414`, `connection: close`, `content-length: 0`, `date`, nothing else. Every
//! other answer of ours is JSON and carries `x-request-id`, so the guard's write side puts
//! ours in its place: the same status, version and date, `content-type: application/json`,
//! a new `x-request-id`, `connection: close` and the body of [`ProxyError::for_refused_head`].
//! The choice of place, against the alternatives:
//!
//! - *Predicting the refusal on the read side* and answering before hyper does would mean
//!   re-implementing httparse's token tables, hyper's header rules and the `http` crate's
//!   URI grammar byte for byte (a gap leaks an empty answer, an excess refuses good
//!   requests) and scanning every byte of every head on the hot path. Replacing the answer
//!   follows hyper by construction: whatever it refuses, for whatever reason, now or in a
//!   later version, comes out as JSON — as long as the answer keeps its shape, which the
//!   unit tests pin against the hyper in `Cargo.lock` by running its server.
//! - *Recognising the answer in the byte stream* must never touch anything else, so a write
//!   is only looked at when hyper can be answering on its own: a request head has begun
//!   that the service has not been handed (hyper answers such a head only), and the
//!   connection still carries HTTP/1 heads (not HTTP/2, not a tunnel: after a `101` the
//!   service has seen every head). The answer is matched whole at the end of the write
//!   (hyper writes nothing after it), and bytes before it go out first, unchanged. A
//!   response *body* could still end with the same bytes while the client has already sent
//!   the start of its next head (pipelining): every response body frame is shown to the
//!   guard ([`GuardHandle::note_body_frame`], from `crate::downstream::conn_timeout::TrackedBody`),
//!   and once a body ends in a way that could complete such an answer, the connection is
//!   never rewritten again — it keeps hyper's empty answer rather than risk altering a
//!   response.
//!
//! The cost, per write: a few comparisons and one relaxed atomic load, and a suffix check
//! when those pass; per response body frame, a few instructions (together about 80
//! instructions per proxied request, 0.4 %, measured with `bench/instructions.sh`).
//! Requests hyper refuses this way are not counted in `switchyard_requests_total` nor
//! written to the access log (no request exists); they are logged at debug level.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::answer::{ProxyError, Violation};

/// The longest method accepted. The longest registered ones are 17 bytes
/// (`UPDATEREDIRECTREF`); anything far beyond that is garbage or an attack.
pub const MAX_METHOD_LEN: usize = 32;

/// How far the value of a `Content-Length` or `Transfer-Encoding` line is kept for checking
/// (longer values are invalid, or not a plain `chunked`, anyway).
const VALUE_CAP: usize = 24;

/// What the IO side and the service side of one connection share.
#[derive(Debug, Default)]
struct Shared {
    /// `ordinal << 8 | violation` of the first refused head (ordinals count from 1);
    /// 0 while none.
    flagged: AtomicU64,
    /// Requests the service has been handed so far.
    served: AtomicU64,
    /// A response body on this connection ended with bytes that could be taken for
    /// hyper's automatic answer ([`GuardHandle::note_body_frame`]): from then on the write
    /// side replaces nothing, so no body can ever be mistaken for an answer.
    body_like_answer: AtomicBool,
    /// The last 8 bytes of the response bodies so far, the latest in the low byte (HTTP/1
    /// answers are written one after another, so one window serves them all).
    tail: AtomicU64,
}

/// The service side: which requests to refuse.
#[derive(Debug, Clone)]
pub struct GuardHandle(Arc<Shared>);

impl GuardHandle {
    /// Call once per request, in the order hyper hands them over: the violation of this
    /// request's head, if it had one. Both sides run in the connection's task, so the
    /// head has been through the guard before hyper parsed it.
    pub fn next_request(&self) -> Option<Violation> {
        let n = self.0.served.fetch_add(1, Ordering::Relaxed) + 1;
        let f = self.0.flagged.load(Ordering::Acquire);
        if f != 0 && f >> 8 == n {
            Violation::from_u8(f as u8)
        } else {
            None
        }
    }

    /// A frame of a response body, about to be written on this connection: when the bytes
    /// it ends with (as hyper writes them, with or without the `\r\n` that ends a chunk)
    /// could end hyper's automatic answer, the write side stops replacing on this
    /// connection, so no body can pass for that answer. Trailers end in a header line and
    /// count as such an end. A few instructions per frame (`crate::downstream::conn_timeout::TrackedBody`
    /// calls it for every frame of an HTTP/1 connection).
    #[inline]
    pub fn note_body_frame(&self, frame: &Frame<Bytes>) {
        let suspect = match frame.data_ref() {
            Some(data) => {
                let tail = push_tail(self.0.tail.load(Ordering::Relaxed), data);
                self.0.tail.store(tail, Ordering::Relaxed);
                tail_may_end_answer(tail)
            }
            None => true,
        };
        if suspect {
            self.0.body_like_answer.store(true, Ordering::Relaxed);
        }
    }
}

/// A downstream connection whose incoming bytes go through the guard, and whose outgoing
/// bytes have hyper's automatic answers replaced by JSON ones (see the module docs).
#[derive(Debug)]
pub struct GuardedIo<T> {
    inner: T,
    scanner: Scanner,
    shared: Arc<Shared>,
    /// The JSON answer written in place of hyper's automatic one, and how much of it has
    /// been written; once set, the connection says nothing else.
    answer: Option<(Vec<u8>, usize)>,
}

impl<T> GuardedIo<T> {
    pub fn new(inner: T) -> (GuardedIo<T>, GuardHandle) {
        let shared = Arc::new(Shared::default());
        let io = GuardedIo {
            inner,
            scanner: Scanner::default(),
            shared: Arc::clone(&shared),
            answer: None,
        };
        (io, GuardHandle(shared))
    }

    /// Whether a write may be hyper's automatic answer: a request head has started that the
    /// service was never handed (hyper answers only such a head itself), on a connection
    /// still speaking HTTP/1 heads, and no response body here ended like such an answer.
    /// One comparison and a relaxed load per write.
    fn may_replace(&self) -> bool {
        !self.scanner.http2
            && self.scanner.heads_begun() > self.shared.served.load(Ordering::Relaxed)
            && !self.shared.body_like_answer.load(Ordering::Relaxed)
    }

    /// Take `automatic` (hyper's answer, the whole of `bytes`) and keep ours to write.
    fn replace(&mut self, automatic: &Automatic) {
        self.answer = Some((automatic.replacement(), 0));
        tracing::debug!(
            status = automatic.status,
            "request head refused by the HTTP/1 parser: answered with JSON"
        );
    }
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Write what is left of our answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let GuardedIo { inner, answer, .. } = self;
        if let Some((bytes, written)) = answer {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut *inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// After our answer, hyper has nothing more to say (its answer ends the connection):
    /// anything it still writes is dropped, reported as written.
    fn poll_swallow(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        match self.poll_answer(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(len)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && !this.scanner.done() {
            if let Some((ordinal, v)) = this.scanner.feed(&buf.filled()[before..]) {
                this.shared
                    .flagged
                    .store(ordinal << 8 | v as u64, Ordering::Release);
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.answer.is_some() {
            return this.poll_swallow(cx, buf.len());
        }
        if this.may_replace() {
            if let Some(auto) = Automatic::at_end_of(buf) {
                if auto.start > 0 {
                    // What comes before it (the end of an earlier response) goes out as is;
                    // hyper hands the rest back, the answer still at its end.
                    return Pin::new(&mut this.inner).poll_write(cx, &buf[..auto.start]);
                }
                this.replace(&auto);
                return this.poll_swallow(cx, buf.len());
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.answer.is_some() {
            let len = bufs.iter().map(|b| b.len()).sum();
            return this.poll_swallow(cx, len);
        }
        if this.may_replace() {
            // hyper writes a head into one buffer: the answer is all in the last slice.
            if let Some(k) = bufs.iter().rposition(|b| !b.is_empty()) {
                if let Some(auto) = Automatic::at_end_of(&bufs[k]) {
                    if bufs[..k].iter().any(|b| !b.is_empty()) {
                        return Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..k]);
                    }
                    if auto.start > 0 {
                        return Pin::new(&mut this.inner).poll_write(cx, &bufs[k][..auto.start]);
                    }
                    this.replace(&auto);
                    return this.poll_swallow(cx, bufs[k].len());
                }
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The status lines of hyper's automatic answers (`proto/h1/role.rs`, `on_error`), after
/// the version.
const AUTOMATIC_STATUS_LINES: [(u16, &[u8]); 3] = [
    (400, b" 400 Bad Request\r\n"),
    (431, b" 431 Request Header Fields Too Large\r\n"),
    (414, b" 414 URI Too Long\r\n"),
];

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as hyper writes `date`.
const DATE_LEN: usize = 29;

/// hyper's automatic answer to a request head it refused, found at the end of a write.
#[derive(Debug, PartialEq, Eq)]
struct Automatic {
    /// Where it starts in the buffer.
    start: usize,
    /// `HTTP/1.0` or `HTTP/1.1`, as hyper wrote it.
    version: [u8; 8],
    status: u16,
    date: [u8; DATE_LEN],
}

impl Automatic {
    /// hyper writes exactly `VERSION STATUS REASON`, optionally `connection: close`,
    /// `content-length: 0` and `date` (lower case, in this order), and nothing after it.
    /// Any answer of ours carries `x-request-id`, so this shape is never one of them.
    fn at_end_of(buf: &[u8]) -> Option<Automatic> {
        // The cheap refusal first: almost every write ends otherwise.
        if !buf.ends_with(b" GMT\r\n\r\n") {
            return None;
        }
        let date_line = DATE_LEN + b"date: \r\n\r\n".len();
        let head = buf.get(..buf.len().checked_sub(date_line)?)?;
        let date_line = &buf[head.len()..];
        let date = date_line.strip_prefix(b"date: ")?.get(..DATE_LEN)?;
        let rest = head.strip_suffix(b"content-length: 0\r\n")?;
        let rest = rest.strip_suffix(b"connection: close\r\n").unwrap_or(rest);
        let (status, rest) = AUTOMATIC_STATUS_LINES
            .iter()
            .find_map(|(status, line)| Some((*status, rest.strip_suffix(*line)?)))?;
        let version = rest
            .strip_suffix(b"HTTP/1.1")
            .or_else(|| rest.strip_suffix(b"HTTP/1.0"))?;
        let start = version.len();
        Some(Automatic {
            start,
            version: buf[start..start + 8].try_into().ok()?,
            status,
            date: date.try_into().ok()?,
        })
    }

    /// Our answer in its place: the same status, version and date, a JSON body, an
    /// `x-request-id` like every other answer, and `Connection: close` (hyper closes the
    /// connection after its answer, and so do we).
    fn replacement(&self) -> Vec<u8> {
        let body = ProxyError::for_refused_head(self.status).json_body();
        let (_, line) = AUTOMATIC_STATUS_LINES
            .iter()
            .find(|(s, _)| *s == self.status)
            .copied()
            .unwrap_or(AUTOMATIC_STATUS_LINES[0]);
        let id = crate::proxy::headers::new_request_id();
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&self.version);
        out.extend_from_slice(line);
        out.extend_from_slice(b"content-type: application/json\r\nx-request-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(&self.date);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// `GMT\r\n\r\n` (7 bytes) and `GMT\r\n` (5), as the low bytes of [`Shared::tail`].
const TAIL_ANSWER: (u64, u64) = (0x0047_4d54_0d0a_0d0a, 0x0047_4d54_0d0a);

fn push_tail(tail: u64, data: &[u8]) -> u64 {
    match data.len() {
        n if n >= 8 => u64::from_be_bytes(data[n - 8..].try_into().unwrap_or([0; 8])),
        _ => data.iter().fold(tail, |t, &b| t << 8 | u64::from(b)),
    }
}

fn tail_may_end_answer(tail: u64) -> bool {
    tail & 0x00ff_ffff_ffff_ffff == TAIL_ANSWER.0 || tail & 0xff_ffff_ffff == TAIL_ANSWER.1
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: empty lines are skipped (as httparse does).
    Preamble,
    /// After a CR in the preamble.
    PreambleLf,
    /// In the request line.
    RequestLine,
    /// At the start of a header line, or of the empty line ending the head.
    LineStart,
    /// After a CR at the start of a line: the head ends with the LF.
    HeadEndLf,
    /// In a header name (`len` bytes so far).
    Name,
    /// In a header value, up to the line's end.
    Value,
    /// After a CR in the request line or a header line.
    LineLf,
    /// A `Content-Length` body: this many bytes left.
    Body(u64),
    /// Chunked body states, as hyper's decoder has them.
    ChunkStart,
    ChunkSize,
    ChunkSizeLws,
    ChunkExt,
    ChunkSizeLf,
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    ChunkEndCr,
    ChunkEndLf,
    Trailer,
    TrailerLf,
    /// Not watching any more.
    Done,
}

/// The header whose name is being matched or whose value is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Other,
    ContentLength,
    TransferEncoding,
    Upgrade,
}

/// The longest of [`NAMES`].
const LONGEST_NAME: usize = 17;

/// Candidate names, lower case.
const NAMES: [(&[u8], Which); 3] = [
    (b"content-length", Which::ContentLength),
    (b"transfer-encoding", Which::TransferEncoding),
    (b"upgrade", Which::Upgrade),
];

/// What the head seen so far says.
#[derive(Debug, Clone, Copy, Default)]
struct Head {
    method_len: usize,
    /// The first bytes of the method, to recognise `PRI` and `CONNECT`.
    method: [u8; 8],
    in_method: bool,
    content_length: Option<u64>,
    te_lines: u32,
    te_chunked: bool,
    upgrade: bool,
    violation: Option<Violation>,
}

/// The framing state machine (see the module docs). Every method is total: any byte
/// sequence moves it somewhere, never panics.
#[derive(Debug)]
struct Scanner {
    state: State,
    head: Head,
    /// Heads completed so far (the ordinal of the next one is `heads + 1`).
    heads: u64,
    /// Bitmask over [`NAMES`] still matching the current header name, and its length.
    cand: u8,
    name_len: usize,
    which: Which,
    value: [u8; VALUE_CAP],
    value_len: usize,
    /// The value is longer than [`VALUE_CAP`].
    value_long: bool,
    chunk_size: u64,
    /// The connection turned out to be HTTP/2 (prior knowledge): no HTTP/1 heads follow.
    http2: bool,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner {
            state: State::Preamble,
            head: Head::default(),
            heads: 0,
            cand: 0,
            name_len: 0,
            which: Which::Other,
            value: [0; VALUE_CAP],
            value_len: 0,
            value_long: false,
            chunk_size: 0,
            http2: false,
        }
    }
}

impl Scanner {
    fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Request heads that have started arriving: the complete ones, and the one under way.
    fn heads_begun(&self) -> u64 {
        let in_head = matches!(
            self.state,
            State::RequestLine
                | State::LineLf
                | State::LineStart
                | State::HeadEndLf
                | State::Name
                | State::Value
        );
        self.heads + u64::from(in_head)
    }

    /// Scan `bytes`; returns the first violation found, with its head's ordinal.
    fn feed(&mut self, bytes: &[u8]) -> Option<(u64, Violation)> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Done => return None,
                State::Body(left) => {
                    let take = (bytes.len() - i) as u64;
                    if take < left {
                        self.state = State::Body(left - take);
                        return None;
                    }
                    i += left as usize;
                    self.state = State::Preamble;
                    continue;
                }
                State::ChunkData(left) => {
                    let take = (bytes.len() - i) as u64;
                    if take < left {
                        self.state = State::ChunkData(left - take);
                        return None;
                    }
                    i += left as usize;
                    self.state = State::ChunkDataCr;
                    continue;
                }
                State::RequestLine if !self.head.in_method => {
                    // The target and version need no look: on to the line's end.
                    match memchr::memchr2(b'\r', b'\n', &bytes[i..]) {
                        Some(off) => {
                            i += off;
                            if bytes[i..].starts_with(b"\r\n") {
                                i += 2;
                                self.state = State::LineStart;
                                continue;
                            }
                        }
                        None => return None,
                    }
                }
                State::LineStart if bytes.len() - i > LONGEST_NAME => {
                    // Fast path with the whole name in view: recognise the three names that
                    // matter in one comparison each and skip every other line to its end.
                    // (httparse allows no whitespace before the colon in a request.)
                    let rest = &bytes[i..];
                    if !matches!(rest[0], b'\r' | b'\n' | b' ' | b'\t') {
                        self.which = Which::Other;
                        if matches!(rest[0] | 0x20, b'c' | b't' | b'u') {
                            for (name, which) in NAMES {
                                if rest[name.len()] == b':'
                                    && rest[..name.len()].eq_ignore_ascii_case(name)
                                {
                                    self.which = which;
                                    i += name.len() + 1;
                                    break;
                                }
                            }
                        }
                        self.value_len = 0;
                        self.value_long = false;
                        self.state = State::Value;
                        continue;
                    }
                }
                State::Value if self.which == Which::Other => {
                    // Skip a value nobody needs to its line end in one go.
                    match memchr::memchr2(b'\r', b'\n', &bytes[i..]) {
                        Some(off) => {
                            i += off;
                            if bytes[i..].starts_with(b"\r\n") {
                                i += 2;
                                self.state = State::LineStart;
                                continue;
                            }
                        }
                        None => return None,
                    }
                }
                _ => {}
            }
            let b = bytes[i];
            i += 1;
            if let Some(v) = self.step(b) {
                return Some(v);
            }
        }
        None
    }

    /// One byte outside bulk data.
    fn step(&mut self, b: u8) -> Option<(u64, Violation)> {
        match self.state {
            State::Preamble
            | State::PreambleLf
            | State::RequestLine
            | State::LineLf
            | State::LineStart
            | State::HeadEndLf => return self.head_byte(b),
            State::Name => self.name_state_byte(b),
            State::Value => self.value_byte(b),
            State::ChunkStart
            | State::ChunkSize
            | State::ChunkSizeLws
            | State::ChunkExt
            | State::ChunkSizeLf
            | State::ChunkDataCr
            | State::ChunkDataLf
            | State::ChunkEndCr
            | State::ChunkEndLf
            | State::Trailer
            | State::TrailerLf => self.chunk_byte(b),
            // Handled in bulk by `feed`.
            State::Body(_) | State::ChunkData(_) | State::Done => {}
        }
        None
    }

    /// A byte between messages, of the request line, or at a line's end or start: where
    /// a head begins, ends, or breaks a rule.
    #[inline]
    fn head_byte(&mut self, b: u8) -> Option<(u64, Violation)> {
        match self.state {
            State::Preamble => match b {
                b'\r' => self.state = State::PreambleLf,
                b'\n' => {}
                _ => {
                    self.head = Head {
                        in_method: true,
                        ..Head::default()
                    };
                    self.state = State::RequestLine;
                    self.request_line_byte(b);
                }
            },
            State::PreambleLf => {
                if b == b'\n' {
                    self.state = State::Preamble;
                } else {
                    // httparse refuses this (hyper answers 400): a head, if a broken one.
                    self.heads += 1;
                    self.state = State::Done;
                }
            }
            State::RequestLine => match b {
                b'\r' => self.state = State::LineLf,
                b'\n' => {
                    self.flag(Violation::BareLf);
                    self.state = State::LineStart;
                }
                _ => self.request_line_byte(b),
            },
            State::LineLf => {
                if b == b'\n' {
                    self.end_of_line();
                    self.state = State::LineStart;
                } else {
                    self.flag(Violation::MalformedLine);
                    return self.give_up_with_violation();
                }
            }
            State::LineStart => match b {
                b'\r' => self.state = State::HeadEndLf,
                b'\n' => {
                    self.flag(Violation::BareLf);
                    return self.end_of_head();
                }
                b' ' | b'\t' => {
                    self.flag(Violation::MalformedLine);
                    return self.give_up_with_violation();
                }
                _ => {
                    self.cand = (1 << NAMES.len()) - 1;
                    self.name_len = 0;
                    self.state = State::Name;
                    self.name_byte(b);
                }
            },
            State::HeadEndLf => {
                if b == b'\n' {
                    return self.end_of_head();
                }
                self.flag(Violation::MalformedLine);
                return self.give_up_with_violation();
            }
            _ => {}
        }
        None
    }

    /// A byte of a header name: is it one of [`NAMES`]?
    #[inline]
    fn name_state_byte(&mut self, b: u8) {
        match b {
            b':' => {
                self.which = Which::Other;
                for (k, (name, which)) in NAMES.iter().enumerate() {
                    if self.cand & (1 << k) != 0 && name.len() == self.name_len {
                        self.which = *which;
                    }
                }
                self.value_len = 0;
                self.value_long = false;
                self.state = State::Value;
            }
            // A line without a colon: httparse refuses it; here it is just a line.
            b'\r' => {
                self.which = Which::Other;
                self.state = State::LineLf;
            }
            b'\n' => {
                self.which = Which::Other;
                self.flag(Violation::BareLf);
                self.end_of_line();
                self.state = State::LineStart;
            }
            _ => {
                self.name_byte(b);
                if self.cand == 0 {
                    // Not a name that matters: skip the rest of the line.
                    self.which = Which::Other;
                    self.state = State::Value;
                }
            }
        }
    }

    /// A byte of a header value, kept for the headers that matter.
    #[inline]
    fn value_byte(&mut self, b: u8) {
        match b {
            b'\r' => self.state = State::LineLf,
            b'\n' => {
                self.flag(Violation::BareLf);
                self.end_of_line();
                self.state = State::LineStart;
            }
            _ => {
                if self.value_len < VALUE_CAP {
                    self.value[self.value_len] = b;
                    self.value_len += 1;
                } else {
                    self.value_long = true;
                }
            }
        }
    }

    /// A byte of chunked framing: hyper's decoder, state by state (proto/h1/decode.rs).
    #[inline]
    fn chunk_byte(&mut self, b: u8) {
        match self.state {
            State::ChunkStart => match hex(b) {
                Some(d) => {
                    self.chunk_size = u64::from(d);
                    self.state = State::ChunkSize;
                }
                None => self.state = State::Done,
            },
            State::ChunkSize => match b {
                b'\t' | b' ' => self.state = State::ChunkSizeLws,
                b';' => self.state = State::ChunkExt,
                b'\r' => self.state = State::ChunkSizeLf,
                _ => match hex(b).and_then(|d| {
                    self.chunk_size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                }) {
                    Some(s) => self.chunk_size = s,
                    None => self.state = State::Done,
                },
            },
            State::ChunkSizeLws => match b {
                b'\t' | b' ' => {}
                b';' => self.state = State::ChunkExt,
                b'\r' => self.state = State::ChunkSizeLf,
                _ => self.state = State::Done,
            },
            State::ChunkExt => match b {
                b'\r' => self.state = State::ChunkSizeLf,
                b'\n' => self.state = State::Done,
                _ => {}
            },
            State::ChunkSizeLf => {
                self.state = match (b, self.chunk_size) {
                    (b'\n', 0) => State::ChunkEndCr,
                    (b'\n', n) => State::ChunkData(n),
                    _ => State::Done,
                }
            }
            State::ChunkDataCr => self.state = expect(b, b'\r', State::ChunkDataLf, State::Done),
            State::ChunkDataLf => self.state = expect(b, b'\n', State::ChunkStart, State::Done),
            State::ChunkEndCr => self.state = expect(b, b'\r', State::ChunkEndLf, State::Trailer),
            State::ChunkEndLf => self.state = expect(b, b'\n', State::Preamble, State::Done),
            State::Trailer if b == b'\r' => self.state = State::TrailerLf,
            State::TrailerLf => self.state = expect(b, b'\n', State::ChunkEndCr, State::Done),
            _ => {}
        }
    }

    fn request_line_byte(&mut self, b: u8) {
        let h = &mut self.head;
        if !h.in_method {
            return;
        }
        if b == b' ' {
            h.in_method = false;
            return;
        }
        if h.method_len < h.method.len() {
            h.method[h.method_len] = b;
        }
        h.method_len += 1;
        if h.method_len == MAX_METHOD_LEN + 1 {
            self.flag(Violation::MethodTooLong);
        }
    }

    fn name_byte(&mut self, b: u8) {
        let lower = b.to_ascii_lowercase();
        let at = self.name_len;
        for (k, (name, _)) in NAMES.iter().enumerate() {
            if name.get(at) != Some(&lower) {
                self.cand &= !(1 << k);
            }
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    /// A header line is complete: take in the value of the headers that matter.
    fn end_of_line(&mut self) {
        let which = std::mem::replace(&mut self.which, Which::Other);
        let value = trim_ows(&self.value[..self.value_len]);
        match which {
            Which::Other => {}
            Which::Upgrade => self.head.upgrade = true,
            Which::TransferEncoding => {
                self.head.te_lines += 1;
                self.head.te_chunked = !self.value_long && value.eq_ignore_ascii_case(b"chunked");
            }
            Which::ContentLength => {
                let parsed = if self.value_long { None } else { digits(value) };
                match (parsed, self.head.content_length) {
                    // hyper refuses an invalid value itself.
                    (None, _) => self.flag(Violation::BadContentLength),
                    (Some(n), Some(prev)) if n != prev => self.flag(Violation::BadContentLength),
                    (Some(n), _) => self.head.content_length = Some(n),
                }
            }
        }
    }

    fn end_of_head(&mut self) -> Option<(u64, Violation)> {
        self.heads += 1;
        let h = self.head;
        let te = h.te_lines > 0;
        if te && h.content_length.is_some() {
            self.flag(Violation::ContentLengthWithTransferEncoding);
        }
        if te && !(h.te_lines == 1 && h.te_chunked) {
            self.flag(Violation::TransferEncodingNotChunked);
        }
        if let Some(v) = self.head.violation {
            self.state = State::Done;
            return Some((self.heads, v));
        }
        let method = &h.method[..h.method_len.min(h.method.len())];
        self.http2 = method == b"PRI";
        self.state = if self.http2 || method == b"CONNECT" || h.upgrade {
            State::Done
        } else if te {
            State::ChunkStart
        } else {
            match h.content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Preamble,
            }
        };
        None
    }

    fn flag(&mut self, v: Violation) {
        self.head.violation.get_or_insert(v);
    }

    /// The head is broken beyond following: report it as if it had ended here (hyper will
    /// refuse it or we will), and stop watching.
    fn give_up_with_violation(&mut self) -> Option<(u64, Violation)> {
        self.heads += 1;
        self.state = State::Done;
        self.head.violation.map(|v| (self.heads, v))
    }
}

/// The state after `b` where the framing wants `want`: `then`, or `otherwise`.
#[inline]
fn expect(b: u8, want: u8, then: State, otherwise: State) -> State {
    if b == want {
        then
    } else {
        otherwise
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A decimal number, as hyper reads `Content-Length` (digits only, no sign, no overflow).
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every violation in `input`, fed in one piece and then byte by byte (the verdict must
    /// not depend on how the bytes arrive).
    fn scan(input: &[u8]) -> Option<(u64, Violation)> {
        let whole = Scanner::default().feed(input);
        let mut s = Scanner::default();
        let mut split = None;
        for b in input {
            if let Some(v) = s.feed(std::slice::from_ref(b)) {
                split = Some(v);
                break;
            }
        }
        assert_eq!(whole, split, "verdict depends on read boundaries");
        whole
    }

    fn heads_seen(input: &[u8]) -> u64 {
        let mut s = Scanner::default();
        let _ = s.feed(input);
        s.heads
    }

    #[test]
    fn well_formed_requests_pass_and_are_counted() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n\
            \r\nGET /last HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(scan(input), None);
        assert_eq!(heads_seen(input), 4);
    }

    #[test]
    fn body_bytes_that_look_like_headers_are_not_headers() {
        let body = b"x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(scan(&input), None);
        assert_eq!(heads_seen(&input), 2);
        // The same inside chunk data.
        let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        input.extend_from_slice(body);
        input.extend_from_slice(b"\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(scan(&input), None);
        assert_eq!(heads_seen(&input), 2);
    }

    #[test]
    fn content_length_with_transfer_encoding_in_either_order() {
        for input in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert_eq!(
                scan(input),
                Some((1, Violation::ContentLengthWithTransferEncoding))
            );
        }
    }

    #[test]
    fn the_ordinal_names_the_offending_request() {
        let input = b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n\
            POST /3 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            scan(input),
            Some((3, Violation::ContentLengthWithTransferEncoding))
        );
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        for te in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked;q=1",
            "xchunked",
        ] {
            let input = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(
                scan(input.as_bytes()),
                Some((1, Violation::TransferEncodingNotChunked)),
                "{te}"
            );
        }
        let two =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(two), Some((1, Violation::TransferEncodingNotChunked)));
        let ok = b"POST / HTTP/1.1\r\nTransfer-Encoding:  Chunked \t\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(ok), None);
    }

    #[test]
    fn content_length_values() {
        let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
        assert_eq!(scan(two), Some((1, Violation::BadContentLength)));
        let same = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(scan(same), None);
        for bad in ["-1", "3, 3", "+3", "0x10", "", "99999999999999999999999"] {
            let input = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                scan(input.as_bytes()),
                Some((1, Violation::BadContentLength)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bare_lf_obs_fold_and_stray_cr() {
        assert_eq!(
            scan(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Some((1, Violation::BareLf))
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a\n\r\n"),
            Some((1, Violation::BareLf))
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a\r\n\n"),
            Some((1, Violation::BareLf))
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n"),
            Some((1, Violation::MalformedLine))
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n"),
            Some((1, Violation::MalformedLine))
        );
        // Empty lines between messages are allowed (and skipped), LF alone too.
        assert_eq!(scan(b"\r\n\nGET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn long_methods() {
        let ok = format!("{} / HTTP/1.1\r\n\r\n", "M".repeat(MAX_METHOD_LEN));
        assert_eq!(scan(ok.as_bytes()), None);
        let long = format!("{} / HTTP/1.1\r\n\r\n", "M".repeat(MAX_METHOD_LEN + 1));
        assert_eq!(scan(long.as_bytes()), Some((1, Violation::MethodTooLong)));
    }

    #[test]
    fn stops_watching_tunnels_and_http2() {
        let mut s = Scanner::default();
        assert_eq!(
            s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"),
            None
        );
        assert!(s.done());
        let mut s = Scanner::default();
        let _ = s.feed(b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(s.done());
        let mut s = Scanner::default();
        let _ = s.feed(b"CONNECT a:443 HTTP/1.1\r\n\r\n");
        assert!(s.done());
        // After the first violation nothing more is reported.
        let mut s = Scanner::default();
        assert!(s.feed(b"GET / HTTP/1.1\n\r\n").is_some());
        assert_eq!(
            s.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
    }

    #[test]
    fn malformed_chunks_stop_the_scan_without_a_verdict() {
        // hyper refuses these itself; the guard must not invent a verdict for later bytes.
        for body in ["zz\r\n", "5\nhello", "5\r\nhelloXX", "5;a\nb\r\n"] {
            let input = format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}\
                 POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let mut s = Scanner::default();
            assert_eq!(s.feed(input.as_bytes()), None, "{body:?}");
            assert!(s.done(), "{body:?}");
        }
    }

    #[test]
    fn the_handle_refuses_exactly_the_flagged_request() {
        let (_io, handle) = GuardedIo::new(());
        handle
            .0
            .flagged
            .store(3 << 8 | Violation::BareLf as u64, Ordering::Release);
        assert_eq!(handle.next_request(), None);
        assert_eq!(handle.next_request(), None);
        assert_eq!(handle.next_request(), Some(Violation::BareLf));
        assert_eq!(handle.next_request(), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_read_boundaries_do_not_matter() {
        // Deterministic pseudo-random inputs built from pieces that matter to the state
        // machine, fed whole and in random slices: same verdict, same heads, same state.
        let pieces: [&[u8]; 18] = [
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b":",
            b"POST / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\n",
            b"Content-Length: 3\r\n",
            b"transfer-encoding: chunked\r\n",
            b"Upgrade: x\r\n",
            b"X-Long-Header-Name: some value here\r\n",
            b"5\r\nhello\r\n",
            b"0\r\n\r\n",
            b"abc",
            b"\x00\xff",
            b"content",
            b"Content-Length-X: 1\r\n",
            b"Transfer-Encodings: gzip\r\n",
        ];
        let mut x: u64 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            let mut buf = Vec::new();
            for _ in 0..(next() % 24) {
                buf.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let mut whole = Scanner::default();
            let v1 = whole.feed(&buf);
            let mut sliced = Scanner::default();
            let mut v2 = None;
            let mut at = 0;
            while at < buf.len() && v2.is_none() {
                let n = (1 + next() % 20) as usize;
                let end = (at + n).min(buf.len());
                v2 = sliced.feed(&buf[at..end]);
                at = end;
            }
            let input = String::from_utf8_lossy(&buf);
            assert_eq!(v1, v2, "verdicts differ for {input:?}");
            assert_eq!(
                whole.heads, sliced.heads,
                "head counts differ for {input:?}"
            );
            assert_eq!(whole.state, sliced.state, "states differ for {input:?}");
        }
    }

    // ----- the write side: hyper's automatic answers replaced -----

    const HYPER_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
        date: Wed, 02 Dec 2026 15:24:35 GMT\r\n\r\n";

    #[test]
    fn automatic_answers_are_recognised_at_the_end_of_a_write_only() {
        let a = Automatic::at_end_of(HYPER_400).expect("recognised");
        assert_eq!((a.start, a.status, &a.version), (0, 400, b"HTTP/1.1"));
        assert_eq!(&a.date, b"Wed, 02 Dec 2026 15:24:35 GMT");
        let mut after_body = b"...end of an earlier response".to_vec();
        after_body.extend_from_slice(HYPER_400);
        assert_eq!(Automatic::at_end_of(&after_body).map(|a| a.start), Some(29));
        let http10 = b"HTTP/1.0 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
            date: Wed, 02 Dec 2026 15:24:35 GMT\r\n\r\n";
        let a = Automatic::at_end_of(http10).expect("HTTP/1.0, no connection header");
        assert_eq!((a.status, &a.version), (431, b"HTTP/1.0"));
        // Our own answers carry x-request-id (and other headers): never taken for hyper's.
        let ours = b"HTTP/1.1 400 Bad Request\r\nx-request-id: 1\r\nconnection: close\r\n\
            content-length: 0\r\ndate: Wed, 02 Dec 2026 15:24:35 GMT\r\n\r\n";
        assert_eq!(Automatic::at_end_of(ours), None);
        let mut later = HYPER_400.to_vec();
        later.extend_from_slice(b"x");
        assert_eq!(Automatic::at_end_of(&later), None);
        assert_eq!(Automatic::at_end_of(&HYPER_400[1..]), None);
        let other = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\
            date: Wed, 02 Dec 2026 15:24:35 GMT\r\n\r\n";
        assert_eq!(Automatic::at_end_of(other), None);
    }

    #[test]
    fn the_body_watch_sees_a_suspect_end_across_frames() {
        let split = |parts: &[&[u8]]| parts.iter().fold(0, |t, p| push_tail(t, p));
        assert!(tail_may_end_answer(split(&[b"x GMT\r\n\r\n"])));
        assert!(tail_may_end_answer(split(&[b"xx GM", b"T\r", b"\n\r\n"])));
        // A chunk ending in `GMT\r\n` is written followed by the chunk's `\r\n`.
        assert!(tail_may_end_answer(split(&[b"1994 08:49:37 GMT\r\n"])));
        assert!(!tail_may_end_answer(split(&[b"GMT\r\n\r\nx"])));
        assert!(!tail_may_end_answer(split(&[b"hello world"])));
        assert!(!tail_may_end_answer(split(&[b"MT\r\n\r\n"])));
    }

    /// A body whose frames are shown to the guard, as `TrackedBody` does in the listener.
    struct Noted(http_body_util::Full<Bytes>, GuardHandle);

    impl http_body::Body for Noted {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let res = Pin::new(&mut self.0).poll_frame(cx);
            if let Poll::Ready(Some(Ok(frame))) = &res {
                self.1.note_body_frame(frame);
            }
            res
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.0.size_hint()
        }
    }

    /// Serve `input` with hyper's HTTP/1 server over a [`GuardedIo`] (a service answering
    /// `body` to every request, its frames shown to the guard as the listener does) and
    /// return everything written back until hyper closes the connection or half a second
    /// passes.
    fn serve_with_hyper(input: &[u8], max_buf: usize, body: &'static [u8]) -> Vec<u8> {
        use http_body_util::Full;
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(1 << 20);
            let (io, guard) = GuardedIo::new(server);
            let svc = hyper::service::service_fn(move |_req| {
                let _ = guard.next_request();
                let body = Noted(Full::new(Bytes::from_static(body)), guard.clone());
                async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(max_buf)
                .serve_connection(TokioIo::new(io), svc);
            tokio::spawn(conn);
            let (mut rd, mut wr) = tokio::io::split(client);
            wr.write_all(input).await.expect("write");
            let mut out = Vec::new();
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                rd.read_to_end(&mut out),
            )
            .await;
            out
        })
    }

    /// The last response in `out`: status line, headers, body.
    fn last_response(out: &[u8]) -> (String, String, String) {
        let text = String::from_utf8_lossy(out).into_owned();
        let at = text.rfind("HTTP/1.").expect("a response");
        let (head, body) = text[at..].split_once("\r\n\r\n").expect("a head");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_string(), headers.to_string(), body.to_string())
    }

    #[test]
    fn hyper_refusals_leave_as_json_answers() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        let big_head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9_000));
        let cases: Vec<(&str, Vec<u8>, usize, &str)> = vec![
            (
                "bad method",
                b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                8192,
                "HTTP/1.1 400 Bad Request",
            ),
            (
                "bad header name",
                b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
                8192,
                "HTTP/1.1 400 Bad Request",
            ),
            (
                "bad version",
                b"GET / HTTP/1.2\r\n\r\n".to_vec(),
                8192,
                "HTTP/1.1 400 Bad Request",
            ),
            (
                "obs-fold",
                b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n".to_vec(),
                8192,
                "HTTP/1.1 400 Bad Request",
            ),
            (
                "oversize head",
                big_head.into_bytes(),
                8192,
                "HTTP/1.1 431 Request Header Fields Too Large",
            ),
            (
                "long target",
                long_uri.into_bytes(),
                200_000,
                "HTTP/1.1 414 URI Too Long",
            ),
            (
                "after a good request",
                b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nG(T / HTTP/1.1\r\n\r\n".to_vec(),
                8192,
                "HTTP/1.1 400 Bad Request",
            ),
            (
                "after an HTTP/1.0 keep-alive request",
                b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nG(T / HTTP/1.1\r\n\r\n".to_vec(),
                8192,
                "HTTP/1.0 400 Bad Request",
            ),
        ];
        for (name, input, max_buf, status) in cases {
            let out = serve_with_hyper(&input, max_buf, b"ok");
            let (line, headers, body) = last_response(&out);
            assert_eq!(line, status, "{name}: {:?}", String::from_utf8_lossy(&out));
            assert!(
                headers.contains("content-type: application/json"),
                "{name}: {headers}"
            );
            assert!(headers.contains("x-request-id: "), "{name}: {headers}");
            assert!(headers.contains("connection: close"), "{name}: {headers}");
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{name}: body {body:?} is not JSON: {e}"));
            assert!(v["error"].is_string(), "{name}: {body}");
            if name.starts_with("after") {
                assert!(
                    String::from_utf8_lossy(&out).contains("\r\n\r\nok"),
                    "{name}: the first request was answered first"
                );
            }
        }
    }

    #[test]
    fn a_body_that_ends_like_hyper_answer_is_sent_as_it_is() {
        // The client pipelines the start of a second head, so a head is pending that the
        // service has not been handed while the first response is written.
        let out = serve_with_hyper(
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHo",
            8192,
            HYPER_400,
        );
        let text = String::from_utf8_lossy(&out);
        let (_, body) = text.split_once("\r\n\r\n").expect("a response");
        assert_eq!(body.as_bytes(), HYPER_400, "the body went out unchanged");
        assert!(!text.contains("application/json"), "{text}");
    }

    /// Bytes written through a guard that has read `input` (and whose service was handed
    /// `served` requests), as the peer receives them.
    fn written_after(input: &[u8], served: usize, write: &[u8]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let (mut io, handle) = GuardedIo::new(server);
            client.write_all(input).await.expect("write");
            let mut buf = vec![0u8; input.len()];
            io.read_exact(&mut buf).await.expect("read");
            for _ in 0..served {
                let _ = handle.next_request();
            }
            io.write_all(write).await.expect("write");
            io.flush().await.expect("flush");
            drop(io);
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read back");
            out
        })
    }

    #[test]
    fn nothing_is_replaced_on_http2_or_in_a_tunnel_or_without_a_pending_head() {
        // HTTP/2 prior knowledge: the preface is a "head" the service never gets.
        let h2 = written_after(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, HYPER_400);
        assert_eq!(h2, HYPER_400);
        // After a 101 the service has had every head: tunnel bytes pass untouched.
        let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(written_after(ws, 1, HYPER_400), HYPER_400);
        // Every head handed over: nothing of hyper's own can be under way.
        assert_eq!(
            written_after(b"GET / HTTP/1.1\r\n\r\n", 1, HYPER_400),
            HYPER_400
        );
        // A head pending: replaced.
        let replaced = written_after(b"GET / HTTP/1.1\r\nX-A", 0, HYPER_400);
        assert!(
            String::from_utf8_lossy(&replaced).contains("application/json"),
            "{:?}",
            String::from_utf8_lossy(&replaced)
        );
    }
}
