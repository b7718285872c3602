//! TLS termination on a listener: the handshake, the certificate picked by SNI, and
//! certificates replaced without a restart.
//!
//! A [`TlsTerminator`] serves one listener. It is built from certificates already loaded
//! and checked ([`Certificates`], by config validation or the certificate-file watch): it
//! reads no file itself. Its rustls `ServerConfig` is built once; the certificates sit behind
//! an `ArcSwap` inside the config's certificate resolver ([`SniResolver`]), so installing a
//! new list ([`TlsTerminator::install`]) swaps the certificate set for every *new* handshake
//! while open connections keep the session they negotiated, and session resumption keeps
//! working across reloads. The resolver picks a certificate by SNI from the names in each
//! certificate (its DNS subject alternative names, or the subject CN when it has none): an
//! exact name first, then a `*.example.com` wildcard (one label, as RFC 6125 says); a client
//! without SNI or with an unknown name gets the listener's first certificate. When several
//! certificates share a name (an RSA and an ECDSA one), the first whose key the client can
//! use is chosen. TLS 1.2 and 1.3 only; ALPN `h2` and `http/1.1`.
//!
//! The handshake runs inside the connection's own task, bounded by
//! `limits.header_read_timeout` ([`TlsTerminator::accept`]); failures are counted in
//! `switchyard_tls_handshake_errors_total{reason}` and end only that connection. A plain
//! HTTP request on a TLS port is answered `400` in clear text and closed (as nginx does), so
//! a person who typed `http://` sees why.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::{HandshakeFailure, Metrics};
use crate::tls::certs::{CertSource, Certificates, LoadedCert, TlsError};
use crate::tls::protocol::{provider, ALPN_H2, ALPN_HTTP11, VERSIONS};
use crate::util::sync::lock;

/// TLS sessions remembered for resumption by session id (TLS 1.2 clients without tickets).
/// A few hundred bytes each; TLS 1.3 and ticket-capable 1.2 clients use stateless tickets.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// How long a plain-HTTP client on a TLS port is read from after its `400`, so that closing
/// with unread bytes does not reset the connection before the client read the answer.
const PLAIN_HTTP_DRAIN: Duration = Duration::from_millis(500);

/// The answer to a plain HTTP request on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: application/json\r\n\
content-length: 72\r\n\
connection: close\r\n\
\r\n\
{\"error\": \"this port expects TLS: use https:// instead of http:// here\"}\n";

/// A listener's certificates, indexed by name. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct CertSet {
    certs: Vec<LoadedCert>,
    /// Exact name → certificate indexes, in config order.
    exact: HashMap<String, Vec<usize>>,
    /// `example.com` for `*.example.com` → certificate indexes, in config order.
    wildcard: HashMap<String, Vec<usize>>,
    /// Every index in config order: the default (first certificate first).
    all: Vec<usize>,
}

impl CertSet {
    fn new(certs: Vec<LoadedCert>) -> Result<CertSet, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_default().push(i),
                    None => exact.entry(n.clone()).or_default().push(i),
                }
            }
        }
        let all = (0..certs.len()).collect();
        Ok(CertSet {
            certs,
            exact,
            wildcard,
            all,
        })
    }

    /// The certificate for a client hello: by SNI (exact, then wildcard), else the default;
    /// among several candidates the first whose key suits the client's signature schemes.
    fn choose(&self, sni: Option<&str>, schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
        let candidates = sni.and_then(|name| self.lookup(name)).unwrap_or(&self.all);
        let pick = candidates
            .iter()
            .find(|&&i| self.certs[i].key.key.choose_scheme(schemes).is_some())
            .or_else(|| candidates.first())
            .copied()
            .unwrap_or(0);
        Arc::clone(&self.certs[pick].key)
    }

    fn lookup(&self, name: &str) -> Option<&Vec<usize>> {
        let name = name.trim_end_matches('.');
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// Names per certificate, for logs and tests.
    pub fn names(&self) -> Vec<Vec<String>> {
        self.certs.iter().map(|c| c.names.clone()).collect()
    }
}

/// rustls's certificate hook: the current [`CertSet`], swapped whole on reload.
#[derive(Debug)]
pub struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.set
                .load()
                .choose(hello.server_name(), hello.signature_schemes()),
        )
    }
}

