//! TLS: termination on listeners and client settings for HTTPS upstreams, with rustls (ring).
//!
//! **Termination.** A [`TlsTerminator`] serves one listener. Its rustls `ServerConfig` is built
//! once; the certificates sit behind an `ArcSwap` inside the config's certificate resolver
//! ([`SniResolver`]), so a reload swaps the certificate set for every *new* handshake while
//! open connections keep the session they negotiated, and session resumption keeps working
//! across reloads. The resolver picks a certificate by SNI from the names in each certificate
//! (its DNS subject alternative names, or the subject CN when it has none): an exact name
//! first, then a `*.example.com` wildcard (one label, as RFC 6125 says); a client without SNI
//! or with an unknown name gets the listener's first certificate (DESIGN.md, "Decisions").
//! When several certificates share a name (an RSA and an ECDSA one), the first whose key the
//! client can use is chosen. TLS 1.2 and 1.3 only; ALPN `h2` and `http/1.1`.
//!
//! The handshake runs inside the connection's own task, bounded by
//! `limits.header_read_timeout` ([`TlsTerminator::accept`]); failures are counted in
//! `switchyard_tls_handshake_errors_total{reason}` and end only that connection. A plain
//! HTTP request on a TLS port is answered `400` in clear text and closed (as nginx does), so
//! a person who typed `http://` sees why.
//!
//! **Reload.** [`TlsTerminator::reload`] loads a listener's certificate list again (the
//! supervisor calls it on a config reload); [`TlsTerminator::watch`] polls the certificate
//! and key files about once a second and reloads when their contents change and have been
//! stable for one poll (so a cert written just before its key is not tried half-way). A pair
//! that does not load — unparsable PEM, no key, a key that does not match the certificate —
//! is rejected with an error naming the file, and the certificates in use keep serving.
//!
//! **Upstreams.** [`client_config`] builds the rustls `ClientConfig` of a pool with a `tls`
//! section: Mozilla's roots (webpki-roots) plus the pool's `ca_file`, or no verification at
//! all with `insecure_skip_verify` (a warning is logged); ALPN `h2` or `http/1.1` from
//! `upstream_protocol`. The connector that uses it lives in `upstream.rs`.
//!
//! **Checks.** [`check_certificate_pair`] and [`check_ca_file`] parse what start-up would
//! load, for `switchyard check` and for config reloads; [`validate_config`] runs them over a
//! whole config.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerTlsConfig, LoadedConfig};
use crate::metrics::Metrics;
use crate::util::sync::lock;

/// ALPN protocol ids.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// How often certificate and key files are looked at for changes. Reading a few small files
/// once a second costs nothing measurable and catches every way of replacing them (in-place
/// writes, renames, Kubernetes secret symlink swaps), which file-event APIs do not all report.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

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

/// The crypto provider used everywhere: ring (no cmake/nasm needed to build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why certificates or a CA file could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {} is not valid PEM: {detail}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("certificate file {} holds no certificate (expected a PEM `BEGIN CERTIFICATE` block, leaf first)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("certificate file {}: the first certificate cannot be parsed: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("private key file {} holds no private key (expected PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)", path.display())]
    NoKey { path: PathBuf },
    #[error("private key file {}: unsupported or invalid key: {detail}", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("private key file {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("CA file {} holds no usable CA certificate{detail}", path.display())]
    NoCa { path: PathBuf, detail: String },
    #[error("a TLS listener needs at least one certificate")]
    NoCertificates,
    #[error("TLS settings rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

// ---------------------------------------------------------------------------------------
// Certificates and SNI
// ---------------------------------------------------------------------------------------

/// One loaded certificate chain with its key and the names it serves.
#[derive(Debug)]
struct LoadedCert {
    key: Arc<CertifiedKey>,
    /// Lower-case DNS names (`a.example.com`, `*.example.com`).
    names: Vec<String>,
}

/// Load a certificate chain and its key from PEM text; `cert_path`/`key_path` are for
/// messages only.
fn load_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate file", cert_path, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let names = cert_names(leaf).map_err(|detail| TlsError::BadCertificate {
        path: cert_path.to_path_buf(),
        detail,
    })?;
    let key_der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key_path.to_path_buf(),
            })
        }
        Err(e) => return Err(pem_error("private key file", key_path, e)),
    };
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_path_buf(),
                detail: e.to_string(),
            })
        }
    }
    Ok(LoadedCert {
        key: Arc::new(key),
        names,
    })
}

