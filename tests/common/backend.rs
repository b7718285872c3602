//! Real backend servers for the tests: hyper (HTTP/1.1 and h2c through hyper-util's auto
//! builder) on 127.0.0.1:0, with a scripted behaviour each.
//!
//! Every answer carries `x-backend: NAME`. Every request except `GET /healthz` is recorded
//! (method, target, version, headers) for the test to inspect. `/healthz` answers 200 or 503
//! as [`Backend::set_healthy`] says (except for `Hang`, which answers nothing at all).
//! A backend can be held ([`Backend::hold`]): requests are accepted and recorded but wait
//! before being answered until [`Backend::release`].

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn StdError + Send + Sync>;
pub type AnyBody = BoxBody<Bytes, BoxError>;

/// What a backend does with a request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with the backend's name as the body.
    Echo,
    /// 200 streaming the request body back as it arrives.
    EchoBody,
    /// Reads the whole body; answers `{"len": N, "fnv": H}` (FNV-1a 64 of the bytes).
    Sink,
    /// 200 streaming N bytes of the [`pattern`], with a `Content-Length`.
    Source(u64),
    /// The same without a length: HTTP/1.1 sends it chunked.
    SourceChunked(u64),
    /// Answers like `Echo` after the delay.
    Slow(Duration),
    /// Answers this status with the name as the body.
    Status(u16),
    /// Accepts TCP and reads the request but never answers.
    Hang,
    /// `Upgrade: websocket` → 101, then echoes raw bytes both ways until EOF.
    WebSocketEcho,
    /// Like `Echo`, plus these response headers.
    Headers(Vec<(&'static str, &'static str)>),
    /// Reads the whole body; answers `{"len": N, "trailers": {name: value}}` with the
    /// request's trailer fields, and sends the trailer `x-checksum: <fnv of the request
    /// body>` after its own body (announced with `Trailer: x-checksum`).
    Trailers,
}

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Recorded {
    /// Every value of header `name`, joined with ", " (None when absent).
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<non-ascii>"))
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }
}

struct State {
    name: String,
    behaviour: Behaviour,
    recorded: Mutex<Vec<Recorded>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    total: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    health_probes: AtomicUsize,
    /// Request body bytes a `Sink` has read, over all requests (even ones cut short).
    body_bytes: AtomicU64,
    healthy: AtomicBool,
    /// `true` = open (answer), `false` = hold requests.
    gate: watch::Sender<bool>,
    stop: CancellationToken,
}

/// A running backend; stopped when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Backend {
    /// Bind 127.0.0.1:0 and serve `behaviour`.
    pub async fn start(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let (gate, _) = watch::channel(true);
        let state = Arc::new(State {
            name: name.to_string(),
            behaviour,
            recorded: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            health_probes: AtomicUsize::new(0),
            body_bytes: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            gate,
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Backend {
            name: name.to_string(),
            addr,
            state,
        }
    }

    /// Stop accepting and close every open connection.
    pub fn stop(&self) {
        self.state.stop.cancel();
    }

    /// Requests recorded so far (health probes excluded).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// The last recorded request.
    pub fn last_request(&self) -> Recorded {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("backend {} received no request", self.name))
    }

    /// Requests received so far (health probes excluded).
    pub fn count(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests received and not yet answered (headers not sent).
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Request body bytes a `Sink` backend has read so far, over all requests, including
    /// bodies that ended in an error.
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    pub fn health_probes(&self) -> usize {
        self.state.health_probes.load(Ordering::SeqCst)
    }

    /// What `/healthz` answers: 200 when healthy, 503 otherwise.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Hold new and waiting requests unanswered until [`Backend::release`].
    pub fn hold(&self) {
        self.state.gate.send_replace(false);
    }

    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.state.stop.cancel();
    }
}

