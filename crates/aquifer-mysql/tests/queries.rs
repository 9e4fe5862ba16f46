//! The MySQL driver against a real MariaDB: connections, resets, hooks,
//! query helpers, transactions and their events.

mod common;

use std::time::Duration;

use aquifer::{Manager, Operation, PoolEvent};
use aquifer_mysql::mysql_async::prelude::Queryable;
use aquifer_mysql::{
    MySqlError, MySqlManager, MySqlPool, MySqlPoolExt, MySqlQueryError, ResetMode,
};
use aquifer_testkit::MARIADB_PASSWORD;
use common::*;
use tokio_stream::StreamExt;

#[tokio::test]
async fn queries_run_through_the_pool() {
    let db = server();
    let pool = pool(&db.url(), 4);
    pool.query_drop("CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB")
        .await
        .unwrap();
    for (id, name) in [(1, "bolt"), (2, "nut"), (3, "washer")] {
        pool.exec_drop("INSERT INTO item VALUES (?, ?)", (id, name))
            .await
            .unwrap();
    }
    let names: Vec<String> = pool
        .query("SELECT name FROM item ORDER BY id")
        .await
        .unwrap();
    assert_eq!(names, ["bolt", "nut", "washer"]);
    let two: Vec<(i32, String)> = pool
        .exec("SELECT id, name FROM item WHERE id > ? ORDER BY id", (1,))
        .await
        .unwrap();
    assert_eq!(two, [(2, "nut".to_string()), (3, "washer".to_string())]);
    let none: Option<String> = pool
        .exec_first("SELECT name FROM item WHERE id = ?", (9,))
        .await
        .unwrap();
    assert_eq!(none, None);
    let err = pool.query_drop("SELECT * FROM nowhere").await.unwrap_err();
    assert_eq!(err.server_code(), Some(1146));
    assert_eq!(pool.metrics().operation_failures, 1);
    assert_eq!(pool.manager().driver_name(), "mysql");
}

#[tokio::test]
async fn a_connection_returned_inside_a_transaction_is_rolled_back() {
    let db = server();
    let pool = pool(&db.url(), 1);
    pool.query_drop("CREATE TABLE t (v INT) ENGINE=InnoDB")
        .await
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.query_drop("BEGIN").await.unwrap();
        conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
        assert!(conn.in_transaction());
    }
    let n: Option<i64> = pool.exec_first("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(n, Some(0));
    // A plain query leaves nothing to clean, and costs no reset.
    let conn = pool.get().await.unwrap();
    assert!(!conn.in_transaction());
}

#[tokio::test]
async fn connection_reset_mode_clears_session_state_and_reruns_the_hook() {
    let db = server();
    let manager = MySqlManager::new(&db.url())
        .unwrap()
        .reset_mode(ResetMode::Connection)
        .after_connect(|c| Box::pin(c.query_drop("SET @hooked = 42")));
    let pool = MySqlPool::builder(manager).max(1).build().unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        let hooked: Option<i64> = conn.query_first("SELECT @hooked").await.unwrap();
        assert_eq!(hooked, Some(42));
        conn.query_drop("SET @mine = 'left over'").await.unwrap();
        conn.query_drop("CREATE TEMPORARY TABLE scratch (v INT)")
            .await
            .unwrap();
    }
    let mut conn = pool.get().await.unwrap();
    let (mine, hooked): (Option<String>, Option<i64>) = conn
        .query_first("SELECT @mine, @hooked")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine, None, "user variables are gone");
    assert_eq!(hooked, Some(42), "the hook ran again after the reset");
    assert!(conn.query_drop("SELECT * FROM scratch").await.is_err());
    assert_eq!(pool.status().size, 1, "the same connection, reset");
}

#[tokio::test]
async fn a_failing_hook_fails_the_create_with_its_error() {
    let db = server();
    let manager = MySqlManager::new(&db.url())
        .unwrap()
        .after_connect(|c| Box::pin(c.query_drop("SET no_such_variable = 1")));
    let err = manager.create().await.unwrap_err();
    assert!(matches!(err, MySqlError::AfterConnect(_)), "{err:?}");
    assert_eq!(err.server_code(), Some(1193));
}

