//! Certificates, keys and CA files: reading them, parsing them, and every check on them.
//!
//! This is the one place their files are read and parsed. Config validation loads each
//! listener's certificate list and each pool's CA file through here, and what it loaded is
//! what runs: the terminator ([`crate::tls::server`]) serves the [`Certificates`] that were
//! checked, and the upstream client ([`crate::tls::client`]) trusts the [`CaFile`] that was
//! checked. The certificate-file watch reloads through here too.
//!
//! The checks: a file must be a regular file (a FIFO would block the open until a writer
//! came, and a device such as `/dev/zero` would be read without end); PEM must parse; a
//! certificate file holds its chain leaf first; a key (PKCS#8, PKCS#1 or SEC1) must load and
//! belong to the certificate; a CA file holds at least one usable CA certificate. Every error
//! names the file. A certificate's names — its DNS subject alternative names, or its subject
//! CN when it has none — are read here for SNI. Nothing here knows the config's types.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};

use crate::tls::protocol::provider;

/// Why a certificate, key or CA file could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: FileProblem,
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

/// Why a file cannot be read at all, before its content is looked at.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("it is a directory, not a file")]
    Directory,
    #[error("it is not a regular file")]
    NotRegular,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Check that `path` is a regular file that can be opened (without reading it).
pub fn check_file(path: &Path) -> Result<(), FileProblem> {
    regular(path)?;
    File::open(path)?;
    Ok(())
}

fn regular(path: &Path) -> Result<(), FileProblem> {
    let m = std::fs::metadata(path)?;
    if m.is_dir() {
        Err(FileProblem::Directory)
    } else if !m.is_file() {
        Err(FileProblem::NotRegular)
    } else {
        Ok(())
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = || -> Result<Vec<u8>, FileProblem> {
        regular(path)?;
        Ok(std::fs::read(path)?)
    };
    read().map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

// ---- certificate lists ------------------------------------------------------------------

/// Where one certificate pair is read from (absolute, or resolved against the config
/// file's directory by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One loaded certificate chain with its key and the names it serves.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub(crate) key: Arc<CertifiedKey>,
    /// Lower-case DNS names (`a.example.com`, `*.example.com`).
    pub(crate) names: Vec<String>,
}

/// One pair loaded on its own (config validation loads pair by pair, to tie each error to
/// its key in the file).
#[derive(Debug, Clone)]
pub struct LoadedPair {
    source: CertSource,
    cert: LoadedCert,
    /// Hash of the two files' bytes.
    content: u64,
}

/// Read and parse one pair.
pub fn load_pair(source: &CertSource) -> Result<LoadedPair, TlsError> {
    let files = read_pair(source)?;
    let content = files.hash();
    let cert = parse_pair(source, &files.cert, &files.key, &provider())?;
    Ok(LoadedPair {
        source: source.clone(),
        cert,
        content,
    })
}

/// A listener's certificate list, loaded and checked: what its terminator serves.
#[derive(Debug, Clone)]
pub struct Certificates {
    sources: Vec<CertSource>,
    /// Identifies the bytes the list was built from ([`FileSet::fingerprint`]).
    fingerprint: u64,
    certs: Vec<LoadedCert>,
}

impl Certificates {
    /// Read and load every pair of `sources`.
    pub fn load(sources: Vec<CertSource>) -> Result<Certificates, TlsError> {
        read_files(sources)?.load()
    }

    /// The list of pairs loaded one by one with [`load_pair`].
    pub fn from_pairs(pairs: Vec<LoadedPair>) -> Result<Certificates, TlsError> {
        if pairs.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let fingerprint = fingerprint(pairs.iter().map(|p| p.content));
        let (sources, certs) = pairs.into_iter().map(|p| (p.source, p.cert)).unzip();
        Ok(Certificates {
            sources,
            fingerprint,
            certs,
        })
    }

    pub fn sources(&self) -> &[CertSource] {
        &self.sources
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub(crate) fn certs(&self) -> &[LoadedCert] {
        &self.certs
    }

    /// Names per certificate, in list order.
    pub fn names(&self) -> Vec<Vec<String>> {
        self.certs.iter().map(|c| c.names.clone()).collect()
    }
}

/// What a listener's certificate and key files hold at one moment, read but not parsed:
/// the file watch compares fingerprints and parses only what it means to load.
pub struct FileSet {
    sources: Vec<CertSource>,
    files: Vec<PairFiles>,
    fingerprint: u64,
}

struct PairFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PairFiles {
    fn hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.cert.hash(&mut h);
        self.key.hash(&mut h);
        h.finish()
    }
}

fn fingerprint(pairs: impl Iterator<Item = u64>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in pairs {
        p.hash(&mut h);
    }
    h.finish()
}

fn read_pair(source: &CertSource) -> Result<PairFiles, TlsError> {
    Ok(PairFiles {
        cert: read_file("certificate file", &source.cert)?,
        key: read_file("private key file", &source.key)?,
    })
}

/// Read every file of a certificate list.
pub fn read_files(sources: Vec<CertSource>) -> Result<FileSet, TlsError> {
    let files = sources
        .iter()
        .map(read_pair)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FileSet {
        fingerprint: fingerprint(files.iter().map(PairFiles::hash)),
        sources,
        files,
    })
}