/// Sort an error from the handshake into its metric label.
pub fn classify(e: &io::Error) -> HandshakeFailure {
    use rustls::{AlertDescription as A, PeerIncompatible as P};
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::PeerIncompatible(
                P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
                | P::SupportedVersionsExtensionRequired
                | P::ServerDoesNotSupportTls12Or13,
            ) => HandshakeFailure::ProtocolVersion,
            rustls::Error::PeerIncompatible(_) => HandshakeFailure::Incompatible,
            rustls::Error::AlertReceived(
                A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::UnsupportedCertificate
                | A::AccessDenied,
            ) => HandshakeFailure::CertRejected,
            rustls::Error::AlertReceived(A::ProtocolVersion) => HandshakeFailure::ProtocolVersion,
            rustls::Error::AlertReceived(A::HandshakeFailure | A::InsufficientSecurity) => {
                HandshakeFailure::Incompatible
            }
            _ => HandshakeFailure::Other,
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => HandshakeFailure::Eof,
        io::ErrorKind::TimedOut => HandshakeFailure::Timeout,
        _ => HandshakeFailure::Other,
    }
}

/// TLS for one listener: the acceptor and its swappable certificates.
pub struct TlsTerminator {
    /// The listener's name, for logs.
    listener: String,
    acceptor: TlsAcceptor,
    /// Shared with the `ServerConfig` inside `acceptor`; swapping its set is the reload.
    resolver: Arc<SniResolver>,
    /// What the current set was loaded from. A lock, not a swap: only installs (config or
    /// file watch, rare) touch it, never a handshake.
    loaded: Mutex<Loaded>,
    /// Handshake failure counters, one per reason, resolved once.
    errors: [IntCounter; 7],
}

#[derive(Debug)]
struct Loaded {
    sources: Vec<CertSource>,
    /// [`Certificates::fingerprint`] of the set in use.
    fingerprint: u64,
}

