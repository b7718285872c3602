//! Body types of the proxy: what goes to the upstream and what goes back to the client.
//!
//! Bodies stream: nothing here buffers a body whole (a request body up to 64 KiB is read
//! whole only so that a retry can send it again). The response wrapper exists because some
//! things must happen when the response *body* ends, not when the headers arrive
//! (Linkerd's lesson): the node's in-flight count is released and the request's status,
//! duration and access-log line are recorded — so a long download counts as load on its
//! node for as long as it runs — and the pool's request timeout covers the whole exchange.
//!
//! With `limits.max_body_bytes`, a request body of unknown length (chunked, or HTTP/2
//! without `content-length`) is streamed through [`LimitedBody`], which fails the body
//! instead of passing on the frame that would cross the limit: the upstream request is
//! aborted having received at most the limit. A body whose length is announced is checked
//! against the limit before anything is sent (hyper holds the client to that length).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use strategies::InFlight;

use crate::accesslog::{AccessLog, Record};
use crate::h1codec::H1Body;
use crate::h1pool::Checkout;
use crate::metrics::PoolMetrics;

/// A request body on its way to an upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (a GET, or a body known to be empty): can be sent again on a retry.
    Empty,
    /// A small body read whole so that it can be sent again on a retry.
    Buffered(Option<Bytes>),
    /// The client's body, streamed as it arrives: sent once.
    Streaming(Incoming),
    /// The same, cut at `limits.max_body_bytes` (only for bodies of unknown length).
    Limited(LimitedBody),
}

/// A streamed request body that may not exceed a number of bytes.
#[derive(Debug)]
pub struct LimitedBody {
    inner: Incoming,
    /// Bytes the body may still carry.
    left: u64,
    /// Set when the limit was crossed, for the proxy to tell a client's oversized body
    /// (413, not the node's fault) from an upstream failure once the send fails. Shared
    /// because the body is polled by the upstream connection's task.
    tripped: Arc<AtomicBool>,
}

impl LimitedBody {
    /// `inner` limited to `limit` bytes; the flag is set if it tries to carry more.
    pub fn new(inner: Incoming, limit: u64) -> (LimitedBody, Arc<AtomicBool>) {
        let tripped = Arc::new(AtomicBool::new(false));
        let body = LimitedBody {
            inner,
            left: limit,
            tripped: Arc::clone(&tripped),
        };
        (body, tripped)
    }
}

/// The request body crossed `limits.max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than limits.max_body_bytes")]
pub struct BodyTooLarge;

impl RequestBody {
    /// The whole body, when it is here complete (no body, or one buffered for retries).
    pub fn complete(&self) -> Option<&[u8]> {
        match self {
            RequestBody::Empty | RequestBody::Buffered(None) => Some(&[]),
            RequestBody::Buffered(Some(b)) => Some(b),
            RequestBody::Streaming(_) | RequestBody::Limited(_) => None,
        }
    }

    /// A copy for another attempt, if this body can be sent again.
    pub fn try_clone(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Buffered(b) => Some(RequestBody::Buffered(b.clone())),
            RequestBody::Streaming(_) | RequestBody::Limited(_) => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Streaming(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            RequestBody::Limited(l) => {
                let res = Pin::new(&mut l.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &res {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if n > l.left {
                        l.left = 0;
                        l.tripped.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    l.left -= n;
                }
                res.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Buffered(b) => b.is_none(),
            RequestBody::Streaming(inner) => inner.is_end_stream(),
            RequestBody::Limited(l) => l.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Streaming(inner) => inner.size_hint(),
            RequestBody::Limited(l) => l.inner.size_hint(),
        }
    }
}

/// Accounting that ends with the response body: in-flight release, request metrics and
/// the access-log line.
#[derive(Debug)]
pub struct Completion {
    pub in_flight: Option<InFlight>,
    pub metrics: PoolMetrics,
    pub status: u16,
    pub start: Instant,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
    /// The access-log line to finish, when the access log is on.
    pub log: Option<Box<PendingLog>>,
}

/// What the access log needs beyond what [`Completion`] counts.
#[derive(Debug)]
pub struct PendingLog {
    pub sink: AccessLog,
    pub record: Record,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.metrics.record(self.status, elapsed.as_secs_f64());
        if let Some(pending) = self.log.take() {
            let PendingLog { sink, mut record } = *pending;
            record.status = self.status;
            record.bytes = self.bytes;
            record.duration = elapsed;
            sink.log(record);
        }
    }
}

/// The error a response body ends with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream exchange took longer than `timeouts.request` while the body was streaming.
#[derive(Debug, thiserror::Error)]
#[error("the upstream response did not finish within the request timeout")]
pub struct BodyTimeout;

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// An answer the balancer made itself (errors, admin).
    Full(Option<Bytes>),
    /// The upstream's body, streamed, with the accounting that ends when it does.
    Upstream(Box<UpstreamBody>),
}

/// An upstream's response body as it arrives.
#[derive(Debug)]
pub enum UpstreamIncoming {
    /// From hyper's client (TLS and HTTP/2 pools, upgrades, streamed request bodies).
    Hyper(Incoming),
    /// Read by [`crate::h1codec`] from a plain HTTP/1.1 node.
    Own(H1Body),
}

impl Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamIncoming::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamIncoming::Own(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamIncoming::Hyper(b) => b.is_end_stream(),
            UpstreamIncoming::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamIncoming::Hyper(b) => b.size_hint(),
            UpstreamIncoming::Own(b) => b.size_hint(),
        }
    }
}

/// The upstream's body plus its deadline and accounting.
#[derive(Debug)]
pub struct UpstreamBody {
    pub inner: UpstreamIncoming,
    pub completion: Option<Completion>,
    /// End of the whole upstream exchange (`timeouts.request`).
    pub deadline: tokio::time::Instant,
    /// Created the first time the body has to wait, so a response that arrives in one go
    /// never touches the timer wheel.
    pub sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The pooled HTTP/1.1 connection the body arrives on: back into the node's pool when
    /// the body has been read to its end, closed otherwise.
    pub conn: Option<Checkout>,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.inner.is_end_stream() {
                conn.release();
            }
        }
    }
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let b = bytes.into();
        ResponseBody::Full((!b.is_empty()).then_some(b))
    }

    pub fn upstream(
        inner: UpstreamIncoming,
        completion: Completion,
        deadline: tokio::time::Instant,
        conn: Option<Checkout>,
    ) -> ResponseBody {
        ResponseBody::Upstream(Box::new(UpstreamBody {
            inner,
            completion: Some(completion),
            deadline,
            sleep: None,
            conn,
        }))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(up) => {
                let res = Pin::new(&mut up.inner).poll_frame(cx);
                match res {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(data), Some(c)) = (frame.data_ref(), up.completion.as_mut()) {
                            c.bytes += data.len() as u64;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The body is over: release the node now rather than when hyper
                        // gets round to dropping us.
                        up.completion.take();
                        Poll::Ready(Some(Err(e)))
                    }
                    Poll::Ready(None) => {
                        up.completion.take();
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        let deadline = up.deadline;
                        let sleep = up
                            .sleep
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        if sleep.as_mut().poll(cx).is_ready() {
                            up.completion.take();
                            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Upstream(up) => up.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Upstream(up) => up.inner.size_hint(),
        }
    }
}