fn pem_error(what: &'static str, path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        detail: match e {
            pem::Error::MissingSectionEnd { end_marker } => format!(
                "a section is not closed (missing `{}`)",
                String::from_utf8_lossy(&end_marker)
            ),
            pem::Error::IllegalSectionStart { line } => {
                format!("bad section start `{}`", String::from_utf8_lossy(&line))
            }
            pem::Error::Base64Decode(d) => format!("bad base64: {d}"),
            other => other.to_string(),
        },
    }
}

/// The DNS names a certificate serves: its SAN DNS names, or else its subject CN.
fn cert_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("{e:?}"))?;
    let mut names: Vec<String> = ee
        .valid_dns_names()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if names.is_empty() {
        if let Some(cn) = subject_common_name(ee.subject()) {
            let cn = cn.trim_end_matches('.').to_ascii_lowercase();
            if looks_like_dns_name(&cn) {
                names.push(cn);
            }
        }
    }
    names.dedup();
    Ok(names)
}

fn looks_like_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The commonName of an X.509 Name (the DER contents of its outer SEQUENCE).
fn subject_common_name(name: &[u8]) -> Option<String> {
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = name;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_next(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, rest) = der_next(atvs)?;
            atvs = rest;
            if tag != 0x30 {
                return None;
            }
            let (otag, oid, rest) = der_next(atv)?;
            if otag != 0x06 || oid != CN_OID {
                continue;
            }
            let (_, value, _) = der_next(rest)?;
            return std::str::from_utf8(value).ok().map(str::to_string);
        }
    }
    None
}

/// One DER TLV: (tag, contents, rest). Short and long definite lengths only.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

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

// ---------------------------------------------------------------------------------------
// Loading from files
// ---------------------------------------------------------------------------------------

/// Where one certificate pair is read from (absolute or resolved against the config dir).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PairSource {
    cert: PathBuf,
    key: PathBuf,
}

fn sources(cfg: &ListenerTlsConfig, base_dir: &Path) -> Vec<PairSource> {
    cfg.certificates
        .iter()
        .map(|c| PairSource {
            cert: crate::config::validate::resolve_path(base_dir, &c.cert),
            key: crate::config::validate::resolve_path(base_dir, &c.key),
        })
        .collect()
}

/// The bytes of every file of a certificate list, read at one moment.
struct FileContents {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    fingerprint: u64,
}

fn read_all(sources: &[PairSource]) -> Result<FileContents, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut pairs = Vec::with_capacity(sources.len());
    for s in sources {
        let cert = read("certificate file", &s.cert)?;
        let key = read("private key file", &s.key)?;
        cert.hash(&mut hasher);
        key.hash(&mut hasher);
        pairs.push((cert, key));
    }
    Ok(FileContents {
        pairs,
        fingerprint: hasher.finish(),
    })
}

fn build_set(
    sources: &[PairSource],
    contents: &FileContents,
    provider: &CryptoProvider,
) -> Result<CertSet, TlsError> {
    let certs = sources
        .iter()
        .zip(&contents.pairs)
        .map(|(s, (c, k))| load_pair(&s.cert, c, &s.key, k, provider))
        .collect::<Result<Vec<_>, _>>()?;
    CertSet::new(certs)
}

/// A listener's certificates loaded and checked, not yet in use: the first half of a
/// reload, so that a supervisor reloading several listeners can load them all before
/// installing any ([`TlsTerminator::install`]).
pub struct PreparedCerts {
    sources: Vec<PairSource>,
    fingerprint: u64,
    set: CertSet,
}

impl fmt::Debug for PreparedCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedCerts")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// Load and check a listener's certificate list (paths relative to `base_dir`).
pub fn prepare(cfg: &ListenerTlsConfig, base_dir: &Path) -> Result<PreparedCerts, TlsError> {
    let sources = sources(cfg, base_dir);
    let contents = read_all(&sources)?;
    let set = build_set(&sources, &contents, &provider())?;
    Ok(PreparedCerts {
        sources,
        fingerprint: contents.fingerprint,
        set,
    })
}

