//! The connections of one node, kept across requests and across snapshot swaps.
//!
//! Three kinds, one list each: idle HTTP/1.1 connections of the own codec (requests with a
//! complete body — nearly all of them), idle hyper HTTP/1.1 client connections (requests
//! whose body streams), and the one HTTP/2 connection every request to an `h2` node shares.
//! Most recently returned is reused first: the warmest connection carries the next request,
//! so idle ones age out at the node's keep-alive timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::{http1, http2};

use super::conn::Conn;
use super::request_body::RequestBody;
use crate::util::sync::lock;

/// Idle upstream connections are closed after this long; shorter than the usual 60 s+
/// keep-alive of backends so that we close first and never send on a connection the
/// backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle and shared connections of one node.
#[derive(Debug, Default)]
pub struct NodeConns {
    /// Codec connections, most recently returned last.
    codec: Mutex<Vec<Conn>>,
    /// Hyper HTTP/1.1 client connections, in the same order.
    streaming: Mutex<Vec<http1::SendRequest<RequestBody>>>,
    /// The HTTP/2 connection, while it is open.
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

impl NodeConns {
    /// The warmest idle codec connection that can still carry a request. Connections the
    /// node closed, and ones idle past [`POOL_IDLE_TIMEOUT`] (the node may be about to
    /// close them), are dropped on the way.
    pub(crate) fn take_codec(&self) -> Option<Conn> {
        let mut idle = lock(&self.codec);
        while let Some(mut c) = idle.pop() {
            if c.idle_since.elapsed() < POOL_IDLE_TIMEOUT && c.usable() {
                return Some(c);
            }
        }
        None
    }

    /// A codec connection whose answer was read to its end, back into the list.
    pub(crate) fn put_codec(&self, conn: Conn, max_idle: usize) {
        let mut idle = lock(&self.codec);
        if idle.len() < max_idle {
            idle.push(conn);
        }
    }

    pub(crate) fn take_streaming(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = lock(&self.streaming);
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    pub(crate) fn put_streaming(&self, sender: http1::SendRequest<RequestBody>, max_idle: usize) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.streaming);
        if idle.len() < max_idle {
            idle.push(sender);
        }
    }

    /// The node's open HTTP/2 connection, if there is one.
    pub(crate) fn h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut h2 = lock(&self.h2);
        match h2.as_ref() {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    /// A new HTTP/2 connection for the node's later requests.
    pub(crate) fn set_h2(&self, sender: http2::SendRequest<RequestBody>) {
        *lock(&self.h2) = Some(sender);
    }

    /// Forget the HTTP/2 connection if it is still `sender`'s (it failed).
    pub(crate) fn drop_h2(&self) {
        *lock(&self.h2) = None;
    }
}

/// A hyper connection in use; it goes back to its node with [`Checkout::release`] when
/// the response body has ended.
#[derive(Debug)]
pub struct Checkout {
    pub(crate) conns: Arc<NodeConns>,
    pub(crate) sender: http1::SendRequest<RequestBody>,
    pub(crate) max_idle: usize,
}

impl Checkout {
    /// The response body ended cleanly: the connection may carry another request.
    pub fn release(self) {
        self.conns.put_streaming(self.sender, self.max_idle);
    }
}
