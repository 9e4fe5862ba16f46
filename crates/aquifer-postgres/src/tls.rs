//! Encrypted connections with rustls (feature `tls`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a TLS setup could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM text held no certificate.
    #[error("no certificate found in the CA PEM")]
    NoCertificate,
    /// A certificate could not be read or trusted.
    #[error("the CA certificate cannot be used: {0}")]
    BadCertificate(String),
    /// rustls refused the configuration.
    #[error("TLS setup failed")]
    Rustls(#[from] rustls::Error),
}

/// The provider every aquifer TLS config uses, named explicitly so that an
/// application that also enables another rustls provider does not hit
/// rustls's "no default provider" panic.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?)
}

/// Verifies the server's certificate against `ca_pem` and its host name
/// (libpq's `verify-full`).
pub(crate) fn verified(ca_pem: &[u8]) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut found = false;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        found = true;
    }
    if !found {
        return Err(TlsError::NoCertificate);
    }
    Ok(builder()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Encrypts but accepts any certificate (libpq's `sslmode=require`): safe
/// against eavesdropping, not against an active man in the middle.
pub(crate) fn unverified() -> Result<ClientConfig, TlsError> {
    Ok(builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth())
}

/// Accepts whatever certificate the server shows, but still checks that the
/// handshake is signed by it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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
