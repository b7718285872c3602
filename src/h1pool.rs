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
//! Requests whose body is complete before sending (no body, or one buffered for retries)
//! — nearly all of them — do not go through hyper's client connection at all: the
//! request's own task writes and reads them with [`crate::h1codec`], on connections kept
//! in the node's second idle list. Only streamed request bodies take hyper's connection,
//! which sends the body while the answer already streams back (full duplex).
//!
//! Pools with TLS or HTTP/2 to their nodes, and protocol upgrades, use hyper-util's client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::body::{RequestBody, UpstreamIncoming};
use crate::h1codec::{self, Conn, H1Body, ReturnTo};
use crate::upstream::{error_chain, UpstreamError, POOL_IDLE_TIMEOUT};

/// Idle connections of one node.
#[derive(Debug, Default)]
pub struct NodeConns {
    /// Hyper client connections (streamed request bodies). Most recently returned last:
    /// reusing the warmest connection first lets idle ones age out at the node's keep-alive
    /// timeout.
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
    /// Connections for [`crate::h1codec`] (every other request), in the same order.
    raw: Mutex<Vec<Conn>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
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
        let mut idle = lock(&self.conns.idle);
        if idle.len() < self.max_idle {
            idle.push(self.sender);
        }
    }
}

impl NodeConns {
    fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = lock(&self.idle);
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// The warmest idle codec connection that can still carry a request. Connections the
    /// node closed, and ones idle past [`POOL_IDLE_TIMEOUT`] (the node may be about to
    /// close them), are dropped on the way.
    fn take_raw(&self) -> Option<Conn> {
        let mut idle = lock(&self.raw);
        while let Some(mut c) = idle.pop() {
            if c.idle_since.elapsed() < POOL_IDLE_TIMEOUT && c.usable() {
                return Some(c);
            }
        }
        None
    }

    /// A codec connection whose answer was read to its end, back into the pool.
    pub fn put_raw(&self, conn: Conn, max_idle: usize) {
        let mut idle = lock(&self.raw);
        if idle.len() < max_idle {
            idle.push(conn);
        }
    }
}

/// A failed [`send_streaming`]: the error, and the request itself when it never reached a connection
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

/// An answer's head from [`send_wire`], with when the request left.
#[derive(Debug)]
pub struct Sent {
    pub response: Response<UpstreamIncoming>,
    /// When the request was handed to a connection: the node's latency is measured from
    /// here, so opening a new connection does not count as the node being slow.
    pub handed_over: Instant,
}

/// Where and how long: one attempt's node and bounds.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub conns: &'a Arc<NodeConns>,
    pub addr: SocketAddr,
    /// End of the attempt: the response head must have arrived by then.
    pub deadline: tokio::time::Instant,
    pub connect_timeout: Duration,
    /// Idle connections kept for the node.
    pub max_idle: usize,
}

/// Why one codec exchange failed.
enum Failure {
    /// Writing the request failed: the connection was already closed or reset, and the
    /// node never read the request whole. Safe to send again for any method.
    Unsent(String),
    /// The connection was closed or reset before a single byte of the answer: on a reused
    /// connection this is the node closing it while idle, just as we sent.
    Closed(String),
    /// Anything else: the node may have seen the request.
    Broken(String),
}

/// Write the request, read the answer's head.
async fn exchange(conn: &mut Conn, wire: &[u8], method: &Method) -> Result<h1codec::Head, Failure> {
    if let Err(e) = conn.io.write_all(wire).await {
        return Err(Failure::Unsent(e.to_string()));
    }
    let mut answered = false;
    loop {
        if answered {
            match h1codec::parse_head(&mut conn.buf, method) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(Failure::Broken(e.to_string())),
            }
        }
        match conn.fill().await {
            Ok(0) if !answered => {
                return Err(Failure::Closed(
                    "the node closed the connection without answering".to_string(),
                ))
            }
            Ok(0) => {
                return Err(Failure::Broken(
                    "the node closed the connection in the middle of the response head".to_string(),
                ))
            }
            Ok(_) => answered = true,
            Err(e) if !answered => return Err(Failure::Closed(e.to_string())),
            Err(e) => return Err(Failure::Broken(e.to_string())),
        }
    }
}

