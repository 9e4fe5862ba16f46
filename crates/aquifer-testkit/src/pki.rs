//! Certificates for TLS tests, and a place to catch what `tracing` logs.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A throwaway CA and a server certificate it signed for `localhost` and
/// `127.0.0.1`, written as PEM files to a temp dir (removed on drop).
pub struct TestPki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "aquifer test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA")
}

impl TestPki {
    /// A new CA and server certificate.
    ///
    /// # Panics
    /// When the temp dir cannot be written.
    pub fn new() -> Self {
        let ca = ca();
        let key = KeyPair::generate().expect("a key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("valid names")
            .signed_by(&key, &ca)
            .expect("signed");
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("server.crt"), cert.pem()).expect("written");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("written");
        TestPki {
            dir,
            ca_pem: ca.pem(),
        }
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate's file.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server key's file.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// Another CA with the same name and a different key: what a client
    /// that verifies must refuse.
    pub fn stranger_ca_pem() -> String {
        ca().pem()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything `tracing` writes while it is the subscriber, kept in memory:
/// for tests that check what reaches the logs.
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// A subscriber at TRACE level that writes here.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
