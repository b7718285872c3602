//! The node's response body on its way back ([`Body`]): whichever transport read the answer
//! — the own HTTP/1.1 codec, or hyper's client connection (a streamed request body,
//! HTTP/2). A pooled HTTP/1.1 connection goes back to its node's idle list when the body
//! has been read to its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use super::codec::H1Body;
use super::conns::Checkout;
use super::request_body::BodyError;

/// A node's response body as it arrives.
#[derive(Debug)]
pub enum Body {
    /// No body (a `101`, whose connection became a tunnel).
    Empty,
    /// Read by the own HTTP/1.1 codec.
    Codec(H1Body),
    /// From hyper's client connection; an HTTP/1.1 connection goes back to its node's
    /// idle list when the body ends.
    Hyper(hyper::body::Incoming, Option<Checkout>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Codec(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Hyper(b, checkout) => {
                let res = Pin::new(&mut *b).poll_frame(cx);
                if let Poll::Ready(None) = res {
                    if let Some(c) = checkout.take() {
                        c.release();
                    }
                }
                res.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Codec(b) => b.is_end_stream(),
            Body::Hyper(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Codec(b) => b.size_hint(),
            Body::Hyper(b, _) => b.size_hint(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // A body that ended without a final poll (hyper stops polling at `is_end_stream`)
        // still gives its connection back.
        if let Body::Hyper(b, checkout) = self {
            if let Some(c) = checkout.take() {
                if b.is_end_stream() {
                    c.release();
                }
            }
        }
    }
}
