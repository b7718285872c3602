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
//! HTTP/2 settings: up to [`H2_MAX_CONCURRENT_STREAMS`] streams per connection; request
//! bodies are flow-controlled with fixed windows ([`H2_STREAM_WINDOW`] per stream,
//! [`H2_CONNECTION_WINDOW`] per connection), so a client uploading fast cannot make us buffer
//! more than that per connection while the upstream reads slowly.
//!
//! Per connection, in order: the `limits.max_connections` cap (over it, the connection is
//! closed at once and counted); on a `proxy_protocol` listener the PROXY header
//! ([`crate::downstream::proxy_protocol`]), whose source address becomes the client address; the TLS
//! handshake; then HTTP, with the header-read and idle timeouts of [`crate::downstream::conn_timeout`]
//! (hyper's own header timeout is off: it would also cut idle keep-alive connections).
//!
//! Request heads over `limits.max_header_bytes` get a JSON 431 like every other answer.
//! HTTP/1: hyper's parser refuses them at its read-buffer cap (`max_buf_size`), and the
//! framing guard ([`crate::downstream::h1guard`]) replaces hyper's empty answer with ours. HTTP/2: the
//! h2 crate would answer an empty 431 itself at `SETTINGS_MAX_HEADER_LIST_SIZE`, so that
//! cap is set [`H2_HEADER_LIST_CAP_FACTOR`] times higher, and the proxy measures each
//! request's header list as RFC 7541 §4.1 counts it (name + value + 32 per field,
//! pseudo-header fields included, `proxy::h2_header_list_size`) against the limit, refusing it
//! (431, JSON; the connection stays). Above the cap, h2 still
//! answers its own empty 431 and refuses the stream; above 4 times the cap (h2's abuse
//! bound) it closes the connection; clients that honour the announced setting do not send
//! such a list at all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::LimitsConfig;
use crate::downstream::conn_timeout::{Activity, Check, Timeouts, Tracked, TrackedBody};
use crate::downstream::h1guard::{GuardHandle, GuardedIo};
use crate::downstream::proxy_protocol;
use crate::metrics::{DownstreamTimeout, Metrics, ProxyProtocolFailure};
use crate::proxy::handler::{ConnInfo, ListenerInfo, Proxy};
use crate::tls::protocol::{ALPN_H2, ALPN_HTTP11};
use crate::tls::server::TlsTerminator;

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

/// h2's own header-list cap (`SETTINGS_MAX_HEADER_LIST_SIZE`), as a multiple of
/// `limits.max_header_bytes`: lists between the limit and the cap get our JSON 431 (see
/// the module docs); twice the limit keeps what one stream may hold before it is refused
/// small.
pub const H2_HEADER_LIST_CAP_FACTOR: u64 = 2;

/// A bound listener, ready to serve.
pub struct Listener {
    pub name: String,
    pub local_addr: SocketAddr,
    tcp: TcpListener,
    /// TLS termination, for a listener with a `tls` section. A slot shared with the
    /// supervisor, so a reload can add, change or remove TLS on a bind that stays: each
    /// new connection reads the current value.
    tls: TlsSlot,
    /// `proxy_protocol`: every connection starts with a PROXY header. Shared with the
    /// supervisor like `tls`, so a reload can switch it on a bind that stays.
    proxy_protocol: ProxyProtocolSlot,
}

/// The current TLS terminator of a listener (`None`: plain HTTP).
pub type TlsSlot = Arc<arc_swap::ArcSwapOption<TlsTerminator>>;

/// Whether a listener's new connections must start with a PROXY header.
pub type ProxyProtocolSlot = Arc<AtomicBool>;

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
            proxy_protocol: ProxyProtocolSlot::default(),
        })
    }

    /// Expect a PROXY v1/v2 header at the start of every connection (`proxy_protocol: true`):
    /// its source address becomes the client address. Without it, no header is ever parsed.
    pub fn with_proxy_protocol(self, on: bool) -> Listener {
        self.proxy_protocol.store(on, Ordering::Relaxed);
        self
    }

    /// The listener's PROXY-protocol switch: the supervisor keeps it for reloads.
    pub fn proxy_protocol_slot(&self) -> ProxyProtocolSlot {
        Arc::clone(&self.proxy_protocol)
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
    let conn_ctx = Arc::new(ConnContext::new(
        &listener.name,
        &ctx.proxy.metrics,
        &ctx.limits,
    ));
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
            // already have keep working. (Not accepting at all would leave clients waiting
            // in the kernel's backlog with no answer.)
            conn_ctx.refused.inc();
            tracing::debug!(listener = %listener.name, %peer, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx2 = Arc::clone(&ctx);
        let conn_ctx = Arc::clone(&conn_ctx);
        let builders = Arc::clone(&builders);
        let tls = listener.tls.load_full();
        let proxy_protocol = listener.proxy_protocol.load(Ordering::Relaxed);
        let active = active.clone();
        let handler = Arc::clone(&handler);
        ctx.tracker.spawn(async move {
            active.inc();
            let accepted = Accepted {
                stream,
                peer,
                proxy_protocol,
                tls,
            };
            serve_accepted(accepted, &ctx2, &conn_ctx, &handler, &builders).await;
            active.dec();
            drop(permit);
        });
    }
    tracing::info!(listener = %listener.name, "listener stopped accepting");
}