/// Parse a certificate/key pair as start-up would, for `switchyard check` and reloads.
/// `Err` is a message naming the file.
pub fn check_certificate_pair(cert: &Path, key: &Path) -> Result<(), String> {
    let sources = [PairSource {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    }];
    let contents = read_all(&sources).map_err(|e| e.to_string())?;
    build_set(&sources, &contents, &provider())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Parse a CA file as a pool's TLS client would. `Err` is a message naming the file.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    let pem = std::fs::read(path).map_err(|source| {
        TlsError::Read {
            what: "CA file",
            path: path.to_path_buf(),
            source,
        }
        .to_string()
    })?;
    ca_roots(path, &pem).map(|_| ()).map_err(|e| e.to_string())
}

/// Every TLS problem in a config that the schema checks cannot see (unparsable PEM, keys
/// that do not match, CA files without certificates), as `KEY.PATH: message` lines. Empty
/// when everything loads. Paths resolve against `base_dir`.
pub fn validate_config(cfg: &Config, base_dir: &Path) -> Vec<String> {
    let resolve = |p: &Path| crate::config::validate::resolve_path(base_dir, p);
    let mut out = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        for (k, c) in tls.certificates.iter().enumerate() {
            if let Err(e) = check_certificate_pair(&resolve(&c.cert), &resolve(&c.key)) {
                out.push(format!("listeners[{i}].tls.certificates[{k}]: {e}"));
            }
        }
    }
    for (name, pool) in &cfg.pools {
        if let Some(ca) = pool.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            if let Err(e) = check_ca_file(&resolve(ca)) {
                out.push(format!("pools.{name}.tls.ca_file: {e}"));
            }
        }
    }
    out
}

/// [`validate_config`] for a loaded config.
pub fn validate_loaded(loaded: &LoadedConfig) -> Vec<String> {
    validate_config(&loaded.config, &loaded.base_dir)
}

// ---------------------------------------------------------------------------------------
// The terminator
// ---------------------------------------------------------------------------------------

/// Handshake failure reasons: the `reason` label values, a small fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client spoke something other than TLS (plain HTTP on the TLS port).
    NoTls,
    /// The client offered only TLS versions below 1.2.
    ProtocolVersion,
    /// No cipher suite, group or signature scheme in common.
    Incompatible,
    /// The client rejected our certificate (an alert such as `unknown_ca`).
    CertRejected,
    /// The handshake did not finish within `limits.header_read_timeout`.
    Timeout,
    /// The client closed or reset the connection during the handshake.
    Eof,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::NoTls,
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::Incompatible,
        HandshakeFailure::CertRejected,
        HandshakeFailure::Timeout,
        HandshakeFailure::Eof,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoTls => "no_tls",
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::CertRejected => "cert_rejected",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Other => "other",
        }
    }

    fn index(self) -> usize {
        HandshakeFailure::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(HandshakeFailure::ALL.len() - 1)
    }

    /// Sort an error from the handshake.
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
                rustls::Error::AlertReceived(A::ProtocolVersion) => {
                    HandshakeFailure::ProtocolVersion
                }
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
}

/// TLS for one listener: the acceptor, its swappable certificates, and their files.
pub struct TlsTerminator {
    /// The listener's name, for logs.
    listener: String,
    acceptor: TlsAcceptor,
    /// Shared with the `ServerConfig` inside `acceptor`; swapping its set is the reload.
    resolver: Arc<SniResolver>,
    /// What the current set was loaded from. A lock, not a swap: only reloads (config or
    /// file watch, rare) touch it, never a handshake.
    loaded: Mutex<Loaded>,
    /// Handshake failure counters, one per reason, resolved once.
    errors: [IntCounter; 7],
}

#[derive(Debug)]
struct Loaded {
    sources: Vec<PairSource>,
    /// Hash of the bytes the current set was built from.
    fingerprint: u64,
    /// Bumped on each install, so a watch round that raced a config reload backs off.
    generation: u64,
}

