//! Connecting: bad input, typed errors, secrets, PgDatabase, presets.

mod common;

use std::time::{Duration, Instant};

use aquifer::PoolError;
use aquifer_postgres::{
    ConnectionError, PgConfigError, PgDatabase, PgError, PgManager, PgPool, Preset,
};
use aquifer_testkit::PG_PASSWORD;
use common::*;

fn quick(url: &str) -> PgPool {
    PgPool::builder(PgManager::new(url).unwrap())
        .max(2)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_wrong_password_is_a_typed_prompt_error_that_says_so() {
    let pg = server();
    let url = pg.url().replace(PG_PASSWORD, "wrong-password");
    let start = Instant::now();
    let err = quick(&url).get().await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let text = chain(&err);
    assert!(matches!(err, PoolError::Create(_)), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        !text.contains("wrong-password"),
        "the password leaked: {text}"
    );
    let sqlstate = err
        .create_error()
        .and_then(|c| c.backend())
        .and_then(PgError::as_db_error)
        .map(|d| d.code().code().to_owned());
    assert_eq!(sqlstate.as_deref(), Some("28P01"));
}

#[tokio::test]
async fn an_unknown_database_and_an_unreachable_server_are_typed_errors() {
    let pg = server();
    let err = quick(&pg.url_for("nope")).get().await.unwrap_err();
    let text = chain(&err);
    assert!(text.contains("database \"nope\" does not exist"), "{text}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    // A refused connection may be a server restarting: the get retries
    // until its timeout, then fails with the cause.
    let start = Instant::now();
    let err = PgPool::builder(
        PgManager::new(&format!("postgres://u:secret-pw@127.0.0.1:{port}/db")).unwrap(),
    )
    .acquire_timeout(Duration::from_millis(300))
    .build()
    .unwrap()
    .get()
    .await
    .unwrap_err();
    let took = start.elapsed();
    assert!((300..600).contains(&took.as_millis()), "{took:?}");
    assert!(err.is_timeout(), "{err}");
    let text = chain(&err);
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("secret-pw"), "{text}");
}

#[tokio::test]
async fn bad_urls_are_config_errors_naming_the_part() {
    for (url, part) in [
        ("mysql://u:p@h/db", "scheme"),
        ("postgres://u:p@h:notaport/db", "port"),
        ("postgres://u:p@h/db?nonsense=1", "option"),
        ("", "URL"),
    ] {
        match PgManager::new(url).unwrap_err() {
            PgConfigError::Invalid { part: got, .. } => assert_eq!(got, part, "{url}"),
            other => panic!("{other}"),
        }
        assert!(PgDatabase::new(url, aquifer::PoolConfig::default()).is_err());
    }
}

#[test]
fn the_password_never_shows_in_debug_output() {
    let m = PgManager::new("postgres://app:hunter2@db.example:5432/orders").unwrap();
    let dbg = format!("{m:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("db.example:5432/orders"), "{dbg}");
    let db = PgDatabase::new(
        "postgres://app:hunter2@db.example/orders",
        aquifer::PoolConfig::default(),
    )
    .unwrap();
    assert!(!format!("{db:?}").contains("hunter2"));
    let pool = PgPool::builder(m).build();
    assert!(!format!("{pool:?}").contains("hunter2"));
}

#[tokio::test]
async fn connect_is_idempotent_and_shares_one_pool() {
    let pg = server();
    let db = std::sync::Arc::new(PgDatabase::with_preset(&pg.url(), Preset::Development).unwrap());
    assert!(!db.is_connected());
    assert!(matches!(
        db.client().await,
        Err(ConnectionError::NotConnected)
    ));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.connect().await })
        })
        .collect();
    let mut pools = Vec::new();
    for c in calls {
        pools.push(c.await.unwrap().unwrap());
    }
    assert!(db.is_connected());
    // Every caller got the same pool: a connection held from one of them is
    // borrowed in all of them, and only one connect() checked out.
    let conn = db.client().await.unwrap();
    for p in &pools {
        assert_eq!(p.status().borrowed, 1);
        assert_eq!(p.metrics().gets, 2);
    }
    assert_eq!(db.stats().borrowed, 1);
    assert!(db.stats().total <= Preset::Development.pool_config().max);
    drop(conn);
    let report = db.health_check().await;
    assert!(report.healthy && report.connected, "{report:?}");
    assert!(report.latency.unwrap() > Duration::ZERO);
    db.disconnect().await.unwrap();
    db.disconnect().await.unwrap();
    assert!(!db.is_connected());
    let report = db.health_check().await;
    assert!(!report.healthy && !report.connected);
    assert!(report.error.unwrap().contains("connect()"));
    // And it connects again.
    db.connect().await.unwrap();
    assert!(db.health_check().await.healthy);
}

