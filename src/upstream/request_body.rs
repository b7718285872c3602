//! The request body on its way to a node ([`RequestBody`]), and the inactivity bound that
//! streamed bodies in both directions share ([`IdleTimer`]).
//!
//! A request body is empty, buffered (small bodies are read whole so a retry can send them
//! again, trailers included), or streamed as it arrives from the client. A streamed body is
//! watched on its way through: it may not cross `limits.max_body_bytes` when its length was
//! not announced, and it may not stall for longer than the pool's `timeouts.idle`. Both
//! failures — and any failure of the client's own body (a malformed chunk, a client that
//! went away) — surface as a [`ClientBodyError`], so that the request path can tell the
//! client's fault from the node's (a 4xx, not a 502, and nothing held against the node).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

/// The error a body ends with, request or response.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body failed: the client's doing, never the node's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the client's request body failed")]
    Failed(#[source] hyper::Error),
    #[error("the request body is larger than limits.max_body_bytes")]
    TooLarge,
    #[error("the client sent no request body data for longer than timeouts.idle")]
    Idle,
}

/// A request body on its way to a node.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (a GET, or a body known to be empty): can be sent again on a retry.
    Empty,
    /// A small body read whole so that it can be sent again on a retry.
    Buffered(Buffered),
    /// The client's body, streamed as it arrives: sent once.
    Streaming(Box<Streaming>),
    /// What is left after a streamed body was handed to a connection: nothing to send again.
    Sent,
}

/// A complete body and its trailers, as many times as needed.
#[derive(Debug, Clone, Default)]
pub struct Buffered {
    pub data: Bytes,
    /// Boxed: rare, and a header map would double the size of every request's future.
    pub trailers: Option<Box<HeaderMap>>,
    /// Where a send of it is: 0 data next, 1 trailers next, 2 done.
    state: u8,
}

impl Buffered {
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> Buffered {
        Buffered {
            data,
            trailers: trailers.filter(|t| !t.is_empty()).map(Box::new),
            state: 0,
        }
    }
}

/// A streamed request body with its two bounds.
#[derive(Debug)]
pub struct Streaming {
    inner: hyper::body::Incoming,
    /// Bytes the body may still carry (`limits.max_body_bytes`, for a body whose length was
    /// not announced: an announced one was checked before anything was sent).
    left: Option<u64>,
    idle: IdleTimer,
}

impl RequestBody {
    /// The client's body, streamed, cut at `limit` bytes and after `idle` without data.
    pub fn streaming(
        inner: hyper::body::Incoming,
        limit: Option<u64>,
        idle: Duration,
    ) -> RequestBody {
        RequestBody::Streaming(Box::new(Streaming {
            inner,
            left: limit,
            idle: IdleTimer::new(idle),
        }))
    }

    /// The whole body and its trailers, when they are here complete.
    pub fn complete(&self) -> Option<(&[u8], Option<&HeaderMap>)> {
        match self {
            RequestBody::Empty => Some((&[], None)),
            RequestBody::Buffered(b) => Some((&b.data, b.trailers.as_deref())),
            RequestBody::Streaming(_) | RequestBody::Sent => None,
        }
    }

    /// Can this body be sent (again)?
    pub fn is_sendable(&self) -> bool {
        !matches!(self, RequestBody::Sent)
    }

    /// The body for one send: a copy when it can be sent again, else the body itself
    /// (leaving [`RequestBody::Sent`] behind).
    pub(crate) fn take_for_send(&mut self) -> RequestBody {
        match self {
            RequestBody::Empty => RequestBody::Empty,
            RequestBody::Buffered(b) => RequestBody::Buffered(Buffered {
                data: b.data.clone(),
                trailers: b.trailers.clone(),
                state: 0,
            }),
            RequestBody::Streaming(_) | RequestBody::Sent => {
                std::mem::replace(self, RequestBody::Sent)
            }
        }
    }

    /// Put back a streamed body that came back unsent.
    pub(crate) fn restore(&mut self, body: RequestBody) {
        if matches!(self, RequestBody::Sent) {
            *self = body;
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty | RequestBody::Sent => Poll::Ready(None),
            RequestBody::Buffered(b) => {
                let frame = match b.state {
                    0 if !b.data.is_empty() => Some(Frame::data(b.data.clone())),
                    0 | 1 => b.trailers.as_deref().cloned().map(Frame::trailers),
                    _ => None,
                };
                b.state = match (b.state, &frame) {
                    (0, Some(f)) if f.is_data() => 1,
                    _ => 2,
                };
                Poll::Ready(frame.map(Ok))
            }
            RequestBody::Streaming(s) => {
                let res = match Pin::new(&mut s.inner).poll_frame(cx) {
                    Poll::Pending => {
                        return match s.idle.poll_expired(cx) {
                            Poll::Ready(()) => {
                                Poll::Ready(Some(Err(Box::new(ClientBodyError::Idle))))
                            }
                            Poll::Pending => Poll::Pending,
                        };
                    }
                    Poll::Ready(res) => res,
                };
                s.idle.touch();
                match res {
                    Some(Ok(frame)) => {
                        let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                        if let Some(left) = s.left.as_mut() {
                            if n > *left {
                                *left = 0;
                                return Poll::Ready(Some(Err(Box::new(ClientBodyError::TooLarge))));
                            }
                            *left -= n;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(Box::new(ClientBodyError::Failed(e))))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty | RequestBody::Sent => true,
            RequestBody::Buffered(b) => match b.state {
                0 => b.data.is_empty() && b.trailers.is_none(),
                1 => b.trailers.is_none(),
                _ => true,
            },
            RequestBody::Streaming(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty | RequestBody::Sent => SizeHint::with_exact(0),
            RequestBody::Buffered(b) => {
                SizeHint::with_exact(if b.state == 0 { b.data.len() as u64 } else { 0 })
            }
            RequestBody::Streaming(s) => s.inner.size_hint(),
        }
    }
}

/// An inactivity bound: expires when nothing happened for `idle`. The timer is created the
/// first time the body has to wait, and re-armed only when it fires early — so a body that
/// arrives in one go never touches the timer wheel, and a busy stream costs one clock read
/// per frame.
#[derive(Debug)]
pub struct IdleTimer {
    idle: Duration,
    /// The timer and the last activity, from the first wait on: before that no clock is read.
    armed: Option<(Pin<Box<tokio::time::Sleep>>, tokio::time::Instant)>,
}

impl IdleTimer {
    pub fn new(idle: Duration) -> IdleTimer {
        IdleTimer { idle, armed: None }
    }

    /// Something was received or sent.
    #[inline]
    pub fn touch(&mut self) {
        if let Some((_, last)) = self.armed.as_mut() {
            *last = tokio::time::Instant::now();
        }
    }

    /// Call when the body has to wait: `Ready` once `idle` has passed since the last
    /// activity (activity before the first wait counts as of that wait).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.idle;
        let (sleep, last) = self.armed.get_or_insert_with(|| {
            let now = tokio::time::Instant::now();
            (Box::pin(tokio::time::sleep_until(now + idle)), now)
        });
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = *last + idle;
            if tokio::time::Instant::now() >= due {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(due);
        }
    }
}
