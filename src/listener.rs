//! Downstream listeners: accept TCP connections and serve HTTP/1.1 and HTTP/2 on them.
//!
//! One accept loop per configured listener. Each connection is served by hyper-util's
//! auto builder (HTTP/1.1, or HTTP/2 with prior knowledge, detected from the first bytes)
//! with upgrades enabled so WebSockets can be tunnelled. On shutdown the accept loop stops
//! and every connection is asked to close gracefully (`Connection: close` after the
//! current response on HTTP/1.1, GOAWAY on HTTP/2); the supervisor waits for them.
//!
//! A TLS listener ([`Listener::with_tls`]) runs the handshake in the connection's own task,
//! never in the accept loop, bounded by `limits.header_read_timeout`; a failed handshake ends
//! only that connection. ALPN decides the protocol: `h2` → HTTP/2, `http/1.1` → HTTP/1.1,
//! none → detected as on a plain listener. The listener also runs its certificate-file watch.
//!
//! HTTP/1 connections (plain listeners, and TLS without ALPN `h2`) are read through the
//! framing guard ([`crate::h1guard`]), which tells the proxy which request to refuse as
//! smuggling.
//!
//! HTTP/2 settings: up to [`H2_MAX_CONCURRENT_STREAMS`] streams per connection; request
//! bodies are flow-controlled with fixed windows ([`H2_STREAM_WINDOW`] per stream,
//! [`H2_CONNECTION_WINDOW`] per connection), so a client uploading fast cannot make us buffer
//! more than that per connection while the upstream reads slowly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::LimitsConfig;
use crate::h1guard::{GuardHandle, GuardedIo};
use crate::proxy::{ConnInfo, ListenerInfo, Proxy};
use crate::tls::TlsTerminator;

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS): above what
/// browsers open (~100) and h2load's defaults, small enough to bound one client's share.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// HTTP/2 flow-control window per stream: 1 MiB lets one large upload or download run at
/// full speed on a LAN round trip, and is what the request body may buffer while the
/// upstream has not read it yet.
pub const H2_STREAM_WINDOW: u32 = 1024 * 1024;

/// HTTP/2 connection window: several streams may move at once; bounds buffered request
/// data per connection.
pub const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// A bound listener, ready to serve.
pub struct Listener {
    pub name: String,
    pub local_addr: SocketAddr,
    tcp: TcpListener,
    /// TLS termination, for a listener with a `tls` section. A slot shared with the
    /// supervisor, so a reload can add, change or remove TLS on a bind that stays: each
    /// new connection reads the current value.
    tls: TlsSlot,
}

/// The current TLS terminator of a listener (`None`: plain HTTP).
pub type TlsSlot = Arc<arc_swap::ArcSwapOption<TlsTerminator>>;

impl Listener {
    /// Bind `addr`. Binding happens before anything is served, so a taken port fails start-up
    /// with a clear error instead of a half-started process.
    pub async fn bind(name: &str, addr: &str) -> std::io::Result<Listener> {
        let tcp = TcpListener::bind(addr).await?;
        let local_addr = tcp.local_addr()?;
        Ok(Listener {
            name: name.to_string(),
            local_addr,
            tcp,
            tls: TlsSlot::default(),
        })
    }

    /// Terminate TLS on this listener (build the terminator with [`TlsTerminator::new`]);
    /// `None` leaves it plain. Its requests get `X-Forwarded-Proto: https`.
    pub fn with_tls(self, tls: Option<Arc<TlsTerminator>>) -> Listener {
        self.tls.store(tls);
        self
    }

    /// The listener's TLS slot: the supervisor keeps it to swap certificates on reload.
    pub fn tls_slot(&self) -> TlsSlot {
        Arc::clone(&self.tls)
    }
}