impl fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TlsTerminator {
    /// The TLS settings of a listener serving `certs`.
    pub fn new(
        listener: &str,
        certs: &Certificates,
        metrics: &Metrics,
    ) -> Result<Arc<TlsTerminator>, TlsError> {
        log_names(listener, certs, "TLS certificates loaded");
        let resolver = Arc::new(SniResolver {
            set: ArcSwap::from_pointee(CertSet::new(certs.certs().to_vec())?),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        // Stateless resumption tickets (keys rotate every 6 hours, kept in memory only).
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let errors = metrics.tls_handshake_errors();
        Ok(Arc::new(TlsTerminator {
            listener: listener.to_string(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            loaded: Mutex::new(Loaded {
                sources: certs.sources().to_vec(),
                fingerprint: certs.fingerprint(),
            }),
            errors,
        }))
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Where the certificates in use were read from, and their fingerprint: what the file
    /// watch compares the files with.
    pub fn loaded(&self) -> (Vec<CertSource>, u64) {
        let l = lock(&self.loaded);
        (l.sources.clone(), l.fingerprint)
    }

    /// Serve `certs` to every new handshake from now on (nothing happens when they are the
    /// ones in use); `message` is logged with their names.
    pub fn install(&self, certs: &Certificates, message: &'static str) -> Result<(), TlsError> {
        let mut loaded = lock(&self.loaded);
        if loaded.sources == certs.sources() && loaded.fingerprint == certs.fingerprint() {
            return Ok(()); // same files, same bytes: nothing to do
        }
        let set = CertSet::new(certs.certs().to_vec())?;
        log_names(&self.listener, certs, message);
        self.resolver.set.store(Arc::new(set));
        loaded.sources = certs.sources().to_vec();
        loaded.fingerprint = certs.fingerprint();
        Ok(())
    }

    /// The names of the certificates in use, per certificate in config order.
    pub fn names(&self) -> Vec<Vec<String>> {
        self.resolver.set.load().names()
    }

    /// The TLS handshake on an accepted connection, bounded by `timeout`. `None` when it
    /// failed: the failure is counted and logged at debug level, and only this connection
    /// is affected. A plain HTTP request gets a clear-text `400` before the close.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let result = match tokio::time::timeout(timeout, self.handshake(stream)).await {
            Ok(r) => r,
            Err(_) => Err((HandshakeFailure::Timeout, None)),
        };
        match result {
            Ok(s) => Some(s),
            Err((reason, err)) => {
                self.errors[reason as usize].inc();
                tracing::debug!(
                    listener = %self.listener,
                    peer = ?peer,
                    reason = reason.as_str(),
                    error = %err.map(|e| e.to_string()).unwrap_or_default(),
                    "TLS handshake failed"
                );
                None
            }
        }
    }

    async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, (HandshakeFailure, Option<io::Error>)> {
        // A TLS connection starts with a handshake record (content type 22).
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err((HandshakeFailure::Eof, None)),
            Ok(_) => {}
            Err(e) => return Err((classify(&e), Some(e))),
        }
        if first[0] != 0x16 {
            if first[0].is_ascii_uppercase() {
                answer_plain_http(stream).await;
            }
            return Err((HandshakeFailure::NoTls, None));
        }
        // rustls refuses a TLS 1.0/1.1 client too, but with a `handshake_failure` alert
        // (it misses the TLS 1.2 signature_algorithms extension before it looks at the
        // version); answer such a client the standard `protocol_version` alert instead.
        let mut hello = [0u8; 1024];
        if let Ok(n) = stream.peek(&mut hello).await {
            if let Some(record_version) = legacy_only_client_hello(&hello[..n]) {
                refuse_legacy(stream, record_version).await;
                return Err((HandshakeFailure::ProtocolVersion, None));
            }
        }
        self.acceptor
            .accept(stream)
            .await
            .map_err(|e| (classify(&e), Some(e)))
    }
}

fn log_names(listener: &str, certs: &Certificates, message: &'static str) {
    for (src, names) in certs.sources().iter().zip(certs.names()) {
        if names.is_empty() {
            tracing::warn!(listener, cert = %src.cert.display(), "certificate has no DNS name: it is only served as the default");
        }
        tracing::info!(listener, cert = %src.cert.display(), names = %names.join(","), "{}", message);
    }
}

/// `Some(record version)` when `buf` holds a whole ClientHello from a client that offers
/// nothing newer than TLS 1.1 (`client_version` below 1.2 and no `supported_versions`
/// extension); `None` when it offers more or cannot be told from these bytes.
fn legacy_only_client_hello(buf: &[u8]) -> Option<[u8; 2]> {
    let record_version = [*buf.get(1)?, *buf.get(2)?];
    let rec_len = u16::from_be_bytes([*buf.get(3)?, *buf.get(4)?]) as usize;
    let record = buf.get(5..5 + rec_len)?;
    if *record.first()? != 1 {
        return None; // not a ClientHello
    }
    let hs_len =
        u32::from_be_bytes([0, *record.get(1)?, *record.get(2)?, *record.get(3)?]) as usize;
    let body = record.get(4..4 + hs_len)?;
    if u16::from_be_bytes([*body.first()?, *body.get(1)?]) >= 0x0303 {
        return None;
    }
    let mut rest = body.get(2 + 32..)?; // version, random
    let skip = |rest: &mut &[u8], len_bytes: usize| -> Option<()> {
        let len = match len_bytes {
            1 => *rest.first()? as usize,
            _ => u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize,
        };
        *rest = rest.get(len_bytes + len..)?;
        Some(())
    };
    skip(&mut rest, 1)?; // session id
    skip(&mut rest, 2)?; // cipher suites
    skip(&mut rest, 1)?; // compression methods
    if rest.len() >= 2 {
        let mut exts = rest.get(2..)?;
        while exts.len() >= 4 {
            if u16::from_be_bytes([exts[0], exts[1]]) == 0x002b {
                return None; // supported_versions: let rustls negotiate
            }
            let len = u16::from_be_bytes([exts[2], exts[3]]) as usize;
            exts = exts.get(4 + len..)?;
        }
    }
    Some(record_version)
}

/// Send a fatal `protocol_version` alert and close.
async fn refuse_legacy(mut stream: TcpStream, record_version: [u8; 2]) {
    let alert = [
        0x15,
        record_version[0],
        record_version[1],
        0x00,
        0x02,
        0x02,
        0x46,
    ];
    let _ = tokio::time::timeout(PLAIN_HTTP_DRAIN, async {
        let _ = stream.write_all(&alert).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Answer a plain HTTP request on a TLS port with a clear-text 400, then close.
async fn answer_plain_http(mut stream: TcpStream) {
    let _ = tokio::time::timeout(PLAIN_HTTP_DRAIN, async {
        if stream.write_all(PLAIN_HTTP_ANSWER).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        // Read what the client still sends so the close is a FIN, not a reset that could
        // destroy the answer before the client reads it.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::tests::cert;

    fn loaded(names: &[&str]) -> LoadedCert {
        let (c, k) = cert(names);
        let source = CertSource {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        crate::tls::certs::parse_pair(&source, c.as_bytes(), k.as_bytes(), &provider())
            .expect("load")
    }

    fn pick(set: &CertSet, sni: Option<&str>) -> Vec<String> {
        let schemes = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::ED25519,
        ];
        let key = set.choose(sni, &schemes);
        let i = set
            .certs
            .iter()
            .position(|c| Arc::ptr_eq(&c.key, &key))
            .unwrap();
        set.certs[i].names.clone()
    }

    #[test]
    fn sni_exact_wildcard_and_default() {
        let set = CertSet::new(vec![
            loaded(&["default.test"]),
            loaded(&["a.example.com", "b.example.com"]),
            loaded(&["*.example.com"]),
        ])
        .unwrap();
        assert_eq!(
            pick(&set, Some("a.example.com")),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(
            pick(&set, Some("B.Example.COM.")),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(pick(&set, Some("c.example.com")), ["*.example.com"]);
        // a wildcard covers one label only
        assert_eq!(pick(&set, Some("x.c.example.com")), ["default.test"]);
        assert_eq!(pick(&set, Some("example.com")), ["default.test"]);
        assert_eq!(pick(&set, None), ["default.test"]);
        assert_eq!(pick(&set, Some("other.test")), ["default.test"]);
    }

    #[test]
    fn handshake_errors_are_classified() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            classify(&wrap(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered
            ))),
            HandshakeFailure::ProtocolVersion
        );
        assert_eq!(
            classify(&wrap(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))),
            HandshakeFailure::CertRejected
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            HandshakeFailure::Eof
        );
    }

    #[test]
    fn reload_swaps_certificates_or_keeps_the_old_ones() {
        let dir = std::env::temp_dir().join(format!("switchyard-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, names: &[&str]| {
            let (c, k) = cert(names);
            std::fs::write(dir.join(format!("{name}.pem")), c).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), k).unwrap();
            CertSource {
                cert: dir.join(format!("{name}.pem")),
                key: dir.join(format!("{name}.key")),
            }
        };
        let first = Certificates::load(vec![write("a", &["a.test"])]).unwrap();
        let t = TlsTerminator::new("l", &first, &Metrics::new()).unwrap();
        assert_eq!(t.names(), [["a.test"]]);

        let mut broken = write("b", &["b.test"]);
        broken.key = dir.join("a.key");
        let e = Certificates::load(vec![broken]).unwrap_err().to_string();
        assert!(e.contains("a.key") && e.contains("b.pem"), "{e}");
        assert_eq!(t.names(), [["a.test"]], "the old certificates keep serving");

        let next =
            Certificates::load(vec![write("c", &["c.test"]), write("d", &["*.d.test"])]).unwrap();
        t.install(&next, "reloaded").unwrap();
        assert_eq!(t.names(), [vec!["c.test"], vec!["*.d.test"]]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn legacy_client_hellos_are_recognised() {
        // TLS 1.1 hello without extensions, and with some.
        let hello = |version: [u8; 2], exts: &[u8]| {
            let mut body = version.to_vec();
            body.extend_from_slice(&[7; 32]);
            body.extend_from_slice(&[0, 0, 2, 0xc0, 0x13, 1, 0]);
            if !exts.is_empty() {
                body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
                body.extend_from_slice(exts);
            }
            let mut hs = vec![1, 0];
            hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
            hs.extend_from_slice(&body);
            let mut rec = vec![0x16, 3, 1];
            rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
            rec.extend_from_slice(&hs);
            rec
        };
        assert_eq!(legacy_only_client_hello(&hello([3, 2], &[])), Some([3, 1]));
        let groups = [0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17];
        assert_eq!(
            legacy_only_client_hello(&hello([3, 1], &groups)),
            Some([3, 1])
        );
        let versions = [0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04];
        assert_eq!(legacy_only_client_hello(&hello([3, 1], &versions)), None);
        assert_eq!(legacy_only_client_hello(&hello([3, 3], &[])), None);
        let h = hello([3, 2], &[]);
        assert_eq!(
            legacy_only_client_hello(&h[..h.len() - 1]),
            None,
            "incomplete"
        );
    }
}
