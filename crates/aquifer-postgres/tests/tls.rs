//! TLS against servers whose certificate a throwaway CA signed.

mod common;

use std::time::{Duration, Instant};

use aquifer_postgres::{PgManager, PgPool, TlsError};
use aquifer_testkit::{PgServer, TestPki};
use common::*;

fn tls_server(pki: &TestPki) -> PgServer {
    PgServer::builder()
        .ssl(&pki.cert(), &pki.key())
        .ssl_only()
        .start()
        .unwrap()
}

fn quick(manager: PgManager) -> PgPool {
    PgPool::builder(manager)
        .max(2)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn uses_tls(pool: &PgPool) -> bool {
    let conn = pool.get().await.unwrap();
    conn.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn verified_tls_connects_to_a_server_signed_by_the_ca() {
    let pki = TestPki::new();
    let pg = tls_server(&pki);
    let manager = PgManager::new(&pg.url())
        .unwrap()
        .tls_verified(pki.ca_pem().as_bytes())
        .unwrap();
    assert!(format!("{manager:?}").contains("rustls"));
    assert!(uses_tls(&quick(manager)).await);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = TestPki::new();
    let pg = tls_server(&pki);
    let stranger = TestPki::stranger_ca_pem();
    let manager = PgManager::new(&pg.url())
        .unwrap()
        .tls_verified(stranger.as_bytes())
        .unwrap();
    let err = quick(manager).get().await.unwrap_err();
    let text = chain(&err);
    // Same CA name, other key: rustls finds the issuer and rejects its
    // signature.
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[tokio::test]
async fn unverified_tls_encrypts_without_checking_the_certificate() {
    let pki = TestPki::new();
    let pg = tls_server(&pki);
    let manager = PgManager::new(&pg.url()).unwrap().tls_unverified().unwrap();
    assert!(uses_tls(&quick(manager)).await);
    // libpq's way of saying the same in the URL.
    let manager = PgManager::new(&format!("{}?sslmode=require", pg.url())).unwrap();
    assert!(uses_tls(&quick(manager)).await);
}

#[tokio::test]
async fn a_plain_client_is_turned_away_by_a_tls_only_server() {
    let pki = TestPki::new();
    let pg = tls_server(&pki);
    let err = quick(PgManager::new(&pg.url()).unwrap())
        .get()
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(text.contains("no encryption"), "{text}");
}

#[tokio::test]
async fn tls_required_but_not_offered_fails_promptly_and_never_falls_back() {
    let pg = server();
    let manager = PgManager::new(&pg.url()).unwrap().tls_unverified().unwrap();
    let start = Instant::now();
    let err = quick(manager).get().await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    let text = chain(&err);
    assert!(text.contains("TLS"), "{text}");
    assert_eq!(
        pg.sessions("aquifer").unwrap(),
        0,
        "no plain-text session was opened"
    );
}

#[test]
fn a_ca_file_without_certificates_is_a_typed_error() {
    let err = PgManager::new("postgres://u:p@h/db")
        .unwrap()
        .tls_verified(b"not a pem file")
        .unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate), "{err}");
}
