//! HTTP/2 to nodes (`upstream_protocol: h2`): one multiplexed connection per node, shared
//! by every request to it, opened on first use and again after it closes.
//!
//! hyper's client connection does the protocol; its task runs until the connection closes.
//! Requests beyond the node's `SETTINGS_MAX_CONCURRENT_STREAMS` wait inside hyper for a
//! stream to end. Flow-control windows match the downstream side, so one large gRPC message
//! or download moves at full speed without buffering more than a window per stream.

use std::time::{Duration, Instant};

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::attempt::{Exchange, Target};
use super::conn::Stream;
use super::connect;
use super::error::UpstreamError;
use super::request_body::RequestBody;
use super::response_body::Body;
use super::wire::{ExtraHeaders, Outgoing};

/// Per-stream receive window: as on the downstream side (1 MiB).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-connection receive window: several streams may move at once.
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// A PING after this long without frames finds a connection the network silently dropped.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// The PING's answer must come within this.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Send one request on the node's HTTP/2 connection (opened first if there is none) and wait
/// for the response head until the target's deadline.
pub(crate) async fn send<E: ExtraHeaders>(
    t: &Target<'_>,
    out: &mut Outgoing<E>,
) -> Result<Exchange, UpstreamError> {
    let (mut sender, fresh) = match t.conns.h2() {
        Some(s) => (s, false),
        None => {
            let s = Box::pin(connect(t)).await?;
            t.conns.set_h2(s.clone());
            (s, true)
        }
    };
    // A shared connection that closed between the check and now hands the request back.
    if !fresh && sender.ready().await.is_err() {
        t.conns.drop_h2();
        sender = Box::pin(connect(t)).await?;
        t.conns.set_h2(sender.clone());
    }
    let req = out.hyper_request(true, t.transport.scheme(), t.node);
    let handed_over = Instant::now();
    match tokio::time::timeout_at(t.deadline, sender.try_send_request(req)).await {
        Err(_) => Err(UpstreamError::Timeout),
        Ok(Ok(resp)) => Ok(Exchange {
            response: resp.map(|b| Body::Hyper(b, None)),
            handed_over,
            upgraded: None,
        }),
        Ok(Err(mut e)) => {
            if let Some(unsent) = e.take_message() {
                out.restore(unsent);
            }
            let e = e.into_error();
            if e.is_closed() || e.is_canceled() {
                t.conns.drop_h2();
            }
            Err(UpstreamError::from_hyper(e))
        }
    }
}

/// A new HTTP/2 connection to the node (h2c, or h2 by ALPN over TLS).
pub(crate) async fn connect(t: &Target<'_>) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let stream = connect::connect(t).await?;
    handshake(stream).await
}

/// The HTTP/2 handshake on an open connection; the connection's task is spawned here.
pub(crate) async fn handshake(stream: Stream) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}