#[tokio::test]
async fn transactions_commit_roll_back_and_report() {
    let db = server();
    let pool = pool(&db.url(), 2);
    let mut events = pool.events();
    pool.query_drop("CREATE TABLE t (v INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    pool.transaction(|tx| {
        Box::pin(async move {
            tx.query_drop("INSERT INTO t VALUES (1)").await?;
            Ok::<_, MySqlQueryError>(())
        })
    })
    .await
    .unwrap();
    let err = pool
        .transaction(|tx| {
            Box::pin(async move {
                tx.query_drop("INSERT INTO t VALUES (2)").await?;
                tx.query_drop("INSERT INTO t VALUES (1)").await?; // duplicate key
                Ok::<_, MySqlQueryError>(())
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(1062));
    let values: Vec<i32> = pool.query("SELECT v FROM t ORDER BY v").await.unwrap();
    assert_eq!(values, [1], "the failed transaction left nothing");

    // Abandoned half-way: reported, and rolled back on return.
    let abandoned = pool.transaction(|tx| {
        Box::pin(async move {
            tx.query_drop("INSERT INTO t VALUES (3)").await?;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, MySqlQueryError>(())
        })
    });
    assert!(tokio::time::timeout(ms(300), abandoned).await.is_err());
    let values: Vec<i32> = pool.query("SELECT v FROM t ORDER BY v").await.unwrap();
    assert_eq!(values, [1], "the abandoned transaction left nothing");

    let mut failed = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(ms(100), events.next()).await {
        if let PoolEvent::OperationFailed { op, error } = event {
            failed.push((op, error));
        }
    }
    let ops: Vec<Operation> = failed.iter().map(|(op, _)| *op).collect();
    assert_eq!(
        ops,
        [Operation::Transaction, Operation::Transaction],
        "{failed:?}"
    );
    assert!(failed[0].1.contains("Duplicate"), "{failed:?}");
    assert!(
        failed[1].1.contains("dropped before it finished"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_panicking_transaction_rolls_back_and_the_pool_goes_on() {
    let db = server();
    let pool = pool(&db.url(), 1);
    pool.query_drop("CREATE TABLE t (v INT) ENGINE=InnoDB")
        .await
        .unwrap();
    let task = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.transaction(|tx| {
                Box::pin(async move {
                    tx.query_drop("INSERT INTO t VALUES (1)").await?;
                    if tx.affected_rows() == 1 {
                        panic!("boom in the transaction");
                    }
                    Ok::<_, MySqlQueryError>(())
                })
            })
            .await
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    let n: Option<i64> = pool.exec_first("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(n, Some(0));
    assert_eq!(pool.metrics().operation_failures, 1);
}

#[tokio::test]
async fn a_wrong_password_is_a_typed_error_that_never_shows_the_password() {
    let db = server();
    let wrong = db.url().replace(MARIADB_PASSWORD, "not-the-password-xyzzy");
    let manager = MySqlManager::new(&wrong).unwrap();
    let shown = format!("{manager:?}");
    assert!(!shown.contains("xyzzy"), "{shown}");
    let pool = MySqlPool::builder(manager)
        .max(1)
        .acquire_timeout(ms(500))
        .build()
        .unwrap();
    let err = pool.get().await.unwrap_err();
    let text = chain(&err);
    let debug = format!("{err:?}");
    assert!(text.contains("Access denied"), "{text}");
    assert!(
        !text.contains("xyzzy") && !debug.contains("xyzzy"),
        "{text}\n{debug}"
    );
    let cause = err.create_error().and_then(|c| c.backend()).unwrap();
    assert!(matches!(cause, MySqlError::Connect { .. }));
    assert_eq!(cause.server_code(), Some(1045));
    // The right password's manager does not show it either.
    let shown = format!("{:?}", MySqlManager::new(&db.url()).unwrap());
    assert!(!shown.contains(MARIADB_PASSWORD), "{shown}");
}

#[tokio::test]
async fn a_server_that_is_down_is_a_typed_error_in_time() {
    let mut db = server();
    let url = db.url();
    db.stop().unwrap();
    let pool = MySqlPool::builder(MySqlManager::new(&url).unwrap())
        .max(2)
        .acquire_timeout(ms(400))
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    let err = pool.get().await.unwrap_err();
    assert!(t.elapsed() < ms(440), "{:?}", t.elapsed());
    let text = chain(&err);
    assert!(err.create_error().is_some(), "{text}");
    assert!(
        text.contains("could not connect to aquifer@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains(MARIADB_PASSWORD));
}

#[tokio::test]
async fn bad_urls_are_typed_errors() {
    for (url, part) in [
        ("mysql://a:b@h:70000/d", "port"),
        ("postgres://a:b@h/d", "scheme"),
        ("mysql://a:b@h/d?frobnicate=1", "parameter"),
    ] {
        match MySqlManager::new(url) {
            Err(MySqlError::Config(aquifer_mysql::MySqlConfigError::Invalid {
                part: p, ..
            })) => {
                assert_eq!(p, part, "{url}")
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<MySqlManager>();
    check::<MySqlPool>();
}