/// What every connection of a listener needs.
pub struct ServeContext {
    pub proxy: Arc<Proxy>,
    pub limits: LimitsConfig,
    /// Cancelled when the process starts draining.
    pub shutdown: CancellationToken,
    /// Tracks every connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// What every request of one listener needs: one `Arc` per listener, cloned per request.
struct Handler {
    proxy: Arc<Proxy>,
    listener: ListenerInfo,
}

/// Accept connections until shutdown.
pub async fn serve(listener: Listener, ctx: Arc<ServeContext>) {
    let active = ctx.proxy.metrics.downstream_connections(&listener.name);
    let handler = Arc::new(Handler {
        proxy: Arc::clone(&ctx.proxy),
        listener: ListenerInfo {
            rate_limited: ctx.proxy.metrics.rate_limited(&listener.name),
        },
    });
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections as usize));
    let builders = Arc::new(Builders::new(&ctx.limits));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            a = listener.tcp.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Over `limits.max_connections`: refuse at once by closing; the connections we
            // already have keep working.
            tracing::debug!(listener = %listener.name, %peer, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx2 = Arc::clone(&ctx);
        let builders = Arc::clone(&builders);
        let tls = listener.tls.load_full();
        let active = active.clone();
        let handler = Arc::clone(&handler);
        ctx.tracker.spawn(async move {
            active.inc();
            match tls {
                None => {
                    let info = ConnInfo {
                        peer,
                        https: false,
                        malformed: None,
                    };
                    serve_guarded(stream, info, &ctx2, &handler, &builders.auto).await;
                }
                Some(tls) => serve_tls(stream, peer, &ctx2, &handler, &tls, &builders).await,
            }
            active.dec();
            drop(permit);
        });
    }
    tracing::info!(listener = %listener.name, "listener stopped accepting");
}

/// The connection builders of one listener: protocol detected, or fixed by ALPN.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &LimitsConfig) -> Builders {
        let auto = http_builder(limits);
        Builders {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        }
    }
}

fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size((limits.max_header_bytes.0 as usize).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(u32::try_from(limits.max_header_bytes.0).unwrap_or(u32::MAX));
    builder
}

/// Handshake (in this connection's task, bounded by `header_read_timeout`), then serve
/// the protocol ALPN chose.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &ServeContext,
    handler: &Arc<Handler>,
    tls: &TlsTerminator,
    builders: &Builders,
) {
    let accepted = tokio::select! {
        s = tls.accept(stream, ctx.limits.header_read_timeout.0) => s,
        _ = ctx.shutdown.cancelled() => None,
    };
    let Some(stream) = accepted else { return };
    let info = ConnInfo {
        peer,
        https: true,
        malformed: None,
    };
    match stream.get_ref().1.alpn_protocol() {
        // HTTP/2 frames its messages itself: nothing for the HTTP/1 guard to watch.
        Some(crate::tls::ALPN_H2) => {
            let io = TokioIo::new(stream);
            serve_connection(io, info, None, ctx, handler, &builders.http2).await;
        }
        Some(crate::tls::ALPN_HTTP11) => {
            serve_guarded(stream, info, ctx, handler, &builders.http1).await;
        }
        _ => serve_guarded(stream, info, ctx, handler, &builders.auto).await,
    }
}

/// Serve a connection that may speak HTTP/1 through the framing guard. The guard must see
/// only HTTP bytes: anything read before the first request (a PROXY protocol header, say)
/// has to be consumed before the stream is handed in here.
async fn serve_guarded<S>(
    stream: S,
    info: ConnInfo,
    ctx: &ServeContext,
    handler: &Arc<Handler>,
    builder: &auto::Builder<TokioExecutor>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (io, guard) = GuardedIo::new(stream);
    serve_connection(TokioIo::new(io), info, Some(guard), ctx, handler, builder).await;
}

async fn serve_connection<I>(
    io: I,
    info: ConnInfo,
    guard: Option<GuardHandle>,
    ctx: &ServeContext,
    handler: &Arc<Handler>,
    builder: &auto::Builder<TokioExecutor>,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let peer = info.peer;
    let handler = Arc::clone(handler);
    let svc = service_fn(move |req| {
        let handler = Arc::clone(&handler);
        let mut info = info;
        info.malformed = guard.as_ref().and_then(GuardHandle::next_request);
        async move {
            let resp = handler.proxy.handle(req, info, &handler.listener).await;
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        _ = ctx.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
