//! The password never reaches logs or events. In a test binary of its own:
//! `tracing` caches per call site whether anyone listens, and other tests
//! hitting the same call sites first without a subscriber would hide them
//! from this test's thread-scoped one.

mod common;

use aquifer_postgres::{
    PgDatabase, PgManager, PgMultiplexer, PgMuxExt, PgMuxManager, PgPool, Preset,
};
use aquifer_testkit::{CapturedLogs, PG_PASSWORD};
use common::*;

fn quick(url: &str) -> PgPool {
    PgPool::builder(PgManager::new(url).unwrap())
        .max(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
}

#[test]
fn the_password_never_reaches_logs_or_events() {
    let pg = server();
    let secret = "Sup3r-Secret-Pw";
    let url = pg.url().replace(PG_PASSWORD, secret);
    let captured = CapturedLogs::default();
    let subscriber = captured.subscriber();
    let events = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = PgDatabase::new(
                &url,
                aquifer::PoolConfig {
                    ..Preset::Test.pool_config()
                },
            )
            .unwrap();
            let err = db.connect().await.unwrap_err();
            let pool = quick(&url);
            let mut events = pool.events();
            let _ = pool.get().await;
            // The multiplexer: its handle, its manager, a failed request.
            let mux = PgMultiplexer::builder(PgMuxManager::new(&url).unwrap())
                .min(0)
                .acquire_timeout(ms(1000))
                .build()
                .unwrap();
            let mux_err = mux.simple_query("SELECT 1").await.unwrap_err();
            let mut seen = vec![
                chain(&err),
                format!("{err:?}"),
                format!("{db:?}"),
                chain(&mux_err),
                format!("{mux_err:?}"),
                format!("{mux:?}"),
                format!("{:?}", mux.manager()),
                format!("{:?}", mux.config()),
            ];
            assert!(
                seen[3].contains("password authentication failed"),
                "{}",
                seen[3]
            );
            while let Ok(Some(e)) = tokio::time::timeout(ms(50), events.recv()).await {
                seen.push(format!("{e:?}"));
            }
            seen
        })
    });
    let logs = captured.text();
    assert!(
        logs.contains("create failed"),
        "the failures were logged: {logs}"
    );
    assert!(logs.contains("password authentication failed"), "{logs}");
    assert!(
        events.iter().any(|e| e.contains("CreateFailed")),
        "{events:?}"
    );
    for text in events.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains(secret), "the password leaked: {text}");
    }
}
