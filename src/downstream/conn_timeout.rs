//! Client-connection timeouts: `limits.header_read_timeout` and `limits.idle_timeout`.
//!
//! **Why not hyper's.** hyper 1.x's HTTP/1 `header_read_timeout` (`proto/h1/conn.rs`,
//! `poll_read_head`) starts its timer whenever the connection waits for a request head —
//! and after each response `State::idle` sets `notify_read`, so the timer starts right away,
//! before any byte of the next request has arrived. An idle keep-alive connection is
//! therefore closed after `header_read_timeout`: there is no separate idle timeout. It also
//! boxes a fresh timer for every request. Its HTTP/2 side has no idle timeout at all. So
//! hyper's is switched off (`header_read_timeout(None)`) and this module implements both.
//!
//! **The rules** (from when HTTP starts, i.e. after the PROXY header and the TLS handshake,
//! each bounded by `header_read_timeout` on their own):
//! - the first request head must be complete within `header_read_timeout`;
//! - HTTP/1.1, after a response: idle. If no byte arrives for `idle_timeout`, the connection
//!   is closed. Once the first byte of the next request arrives, its head must be complete
//!   within `header_read_timeout` of that byte, however slowly it dribbles in (slowloris);
//! - HTTP/2, after its first request: idle while no stream is open; after `idle_timeout`
//!   without a stream it gets a GOAWAY and closes. Control frames (PING, SETTINGS) do not
//!   count as activity;
//! - while a request is in flight — from its head until its response body has been handed to
//!   hyper — neither applies (the pool's timeouts bound the exchange).
//!
//! **How, cheaply.** One [`Activity`] per connection, shared by three parties: the IO wrapper
//! [`Tracked`] notes the time of the first byte read while the connection is idle (one
//! relaxed atomic load per read otherwise); [`Activity::request`] and the [`RequestGuard`]
//! it returns, carried in the response body ([`TrackedBody`]), count requests in flight and
//! note when the connection went idle (one clock read per request); and one timer per
//! connection, owned by the connection's task, wakes at the next possible deadline and asks
//! [`Activity::check`] whether it has really passed — activity since then only moves the
//! deadline, found lazily. No timer is registered or allocated per request.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Version;
use http_body::{Body, Frame, SizeHint};

use crate::downstream::h1guard::GuardHandle;
use crate::metrics::DownstreamTimeout;
use crate::util::io::{Watch, Watched};

/// `head_started_ms` when no request head has started since the connection went idle.
const NONE: u64 = u64::MAX;

/// The two limits, from `limits`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

impl Timeouts {
    /// How often a connection with a request in flight is looked at again: nothing can
    /// expire sooner than the shorter limit after that request ends.
    fn recheck(&self) -> Duration {
        self.header_read.min(self.idle)
    }
}

/// What [`Activity::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing has expired: look again at this time.
    Until(Instant),
    /// This limit passed (the label of `switchyard_downstream_timeouts_total`).
    Expired(DownstreamTimeout),
}

/// What is going on on one connection. Atomics because HTTP/2 streams run in tasks of their
/// own; times are milliseconds since `start`, so they fit in one atomic each.
#[derive(Debug)]
pub struct Activity {
    /// When HTTP started on the connection; the origin of the `_ms` fields.
    start: Instant,
    /// Requests whose response body has not been handed over yet (HTTP/2: open streams).
    in_flight: AtomicU32,
    /// When `in_flight` last fell to zero.
    idle_since_ms: AtomicU64,
    /// When the first byte of the pending request head arrived ([`NONE`]: none has). Starts
    /// at 0: the connection's start counts as the start of its first head.
    head_started_ms: AtomicU64,
    /// The connection carried an HTTP/2 request: reads while idle are control frames, not
    /// the start of a head.
    h2: AtomicBool,
    /// The HTTP/1 framing guard of the connection, shown every response body frame so that
    /// it never takes a body for hyper's own answer ([`GuardHandle::note_body_frame`]);
    /// kept here because every response body holds this `Arc` already.
    body_watch: Option<GuardHandle>,
}

impl Activity {
    /// A connection whose HTTP starts now.
    pub fn new() -> Arc<Activity> {
        Activity::starting_at(Instant::now(), None)
    }

    /// [`Activity::new`] for a connection behind the HTTP/1 framing guard `guard`.
    pub fn watched_by(guard: Option<GuardHandle>) -> Arc<Activity> {
        Activity::starting_at(Instant::now(), guard)
    }

