//! TLS against a MariaDB whose certificate a throwaway CA signed.

mod common;

use std::time::Duration;

use aquifer_mysql::mysql_async::prelude::Queryable;
use aquifer_mysql::{MySqlError, MySqlManager, MySqlPool};
use aquifer_testkit::{MariaDbServer, TestPki};

/// A TLS-only server and the PKI that signed its certificate.
fn tls_server() -> (MariaDbServer, TestPki) {
    let pki = TestPki::new();
    let server = MariaDbServer::builder()
        .ssl(&pki.cert(), &pki.key())
        .tls_only()
        .start()
        .unwrap();
    (server, pki)
}

fn quick(manager: MySqlManager) -> MySqlPool {
    MySqlPool::builder(manager)
        .max(2)
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
    let (db, pki) = tls_server();
    let verified = quick(
        MySqlManager::new(&db.url())
            .unwrap()
            .tls(Some(pki.ca_pem().as_bytes().to_vec())),
    );
    assert!(!cipher(&verified).await.is_empty());
    let unverified = quick(MySqlManager::new(&db.url()).unwrap().tls(None));
    assert!(!cipher(&unverified).await.is_empty());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let (db, _) = tls_server();
    let stranger = TestPki::stranger_ca_pem().into_bytes();
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

#[tokio::test]
async fn tls_asked_for_but_not_offered_fails_and_never_falls_back() {
    let db = common::server();
    let manager = MySqlManager::new(&db.url()).unwrap().tls(None);
    let start = std::time::Instant::now();
    let err = quick(manager).get().await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    let text = common::chain(&err);
    assert!(text.contains("asked for SSL"), "{text}");
    assert_eq!(
        db.sessions().unwrap(),
        0,
        "no plain-text session was opened"
    );
}

/// MySQL's own words in the URL: `ssl-mode=VERIFY_IDENTITY` with `ssl-ca`
/// verifies the chain and the name, `VERIFY_CA` the chain, `REQUIRED`
/// encrypts; `PREFERRED` (a silent fallback to plain text) is refused, and
/// an `ssl-ca` that cannot be read is a configuration error naming it.
#[tokio::test]
async fn ssl_mode_and_ssl_ca_in_the_url() {
    let (db, pki) = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let stranger = dir.path().join("stranger.pem");
    std::fs::write(&stranger, TestPki::stranger_ca_pem()).unwrap();
    let url = db.url();
    let with = |q: String| format!("{url}?{q}");
    for q in [
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display()),
        format!("ssl-mode=verify_ca&ssl-ca={}", ca.display()),
        "ssl-mode=REQUIRED".to_owned(),
    ] {
        let pool = quick(MySqlManager::new(&with(q.clone())).unwrap());
        assert!(!cipher(&pool).await.is_empty(), "{q}");
    }
    let q = format!("ssl-mode=VERIFY_CA&ssl-ca={}", stranger.display());
    let err = quick(MySqlManager::new(&with(q)).unwrap())
        .get()
        .await
        .unwrap_err();
    assert!(
        common::chain(&err).to_lowercase().contains("certificate"),
        "{err}"
    );
    for (q, says) in [
        ("ssl-mode=PREFERRED".to_owned(), "PREFERRED"),
        (
            "ssl-mode=VERIFY_IDENTITY&ssl-ca=/no/such.pem".to_owned(),
            "cannot read ssl-ca /no/such.pem",
        ),
        (format!("ssl-ca={}", ca.display()), "without ssl-mode"),
        ("ssl-mode=SOMETIMES".to_owned(), "DISABLED, REQUIRED"),
    ] {
        let err = MySqlManager::new(&with(q.clone())).unwrap_err().to_string();
        assert!(err.contains(says), "{q}: {err}");
    }
}
