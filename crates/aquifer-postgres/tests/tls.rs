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

/// libpq's words in the URL: `sslmode=verify-full` checks the chain and the
/// host name, `verify-ca` the chain only, `sslrootcert` names the CA file
/// (the system's roots by default); a CA file that is not there is a
/// configuration error naming it.
#[tokio::test]
async fn sslmode_and_sslrootcert_in_the_url_verify_as_libpq_does() {
    let pki = TestPki::new();
    let pg = tls_server(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("root ca.crt");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let stranger = dir.path().join("stranger.crt");
    std::fs::write(&stranger, TestPki::stranger_ca_pem()).unwrap();
    let enc = |p: &std::path::Path| p.display().to_string().replace(' ', "%20");
    let (ca, stranger) = (enc(&ca), enc(&stranger));
    let url = pg.url();
    // A name the certificate does not carry, reached at its address.
    let renamed = url.replace("127.0.0.1", "db.other.test") + "?hostaddr=127.0.0.1";
    for (url, tls, ok) in [
        (
            format!("{url}?sslmode=verify-full&sslrootcert={ca}"),
            "verify-full",
            true,
        ),
        (
            format!("{renamed}&sslmode=verify-full&sslrootcert={ca}"),
            "verify-full, other name",
            false,
        ),
        (
            format!("{renamed}&sslmode=verify-ca&sslrootcert={ca}"),
            "verify-ca, other name",
            true,
        ),
        (
            format!("{url}?sslmode=verify-ca&sslrootcert={stranger}"),
            "verify-ca, other CA",
            false,
        ),
        (
            format!("{url}?sslmode=require&sslrootcert={stranger}"),
            "require with a CA file",
            false,
        ),
    ] {
        let pool = quick(PgManager::new(&url).unwrap());
        if ok {
            assert!(uses_tls(&pool).await, "{tls}");
        } else {
            let err = pool.get().await.unwrap_err();
            let text = chain(&err);
            assert!(
                text.contains("certificate") || text.contains("UnknownIssuer"),
                "{tls}: {text}"
            );
        }
    }
    // The system's roots do not hold the test CA (a machine without any
    // says so when the manager is made).
    match PgManager::new(&format!("{url}?sslmode=verify-full")) {
        Ok(m) => {
            let text = chain(&quick(m).get().await.unwrap_err());
            assert!(text.contains("certificate"), "{text}");
        }
        Err(e) => assert!(e.to_string().contains("system's store"), "{e}"),
    }
    let missing = format!("{url}?sslmode=verify-full&sslrootcert=/no/such/ca.crt");
    let err = PgManager::new(&missing).unwrap_err().to_string();
    assert!(
        err.contains("cannot read sslrootcert /no/such/ca.crt"),
        "{err}"
    );
    assert!(!err.contains(aquifer_testkit::PG_PASSWORD), "{err}");
}
