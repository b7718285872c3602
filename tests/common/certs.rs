//! Certificates made in the tests with rcgen: self-signed ones, and a private CA with the
//! leaves it signs (for clients that verify, such as an HTTPS upstream or a gRPC client
//! given a CA file).

use std::path::{Path, PathBuf};

/// A certificate and its key, PEM, plus the leaf's DER to compare with what was served.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

/// A self-signed certificate for `names`.
pub fn self_signed(names: &[&str]) -> Pem {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("rcgen self-signed");
    Pem {
        cert: c.cert.pem(),
        key: c.key_pair.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

/// A private certificate authority that signs leaf certificates for the tests.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

pub fn private_ca() -> Ca {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Switchyard Test CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().expect("CA key");
    let cert = p.self_signed(&key).expect("CA cert");
    Ca { cert, key }
}

/// A leaf certificate for `names` signed by `ca`.
pub fn signed_by(ca: &Ca, names: &[&str]) -> Pem {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let p = rcgen::CertificateParams::new(names).expect("params");
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let cert = p.signed_by(&key, &ca.cert, &ca.key).expect("leaf cert");
    // The chain: leaf, then the CA (harmless, and how real chains look).
    Pem {
        cert: format!("{}{}", cert.pem(), ca.cert.pem()),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Write `pem` as `NAME.pem` / `NAME.key` in `dir`.
pub fn write_pair(dir: &Path, name: &str, pem: &Pem) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &pem.cert).expect("write cert");
    std::fs::write(&key, &pem.key).expect("write key");
    (cert, key)
}