/// An address nothing listens on: a port bound and released at once.
pub fn refusing_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let accepted = tokio::select! {
            _ = state.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let stop = state.stop.clone();
            if matches!(state.behaviour, Behaviour::Hang) {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = hang(stream, &state) => {}
                }
                return;
            }
            let svc_state = Arc::clone(&state);
            let svc = service_fn(move |req| {
                let st = Arc::clone(&svc_state);
                async move { Ok::<_, Infallible>(handle(st, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

/// Read and discard whatever arrives; never write. Counts one request per connection that
/// sent anything.
async fn hang(mut stream: tokio::net::TcpStream, state: &State) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut counted = false;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // Keep the socket open until stopped, like a stuck server would.
                std::future::pending::<()>().await;
            }
            Ok(_) => {
                if !counted {
                    counted = true;
                    state.total.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}

/// Decrements the in-flight count when the handler ends.
struct InFlightGuard<'a>(&'a State);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<AnyBody> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        state.health_probes.fetch_add(1, Ordering::SeqCst);
        let code = if state.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return respond(&state, code, full(state.name.clone()));
    }
    state.recorded.lock().unwrap().push(Recorded {
        method: req.method().clone(),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    state.total.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlightGuard(&state);

    let mut gate = state.gate.subscribe();
    // The sender lives in `state`, so this only ends when the gate opens.
    let _ = gate.wait_for(|open| *open).await;

    match &state.behaviour {
        Behaviour::Echo | Behaviour::Hang => {
            respond(&state, StatusCode::OK, full(state.name.clone()))
        }
        Behaviour::Headers(extra) => {
            let mut resp = respond(&state, StatusCode::OK, full(state.name.clone()));
            for (k, v) in extra {
                resp.headers_mut().append(*k, HeaderValue::from_static(v));
            }
            resp
        }
        Behaviour::Slow(d) => {
            tokio::time::sleep(*d).await;
            respond(&state, StatusCode::OK, full(state.name.clone()))
        }
        Behaviour::Status(code) => respond(
            &state,
            StatusCode::from_u16(*code).expect("valid status"),
            full(state.name.clone()),
        ),
        Behaviour::EchoBody => respond(
            &state,
            StatusCode::OK,
            req.into_body().map_err(BoxError::from).boxed(),
        ),
        Behaviour::Sink => {
            let mut body = req.into_body();
            let mut len = 0u64;
            let mut fnv = Fnv::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            len += d.len() as u64;
                            state.body_bytes.fetch_add(d.len() as u64, Ordering::SeqCst);
                            fnv.update(d);
                        }
                    }
                    Err(e) => {
                        return respond(
                            &state,
                            StatusCode::BAD_REQUEST,
                            full(format!("body error after {len} bytes: {e}")),
                        )
                    }
                }
            }
            let json = serde_json::json!({"len": len, "fnv": fnv.finish()});
            respond(&state, StatusCode::OK, full(json.to_string()))
        }
        Behaviour::Source(n) => respond(&state, StatusCode::OK, PatternBody::new(*n).boxed()),
        Behaviour::Trailers => {
            let collected = match req.into_body().collect().await {
                Ok(c) => c,
                Err(e) => {
                    return respond(&state, StatusCode::BAD_REQUEST, full(format!("{e}")));
                }
            };
            let seen: serde_json::Map<String, serde_json::Value> = collected
                .trailers()
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<non-ascii>").into()))
                        .collect()
                })
                .unwrap_or_default();
            let data = collected.to_bytes();
            let mut fnv = Fnv::new();
            fnv.update(&data);
            let json = serde_json::json!({"len": data.len(), "trailers": seen});
            let mut trailers = HeaderMap::new();
            trailers.insert(
                "x-checksum",
                HeaderValue::from_str(&fnv.finish().to_string()).expect("digits"),
            );
            let body = http_body_util::StreamBody::new(futures_util::stream::iter([
                Ok::<_, BoxError>(Frame::data(Bytes::from(json.to_string()))),
                Ok(Frame::trailers(trailers)),
            ]));
            let mut resp = respond(&state, StatusCode::OK, BodyExt::boxed(body));
            resp.headers_mut().insert(
                http::header::TRAILER,
                HeaderValue::from_static("x-checksum"),
            );
            resp
        }
        Behaviour::SourceChunked(n) => {
            respond(&state, StatusCode::OK, PatternBody::chunked(*n).boxed())
        }
        Behaviour::WebSocketEcho => {
            let wants = req
                .headers()
                .get(http::header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            if !wants {
                return respond(&state, StatusCode::BAD_REQUEST, full("expected an upgrade"));
            }
            let on = hyper::upgrade::on(req);
            let stop = state.stop.clone();
            tokio::spawn(async move {
                let Ok(upgraded) = on.await else { return };
                let io = TokioIo::new(upgraded);
                let (mut r, mut w) = tokio::io::split(io);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy(&mut r, &mut w) => {}
                }
            });
            let mut resp = respond(&state, StatusCode::SWITCHING_PROTOCOLS, full(""));
            let h = resp.headers_mut();
            h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("Upgrade"),
            );
            resp
        }
    }
}

