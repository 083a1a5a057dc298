//! Trust decisions for the TLS peers (HTTPS sources and their datastores, `nbds://` servers), so a CA
//! bundle, a SHA-256 thumbprint pin and `insecure` mean the same everywhere.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};

/// How to trust a TLS server. With nothing set, HTTPS uses the built-in web PKI roots; `nbds://`
/// wants one of the three (there is no public PKI for NBD servers).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra trusted CA certificates (PEM, one or more).
    pub ca_pem: Option<Vec<u8>>,
    /// Pin the server's leaf certificate by SHA-256 (`"AB:CD:..."`, colons and case optional):
    /// exactly that certificate is accepted, self-signed or not, and nothing else. A 40-digit
    /// SHA-1 thumbprint (what older govc and vCenter UIs print) is accepted too.
    pub thumbprint_sha256: Option<String>,
    /// Accept any certificate. For throwaway labs only; a pin is nearly as easy and safe.
    pub insecure: bool,
}

/// The pin as lowercase hex without separators, checked to be a SHA-256 or SHA-1 digest.
pub(crate) fn normalise_thumbprint(t: &str) -> Result<String> {
    let hex: String = t.chars().filter(|c| !matches!(c, ':' | ' ' | '-')).collect::<String>().to_ascii_lowercase();
    if !matches!(hex.len(), 64 | 40) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::new(
            ErrorCode::BadUrl,
            "tls thumbprint is not a sha-256 (64 hex digits) or sha-1 (40 hex digits) digest",
        ));
    }
    Ok(hex)
}

/// The SHA-256 thumbprint of a DER certificate as `AB:CD:...`, the form hypervisor managers show.
pub fn thumbprint_sha256(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The SHA-1 thumbprint of a DER certificate as `AB:CD:...`: what VDDK's `thumbprint=` and
/// older tools want. Never used to trust anything on its own account.
pub fn thumbprint_sha1(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Accepts exactly the leaf certificate with the pinned SHA-256 (or SHA-1), or any certificate
/// when there is no pin (`insecure`); handshake signatures are checked either way, so the peer
/// must hold the certificate's key.
#[derive(Debug)]
pub(crate) struct LeafVerifier {
    /// Lowercase hex, no separators ([`normalise_thumbprint`]); `None` accepts any certificate.
    pub(crate) pin_hex: Option<String>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LeafVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(pin_hex) = &self.pin_hex else { return Ok(ServerCertVerified::assertion()) };
        let got = if pin_hex.len() == 40 {
            hex::encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, end_entity.as_ref()))
        } else {
            hex::encode(Sha256::digest(end_entity.as_ref()))
        };
        if &got == pin_hex {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(expected = %pin_hex, got = %got, "tls thumbprint mismatch");
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client certificate chain and its private key, both PEM, for servers that verify clients.
#[derive(Clone)]
pub struct ClientCertificate {
    /// The certificate chain, leaf first.
    pub chain_pem: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("chain_pem", &self.chain_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadUrl, msg)
}

/// A rustls client configuration for a peer without a public PKI (an `nbds://` server): trust
/// from `tls` (a pin wins over a CA bundle; `insecure` only when asked), plus an optional client
/// certificate.
///
/// # Errors
/// [`ErrorCode::BadUrl`] when `tls` names no trust at all, or for an unparsable CA bundle,
/// thumbprint, certificate or key; [`ErrorCode::Internal`] if the TLS stack cannot be set up.
pub fn client_config(tls: &TlsOptions, client: Option<&ClientCertificate>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorCode::Internal, "setting up tls").with_source(e))?;
    let builder = if let Some(pin) = &tls.thumbprint_sha256 {
        let pin_hex = normalise_thumbprint(pin)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LeafVerifier { pin_hex: Some(pin_hex), provider }))
    } else if let Some(pem) = &tls.ca_pem {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| bad(format!("tls ca bundle is not valid pem: {e}")))?;
            roots.add(c).map_err(|e| bad("tls ca bundle holds an unusable certificate").with_source(e))?;
        }
        if roots.is_empty() {
            return Err(bad("tls ca bundle holds no certificate"));
        }
        builder.with_root_certificates(roots)
    } else if tls.insecure {
        tracing::warn!("tls verification disabled");
        builder.dangerous().with_custom_certificate_verifier(Arc::new(LeafVerifier { pin_hex: None, provider }))
    } else {
        return Err(bad("tls needs a ca bundle, a thumbprint pin, or insecure"));
    };
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(&c.chain_pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("tls client certificate is not valid pem: {e}")))?;
            if chain.is_empty() {
                return Err(bad("tls client certificate file holds no certificate"));
            }
            let key = PrivateKeyDer::from_pem_slice(&c.key_pem)
                .map_err(|e| bad(format!("tls client key is not a valid pem private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("tls client certificate and key do not match").with_source(e))
        }
    }
}