/// What one listener's connections share besides [`ServeContext`]: its name, the two
/// timeouts, and its metric handles (resolved once here, never per connection).
struct ConnContext {
    listener: String,
    timeouts: Timeouts,
    refused: IntCounter,
    /// `switchyard_downstream_timeouts_total`: `header_read`, then `idle`.
    timeouts_total: [IntCounter; 2],
    /// `switchyard_proxy_protocol_errors_total`: `invalid`, `timeout`, `eof`.
    proxy_errors: [IntCounter; 3],
}

impl ConnContext {
    fn new(listener: &str, metrics: &Metrics, limits: &LimitsConfig) -> ConnContext {
        ConnContext {
            listener: listener.to_string(),
            timeouts: Timeouts {
                header_read: limits.header_read_timeout.0,
                idle: limits.idle_timeout.0,
            },
            refused: metrics.connections_refused(listener),
            timeouts_total: metrics.downstream_timeouts(listener),
            proxy_errors: metrics.proxy_protocol_errors(listener),
        }
    }

    fn timed_out(&self, e: DownstreamTimeout) -> &IntCounter {
        match e {
            DownstreamTimeout::HeaderRead => &self.timeouts_total[0],
            DownstreamTimeout::Idle => &self.timeouts_total[1],
        }
    }

    fn proxy_error(&self, reason: ProxyProtocolFailure) -> &IntCounter {
        match reason {
            ProxyProtocolFailure::Invalid => &self.proxy_errors[0],
            ProxyProtocolFailure::Timeout => &self.proxy_errors[1],
            ProxyProtocolFailure::Eof => &self.proxy_errors[2],
        }
    }
}

/// A connection just accepted, with its listener's settings at that moment.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    proxy_protocol: bool,
    tls: Option<Arc<TlsTerminator>>,
}

/// PROXY header (if the listener expects one), TLS handshake (if any), then HTTP.
async fn serve_accepted(
    accepted: Accepted,
    ctx: &ServeContext,
    conn_ctx: &ConnContext,
    handler: &Arc<Handler>,
    builders: &Builders,
) {
    let Accepted {
        mut stream,
        mut peer,
        proxy_protocol,
        tls,
    } = accepted;
    if proxy_protocol {
        match read_proxy_header(&mut stream, ctx, conn_ctx).await {
            Some(header) => peer = header.client_addr(peer),
            None => return,
        }
    }
    // The PROXY header is consumed by now: the HTTP/1 guard sees only HTTP bytes.
    match tls {
        None => {
            let info = ConnInfo {
                peer,
                https: false,
                malformed: None,
                max_header_bytes: ctx.limits.max_header_bytes.0,
            };
            serve_guarded(stream, info, ctx, conn_ctx, handler, &builders.auto).await;
        }
        Some(tls) => serve_tls(stream, peer, ctx, conn_ctx, handler, &tls, builders).await,
    }
}

/// Read the PROXY header, bounded by `header_read_timeout`; `None` (logged and counted)
/// when the connection must be closed.
async fn read_proxy_header(
    stream: &mut TcpStream,
    ctx: &ServeContext,
    conn_ctx: &ConnContext,
) -> Option<proxy_protocol::Header> {
    let timeout = ctx.limits.header_read_timeout.0;
    let read = tokio::select! {
        r = tokio::time::timeout(timeout, proxy_protocol::read_header(stream)) => r,
        _ = ctx.shutdown.cancelled() => return None,
    };
    let (reason, error) = match read {
        Ok(Ok(header)) => return Some(header),
        Ok(Err(e)) => (e.reason(), e.to_string()),
        Err(_) => (
            ProxyProtocolFailure::Timeout,
            "no complete PROXY header within header_read_timeout".into(),
        ),
    };
    conn_ctx.proxy_error(reason).inc();
    tracing::debug!(
        listener = %conn_ctx.listener,
        peer = ?stream.peer_addr().ok(),
        reason = reason.as_str(),
        %error,
        "connection closed: PROXY protocol header"
    );
    None
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
        // Off: `conn_timeout` applies header_read_timeout and idle_timeout itself (hyper's
        // would also cut idle keep-alive connections; its default is 30 s, not none).
        .header_read_timeout(None)
        // A head not complete within this many buffered bytes is answered 431 by hyper.
        // (validate.rs keeps max_header_bytes >= 8 KiB, hyper's minimum buffer.)
        .max_buf_size((limits.max_header_bytes.0 as usize).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(
            u32::try_from(
                limits
                    .max_header_bytes
                    .0
                    .saturating_mul(H2_HEADER_LIST_CAP_FACTOR),
            )
            .unwrap_or(u32::MAX),
        );
    builder
}

/// Handshake (in this connection's task, bounded by `header_read_timeout`), then serve
/// the protocol ALPN chose.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &ServeContext,
    conn_ctx: &ConnContext,
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
        max_header_bytes: ctx.limits.max_header_bytes.0,
    };
    match stream.get_ref().1.alpn_protocol() {
        // HTTP/2 frames its messages itself: nothing for the HTTP/1 guard to watch.
        Some(ALPN_H2) => {
            serve_connection(stream, info, None, ctx, conn_ctx, handler, &builders.http2).await;
        }
        Some(ALPN_HTTP11) => {
            serve_guarded(stream, info, ctx, conn_ctx, handler, &builders.http1).await;
        }
        _ => serve_guarded(stream, info, ctx, conn_ctx, handler, &builders.auto).await,
    }
}