impl FileSet {
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Parse and check what was read.
    pub fn load(self) -> Result<Certificates, TlsError> {
        if self.sources.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let provider = provider();
        let certs = self
            .sources
            .iter()
            .zip(&self.files)
            .map(|(s, f)| parse_pair(s, &f.cert, &f.key, &provider))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Certificates {
            sources: self.sources,
            fingerprint: self.fingerprint,
            certs,
        })
    }
}

/// Parse a certificate chain and its key from PEM text; the source's paths are for
/// messages only.
pub(crate) fn parse_pair(
    source: &CertSource,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let (cert_path, key_path) = (&source.cert, &source.key);
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate file", cert_path, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.clone(),
        });
    };
    let names = cert_names(leaf).map_err(|e| TlsError::BadCertificate {
        path: cert_path.clone(),
        detail: format!("{e:?}"),
    })?;
    let key_der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key_path.clone(),
            })
        }
        Err(e) => return Err(pem_error("private key file", key_path, e)),
    };
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::BadKey {
            path: key_path.clone(),
            detail: e.to_string(),
        })?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.clone(),
                key: key_path.clone(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.clone(),
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
fn cert_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, webpki::Error> {
    let ee = webpki::EndEntityCert::try_from(leaf)?;
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

// ---- CA files -----------------------------------------------------------------------------

/// A pool's `tls.ca_file`, loaded: its trust anchors. Two loads compare equal when the
/// path and the bytes are the same, so a reload after the file changed builds a new client.
#[derive(Debug, Clone)]
pub struct CaFile {
    path: PathBuf,
    pem: Vec<u8>,
    roots: Vec<TrustAnchor<'static>>,
}

impl PartialEq for CaFile {
    fn eq(&self, other: &CaFile) -> bool {
        self.path == other.path && self.pem == other.pem
    }
}

impl Eq for CaFile {}

impl CaFile {
    /// Read and parse a CA file: every certificate in it becomes a trust anchor.
    pub fn load(path: &Path) -> Result<CaFile, TlsError> {
        let pem = read_file("CA file", path)?;
        let roots = ca_roots(path, &pem)?;
        Ok(CaFile {
            path: path.to_path_buf(),
            pem,
            roots,
        })
    }

    pub(crate) fn roots(&self) -> &[TrustAnchor<'static>] {
        &self.roots
    }
}

fn ca_roots(path: &Path, pem: &[u8]) -> Result<Vec<TrustAnchor<'static>>, TlsError> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `names` and its key, as PEM.
    pub(crate) fn cert(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    /// Parse a pair from PEM text; the paths are for messages only.
    fn load_pair(
        cert_path: &Path,
        cert_pem: &[u8],
        key_path: &Path,
        key_pem: &[u8],
        provider: &CryptoProvider,
    ) -> Result<LoadedCert, TlsError> {
        let source = CertSource {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        };
        parse_pair(&source, cert_pem, key_pem, provider)
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
    fn subject_cn_parser_survives_garbage() {
        assert_eq!(subject_common_name(&[0x31, 0x05, 0x30]), None);
        assert_eq!(der_next(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
