//! TLS policy for vCenter connections.
//!
//! By default the certificate is verified against the system roots (reqwest's built-in
//! webpki roots) or a given CA bundle. A SHA-256 (or legacy SHA-1) thumbprint pins the exact
//! certificate instead, the way govc and Forklift pin vCenter: the chain is not checked, the
//! leaf must match. `insecure` accepts anything and is logged as a warning by the caller.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// How to trust the server certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// PEM bundle to verify against instead of the system roots.
    pub ca_pem: Option<String>,
    /// Pinned certificate thumbprint, SHA-256 (or SHA-1), hex with or without colons.
    pub thumbprint: Option<String>,
    /// Accept any certificate.
    pub insecure: bool,
}

/// Parse a thumbprint (`AB:CD:..`, `abcd..`) into bytes: 32 (SHA-256) or 20 (SHA-1).
///
/// # Errors
/// A description when it is not hex or not 20/32 bytes long.
pub fn parse_thumbprint(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !matches!(c, ':' | ' ' | '-')).collect();
    let bytes = hex::decode(&clean).map_err(|e| format!("thumbprint is not hex: {e}"))?;
    match bytes.len() {
        20 | 32 => Ok(bytes),
        n => Err(format!("thumbprint has {n} bytes; want 32 (SHA-256) or 20 (SHA-1)")),
    }
}

/// Colon-separated upper-case hex, the form vCenter and VDDK print.
pub fn format_thumbprint(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// SHA-256 thumbprint of a DER certificate.
pub fn sha256_thumbprint(der: &[u8]) -> String {
    format_thumbprint(&Sha256::digest(der))
}

/// SHA-1 thumbprint of a DER certificate (what VDDK's `thumbprint=` wants).
pub fn sha1_thumbprint(der: &[u8]) -> String {
    format_thumbprint(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// Verifier for pinned or insecure connections.
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: Option<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier accepting only the certificate with this thumbprint, or anything when `None`.
    pub fn new(expected: Option<Vec<u8>>) -> Self {
        PinnedVerifier { expected, provider: Arc::new(rustls::crypto::ring::default_provider()) }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(expected) = &self.expected else { return Ok(ServerCertVerified::assertion()) };
        let actual: Vec<u8> = if expected.len() == 20 {
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, end_entity).as_ref().to_vec()
        } else {
            Sha256::digest(end_entity.as_ref()).to_vec()
        };
        if &actual == expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate thumbprint {} does not match the pinned {}",
                format_thumbprint(&actual),
                format_thumbprint(expected)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Apply the policy to a reqwest builder.
///
/// # Errors
/// A description of a bad thumbprint or CA bundle.
pub fn apply(policy: &TlsPolicy, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
    if policy.insecure || policy.thumbprint.is_some() {
        let expected = match (&policy.thumbprint, policy.insecure) {
            (Some(t), _) => Some(parse_thumbprint(t)?),
            (None, _) => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(expected)))
            .with_no_client_auth();
        return Ok(builder.use_preconfigured_tls(config));
    }
    if let Some(pem) = &policy.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| format!("ca bundle: {e}"))?;
        if certs.is_empty() {
            return Err("ca bundle holds no certificate".into());
        }
        let mut b = builder.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
        return Ok(b);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_and_format() {
        let t = "AB:".repeat(31) + "AB";
        assert_eq!(parse_thumbprint(&t).expect("sha256").len(), 32);
        assert_eq!(parse_thumbprint(&"ab".repeat(20)).expect("sha1").len(), 20);
        assert!(parse_thumbprint("zz").is_err());
        assert!(parse_thumbprint("abcd").is_err());
        assert_eq!(format_thumbprint(&[0xab, 0x01]), "AB:01");
        assert_eq!(sha1_thumbprint(b"abc"), "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D");
    }
}
