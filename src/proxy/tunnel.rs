//! Upgraded connections (WebSocket and other `101` upgrades): bytes copied both ways between
//! the client and the node until either side closes, or nothing moves either way for the
//! pool's `timeouts.idle` — a tunnel never outlives its usefulness, as nginx's
//! `proxy_read_timeout` and HAProxy's `timeout tunnel` ensure.
//!
//! Both sides are wrapped in a `Watched` stream, which notes the time of the last byte in either
//! direction; the tunnel's one timer wakes at the earliest moment the bound could pass and
//! looks at that note (traffic only pushes the deadline back, it never re-arms the timer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::upstream::Upgraded;
use crate::util::io::{Watch, Watched};

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

/// Every byte through either side of the tunnel moves the clock.
impl Watch for Clock {
    fn read(&self) {
        self.touch();
    }

    fn written(&self) {
        self.touch();
    }
}