/// Send a request with a complete body — its bytes, `wire`, made by
/// [`h1codec::encode_request`] — through [`crate::h1codec`] in this task, on a pooled or
/// new connection; wait for the response head until the target's deadline. The caller
/// keeps the request: nothing needs to come back for another attempt.
pub async fn send_wire(t: Target<'_>, wire: &[u8], method: &Method) -> Result<Sent, UpstreamError> {
    // An idle connection the node closes just as the request goes out yields no answer at
    // all. Sending again on a fresh connection is safe for idempotent methods (RFC 9110
    // §9.2.2) — and for any request whose write failed, which the node never read whole.
    let idempotent = crate::proxy::retryable_method(method);
    for reused in [true, false] {
        let mut conn = match reused.then(|| t.conns.take_raw()).flatten() {
            Some(c) => c,
            None if reused => continue,
            // Boxed: opening a connection is the rare case.
            None => Conn::new(Box::pin(tcp_connect(t)).await?),
        };
        let handed_over = Instant::now();
        match tokio::time::timeout_at(t.deadline, exchange(&mut conn, wire, method)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Ok(head)) => {
                let home = ReturnTo {
                    conns: Arc::clone(t.conns),
                    max_idle: t.max_idle,
                };
                let body = H1Body::new(conn, head.framing, head.keep_alive, home);
                let mut response = Response::new(UpstreamIncoming::Own(body));
                *response.status_mut() = head.status;
                *response.headers_mut() = head.headers;
                return Ok(Sent {
                    response,
                    handed_over,
                });
            }
            Ok(Err(Failure::Unsent(_))) if reused => continue,
            Ok(Err(Failure::Closed(_))) if reused && idempotent => continue,
            Ok(Err(Failure::Unsent(e) | Failure::Closed(e) | Failure::Broken(e))) => {
                return Err(UpstreamError::Broken(e))
            }
        }
    }
    Err(UpstreamError::Broken(
        "the upstream connection closed before answering".to_string(),
    ))
}

/// Send a request with a streamed body through hyper's client connection, on a pooled or
/// new connection; wait for the response head until the target's deadline.
pub async fn send_streaming(
    t: Target<'_>,
    mut req: Request<RequestBody>,
) -> Result<(Response<Incoming>, Checkout), SendError> {
    // A reused connection may be closing under us; then the request comes back unsent and
    // gets one fresh connection. A fresh connection failing the same way is an error.
    for reused in [true, false] {
        let mut sender = match reused.then(|| t.conns.take_idle()).flatten() {
            Some(s) => s,
            None if reused => continue,
            // Boxed: opening a connection is the rare case, and its future is large.
            None => match Box::pin(connect(t)).await {
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
        match tokio::time::timeout_at(t.deadline, sender.try_send_request(req)).await {
            Err(_) => return Err(SendError::sent(UpstreamError::Timeout)),
            Ok(Ok(resp)) => {
                let checkout = Checkout {
                    conns: Arc::clone(t.conns),
                    sender,
                    max_idle: t.max_idle,
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

/// A TCP connection to the node, within the connect timeout (and the attempt's deadline).
async fn tcp_connect(t: Target<'_>) -> Result<TcpStream, UpstreamError> {
    let connect_deadline = (tokio::time::Instant::now() + t.connect_timeout).min(t.deadline);
    let stream = match tokio::time::timeout_at(connect_deadline, TcpStream::connect(t.addr)).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(UpstreamError::ConnectTimeout)
        }
        Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect(t: Target<'_>) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let stream = tcp_connect(t).await?;
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
