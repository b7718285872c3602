//! The rustls client of a pool with a `tls` section: HTTPS (and h2 by ALPN) to its nodes.
//!
//! Verification uses Mozilla's roots (webpki-roots) plus the pool's CA file, loaded and
//! checked by config validation ([`CaFile`]); or nothing at all with `insecure_skip_verify`
//! (the upstream layer logs a warning when it builds such a client). ALPN offers exactly the
//! pool's `upstream_protocol`. The connector that uses this lives in the upstream layer.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::tls::certs::{CaFile, TlsError};
use crate::tls::protocol::{provider, ALPN_H2, ALPN_HTTP11, VERSIONS};

/// The rustls client settings of a pool with a `tls` section.
pub fn client_config(
    insecure_skip_verify: bool,
    ca: Option<&CaFile>,
    h2: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(VERSIONS)?;
    let mut config = if insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = ca {
            roots.roots.extend(ca.roots().iter().cloned());
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
}
