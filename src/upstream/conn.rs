//! A connection to a node: the byte stream every transport reads and writes ([`Stream`]:
//! plain TCP, or TLS over TCP), a keep-alive HTTP/1.1 connection as the own codec uses it
//! ([`Conn`]), and what that becomes after a `101`: the node's side of a tunnel
//! ([`Upgraded`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::net::TcpStream;

use crate::util::io::forward_async_write;

/// A connection to a node.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: a rustls connection is large, and a plain stream need not carry its size.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Did TLS negotiate HTTP/2 (ALPN `h2`)?
    pub fn alpn_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(crate::tls::protocol::ALPN_H2),
        }
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// A keep-alive connection to one node, with whatever was read past the last message.
#[derive(Debug)]
pub struct Conn {
    pub io: Stream,
    /// What was read past the last message (a response head being parsed, body bytes).
    pub buf: BytesMut,
    /// When it last went idle (into the pool).
    pub idle_since: Instant,
}

impl Conn {
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            idle_since: Instant::now(),
        }
    }

    /// Can this idle connection carry a request? An idle connection must have nothing to
    /// read: readable means the node closed it (EOF), reset it, or sent something
    /// unasked. Checked without waiting; costs no system call while the socket is known
    /// not to be readable.
    pub fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// Read more into the buffer. `Ok(0)` is end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Wait for more bytes; end of stream is an error here.
    pub async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// After a `101`, the connection is the node's side of the tunnel: what was read past the
/// head is read first.
impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            let n = this.buf.len().min(buf.remaining());
            buf.put_slice(&this.buf[..n]);
            this.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

forward_async_write!(Conn, io);

/// The node's side of an upgraded connection (a WebSocket after `101`): bytes the node sent
/// right after its `101` are read first.
#[derive(Debug)]
pub struct Upgraded(Conn);

impl Upgraded {
    pub(crate) fn new(conn: Conn) -> Upgraded {
        Upgraded(conn)
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

forward_async_write!(Upgraded, 0);