#[tokio::test]
async fn connect_failures_name_the_server_and_chain_the_cause() {
    let pg = server();
    let url = pg.url().replace(PG_PASSWORD, "nope-nope");
    let db = PgDatabase::with_preset(&url, Preset::Test).unwrap();
    let err = db.connect().await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, ConnectionError::Connect { .. }), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}/postgres", pg.port())),
        "{text}"
    );
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("nope-nope"), "{text}");
    assert!(!db.is_connected());
}

/// `connect` gives up at the preset's connect timeout (plus one backoff
/// step) with the cause, for a closed port and for a server that accepts
/// and then says nothing, with every preset.
#[tokio::test]
async fn connect_gives_up_at_the_presets_connect_timeout_with_the_cause() {
    let pg = server();
    let proxy = aquifer_testkit::FaultProxy::start(([127, 0, 0, 1], pg.port()).into()).unwrap();
    proxy.set(aquifer_testkit::Fault::Blackhole);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = format!("postgres://u:secret-pw@127.0.0.1:{port}/db");
    let silent = pg
        .url()
        .replace(&pg.port().to_string(), &proxy.port().to_string());
    let mut runs = Vec::new();
    for preset in [Preset::Test, Preset::Development, Preset::Production] {
        for (url, says) in [(&refused, "refused"), (&silent, "")] {
            runs.push(async move {
                let db = PgDatabase::with_preset(url, preset).unwrap();
                let start = Instant::now();
                let err = db.connect().await.unwrap_err();
                (preset, says, start.elapsed(), chain(&err))
            });
        }
    }
    for (preset, says, took, text) in futures_util::future::join_all(runs).await {
        let limit = preset.connect_timeout() + Duration::from_millis(100);
        assert!(
            took >= preset.connect_timeout() - Duration::from_millis(200)
                && took < limit + Duration::from_millis(400),
            "{preset:?} {says}: {took:?} ({text})"
        );
        if says.is_empty() {
            assert!(
                text.contains("timed out") || text.contains("within"),
                "{preset:?}: {text}"
            );
        } else {
            assert!(text.to_lowercase().contains(says), "{preset:?}: {text}");
        }
        assert!(
            !text.contains("secret-pw") && !text.contains(PG_PASSWORD),
            "{text}"
        );
    }
}

#[test]
fn presets_carry_their_numbers() {
    for (preset, min, max, connect, idle) in [
        (Preset::Production, 2, 20, 5, 30),
        (Preset::Development, 1, 5, 5, 10),
        (Preset::Test, 0, 2, 2, 1),
    ] {
        let c = preset.pool_config();
        assert_eq!((c.min, c.max), (min, max), "{preset:?}");
        assert_eq!(c.create_timeout, Duration::from_secs(connect));
        assert_eq!(preset.connect_timeout(), Duration::from_secs(connect));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(idle)));
        assert!(c.eviction_interval <= Duration::from_secs(idle));
        c.validate().unwrap();
    }
}

/// libpq's multi-host URLs: hosts are tried in turn; with
/// `target_session_attrs=read-write`, one that only allows reads is
/// skipped like one that is down.
#[tokio::test]
async fn hosts_are_tried_in_turn_and_read_write_skips_read_only_servers() {
    let standby = aquifer_testkit::PgServer::builder()
        .setting("default_transaction_read_only", "on")
        .start()
        .unwrap();
    let primary = server();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = |ports: &[u16], attrs: &str| {
        let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!(
            "postgres://postgres:{}@{}/postgres?target_session_attrs={attrs}",
            aquifer_testkit::PG_PASSWORD,
            hosts.join(",")
        )
    };
    let read_only = |pool: PgPool| async move {
        let conn = pool.get().await.unwrap();
        let row = conn
            .query_one("SHOW transaction_read_only", &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    // Down, then the standby: any session will do.
    let any = quick(&url(&[down, standby.port(), primary.port()], "any"));
    assert_eq!(read_only(any).await, "on");
    // Read-write: the standby is skipped too.
    let rw = quick(&url(&[down, standby.port(), primary.port()], "read-write"));
    assert_eq!(read_only(rw).await, "off");
    // Nothing writable: the standby's refusal is the error.
    let none = quick(&url(&[standby.port()], "read-write"));
    let err = none.get().await.unwrap_err();
    let cause = err.create_error().and_then(|c| c.backend()).unwrap();
    assert!(matches!(cause, PgError::ReadOnly { .. }), "{cause:?}");
    assert!(cause.to_string().contains("does not allow writes"));
    assert!(!chain(&err).contains(aquifer_testkit::PG_PASSWORD));
}
