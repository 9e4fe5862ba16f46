//! Queries, transactions, reset on return, the statement cache, hooks.

mod common;

use aquifer::{Operation, PoolEvent};
use aquifer_postgres::{PgManager, PgPool, PgPoolExt, QueryError, ResetMode, TxStatus};
use common::*;

/// The state of the pool's one session, as the server sees it.
fn session_state(pg: &aquifer_testkit::PgServer) -> String {
    pg.psql("SELECT state FROM pg_stat_activity WHERE application_name = 'aquifer'")
        .unwrap()
}

async fn failures(events: &mut aquifer::EventStream) -> Vec<(Operation, String)> {
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(ms(50), events.recv()).await {
        if let PoolEvent::OperationFailed { op, error } = e {
            out.push((op, error));
        }
    }
    out
}

#[tokio::test]
async fn helpers_run_queries_and_report_failures() {
    let pg = server();
    let pool = pool(&pg.url(), 2);
    let mut events = pool.events();
    pool.execute("CREATE TABLE t (id int primary key, v text)", &[])
        .await
        .unwrap();
    let n = pool
        .execute(
            "INSERT INTO t VALUES ($1, $2), ($3, $4)",
            &[&1i32, &"a", &2i32, &"b"],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let rows = pool
        .query("SELECT v FROM t ORDER BY id", &[])
        .await
        .unwrap();
    let vs: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(vs, ["a", "b"]);
    let one = pool
        .query_one("SELECT v FROM t WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(one.get::<_, String>(0), "b");

    let err = pool.query("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42601");
    assert!(err.to_string().contains("syntax error"), "{err}");
    let dup = pool
        .execute("INSERT INTO t VALUES (1, 'x')", &[])
        .await
        .unwrap_err();
    assert_eq!(dup.as_db_error().unwrap().code().code(), "23505");
    let seen = failures(&mut events).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(op, _)| *op == Operation::Query));
    assert!(seen[0].1.contains("syntax error"), "{seen:?}");
    assert_eq!(pool.metrics().operation_failures, 2);
    // Failed queries do not cost the connection (it is rolled back, to be
    // safe, and reused).
    eventually("resets done", || pool.status().borrowed == 0).await;
    assert_eq!(pool.metrics().destroys, 0);
    assert_eq!(pool.metrics().reset_failures, 0);
}

