//! A small HTTP client for the tests over hyper's connection API: one TCP connection per
//! request (HTTP/1.1) or an h2c prior-knowledge connection. Every step has a timeout, so a
//! balancer that never answers fails the test instead of hanging it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::backend::BoxError;
use super::WAIT;

/// Await `fut` for at most `d`; panic naming `what` when it takes longer.
pub async fn within<F: Future>(what: &str, d: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?}: {what}"),
    }
}

/// A collected response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The trailer fields that followed the body (empty without any).
    pub trailers: HeaderMap,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<non-ascii>"))
    }

    /// Which test backend answered (its `x-backend` header).
    pub fn backend(&self) -> String {
        self.header("x-backend")
            .unwrap_or_else(|| {
                panic!(
                    "no x-backend header: status {} body {:?}",
                    self.status,
                    self.text()
                )
            })
            .to_string()
    }
}

/// Open a connection to `addr` and send one HTTP/1.1 request; returns the response head
/// with its body still streaming. A request without `Host` gets `Host: addr`.
pub async fn send<B>(addr: SocketAddr, mut req: Request<B>) -> Response<Incoming>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if !req.headers().contains_key(http::header::HOST) {
        let host = HeaderValue::from_str(&addr.to_string()).expect("host header");
        req.headers_mut().insert(http::header::HOST, host);
    }
    let what = format!("{} {} via {addr}", req.method(), req.uri());
    within(&what, WAIT, async move {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the balancer");
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    })
    .await
}

/// Read the whole body of `resp` (with a timeout).
pub async fn collect(resp: Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let collected = within("reading the response body", WAIT, body.collect())
        .await
        .unwrap_or_else(|e| panic!("reading the response body failed: {e}"));
    let trailers = collected.trailers().cloned().unwrap_or_default();
    Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// A request builder with `path` as the target.
pub fn request(method: Method, path: &str) -> http::request::Builder {
    Request::builder().method(method).uri(path)
}

/// `GET path` on `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    get_with(addr, path, &[]).await
}

/// `GET path` with extra headers (a `host` among them replaces the default).
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = request(Method::GET, path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Empty::<Bytes>::new()).expect("request");
    collect(send(addr, req).await).await
}

/// `GET path`, returning connection and protocol errors instead of panicking on them
/// (still bounded by the usual timeout).
pub async fn try_get(addr: SocketAddr, path: &str) -> Result<Resp, String> {
    within(&format!("GET {path} via {addr}"), WAIT, async move {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = request(Method::GET, path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    })
    .await
}

/// `POST path` with a body held in memory.
pub async fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Resp {
    let req = request(Method::POST, path)
        .body(Full::new(body.into()))
        .expect("request");
    collect(send(addr, req).await).await
}

/// An h2c (HTTP/2 prior knowledge) connection.
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, BoxError>,
    >,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> H2 {
        within(&format!("h2c handshake with {addr}"), WAIT, async move {
            let stream = TcpStream::connect(addr)
                .await
                .expect("connect to the balancer");
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2c handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            H2 { sender }
        })
        .await
    }

    /// Send `method http://authority/path` with `body`; collect the answer.
    pub async fn send(
        &mut self,
        method: Method,
        authority: &str,
        path: &str,
        body: http_body_util::combinators::BoxBody<Bytes, BoxError>,
    ) -> Resp {
        self.send_with(method, authority, path, &[], body).await
    }

    /// [`H2::send`] with extra header fields, each sent as its own field (a name given
    /// twice is sent twice).
    pub async fn send_with(
        &mut self,
        method: Method,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: http_body_util::combinators::BoxBody<Bytes, BoxError>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{authority}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body).expect("request");
        let sender = &mut self.sender;
        let resp = within("h2c request", WAIT, async move {
            sender.ready().await.expect("h2 connection ready");
            sender
                .send_request(req)
                .await
                .unwrap_or_else(|e| panic!("h2 request failed: {e}"))
        })
        .await;
        collect(resp).await
    }

    pub async fn get(&mut self, authority: &str, path: &str) -> Resp {
        let empty = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed();
        self.send(Method::GET, authority, path, empty).await
    }
}

/// A request body fed chunk by chunk from the test through a channel; it ends when the
/// sender is dropped. No size is announced, so HTTP/1.1 sends it chunked.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(buffer: usize) -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}
