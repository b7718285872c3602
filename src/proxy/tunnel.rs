//! Upgraded connections (WebSocket and other `101` upgrades): bytes copied both ways between
//! the client and the node until either side closes, or nothing moves either way for the
//! pool's `timeouts.idle` — a tunnel never outlives its usefulness, as nginx's
//! `proxy_read_timeout` and HAProxy's `timeout tunnel` ensure.
//!
//! Both sides are wrapped in [`Watched`], which notes the time of the last byte in either
//! direction; the tunnel's one timer wakes at the earliest moment the bound could pass and
//! looks at that note (traffic only pushes the deadline back, it never re-arms the timer).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::upstream::Upgraded;

/// Relay `down` (the client's upgraded connection, once hyper hands it over) and `up` (the
/// node's) until one side ends or the tunnel idles for `idle`.
pub async fn run(down: hyper::upgrade::OnUpgrade, up: Box<Upgraded>, idle: Duration) {
    let down = match down.await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let clock = Clock::new();
    let mut down = Watched::new(TokioIo::new(down), clock.clone());
    let mut up = Watched::new(*up, clock.clone());
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    tokio::pin!(copy);
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            res = copy.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
                return;
            }
            () = sleep.as_mut() => {
                let due = clock.last() + idle;
                if Instant::now() >= due {
                    tracing::debug!(?idle, "upgraded connection closed: idle timeout");
                    return;
                }
                sleep.as_mut().reset(due);
            }
        }
    }
}

/// When the tunnel last moved a byte, as milliseconds since it started (an atomic: both
/// wrappers write it, though from the same task).
#[derive(Clone)]
struct Clock {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// One side of the tunnel; every byte through it moves the clock.
struct Watched<T> {
    inner: T,
    clock: Clock,
}

impl<T> Watched<T> {
    fn new(inner: T, clock: Clock) -> Watched<T> {
        Watched { inner, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                this.clock.touch();
            }
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
