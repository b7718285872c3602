//! TLS termination, HTTP/2 over TLS and HTTPS upstreams (issue 6), against the real binary.
//!
//! Certificates are made in the test with rcgen. The test client accepts any certificate
//! and looks at which one it was given (`peer_certificates`), so SNI selection is checked
//! directly. HTTPS backends are small rustls + hyper servers defined here.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use common::backend::{pattern_fnv, BoxError, PatternBody};
use common::certs::{private_ca, self_signed, signed_by, write_pair, Pem};
use common::client::{collect, within, Resp};
use common::{metric, parse_metrics, unique_dir, Backend, Behaviour, Switchyard, WAIT};

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// Replace a file's content atomically (write a temp file, rename over it).
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

// ---------------------------------------------------------------------------------------
// The TLS test client
// ---------------------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (the test then checks which one it got).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connect with TLS; `sni: None` sends no server name (the client dials by IP).
async fn tls_connect(addr: SocketAddr, sni: Option<&str>, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).expect("server name"),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    within(
        &format!("TLS handshake with {addr} ({sni:?})"),
        WAIT,
        async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .expect("TLS handshake")
        },
    )
    .await
}

/// The leaf certificate the server presented.
fn served(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a server certificate")
}

fn alpn(s: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

type Body = BoxBody<Bytes, BoxError>;

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|n| match n {}).boxed()
}

/// HTTP/1.1 over an established TLS stream.
struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl H1 {
    async fn over(s: TlsStream<TcpStream>) -> H1 {
        let (sender, conn) = within(
            "HTTP/1.1 handshake",
            WAIT,
            hyper::client::conn::http1::handshake(TokioIo::new(s)),
        )
        .await
        .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H1 { sender }
    }

    async fn get(&mut self, host: &str, path: &str) -> Resp {
        let req = Request::builder()
            .uri(path)
            .header("host", host)
            .body(empty())
            .expect("request");
        let sender = &mut self.sender;
        let resp = within("HTTPS request", WAIT, async move {
            sender.ready().await.expect("connection ready");
            sender.send_request(req).await.expect("HTTPS request")
        })
        .await;
        collect(resp).await
    }
}

/// HTTP/2 over an established TLS stream.
#[derive(Clone)]
struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Body>,
}

impl H2 {
    async fn over(s: TlsStream<TcpStream>) -> H2 {
        let (sender, conn) = within(
            "h2 handshake",
            WAIT,
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 { sender }
    }

    async fn send(&self, method: Method, uri: &str, body: Body) -> Response<Incoming> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .expect("request");
        let mut sender = self.sender.clone();
        within(&format!("h2 request {uri}"), WAIT, async move {
            sender.ready().await.expect("h2 ready");
            sender.send_request(req).await.expect("h2 request")
        })
        .await
    }

    async fn get(&self, uri: &str) -> Resp {
        collect(self.send(Method::GET, uri, empty()).await).await
    }
}

// ---------------------------------------------------------------------------------------
// An HTTPS backend
// ---------------------------------------------------------------------------------------