#[tokio::test]
async fn transactions_commit_on_ok_roll_back_on_err_and_on_panic() {
    let pg = server();
    let pool = pool(&pg.url(), 1);
    pool.execute("CREATE TABLE acct (id int primary key, n int)", &[])
        .await
        .unwrap();
    pool.execute("INSERT INTO acct VALUES (1, 10), (2, 0)", &[])
        .await
        .unwrap();
    let mut events = pool.events();

    let moved = pool
        .transaction(|tx| {
            Box::pin(async move {
                tx.execute("UPDATE acct SET n = n - 3 WHERE id = 1", &[])
                    .await?;
                tx.execute("UPDATE acct SET n = n + 3 WHERE id = 2", &[])
                    .await?;
                Ok::<_, QueryError>(3)
            })
        })
        .await
        .unwrap();
    assert_eq!(moved, 3);

    let err = pool
        .transaction(|tx| {
            Box::pin(async move {
                tx.execute("UPDATE acct SET n = n - 100 WHERE id = 1", &[])
                    .await?;
                // Fails: the first update must not survive.
                tx.execute("INSERT INTO acct VALUES (1, 0)", &[]).await?;
                Ok::<_, QueryError>(())
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "23505");

    let pool2 = pool.clone();
    let panicked = tokio::spawn(async move {
        pool2
            .transaction(|tx| {
                Box::pin(async move {
                    tx.execute("UPDATE acct SET n = 999", &[]).await?;
                    panic!("bug in the middle of a transaction");
                    #[allow(unreachable_code)]
                    Ok::<_, QueryError>(())
                })
            })
            .await
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());

    let rows = pool
        .query("SELECT n FROM acct ORDER BY id", &[])
        .await
        .unwrap();
    let ns: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ns, [7, 3], "only the committed transaction left a trace");
    let seen = failures(&mut events).await;
    let ops: Vec<Operation> = seen.iter().map(|(op, _)| *op).collect();
    assert_eq!(
        ops,
        [Operation::Transaction, Operation::Transaction],
        "{seen:?}"
    );
    assert!(seen[1].1.contains("panicked"));
    // The one connection survived all of it and is not inside a transaction.
    assert_eq!(pool.status().size, 1);
    assert_eq!(session_state(&pg), "idle");
}

#[tokio::test]
async fn a_dirty_connection_is_rolled_back_on_return() {
    let pg = server();
    let pool = pool(&pg.url(), 1);
    pool.execute("CREATE TABLE t (v int)", &[]).await.unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        conn.mark_dirty();
    }
    // Returned: the reset runs in the background, then the connection is idle.
    eventually("the reset ran", || pool.status().idle == 1).await;
    let conn = pool.get().await.unwrap();
    assert!(!conn.is_dirty());
    let n: i64 = conn
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the open transaction was rolled back");
    assert_eq!(session_state(&pg), "idle", "not 'idle in transaction'");
}

#[tokio::test]
async fn the_statement_cache_is_bounded_and_a_reset_query_clears_it() {
    let pg = server();
    let manager = PgManager::new(&pg.url())
        .unwrap()
        .statement_cache_capacity(3)
        .reset(ResetMode::Query("DISCARD ALL".into()));
    let pool = PgPool::builder(manager).max(1).build().unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        for i in 0..10 {
            let st = conn
                .prepare_cached(&format!("SELECT {i}::int4"))
                .await
                .unwrap();
            let v: i32 = conn.query_one(&st, &[]).await.unwrap().get(0);
            assert_eq!(v, i);
        }
        assert_eq!(conn.cached_statements(), 3);
        // The most recent ones are kept: preparing one again is a hit.
        let again = conn.prepare_cached("SELECT 9::int4").await.unwrap();
        assert_eq!(conn.cached_statements(), 3);
        drop(again);
        let prepared: i64 = conn
            .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
            .await
            .unwrap()
            .get(0);
        assert!(
            prepared <= 4,
            "evicted statements are closed on the server: {prepared}"
        );
    }
    eventually("the reset ran", || pool.status().idle == 1).await;
    let conn = pool.get().await.unwrap();
    assert_eq!(
        conn.cached_statements(),
        0,
        "DISCARD ALL dropped the server's statements"
    );
}

#[tokio::test]
async fn after_connect_runs_on_every_new_connection() {
    let pg = server();
    pg.psql(
        "CREATE SCHEMA app; CREATE TABLE app.marker (v int); INSERT INTO app.marker VALUES (42)",
    )
    .unwrap();
    let manager = PgManager::new(&pg.url()).unwrap().after_connect(|c| {
        Box::pin(async move { c.batch_execute("SET search_path TO app").await })
    });
    let pool = PgPool::builder(manager).max(2).build().unwrap();
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    for c in [&a, &b] {
        let v: i32 = c
            .query_one("SELECT v FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 42);
    }
    drop((a, b));
    let failing = PgManager::new(&pg.url()).unwrap().after_connect(|c| {
        Box::pin(async move { c.batch_execute("SET search_path TO 'x'; SELEC").await })
    });
    let err = PgPool::builder(failing)
        .build()
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("after_connect failed"),
        "{}",
        chain(&err)
    );
}

#[tokio::test]
async fn a_raw_begin_left_open_is_read_off_the_wire_and_rolled_back() {
    let pg = server();
    let pool = pool(&pg.url(), 1);
    pool.execute("CREATE TABLE t (v int)", &[]).await.unwrap();
    // A whole failed transaction in one batch, returned the moment the
    // error is known (before the server's status can arrive).
    {
        let conn = pool.get().await.unwrap();
        let err = conn
            .batch_execute("BEGIN; INSERT INTO t VALUES (1); SELECT 1/0")
            .await;
        assert!(err.is_err());
    }
    eventually("the reset ran", || pool.status().idle == 1).await;
    {
        let conn = pool.get().await.unwrap();
        assert_eq!(conn.transaction_status(), TxStatus::Idle);
        conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        assert_eq!(conn.transaction_status(), TxStatus::InTransaction);
        assert!(conn.is_dirty());
        assert!(conn.batch_execute("SELECT 1/0").await.is_err());
        // The error comes before the server's status: dirty either way.
        assert!(conn.is_dirty());
        eventually("the failed status arrived", || {
            conn.transaction_status() == TxStatus::Failed
        })
        .await;
        // Returned without any mark: the server's status is enough.
    }
    eventually("the reset ran", || pool.status().idle == 1).await;
    let conn = pool.get().await.unwrap();
    assert_eq!(conn.transaction_status(), TxStatus::Idle);
    let n: i64 = conn
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the open transaction was rolled back");
    // A clean connection goes straight back, with no reset round trip.
    drop(conn);
    assert_eq!(pool.status().idle, 1, "returned at once, no reset queued");
}

#[tokio::test]
async fn a_transaction_dropped_mid_way_is_reported_and_rolled_back() {
    let pg = server();
    let pool = pool(&pg.url(), 1);
    pool.execute("CREATE TABLE t (v int)", &[]).await.unwrap();
    let mut events = pool.events();
    let cut = tokio::time::timeout(
        ms(200),
        pool.transaction(|tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                tx.batch_execute("SELECT pg_sleep(1)").await?;
                Ok::<_, QueryError>(())
            })
        }),
    )
    .await;
    assert!(cut.is_err(), "the caller gave up first");
    let seen = failures(&mut events).await;
    assert!(
        seen.iter().any(
            |(op, e)| *op == Operation::Transaction && e.contains("dropped before it finished")
        ),
        "{seen:?}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "0");
    // Once the sleep ends the connection is rolled back and reused.
    eventually("the connection came back", || pool.status().idle == 1).await;
    let n: i64 = pool
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert_eq!(session_state(&pg), "idle");
}
