//! The response body on its way to the client, and the accounting that ends with it.
//!
//! Bodies stream: nothing here buffers a body whole. The wrapper exists because some things
//! must happen when the response *body* ends, not when the headers arrive (Linkerd's
//! lesson): the node's in-flight count is released and the request's status, duration and
//! access-log line are recorded — so a long download counts as load on its node for as long
//! as it runs. The body is bounded by inactivity, not by a total: it fails when the node
//! sends nothing for `timeouts.idle` (nginx's `proxy_read_timeout`), so a stream may last
//! hours while a stalled node is still cut. (The request timeout ended when the head came.)

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use strategies::InFlight;

use crate::metrics::PoolMetrics;
use crate::proxy::accesslog::{AccessLog, Record};
use crate::upstream::{self, BodyError, IdleTimer};

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

/// The node sent nothing for longer than `timeouts.idle` while its body was streaming.
#[derive(Debug, thiserror::Error)]
#[error("the upstream response body stalled for longer than the idle timeout")]
pub struct BodyIdle;

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// An answer the balancer made itself (errors, admin).
    Full(Option<Bytes>),
    /// The upstream's body, streamed, with the accounting that ends when it does.
    Upstream(Box<UpstreamBody>),
}

/// The upstream's body plus its inactivity bound and accounting.
#[derive(Debug)]
pub struct UpstreamBody {
    pub inner: upstream::Body,
    pub completion: Option<Completion>,
    /// `timeouts.idle`: the body fails when the node sends nothing for this long.
    pub idle: IdleTimer,
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let b = bytes.into();
        ResponseBody::Full((!b.is_empty()).then_some(b))
    }

    pub fn upstream(inner: upstream::Body, completion: Completion, idle: Duration) -> ResponseBody {
        ResponseBody::Upstream(Box::new(UpstreamBody {
            inner,
            completion: Some(completion),
            idle: IdleTimer::new(idle),
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
                        up.idle.touch();
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
                        if up.idle.poll_expired(cx).is_ready() {
                            up.completion.take();
                            return Poll::Ready(Some(Err(Box::new(BodyIdle))));
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
