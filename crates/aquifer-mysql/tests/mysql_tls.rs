//! TLS against a MariaDB whose certificate a throwaway CA signed.

mod common;

use std::time::Duration;

use aquifer_mysql::mysql_async::prelude::Queryable;
use aquifer_mysql::{MySqlError, MySqlManager, MySqlPool};
use aquifer_testkit::MariaDbServer;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A TLS-only server and the PEM of the CA that signed its certificate.
fn tls_server() -> (MariaDbServer, String) {
    let ca = ca("aquifer test CA");
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    let server = MariaDbServer::builder()
        .ssl(
            &dir.path().join("server.crt"),
            &dir.path().join("server.key"),
        )
        .tls_only()
        .start()
        .unwrap();
    (server, ca.pem())
}

fn quick(manager: MySqlManager) -> MySqlPool {
    MySqlPool::builder(manager)
        .max(2)
        .retries(0)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn cipher(pool: &MySqlPool) -> String {
    let mut conn = pool.get().await.unwrap();
    let row: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    row.unwrap().1
}

#[tokio::test]
async fn verified_and_unverified_tls_connect_and_encrypt() {
    let (db, ca_pem) = tls_server();
    let verified = quick(
        MySqlManager::new(&db.url())
            .unwrap()
            .tls(Some(ca_pem.into_bytes())),
    );
    assert!(!cipher(&verified).await.is_empty());
    let unverified = quick(MySqlManager::new(&db.url()).unwrap().tls(None));
    assert!(!cipher(&unverified).await.is_empty());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let (db, _) = tls_server();
    let stranger = ca("someone else").pem().into_bytes();
    let manager = MySqlManager::new(&db.url()).unwrap().tls(Some(stranger));
    let err = quick(manager).get().await.unwrap_err();
    let cause = err.create_error().and_then(|c| c.backend()).unwrap();
    assert!(matches!(cause, MySqlError::Connect { .. }), "{cause:?}");
    let text = common::chain(&err).to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "{text}"
    );
}

#[tokio::test]
async fn a_tls_only_server_refuses_a_plain_connection() {
    let (db, _) = tls_server();
    let err = quick(MySqlManager::new(&db.url()).unwrap())
        .get()
        .await
        .unwrap_err();
    let cause = err.create_error().and_then(|c| c.backend()).unwrap();
    // MariaDB answers a plain login on a TLS-only server with "access
    // denied" (MySQL with 3159, insecure transport).
    assert!(matches!(cause.server_code(), Some(1045 | 3159)), "{cause}");
    assert!(!common::chain(&err).contains(aquifer_testkit::MARIADB_PASSWORD));
}
