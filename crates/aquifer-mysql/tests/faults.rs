//! Faults real servers produce, survived against a real MariaDB.

mod common;

use std::time::Duration;

use aquifer::Backoff;
use aquifer_mysql::mysql_async::prelude::Queryable;
use aquifer_mysql::{MySqlManager, MySqlPool};
use aquifer_testkit::{Load, MariaDbServer, MaxWatcher, Step, MARIADB_USER};
use common::*;

/// The fault tests measure time; run one at a time so that none of them
/// waits for a core that another is using.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Kills every connection of the test user from the server side and waits
/// until they are gone.
async fn kill_all(db: &MariaDbServer) -> usize {
    let ids = db
        .sql(&format!(
            "SELECT id FROM information_schema.processlist WHERE user = '{MARIADB_USER}'"
        ))
        .unwrap();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    for id in &ids {
        db.sql(&format!("KILL {id}")).unwrap();
    }
    eventually("the killed connections are gone", || {
        db.sessions().unwrap() == 0
    })
    .await;
    ids.len()
}

async fn thousand_checkouts_never_see_a_dead_connection(pool: &MySqlPool) {
    for i in 0..1000 {
        let mut conn = pool.get().await.unwrap();
        if let Err(e) = conn.query_drop("SELECT 1").await {
            panic!("checkout {i} handed out a dead connection: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_idle_connections_are_never_handed_out() {
    let _serial = SERIAL.lock().await;
    let db = server();
    let pool = MySqlPool::builder(MySqlManager::new(&db.url()).unwrap())
        .max(8)
        .min(8)
        .build()
        .unwrap();
    pool.start().await.unwrap();
    assert_eq!(db.sessions().unwrap(), 8);
    assert_eq!(kill_all(&db).await, 8);
    // Idle longer than validate_if_idle_for (500 ms): checked on checkout.
    tokio::time::sleep(ms(600)).await;
    thousand_checkouts_never_see_a_dead_connection(&pool).await;
    let m = pool.metrics();
    eprintln!(
        "after KILL of 8 idle connections: 1000/1000 checkouts worked; validation failures {}, evicted broken {}, creates {}",
        m.validation_failures, m.evictions.broken, m.creates
    );
    assert!(m.validation_failures + m.evictions.broken >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_while_in_use_are_caught_when_every_checkout_pings() {
    let _serial = SERIAL.lock().await;
    let db = server();
    let pool = MySqlPool::builder(MySqlManager::new(&db.url()).unwrap())
        .max(8)
        .min(8)
        .validate_if_idle_for(Duration::ZERO)
        .build()
        .unwrap();
    pool.start().await.unwrap();
    // Use every connection, then kill them all right away.
    let held: Vec<_> = futures_all(&pool, 8).await;
    drop(held);
    assert_eq!(kill_all(&db).await, 8);
    thousand_checkouts_never_see_a_dead_connection(&pool).await;
    assert!(pool.metrics().validation_failures >= 8);
}

async fn futures_all(pool: &MySqlPool, n: usize) -> Vec<aquifer::Pooled<MySqlManager>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut conn = pool.get().await.unwrap();
        conn.query_drop("SELECT 1").await.unwrap();
        held.push(conn);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_fails_gets_in_time_and_recovers() {
    let _serial = SERIAL.lock().await;
    let db = server();
    let url = db.url();
    let max = 4;
    let acquire = ms(1000);
    let backoff_max = ms(1000);
    let pool = MySqlPool::builder(MySqlManager::new(&url).unwrap())
        .max(max)
        .acquire_timeout(acquire)
        .backoff(Backoff {
            min: ms(50),
            max: backoff_max,
            ..Backoff::default()
        })
        .build()
        .unwrap();

    // Watch the server's view: never more connections than `max`.
    let socket = db.dir().join("mysqld.sock");
    let watcher = MaxWatcher::start(move || {
        let out = std::process::Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["-u", "root", "--batch", "--skip-column-names", "-e"])
            .arg(format!(
                "SELECT count(*) FROM information_schema.processlist WHERE user = '{MARIADB_USER}'"
            ))
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    });

    // Eight tasks hammer the pool; every failed get is timed and kept.
    let load = {
        let pool = pool.clone();
        Load::start(8, acquire + acquire / 10, move || {
            let pool = pool.clone();
            async move {
                match pool.get().await {
                    Ok(mut conn) => match conn.query_drop("SELECT 1").await {
                        Ok(()) => Step::Served,
                        Err(_) => Step::QueryFailed,
                    },
                    Err(e) => Step::get_failed(&e),
                }
            }
        })
    };

    // While the server is down, a get carries the connection error.
    let while_down = async {
        let err = pool.get().await.unwrap_err();
        let text = chain(&err);
        assert!(err.create_error().is_some(), "{text}");
        assert!(text.contains("could not connect"), "{text}");
    };
    let (_db, report, recovered) = load
        .crash_and_restart(db, ms(1500), backoff_max * 3, while_down)
        .await;
    report.assert_survived_crash(recovered, backoff_max, watcher.finish(), max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_leaves_no_connection_behind() {
    let _serial = SERIAL.lock().await;
    let db = server();
    let pool = MySqlPool::builder(MySqlManager::new(&db.url()).unwrap())
        .max(6)
        .min(3)
        .build()
        .unwrap();
    pool.start().await.unwrap();
    let held = futures_all(&pool, 6).await;
    assert_eq!(db.sessions().unwrap(), 6);
    drop(held);
    pool.close().await;
    assert_eq!(pool.status().size, 0);
    eventually("the server saw every connection close", || {
        db.sessions().unwrap() == 0
    })
    .await;
    assert!(pool.pending().is_empty());
}

/// HikariCP's DbDown test, on MariaDB: with the server stopped every get
/// fails at its timeout with the connection error as its cause; after a
/// restart the next get works within `backoff.max`; a wrong password or an
/// unknown database fails at once with the server's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_database_fails_every_get_at_its_timeout_and_bad_credentials_at_once() {
    let mut db = server();
    let timeout = ms(1000);
    let backoff_max = ms(1000);
    let pool = MySqlPool::builder(MySqlManager::new(&db.url()).unwrap())
        .min(2)
        .max(10)
        .acquire_timeout(timeout)
        .backoff(Backoff {
            min: ms(50),
            max: backoff_max,
            ..Backoff::default()
        })
        .build()
        .unwrap();
    pool.start().await.unwrap();
    db.stop().unwrap();
    pool.clear().await;
    let mut took = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let err = pool.get().await.unwrap_err();
        took.push(t.elapsed());
        assert!(err.is_timeout(), "{}", chain(&err));
        assert_eq!(
            chain(&err).matches("could not connect").count(),
            1,
            "{}",
            chain(&err)
        );
        assert!(chain(&err).contains("could not connect"), "{}", chain(&err));
    }
    eprintln!("server down, acquire_timeout {timeout:?}: gets failed after {took:?}");
    for t in &took {
        assert!(*t >= timeout && *t <= timeout * 11 / 10, "{took:?}");
    }

    db.start().unwrap();
    let restarted = std::time::Instant::now();
    let mut conn = pool.get().await.unwrap();
    conn.query_drop("SELECT 1").await.unwrap();
    let back = restarted.elapsed();
    eprintln!("after the restart the next get worked in {back:?} (backoff max {backoff_max:?})");
    assert!(back <= backoff_max + ms(200), "{back:?}");
    drop(conn);

    let wrong = db
        .url()
        .replace(aquifer_testkit::MARIADB_PASSWORD, "not-the-password");
    let unknown = format!(
        "mysql://{MARIADB_USER}:{}@127.0.0.1:{}/no_such_db",
        aquifer_testkit::MARIADB_PASSWORD,
        db.port()
    );
    for (url, words) in [(wrong, "Access denied"), (unknown, "Unknown database")] {
        let pool = MySqlPool::builder(MySqlManager::new(&url).unwrap())
            .acquire_timeout(ms(5000))
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        let err = pool.get().await.unwrap_err();
        let took = t.elapsed();
        let text = chain(&err);
        eprintln!("{words}: failed in {took:?}");
        assert!(matches!(err, aquifer::PoolError::Create(_)), "{text}");
        // Each layer names itself; the server's words come once.
        let line = aquifer::error_chain(&err);
        assert_eq!(line.matches(words).count(), 1, "{line}");
        assert!(!text.contains(aquifer_testkit::MARIADB_PASSWORD), "{text}");
        assert!(took < ms(100), "{took:?}: {text}");
    }
}