    fn starting_at(start: Instant, body_watch: Option<GuardHandle>) -> Arc<Activity> {
        Arc::new(Activity {
            start,
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            body_watch,
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Bytes arrived (called by [`Tracked`]).
    #[inline]
    fn on_read(&self) {
        if self.head_started_ms.load(Ordering::Relaxed) == NONE {
            self.idle_read();
        }
    }

    #[cold]
    fn idle_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && !self.h2.load(Ordering::Relaxed) {
            let now = self.ms(Instant::now());
            let _ = self.head_started_ms.compare_exchange(
                NONE,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A request arrived; the connection is busy until the guard is dropped (put it in the
    /// response body: [`TrackedBody`]).
    pub fn request(self: &Arc<Self>, version: Version) -> RequestGuard {
        if version == Version::HTTP_2 && !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    fn request_ended(&self) {
        // Reset before the decrement: a byte read once the count is zero starts a new head.
        self.idle_since_ms
            .store(self.ms(Instant::now()), Ordering::Relaxed);
        self.head_started_ms.store(NONE, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The guard to show response body frames to: none on HTTP/2, where h2 frames them.
    #[inline]
    fn http1_watch(&self) -> Option<&GuardHandle> {
        self.body_watch
            .as_ref()
            .filter(|_| !self.h2.load(Ordering::Relaxed))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Has a limit passed at `now`? If not, when to look again.
    pub fn check(&self, t: &Timeouts, now: Instant) -> Check {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Check::Until(now + t.recheck());
        }
        let head = self.head_started_ms.load(Ordering::Relaxed);
        let (deadline, kind) = if head != NONE && !self.h2.load(Ordering::Relaxed) {
            (self.at(head) + t.header_read, DownstreamTimeout::HeaderRead)
        } else {
            let idle = self.idle_since_ms.load(Ordering::Relaxed);
            (self.at(idle) + t.idle, DownstreamTimeout::Idle)
        };
        if now >= deadline {
            Check::Expired(kind)
        } else {
            Check::Until(deadline)
        }
    }
}

/// One request in flight on its connection; dropping it ends the request.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that ends its request's [`RequestGuard`] when it ends (or is dropped).
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    guard: Option<RequestGuard>,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: RequestGuard) -> TrackedBody<B> {
        TrackedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(watch) = this.guard.as_ref().and_then(|g| g.0.http1_watch()) {
                    watch.note_body_frame(frame);
                }
            }
            Poll::Ready(None | Some(Err(_))) => drop(this.guard.take()),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's byte stream, noting when bytes arrive on an idle connection.
pub type Tracked<T> = Watched<T, Arc<Activity>>;

impl Watch for Arc<Activity> {
    #[inline]
    fn read(&self) {
        self.on_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(1),
        idle: Duration::from_secs(5),
    };

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A connection started `ago` in the past, so times can be set without sleeping.
    fn started(ago: Duration) -> (Arc<Activity>, Instant) {
        let now = Instant::now();
        (Activity::starting_at(now - ago, None), now - ago)
    }

    #[test]
    fn the_first_head_is_due_within_header_read_timeout() {
        let (a, t0) = started(secs(10.0));
        assert_eq!(a.check(&T, t0), Check::Until(t0 + secs(1.0)));
        assert_eq!(
            a.check(&T, t0 + secs(1.0)),
            Check::Expired(DownstreamTimeout::HeaderRead)
        );
        // Bytes of that first head do not move its deadline.
        a.on_read();
        assert_eq!(
            a.check(&T, t0 + secs(1.5)),
            Check::Expired(DownstreamTimeout::HeaderRead)
        );
    }

    #[test]
    fn an_idle_keep_alive_connection_gets_idle_timeout_then_header_read_timeout() {
        let (a, t0) = started(Duration::ZERO);
        let g = a.request(Version::HTTP_11);
        // In flight: nothing expires, whatever the time.
        assert!(matches!(a.check(&T, t0 + secs(30.0)), Check::Until(_)));
        drop(g);
        let idle_at = match a.check(&T, t0) {
            Check::Until(t) => t,
            other => panic!("{other:?}"),
        };
        assert!(idle_at >= t0 + T.idle, "idle deadline {idle_at:?}");
        assert_eq!(
            a.check(&T, idle_at + secs(0.001)),
            Check::Expired(DownstreamTimeout::Idle)
        );
        // A byte of the next head arrives: header_read_timeout from now.
        a.on_read();
        let head_at = match a.check(&T, Instant::now()) {
            Check::Until(t) => t,
            other => panic!("{other:?}"),
        };
        assert!(head_at <= Instant::now() + T.header_read);
        assert_eq!(
            a.check(&T, head_at + secs(0.001)),
            Check::Expired(DownstreamTimeout::HeaderRead)
        );
    }

    #[test]
    fn reads_during_a_request_do_not_start_a_head() {
        let (a, _) = started(Duration::ZERO);
        drop(a.request(Version::HTTP_11));
        let g = a.request(Version::HTTP_11);
        a.on_read();
        drop(g);
        assert_eq!(a.head_started_ms.load(Ordering::Relaxed), NONE);
    }

    #[test]
    fn http2_control_frames_do_not_count_once_a_request_was_seen() {
        let (a, _) = started(Duration::ZERO);
        drop(a.request(Version::HTTP_2));
        a.on_read();
        let now = Instant::now();
        match a.check(&T, now) {
            Check::Until(t) => assert!(t > now + T.header_read, "{t:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tracked_body_ends_the_request_at_its_end() {
        use http_body_util::{BodyExt, Full};
        let (a, _) = started(Duration::ZERO);
        let body = TrackedBody::new(
            Full::new(Bytes::from_static(b"x")),
            a.request(Version::HTTP_11),
        );
        assert_eq!(a.in_flight(), 1);
        assert_eq!(body.size_hint().exact(), Some(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut body = body;
        rt.block_on(async {
            assert!(body.frame().await.is_some());
            assert!(body.frame().await.is_none());
        });
        assert_eq!(a.in_flight(), 0, "released at the end, before the drop");
        drop(body);
        assert_eq!(a.in_flight(), 0);
    }
}
