//! HTTP/1.1 to nodes: the codec exchange for complete bodies, hyper's client connection for
//! streamed ones, both on the node's own keep-alive connections ([`NodeConns`]).
//!
//! Why not hyper-util's pooled client: for every HTTP/1.1 request it spawns a task that
//! waits for the connection to become ready again before putting it back into its pool, and
//! it looks the connection up in a shared map keyed by scheme and authority. Profiling the
//! balancer showed both on every request. These connections instead belong to one node (no
//! lookup), and one goes back to the node when the response *body* ends — the moment the
//! request path already marks for its in-flight accounting — with no task spawned.
//!
//! Reusing an idle connection races with the node closing it (its keep-alive timeout firing
//! just as the request goes out). Both paths handle that race the same way, once: a request
//! that provably never reached the node (the write failed, or hyper handed it back unsent)
//! goes out again on a fresh connection; one that may have reached it — the connection
//! closed without a byte of answer — is sent again only if its method is idempotent
//! (RFC 9110 §9.2.2).

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Response};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;

use super::attempt::{idempotent, Exchange, Target};
use super::codec::{self, H1Body, ReturnTo};
use super::conn::{Conn, Upgraded};
use super::connect;
use super::conns::Checkout;
use super::error::UpstreamError;
use super::request_body::RequestBody;
use super::response_body::Body;
use super::wire::{ExtraHeaders, Outgoing};

/// Why one codec exchange failed.
enum Failure {
    /// Writing the request failed: the node never read it whole. Safe to send again for
    /// any method.
    Unsent(std::io::Error),
    /// The connection was closed or reset before a single byte of the answer: on a reused
    /// connection this is the node closing it while idle, just as we sent.
    Closed(Option<std::io::Error>),
    /// Anything else: the node may have seen the request.
    Failed(UpstreamError),
}

/// Write the request, read the answer's head.
async fn exchange(conn: &mut Conn, wire: &[u8], method: &Method) -> Result<codec::Head, Failure> {
    if let Err(e) = conn.io.write_all(wire).await {
        return Err(Failure::Unsent(e));
    }
    let mut answered = false;
    loop {
        if answered {
            match codec::parse_head(&mut conn.buf, method) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(Failure::Failed(UpstreamError::Invalid(e))),
            }
        }
        match conn.fill().await {
            Ok(0) if !answered => return Err(Failure::Closed(None)),
            Ok(0) => {
                return Err(Failure::Failed(UpstreamError::Read(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the node closed the connection in the middle of the response head",
                ))))
            }
            Ok(_) => answered = true,
            Err(e) if !answered => return Err(Failure::Closed(Some(e))),
            Err(e) => return Err(Failure::Failed(UpstreamError::Read(e))),
        }
    }
}

/// Send a request whose body is complete through the codec, in this task, on a pooled or
/// new connection; wait for the response head until the target's deadline. The request
/// stays with the caller, ready for another attempt.
pub(crate) async fn send_codec<E: ExtraHeaders>(
    t: &Target<'_>,
    out: &mut Outgoing<E>,
) -> Result<Exchange, UpstreamError> {
    let idempotent = idempotent(&out.method);
    let upgrade = out.upgrade;
    let max_idle = t.transport.settings.max_idle_per_node;
    if out.h1_bytes().is_none() {
        // Not reached: the caller sends only complete bodies here.
        return Err(UpstreamError::Closed);
    }
    let (wire, method) = (&out.h1_wire[..], &out.method);
    for reused in [true, false] {
        let mut conn = match reused.then(|| t.conns.take_codec()).flatten() {
            Some(c) => c,
            None if reused => continue,
            // Boxed: opening a connection is the rare case.
            None => Conn::new(Box::pin(connect::connect(t)).await?),
        };
        let handed_over = Instant::now();
        match tokio::time::timeout_at(t.deadline, exchange(&mut conn, wire, method)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Ok(head)) => {
                let switching = head.status == http::StatusCode::SWITCHING_PROTOCOLS;
                if switching && !upgrade {
                    return Err(UpstreamError::UnexpectedUpgrade);
                }
                let mut response = Response::new(Body::Empty);
                *response.status_mut() = head.status;
                *response.headers_mut() = head.headers;
                if switching {
                    return Ok(Exchange {
                        response,
                        handed_over,
                        upgraded: Some(Box::new(Upgraded::new(conn))),
                    });
                }
                let home = ReturnTo {
                    conns: Arc::clone(t.conns),
                    max_idle,
                };
                *response.body_mut() =
                    Body::Codec(H1Body::new(conn, head.framing, head.keep_alive, home));
                return Ok(Exchange {
                    response,
                    handed_over,
                    upgraded: None,
                });
            }
            Ok(Err(Failure::Unsent(_))) if reused => continue,
            Ok(Err(Failure::Closed(_))) if reused && idempotent => continue,
            Ok(Err(Failure::Unsent(e))) => return Err(UpstreamError::Write(e)),
            Ok(Err(Failure::Closed(None))) => return Err(UpstreamError::Closed),
            Ok(Err(Failure::Closed(Some(e)))) => return Err(UpstreamError::Read(e)),
            Ok(Err(Failure::Failed(e))) => return Err(e),
        }
    }
    Err(UpstreamError::Closed)
}

/// Send a request with a streamed body through hyper's client connection (full duplex: the
/// answer may stream back while the body is still going out), on a pooled or new
/// connection; wait for the response head until the target's deadline. A request that
/// never reached a connection comes back into `out`, so it can go to another node.
pub(crate) async fn send_streaming<E: ExtraHeaders>(
    t: &Target<'_>,
    out: &mut Outgoing<E>,
) -> Result<Exchange, UpstreamError> {
    let max_idle = t.transport.settings.max_idle_per_node;
    for reused in [true, false] {
        let mut sender = match reused.then(|| t.conns.take_streaming()).flatten() {
            Some(s) => s,
            None if reused => continue,
            // Boxed: opening a connection is the rare case, and its future is large.
            None => Box::pin(connect_hyper(t)).await?,
        };
        let req = out.hyper_request(false, t.transport.scheme(), t.node);
        let handed_over = Instant::now();
        match tokio::time::timeout_at(t.deadline, sender.try_send_request(req)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => {
                let checkout = Checkout {
                    conns: Arc::clone(t.conns),
                    sender,
                    max_idle,
                };
                return Ok(Exchange {
                    response: resp.map(|b| Body::Hyper(b, Some(checkout))),
                    handed_over,
                    upgraded: None,
                });
            }
            Ok(Err(mut e)) => {
                let unsent = e.take_message();
                let came_back = unsent.is_some();
                if let Some(unsent) = unsent {
                    out.restore(unsent);
                }
                if !(came_back && reused) {
                    return Err(UpstreamError::from_hyper(e.into_error()));
                }
            }
        }
    }
    Err(UpstreamError::Closed)
}

/// A new hyper HTTP/1.1 client connection; its task runs until the connection closes.
async fn connect_hyper(t: &Target<'_>) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let stream = connect::connect(t).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    // One task per connection (not per request), ending when the connection closes.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
