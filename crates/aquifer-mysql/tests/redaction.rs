//! The password never reaches logs or events. In a test binary of its own:
//! `tracing` caches per call site whether anyone listens, and other tests
//! hitting the same call sites first without a subscriber would hide them
//! from this test's thread-scoped one.

mod common;

use aquifer_mysql::{MySqlManager, MySqlPool, MySqlPoolExt};
use aquifer_testkit::{CapturedLogs, MARIADB_PASSWORD};
use common::*;

#[test]
fn the_password_never_reaches_logs_or_events() {
    let db = server();
    let secret = "Sup3r-Secret-Pw";
    let wrong = db.url().replace(MARIADB_PASSWORD, secret);
    let right = db.url();
    let captured = CapturedLogs::default();
    let subscriber = captured.subscriber();
    let seen = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let manager = MySqlManager::new(&wrong).unwrap();
            let mut seen = vec![format!("{manager:?}")];
            let pool = MySqlPool::builder(manager)
                .max(2)
                .acquire_timeout(ms(1000))
                .build()
                .unwrap();
            let mut events = pool.events();
            let err = pool.get().await.unwrap_err();
            seen.extend([chain(&err), format!("{err:?}")]);
            // A failing query on a pool whose URL holds the real password.
            let good = MySqlPool::builder(MySqlManager::new(&right).unwrap())
                .build()
                .unwrap();
            let mut good_events = good.events();
            let q = good
                .query_drop("SELECT * FROM no_such_table")
                .await
                .unwrap_err();
            seen.extend([chain(&q), format!("{q:?}"), format!("{good:?}")]);
            for stream in [&mut events, &mut good_events] {
                while let Ok(Some(e)) = tokio::time::timeout(ms(50), stream.recv()).await {
                    seen.push(format!("{e:?}"));
                }
            }
            seen
        })
    });
    let logs = captured.text();
    assert!(
        logs.contains("create failed"),
        "the failures were logged: {logs}"
    );
    assert!(logs.contains("Access denied"), "{logs}");
    assert!(seen.iter().any(|e| e.contains("CreateFailed")), "{seen:?}");
    assert!(
        seen.iter().any(|e| e.contains("OperationFailed")),
        "{seen:?}"
    );
    for text in seen.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains(secret), "the password leaked: {text}");
        assert!(
            !text.contains(MARIADB_PASSWORD),
            "the password leaked: {text}"
        );
    }
}

/// A pooled connection and a transaction on it print no password in
/// `Debug`, however they are reached (mysql_async's own types print the
/// connection options, password included).
#[tokio::test]
async fn debug_output_of_pooled_connections_and_transactions_holds_no_password() {
    use aquifer_mysql::mysql_async::prelude::Queryable;
    let db = common::server();
    let pool = common::pool(&db.url(), 1);
    let mut conn = pool.get().await.unwrap();
    conn.query_drop("SELECT 1").await.unwrap();
    let mut shown = vec![
        format!("{conn:?}"),
        format!("{:?}", *conn),
        format!("{:#?}", &*conn),
    ];
    let mut tx = conn.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("SELECT 1").await.unwrap();
    shown.push(format!("{tx:?}"));
    tx.rollback().await.unwrap();
    for s in &shown {
        assert!(!s.contains(aquifer_testkit::MARIADB_PASSWORD), "{s}");
    }
    // The check can fail: mysql_async's own connection does show it.
    assert!(format!("{:?}", conn.raw_mut()).contains(aquifer_testkit::MARIADB_PASSWORD));
}
