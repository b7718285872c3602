//! A per-node pool of keep-alive HTTP/1.1 connections, for pools that speak plain HTTP/1.1
//! to their nodes (the common case, and the hot path).
//!
//! Why not hyper-util's pooled client here: for every HTTP/1.1 request it spawns a task that
//! waits for the connection to become ready again before putting it back into its pool, and
//! it looks the connection up in a shared map keyed by scheme and authority. Profiling the
//! balancer showed both on every request. This pool instead belongs to one node (no lookup),
//! and a connection goes back into it when the response *body* ends — the moment the proxy's
//! body wrapper already marks for the in-flight accounting — with no task spawned.
//!
//! A request is only ever handed to a connection with `try_send_request`: if the connection
//! turns out to be closing (the node closed an idle keep-alive connection just before we used
//! it), the request comes back unsent and goes out on a fresh connection.
//!
//! Pools with TLS or HTTP/2 to their nodes, and protocol upgrades, use hyper-util's client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::upstream::{error_chain, UpstreamError};

/// Idle connections of one node.
#[derive(Debug, Default)]
pub struct NodeConns {
    /// Most recently returned last: reusing the warmest connection first lets idle ones age
    /// out at the node's keep-alive timeout.
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
}

/// A connection in use; give it back with [`Checkout::release`] when the response body
/// has ended.
#[derive(Debug)]
pub struct Checkout {
    conns: Arc<NodeConns>,
    sender: SendRequest<RequestBody>,
    max_idle: usize,
    /// When the request was handed to the connection: the node's latency is measured from
    /// here, so opening a new connection does not count as the node being slow (a first
    /// request's connect time would otherwise become its first peak-EWMA observation and
    /// keep it out of `p2c_ewma` for many seconds).
    pub handed_over: std::time::Instant,
}

impl Checkout {
    /// The response body ended cleanly: the connection may carry another request.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = match self.conns.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < self.max_idle {
            idle.push(self.sender);
        }
    }
}

impl NodeConns {
    fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }
}

/// A failed [`send`]: the error, and the request itself when it never reached a connection
/// (a connect failure, or a fresh connection that closed before taking it). The caller can
/// send that request elsewhere without having kept a copy — even one with a streamed body.
#[derive(Debug)]
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Request<RequestBody>>,
}

impl SendError {
    fn sent(error: UpstreamError) -> SendError {
        SendError {
            error,
            unsent: None,
        }
    }
}

/// Send `req` to `addr` on a pooled or new connection; wait for the response headers until
/// `deadline`.
pub async fn send(
    conns: &Arc<NodeConns>,
    addr: SocketAddr,
    mut req: Request<RequestBody>,
    deadline: tokio::time::Instant,
    connect_timeout: Duration,
    max_idle: usize,
) -> Result<(Response<Incoming>, Checkout), SendError> {
    // A reused connection may be closing under us; then the request comes back unsent and
    // gets one fresh connection. A fresh connection failing the same way is an error.
    for reused in [true, false] {
        let mut sender = match reused.then(|| conns.take_idle()).flatten() {
            Some(s) => s,
            None if reused => continue,
            // Boxed: opening a connection is the rare case, and its future is large.
            None => match Box::pin(connect(addr, connect_timeout, deadline)).await {
                Ok(s) => s,
                Err(error) => {
                    return Err(SendError {
                        error,
                        unsent: Some(req),
                    })
                }
            },
        };
        let handed_over = std::time::Instant::now();
        match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
            Err(_) => return Err(SendError::sent(UpstreamError::Timeout)),
            Ok(Ok(resp)) => {
                let checkout = Checkout {
                    conns: Arc::clone(conns),
                    sender,
                    max_idle,
                    handed_over,
                };
                return Ok((resp, checkout));
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                unsent => {
                    return Err(SendError {
                        error: UpstreamError::Broken(error_chain(e.error())),
                        unsent,
                    })
                }
            },
        }
    }
    Err(SendError {
        error: UpstreamError::Broken(
            "the upstream connection closed before the request was sent".to_string(),
        ),
        unsent: Some(req),
    })
}

async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    deadline: tokio::time::Instant,
) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let connect_deadline = (tokio::time::Instant::now() + connect_timeout).min(deadline);
    let stream = match tokio::time::timeout_at(connect_deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(UpstreamError::ConnectTimeout)
        }
        Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect(error_chain(&e)))?;
    // One task per connection (not per request), ending when the connection closes.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