fn respond(state: &State, status: StatusCode, body: AnyBody) -> Response<AnyBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(&state.name).expect("a header-safe backend name"),
    );
    resp
}

pub fn full(b: impl Into<Bytes>) -> AnyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// FNV-1a, 64 bit: an order-sensitive checksum that does not depend on chunk boundaries.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Fnv::new()
    }
}

/// The deterministic byte pattern used for big bodies: byte `i` is `i % 251`. The period is
/// prime, so a lost, repeated or reordered chunk of any power-of-two size shows.
pub const PERIOD: usize = 251;
const CHUNK: usize = 64 * 1024;

fn block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| (0..PERIOD + CHUNK).map(|i| (i % PERIOD) as u8).collect())
}

/// The pattern bytes at `offset..offset + len` (`len <= 64 KiB`), without copying.
fn pattern_slice(offset: u64, len: usize) -> Bytes {
    let start = (offset % PERIOD as u64) as usize;
    block().slice(start..start + len)
}

/// FNV-1a of the first `n` bytes of the pattern.
pub fn pattern_fnv(n: u64) -> u64 {
    let mut f = Fnv::new();
    let mut off = 0;
    while off < n {
        let len = (n - off).min(CHUNK as u64) as usize;
        f.update(&pattern_slice(off, len));
        off += len as u64;
    }
    f.finish()
}

/// A body of `n` pattern bytes, generated 64 KiB at a time (never held whole).
pub struct PatternBody {
    offset: u64,
    len: u64,
    /// Whether the size is announced (Content-Length) or not (chunked).
    sized: bool,
}

impl PatternBody {
    pub fn new(len: u64) -> PatternBody {
        PatternBody {
            offset: 0,
            len,
            sized: true,
        }
    }

    /// Without a size hint, so HTTP/1.1 sends it chunked.
    pub fn chunked(len: u64) -> PatternBody {
        PatternBody {
            sized: false,
            ..PatternBody::new(len)
        }
    }

    pub fn boxed(self) -> AnyBody {
        BodyExt::boxed(self)
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.offset).min(CHUNK as u64) as usize;
        let chunk = pattern_slice(self.offset, n);
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// Checks a stream of chunks against the pattern, byte for byte (by slice comparison).
#[derive(Debug, Default)]
pub struct PatternChecker {
    pub len: u64,
    /// Offset of the first byte that differs from the pattern.
    pub first_mismatch: Option<u64>,
    pub fnv: Fnv,
}

impl PatternChecker {
    pub fn feed(&mut self, mut data: &[u8]) {
        self.fnv.update(data);
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            if self.first_mismatch.is_none() {
                let expected = pattern_slice(self.len, n);
                if expected[..] != data[..n] {
                    let at = expected
                        .iter()
                        .zip(&data[..n])
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    self.first_mismatch = Some(self.len + at as u64);
                }
            }
            self.len += n as u64;
            data = &data[n..];
        }
    }
}