/// Serve a connection that may speak HTTP/1 through the framing guard. The guard must see
/// only HTTP bytes: anything read before the first request (a PROXY protocol header, say)
/// has to be consumed before the stream is handed in here.
async fn serve_guarded<S>(
    stream: S,
    info: ConnInfo,
    ctx: &ServeContext,
    conn_ctx: &ConnContext,
    handler: &Arc<Handler>,
    builder: &auto::Builder<TokioExecutor>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (io, guard) = GuardedIo::new(stream);
    serve_connection(io, info, Some(guard), ctx, conn_ctx, handler, builder).await;
}

/// Serve HTTP on `io` until the client closes, a timeout of [`crate::downstream::conn_timeout`] closes
/// it, or shutdown closes it politely.
async fn serve_connection<I>(
    io: I,
    info: ConnInfo,
    guard: Option<GuardHandle>,
    ctx: &ServeContext,
    conn_ctx: &ConnContext,
    handler: &Arc<Handler>,
    builder: &auto::Builder<TokioExecutor>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    // Response bodies are shown to the framing guard through the connection's activity.
    let activity = Activity::watched_by(guard.clone());
    let io = TokioIo::new(Tracked::new(io, Arc::clone(&activity)));
    let handler = Arc::clone(handler);
    let svc_activity = Arc::clone(&activity);
    let svc = service_fn(move |req: Request<Incoming>| {
        let in_flight = svc_activity.request(req.version());
        let mut info = info;
        info.malformed = guard.as_ref().and_then(GuardHandle::next_request);
        handler
            .proxy
            .handle(req, info, &handler.listener)
            .map(move |resp| {
                Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, in_flight)))
            })
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let timeouts = conn_ctx.timeouts;
    // The connection's one timer: it wakes at the earliest moment a limit could pass and
    // asks `activity` whether one did (requests since then only push the deadline back).
    let sleep = tokio::time::sleep(timeouts.header_read);
    tokio::pin!(sleep);
    // Shutdown asked the connection to close (graceful_shutdown).
    let mut draining = false;
    // idle_timeout asked it to close; one more expiry and it is dropped.
    let mut idle_closed = false;
    let res = loop {
        tokio::select! {
            res = conn.as_mut() => break res,
            _ = ctx.shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep.as_mut() => {
                let now = std::time::Instant::now();
                let expired = match activity.check(&timeouts, now) {
                    Check::Until(at) => {
                        sleep.as_mut().reset(at.into());
                        continue;
                    }
                    // Closed politely a grace period ago and still idle: drop it.
                    Check::Expired(DownstreamTimeout::Idle) if idle_closed => return,
                    Check::Expired(expired) => expired,
                };
                conn_ctx.timed_out(expired).inc();
                tracing::debug!(
                    listener = %conn_ctx.listener,
                    %peer,
                    timeout = expired.as_str(),
                    "client connection timed out"
                );
                match expired {
                    // A late head: close now, as hyper's own timeout would.
                    DownstreamTimeout::HeaderRead => return,
                    // Idle and already draining: nothing in flight to wait for.
                    DownstreamTimeout::Idle if draining => return,
                    // Idle: close politely (HTTP/1.1 closes at once, HTTP/2 gets a GOAWAY)
                    // and give it one header_read_timeout to do so.
                    DownstreamTimeout::Idle => {
                        idle_closed = true;
                        conn.as_mut().graceful_shutdown();
                        sleep.as_mut().reset((now + timeouts.header_read).into());
                    }
                }
            }
        }
    };
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