impl fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TlsTerminator {
    /// Load a listener's certificates (paths relative to `base_dir`, the config file's
    /// directory) and build its TLS settings. An error names the file at fault.
    pub fn new(
        listener: &str,
        cfg: &ListenerTlsConfig,
        base_dir: &Path,
        metrics: &Metrics,
    ) -> Result<Arc<TlsTerminator>, TlsError> {
        let prepared = prepare(cfg, base_dir)?;
        TlsTerminator::from_prepared(listener, prepared, metrics)
    }

    /// [`TlsTerminator::new`] from certificates already loaded with [`prepare`].
    pub fn from_prepared(
        listener: &str,
        prepared: PreparedCerts,
        metrics: &Metrics,
    ) -> Result<Arc<TlsTerminator>, TlsError> {
        log_names(listener, &prepared, "TLS certificates loaded");
        let resolver = Arc::new(SniResolver {
            set: ArcSwap::from_pointee(prepared.set),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        // Stateless resumption tickets (keys rotate every 6 hours, kept in memory only).
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let errors = HandshakeFailure::ALL.map(|r| metrics.tls_handshake_errors(r.as_str()));
        Ok(Arc::new(TlsTerminator {
            listener: listener.to_string(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            loaded: Mutex::new(Loaded {
                sources: prepared.sources,
                fingerprint: prepared.fingerprint,
                generation: 0,
            }),
            errors,
        }))
    }

    /// Load `cfg`'s certificates and use them for every new handshake; on error nothing
    /// changes and the current certificates keep serving. For config reloads; the file
    /// watch ([`TlsTerminator::watch`]) follows the new paths from then on.
    pub fn reload(&self, cfg: &ListenerTlsConfig, base_dir: &Path) -> Result<(), TlsError> {
        let prepared = prepare(cfg, base_dir)?;
        self.install(prepared);
        Ok(())
    }

    /// Use certificates loaded with [`prepare`] for every new handshake.
    pub fn install(&self, prepared: PreparedCerts) {
        let mut loaded = lock(&self.loaded);
        if loaded.sources == prepared.sources && loaded.fingerprint == prepared.fingerprint {
            return; // same files, same bytes: nothing to do
        }
        log_names(&self.listener, &prepared, "TLS certificates reloaded");
        self.resolver.set.store(Arc::new(prepared.set));
        loaded.sources = prepared.sources;
        loaded.fingerprint = prepared.fingerprint;
        loaded.generation += 1;
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
                self.errors[reason.index()].inc();
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
            Err(e) => return Err((HandshakeFailure::classify(&e), Some(e))),
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
            .map_err(|e| (HandshakeFailure::classify(&e), Some(e)))
    }

    /// Poll the certificate and key files every [`WATCH_INTERVAL`] until `shutdown`, and
    /// reload when their contents changed and stayed the same for one more poll.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken, tracker: &TaskTracker) {
        let this = Arc::clone(self);
        tracker.spawn(async move {
            let mut watch = WatchState::default();
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let me = Arc::clone(&this);
                let w = std::mem::take(&mut watch);
                match tokio::task::spawn_blocking(move || me.poll_files(w)).await {
                    Ok(w) => watch = w,
                    Err(e) => tracing::error!(listener = %this.listener, error = %e, "certificate watch round failed"),
                }
            }
        });
    }

    /// One watch round (blocking file reads; run off the async workers).
    fn poll_files(&self, mut w: WatchState) -> WatchState {
        let (sources, fingerprint, generation) = {
            let l = lock(&self.loaded);
            (l.sources.clone(), l.fingerprint, l.generation)
        };
        let contents = match read_all(&sources) {
            Ok(c) => c,
            Err(e) => {
                // Often transient (a file being replaced); say it once per distinct error.
                let msg = e.to_string();
                if w.read_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(listener = %self.listener, error = %msg, "cannot read a certificate file; the certificates in use keep serving");
                    w.read_error = Some(msg);
                }
                w.pending = None;
                return w;
            }
        };
        w.read_error = None;
        if contents.fingerprint == fingerprint {
            w.pending = None;
            return w;
        }
        if w.pending != Some(contents.fingerprint) {
            // Changed since the last look: wait one round for the writer to finish.
            w.pending = Some(contents.fingerprint);
            return w;
        }
        if w.failed == Some(contents.fingerprint) {
            return w; // this content was already tried and rejected
        }
        match build_set(&sources, &contents, &provider()) {
            Ok(set) => {
                let mut l = lock(&self.loaded);
                if l.generation != generation {
                    return w; // a config reload installed something newer meanwhile
                }
                let prepared = PreparedCerts {
                    sources,
                    fingerprint: contents.fingerprint,
                    set,
                };
                log_names(
                    &self.listener,
                    &prepared,
                    "TLS certificates reloaded from disk",
                );
                self.resolver.set.store(Arc::new(prepared.set));
                l.fingerprint = prepared.fingerprint;
                l.generation += 1;
                w.pending = None;
                w.failed = None;
            }
            Err(e) => {
                tracing::error!(listener = %self.listener, error = %e, "changed certificate files rejected; the certificates in use keep serving");
                w.failed = Some(contents.fingerprint);
            }
        }
        w
    }
}

