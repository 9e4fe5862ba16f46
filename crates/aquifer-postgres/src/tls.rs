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
    /// The root certificate file named by `sslrootcert` cannot be read.
    #[error("cannot read sslrootcert {path}")]
    RootFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No root certificate could be loaded from the system's store.
    #[error("no root certificates in the system's store: name a PEM file with sslrootcert=")]
    NoSystemRoots,
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

/// The certificates in `ca_pem`.
fn pem_roots(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(roots)
}

/// `sslrootcert`: a PEM file, or (`system`, or not given) the system's
/// root certificates.
fn roots(root: Option<&str>) -> Result<RootCertStore, TlsError> {
    match root {
        None | Some("system") => {
            let mut roots = RootCertStore::empty();
            // Certificates the store holds but rustls cannot use are left
            // out; the others are enough to verify with.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
            Ok(roots)
        }
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| TlsError::RootFile {
                path: path.to_owned(),
                source,
            })?;
            pem_roots(&pem)
        }
    }
}

/// The TLS a connection string asks for, in libpq's words: `require`
/// encrypts (and verifies the chain when `sslrootcert` names a file),
/// `verify-ca` verifies the chain, `verify-full` the chain and the host
/// name.
pub(crate) fn for_url(wanted: &crate::config::TlsWanted) -> Result<ClientConfig, TlsError> {
    use crate::config::TlsWanted;
    match wanted {
        TlsWanted::None | TlsWanted::Require(None) => unverified(),
        TlsWanted::Require(Some(root)) => chain_only(roots(Some(root))?),
        TlsWanted::VerifyCa(root) => chain_only(roots(root.as_deref())?),
        TlsWanted::VerifyFull(root) => Ok(builder()?
            .with_root_certificates(roots(root.as_deref())?)
            .with_no_client_auth()),
    }
}

/// Verifies the server's certificate against `ca_pem` and its host name
/// (libpq's `verify-full`).
pub(crate) fn verified(ca_pem: &[u8]) -> Result<ClientConfig, TlsError> {
    Ok(builder()?
        .with_root_certificates(pem_roots(ca_pem)?)
        .with_no_client_auth())
}

/// Verifies the chain up to `roots` but not the host name (libpq's
/// `verify-ca`).
fn chain_only(roots: RootCertStore) -> Result<ClientConfig, TlsError> {
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        .with_no_client_auth())
}

/// The standard verifier, but a certificate for another name passes.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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