/// A backend that speaks TLS (ALPN h2 and http/1.1); answers 200 with its name. Records the
/// SNI of each handshake and the HTTP version of each request.
struct TlsBackend {
    addr: SocketAddr,
    snis: Arc<Mutex<Vec<Option<String>>>>,
    versions: Arc<Mutex<Vec<Version>>>,
    stop: CancellationToken,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TlsBackend {
    async fn start(name: &'static str, pem: &Pem) -> TlsBackend {
        let chain = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key");
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let snis = Arc::new(Mutex::new(Vec::new()));
        let versions = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (snis2, versions2, stop2) = (Arc::clone(&snis), Arc::clone(&versions), stop.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => match a { Ok(p) => p, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                let (snis, versions, stop) =
                    (Arc::clone(&snis2), Arc::clone(&versions2), stop2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    snis.lock()
                        .unwrap()
                        .push(tls.get_ref().1.server_name().map(str::to_string));
                    let svc = service_fn(move |req: Request<Incoming>| {
                        versions.lock().unwrap().push(req.version());
                        async move {
                            let mut r =
                                Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                            r.headers_mut()
                                .insert("x-backend", http::HeaderValue::from_static(name));
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = builder.serve_connection(TokioIo::new(tls), svc) => {}
                    }
                });
            }
        });
        TlsBackend {
            addr,
            snis,
            versions,
            stop,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configs and helpers
// ---------------------------------------------------------------------------------------

/// One TLS listener `https` with `certs` (cert, key paths as written in the config), the
/// admin API, and `rest` (routes, pools, limits...).
fn tls_config(certs: &[(String, String)], rest: &str) -> String {
    let mut s = String::from(
        "listeners:\n  - name: https\n    bind: 127.0.0.1:0\n    tls:\n      certificates:\n",
    );
    for (c, k) in certs {
        s.push_str(&format!(
            "        - cert: \"{c}\"\n          key: \"{k}\"\n"
        ));
    }
    s.push_str("admin:\n  bind: 127.0.0.1:0\n");
    s.push_str(rest);
    s
}

fn one_pool(b: SocketAddr) -> String {
    format!("routes:\n  - pool: web\npools:\n  web:\n    nodes:\n      - addr: \"{b}\"\n")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

async fn metrics(sy: &Switchyard) -> Vec<common::Sample> {
    let r = common::client::get(sy.admin_addr(), "/metrics").await;
    assert_eq!(r.status, 200);
    parse_metrics(&r.text())
}

async fn handshake_errors(sy: &Switchyard, reason: &str) -> f64 {
    metric(
        &metrics(sy).await,
        "switchyard_tls_handshake_errors_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Poll `f` (async) every 50 ms until it is true, or fail after `WAIT`.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_and_the_first_is_the_default() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let dir = unique_dir("tls-sni");
    let one = self_signed(&["one.test"]);
    let two = self_signed(&["two.test", "*.wild.test"]);
    let (c1, k1) = write_pair(&dir, "one", &one);
    let (c2, k2) = write_pair(&dir, "two", &two);
    let sy = Switchyard::start(&tls_config(
        &[(p(&c1), p(&k1)), (p(&c2), p(&k2))],
        &one_pool(b.addr),
    ));
    let addr = sy.addr("https");

    for (sni, want, label) in [
        (Some("one.test"), &one, "one"),
        (Some("two.test"), &two, "two"),
        (Some("TWO.test"), &two, "two (case-insensitive)"),
        (Some("api.wild.test"), &two, "wildcard"),
        (
            Some("a.b.wild.test"),
            &one,
            "wildcard covers one label only: default",
        ),
        (Some("unknown.test"), &one, "unknown name: default"),
        (None, &one, "no SNI: default"),
    ] {
        let s = tls_connect(addr, sni, &[b"http/1.1"]).await;
        assert!(
            served(&s) == want.der,
            "SNI {sni:?}: expected the {label} certificate"
        );
    }

    // A request over TLS is proxied, with X-Forwarded-Proto: https.
    let s = tls_connect(addr, Some("two.test"), &[b"http/1.1"]).await;
    assert_eq!(alpn(&s).as_deref(), Some(&b"http/1.1"[..]));
    let mut h1 = H1::over(s).await;
    let r = h1.get("two.test", "/hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.backend(), "b");
    let up = b.last_request();
    assert_eq!(up.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(up.target, "/hello");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_routes_by_authority_and_carries_many_streams() {
    let api = Backend::start("api", Behaviour::Echo).await;
    let web = Backend::start("web", Behaviour::Echo).await;
    let sink = Backend::start("sink", Behaviour::Sink).await;
    let source = Backend::start("source", Behaviour::Source(8 * 1024 * 1024)).await;
    let dir = unique_dir("tls-h2");
    let (c, k) = write_pair(&dir, "site", &self_signed(&["api.test", "www.test"]));
    let rest = format!(
        "routes:\n  - host: api.test\n    pool: api\n  - path_prefix: /upload\n    pool: sink\n  \
         - path_prefix: /download\n    pool: source\n  - pool: web\n\
         pools:\n  api:\n    nodes: [{{addr: \"{}\"}}]\n  web:\n    nodes: [{{addr: \"{}\"}}]\n  \
         sink:\n    nodes: [{{addr: \"{}\"}}]\n  source:\n    nodes: [{{addr: \"{}\"}}]\n",
        api.addr, web.addr, sink.addr, source.addr
    );
    let sy = Switchyard::start(&tls_config(&[(p(&c), p(&k))], &rest));
    let addr = sy.addr("https");

    let s = tls_connect(addr, Some("www.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&s).as_deref(), Some(&b"h2"[..]), "ALPN must pick h2");
    let h2 = H2::over(s).await;

    // `:authority` routes, on one connection.
    let r = h2.get("https://api.test/x").await;
    assert_eq!((r.status, r.version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(r.backend(), "api");
    let r = h2.get("https://www.test/y").await;
    assert_eq!(r.backend(), "web");
    assert_eq!(
        web.last_request().header("x-forwarded-proto").as_deref(),
        Some("https")
    );

    // 100 concurrent streams on that one connection all succeed.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let h2 = h2.clone();
            tokio::spawn(async move {
                let host = if i % 2 == 0 { "api.test" } else { "www.test" };
                let r = h2.get(&format!("https://{host}/stream/{i}")).await;
                (i, r.status, r.backend())
            })
        })
        .collect();
    for t in tasks {
        let (i, status, backend) = t.await.expect("stream task");
        assert_eq!(status, 200, "stream {i}");
        assert_eq!(
            backend,
            if i % 2 == 0 { "api" } else { "web" },
            "stream {i}"
        );
    }

    // Large bodies both ways are flow-controlled end to end (more than the windows).
    let len = 16 * 1024 * 1024u64;
    let resp = h2
        .send(
            Method::POST,
            "https://www.test/upload",
            PatternBody::new(len).boxed(),
        )
        .await;
    let r = collect(resp).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["len"].as_u64(), Some(len));
    assert_eq!(j["fnv"].as_u64(), Some(pattern_fnv(len)));
    let r = h2.get("https://www.test/download").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len() as u64, 8 * 1024 * 1024);
    let mut f = common::backend::Fnv::new();
    f.update(&r.body);
    assert_eq!(f.finish(), pattern_fnv(8 * 1024 * 1024));
    let _ = std::fs::remove_dir_all(dir);
}

/// A ClientHello that offers TLS 1.1 at most (no supported_versions extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two CBC suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

/// Everything the server sends until it closes (bounded by `WAIT`).
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    within("the server closing the connection", WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls11_plain_http_and_silent_clients_are_refused_cleanly() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let dir = unique_dir("tls-refuse");
    let (c, k) = write_pair(&dir, "site", &self_signed(&["site.test"]));
    let rest = format!("{}limits:\n  header_read_timeout: 1s\n", one_pool(b.addr));
    let sy = Switchyard::start(&tls_config(&[(p(&c), p(&k))], &rest));
    let addr = sy.addr("https");

    // A connection that is kept open through all of this, and must keep working (HTTP/2:
    // an idle HTTP/1.1 connection would meet the 1 s header_read_timeout).
    let kept = H2::over(tls_connect(addr, Some("site.test"), &[b"h2"]).await).await;
    assert_eq!(kept.get("https://site.test/before").await.status, 200);

    // TLS 1.1 only: a fatal protocol_version alert, then the close.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&tls11_client_hello())
        .await
        .expect("send hello");
    let got = read_to_close(&mut s).await;
    assert!(
        got.len() >= 7 && got[0] == 0x15 && got[5] == 2 && got[6] == 70,
        "expected a fatal protocol_version alert, got {got:02x?}"
    );

    // The same with openssl's own TLS 1.1 client, when openssl is installed.
    if let Ok(out) = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-connect",
        ])
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "openssl -tls1_1 must fail: {text}");
        assert!(
            !text.contains("Cipher is ECDHE"),
            "no TLS 1.1 session may be set up: {text}"
        );
    }

    // Plain HTTP on the TLS port: a clear-text 400 that says why, then the close.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("send");
    let got = String::from_utf8_lossy(&read_to_close(&mut s).await).to_string();
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("https://"), "{got}");

    // A client that connects and says nothing is cut off after header_read_timeout.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let t0 = Instant::now();
    let got = read_to_close(&mut s).await;
    assert!(got.is_empty(), "{got:02x?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "closed too early: {:?}",
        t0.elapsed()
    );

    // Each failure is counted by reason; the listener and the open connection are fine.
    until("protocol_version, no_tls and timeout counted", || async {
        handshake_errors(&sy, "protocol_version").await >= 1.0
            && handshake_errors(&sy, "no_tls").await >= 1.0
            && handshake_errors(&sy, "timeout").await >= 1.0
    })
    .await;
    assert_eq!(kept.get("https://site.test/after").await.status, 200);
    let mut fresh = H1::over(tls_connect(addr, Some("site.test"), &[b"http/1.1"]).await).await;
    assert_eq!(fresh.get("site.test", "/fresh").await.status, 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_serves_new_handshakes_and_keeps_open_connections() {
    let b = Backend::start("b", Behaviour::Echo).await;
    let dir = unique_dir("tls-swap");
    let old = self_signed(&["swap.test"]);
    let new = self_signed(&["swap.test", "new.swap.test"]);
    let (c, k) = write_pair(&dir, "site", &old);
    // Relative paths resolve against the config file's directory (a sibling temp dir).
    let rel = |f: &Path| {
        format!(
            "../{}/{}",
            dir.file_name().unwrap().to_string_lossy(),
            f.file_name().unwrap().to_string_lossy()
        )
    };
    let sy = Switchyard::start(&tls_config(&[(rel(&c), rel(&k))], &one_pool(b.addr)));
    let addr = sy.addr("https");

    // HTTP/2 for the connection kept open: an idle HTTP/1.1 one would be closed after
    // header_read_timeout on a slow machine, which is not what is tested here.
    let s = tls_connect(addr, Some("swap.test"), &[b"h2"]).await;
    assert!(served(&s) == old.der, "the original certificate first");
    let open = H2::over(s).await;
    assert_eq!(open.get("https://swap.test/1").await.status, 200);

    // Replace the key, then the certificate, the way a renewal tool does.
    replace_file(&k, &new.key);
    replace_file(&c, &new.cert);
    until("new handshakes get the new certificate", || async {
        served(&tls_connect(addr, Some("swap.test"), &[b"http/1.1"]).await) == new.der
    })
    .await;
    assert_eq!(
        sy.log_messages("TLS certificates reloaded from disk").len(),
        1
    );
    // The connection opened before the swap still works.
    assert_eq!(open.get("https://swap.test/2").await.status, 200);

    // A broken pair (a certificate with someone else's key) is rejected; the current one
    // keeps serving.
    let other = self_signed(&["other.test"]);
    replace_file(&c, &other.cert);
    sy.wait_for_message(
        "changed certificate files rejected; the certificates in use keep serving",
        0,
        WAIT,
    );
    let rejected =
        sy.log_messages("changed certificate files rejected; the certificates in use keep serving");
    let err = rejected[0]["fields"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("site.key") && err.contains("does not belong"),
        "{err}"
    );
    assert!(served(&tls_connect(addr, Some("swap.test"), &[b"http/1.1"]).await) == new.der);
    assert_eq!(open.get("https://swap.test/3").await.status, 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_verify_with_a_private_ca_and_refuse_untrusted_ones() {
    let ca = private_ca();
    let trusted =
        TlsBackend::start("trusted", &signed_by(&ca, &["backend.test", "127.0.0.1"])).await;
    let untrusted = TlsBackend::start("untrusted", &self_signed(&["backend.test"])).await;
    let plain_h2 = Backend::start("h2c", Behaviour::Echo).await;
    let dir = unique_dir("tls-upstream");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).expect("write CA");
    let (c, k) = write_pair(&dir, "site", &self_signed(&["site.test"]));
    let rest = format!(
        "routes:\n\
         \x20 - {{path_prefix: /by-name, pool: by_name}}\n\
         \x20 - {{path_prefix: /by-ip, pool: by_ip}}\n\
         \x20 - {{path_prefix: /h2, pool: h2}}\n\
         \x20 - {{path_prefix: /untrusted, pool: untrusted}}\n\
         \x20 - {{path_prefix: /skip, pool: skip}}\n\
         \x20 - {{path_prefix: /h2c, pool: h2c}}\n\
         pools:\n\
         \x20 by_name:\n    nodes: [{{addr: \"{t}\"}}]\n    tls: {{server_name: backend.test, ca_file: \"{ca}\"}}\n\
         \x20 by_ip:\n    nodes: [{{addr: \"{t}\"}}]\n    tls: {{ca_file: \"{ca}\"}}\n\
         \x20 h2:\n    nodes: [{{addr: \"{t}\"}}]\n    tls: {{server_name: backend.test, ca_file: \"{ca}\"}}\n    upstream_protocol: h2\n\
         \x20 untrusted:\n    nodes: [{{addr: \"{u}\"}}]\n    tls: {{server_name: backend.test}}\n\
         \x20 skip:\n    nodes: [{{addr: \"{u}\"}}]\n    tls: {{insecure_skip_verify: true}}\n\
         \x20 h2c:\n    nodes: [{{addr: \"{h}\"}}]\n    upstream_protocol: h2\n",
        t = trusted.addr,
        u = untrusted.addr,
        h = plain_h2.addr,
        ca = p(&ca_file),
    );
    let sy = Switchyard::start(&tls_config(&[(p(&c), p(&k))], &rest));
    let addr = sy.addr("https");
    let mut h1 = H1::over(tls_connect(addr, Some("site.test"), &[b"http/1.1"]).await).await;

    // Private CA, name from server_name: SNI is that name.
    let r = h1.get("site.test", "/by-name").await;
    assert_eq!(
        (r.status, r.text()),
        (StatusCode::OK, "trusted".to_string())
    );
    assert!(trusted
        .snis
        .lock()
        .unwrap()
        .contains(&Some("backend.test".to_string())));
    assert_eq!(
        trusted.versions.lock().unwrap().last(),
        Some(&Version::HTTP_11)
    );

    // Without server_name a node given by IP is verified against the certificate's IPs.
    let r = h1.get("site.test", "/by-ip").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // upstream_protocol: h2 over TLS negotiates h2 by ALPN.
    let r = h1.get("site.test", "/h2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        trusted.versions.lock().unwrap().last(),
        Some(&Version::HTTP_2)
    );

    // An upstream certificate nobody vouches for: 502, nothing leaked.
    let r = h1.get("site.test", "/untrusted").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(!r.text().contains("127.0.0.1"), "{}", r.text());
    assert!(
        untrusted.versions.lock().unwrap().is_empty(),
        "no request may reach it"
    );

    // insecure_skip_verify accepts it (and warned at load).
    let r = h1.get("site.test", "/skip").await;
    assert_eq!(
        (r.status, r.text()),
        (StatusCode::OK, "untrusted".to_string())
    );
    assert!(sy
        .stderr_lines()
        .iter()
        .any(|l| l.contains("insecure_skip_verify is on")));

    // upstream_protocol: h2 over plain TCP is h2c with prior knowledge.
    let r = h1.get("site.test", "/h2c").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(plain_h2.last_request().version, Version::HTTP_2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_certificate_fails_start_up_naming_the_file() {
    let dir = unique_dir("tls-broken");
    let good = self_signed(&["a.test"]);
    let other = self_signed(&["b.test"]);
    let cert = dir.join("site.pem");
    let key = dir.join("site.key");
    std::fs::write(&cert, &good.cert).unwrap();
    std::fs::write(&key, &other.key).unwrap(); // not this certificate's key
    let config = dir.join("switchyard.yaml");
    std::fs::write(
        &config,
        tls_config(
            &[(p(&cert), p(&key))],
            "routes:\n  - pool: web\npools:\n  web:\n    nodes: [{addr: \"127.0.0.1:9\"}]\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run switchyard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start-up must fail: {stderr}");
    assert!(
        stderr.contains(&p(&key)) && stderr.contains("does not belong"),
        "the error names the key file: {stderr}"
    );

    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run switchyard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&p(&cert)),
        "the error names the certificate file: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