/// What the file watch remembers between rounds.
#[derive(Debug, Default)]
struct WatchState {
    /// Fingerprint of changed contents seen last round, not yet loaded.
    pending: Option<u64>,
    /// Fingerprint of contents that failed to load (not retried until they change).
    failed: Option<u64>,
    /// The last read error logged.
    read_error: Option<String>,
}

fn log_names(listener: &str, prepared: &PreparedCerts, message: &'static str) {
    for (src, names) in prepared.sources.iter().zip(prepared.set.names()) {
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

// ---------------------------------------------------------------------------------------
// Upstream (client) side
// ---------------------------------------------------------------------------------------

/// Parse a CA file: every certificate in it becomes a trust anchor.
fn ca_roots(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<rustls_pki_types::TrustAnchor<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("CA file", path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCa {
            path: path.to_path_buf(),
            detail: " (expected PEM `BEGIN CERTIFICATE` blocks)".to_string(),
        });
    }
    certs
        .iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| TlsError::NoCa {
                    path: path.to_path_buf(),
                    detail: format!(": a certificate cannot be parsed: {e:?}"),
                })
        })
        .collect()
}

/// The rustls client settings of a pool with a `tls` section. `ca_pem` is the content of
/// `tls.ca_file` (read by the caller, so that a changed file can be told apart), resolved
/// to `ca_path` for messages.
pub fn client_config(
    insecure_skip_verify: bool,
    ca: Option<(&Path, &[u8])>,
    h2: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = if insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some((path, pem)) = ca {
            roots.roots.extend(ca_roots(path, pem)?);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = if h2 {
        vec![ALPN_H2.to_vec()]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    };
    Ok(Arc::new(config))
}

/// The default name to verify an upstream node as: the host of its configured `host:port`
/// (an IP address is verified against the certificate's IP addresses).
pub fn node_server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// `insecure_skip_verify`: accept any certificate. Handshake signatures are still checked
/// (they prove nothing without a trusted certificate, but a broken peer still fails).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    fn loaded(names: &[&str]) -> LoadedCert {
        let (c, k) = cert(names);
        load_pair(
            Path::new("c.pem"),
            c.as_bytes(),
            Path::new("k.pem"),
            k.as_bytes(),
            &provider(),
        )
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
    fn common_name_is_used_without_sans() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cn-only.test");
        let kp = rcgen::KeyPair::generate().unwrap();
        let c = params.self_signed(&kp).unwrap();
        let l = load_pair(
            Path::new("c"),
            c.pem().as_bytes(),
            Path::new("k"),
            kp.serialize_pem().as_bytes(),
            &provider(),
        )
        .unwrap();
        assert_eq!(l.names, ["cn-only.test"]);
    }

    #[test]
    fn broken_pairs_name_the_file() {
        let (c1, _k1) = cert(&["one.test"]);
        let (_c2, k2) = cert(&["two.test"]);
        let p = provider();
        let e = load_pair(
            Path::new("/x/one.pem"),
            c1.as_bytes(),
            Path::new("/x/two.key"),
            k2.as_bytes(),
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/x/two.key") && e.contains("does not belong"),
            "{e}"
        );
        let e = load_pair(
            Path::new("/x/c.pem"),
            b"junk",
            Path::new("/x/k"),
            k2.as_bytes(),
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/x/c.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = load_pair(
            Path::new("/x/c.pem"),
            c1.as_bytes(),
            Path::new("/x/k.pem"),
            c1.as_bytes(),
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/x/k.pem") && e.contains("no private key"),
            "{e}"
        );
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = load_pair(
            Path::new("/x/c.pem"),
            bad.as_bytes(),
            Path::new("/x/k"),
            k2.as_bytes(),
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/x/c.pem") && e.contains("PEM"), "{e}");
    }

    #[test]
    fn pkcs1_pkcs8_and_sec1_keys_load() {
        // rcgen writes PKCS#8; SEC1 and PKCS#1 are the same keys with other PEM labels and
        // wrappings, produced here by openssl when it is installed.
        let (c, k) = cert(&["k.test"]);
        let p = provider();
        load_pair(
            Path::new("c"),
            c.as_bytes(),
            Path::new("k"),
            k.as_bytes(),
            &p,
        )
        .unwrap();
        let Ok(out) = std::process::Command::new("openssl")
            .args(["ec", "-inform", "PEM", "-outform", "PEM"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(k.as_bytes())?;
                child.wait_with_output()
            })
        else {
            return;
        };
        let sec1 = String::from_utf8(out.stdout).unwrap();
        assert!(sec1.contains("BEGIN EC PRIVATE KEY"), "{sec1}");
        load_pair(
            Path::new("c"),
            c.as_bytes(),
            Path::new("k"),
            sec1.as_bytes(),
            &p,
        )
        .unwrap();

        // RSA with a PKCS#1 key (`BEGIN RSA PRIVATE KEY`), as older tools write it.
        let dir = std::env::temp_dir().join(format!("switchyard-tls-rsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("sh")
            .current_dir(&dir)
            .arg("-c")
            .arg(
                "openssl req -x509 -newkey rsa:2048 -nodes -keyout k8.pem -out c.pem -days 1 \
                 -subj /CN=rsa.test -addext subjectAltName=DNS:rsa.test 2>/dev/null && \
                 openssl rsa -in k8.pem -traditional -out k1.pem 2>/dev/null",
            )
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let c = std::fs::read(dir.join("c.pem")).unwrap();
            let k1 = std::fs::read(dir.join("k1.pem")).unwrap();
            assert!(String::from_utf8_lossy(&k1).contains("BEGIN RSA PRIVATE KEY"));
            let l = load_pair(Path::new("c"), &c, Path::new("k"), &k1, &p).unwrap();
            assert_eq!(l.names, ["rsa.test"]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn handshake_errors_are_classified() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            HandshakeFailure::classify(&wrap(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered
            ))),
            HandshakeFailure::ProtocolVersion
        );
        assert_eq!(
            HandshakeFailure::classify(&wrap(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))),
            HandshakeFailure::CertRejected
        );
        assert_eq!(
            HandshakeFailure::classify(&io::Error::from(io::ErrorKind::UnexpectedEof)),
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
            crate::config::CertificateConfig {
                cert: PathBuf::from(format!("{name}.pem")),
                key: PathBuf::from(format!("{name}.key")),
            }
        };
        let first = ListenerTlsConfig {
            certificates: vec![write("a", &["a.test"])],
        };
        let t = TlsTerminator::new("l", &first, &dir, &Metrics::new()).unwrap();
        assert_eq!(t.names(), [["a.test"]]);

        let mut broken = write("b", &["b.test"]);
        broken.key = PathBuf::from("a.key");
        let e = t
            .reload(
                &ListenerTlsConfig {
                    certificates: vec![broken],
                },
                &dir,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.key") && e.contains("b.pem"), "{e}");
        assert_eq!(t.names(), [["a.test"]], "the old certificates keep serving");

        let next = ListenerTlsConfig {
            certificates: vec![write("c", &["c.test"]), write("d", &["*.d.test"])],
        };
        t.reload(&next, &dir).unwrap();
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

    #[test]
    fn node_names() {
        assert_eq!(
            node_server_name("backend.internal:8443"),
            Some(ServerName::try_from("backend.internal").unwrap())
        );
        assert!(matches!(
            node_server_name("10.0.0.1:443"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            node_server_name("[::1]:443"),
            Some(ServerName::IpAddress(_))
        ));
    }

    #[test]
    fn subject_cn_parser_survives_garbage() {
        assert_eq!(subject_common_name(&[0x31, 0x05, 0x30]), None);
        assert_eq!(der_next(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
