//! Pipelined pool calls and `lock()` on one connection: no pool call runs
//! inside another borrower's transaction, a borrower's transaction holds
//! only its own statements, and every write answered `Ok` is kept.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aquifer_sqlite::{SqliteConfig, SqliteManager, SqlitePool, SqlitePoolExt};
use aquifer_testkit::poll_once_and_drop;

fn count(path: &std::path::Path, table: &str) -> usize {
    let c = aquifer_sqlite::rusqlite::Connection::open(path).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as usize
}

/// Inserters keep the one connection busy, so their calls pipeline (the
/// connection goes back to the pool while their closures are queued on its
/// thread). A borrower takes it, `lock()`s, begins a transaction, lets go
/// of the guard for a moment, then commits (even rounds) or is cancelled
/// (odd rounds, the checkout dropped with the transaction open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_never_run_inside_a_locked_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lost.db");
    let manager = SqliteManager::new(SqliteConfig::file(&path)).unwrap();
    let pool = SqlitePool::builder(manager)
        .max(1)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    pool.execute("CREATE TABLE calls (id INTEGER)", ())
        .await
        .unwrap();
    pool.execute("CREATE TABLE mine (round INTEGER)", ())
        .await
        .unwrap();

    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let inserters: Vec<_> = (0..8)
        .map(|_| {
            let (pool, answered, stop) = (pool.clone(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = pool
                        .execute("INSERT INTO calls VALUES (1)", ())
                        .await
                        .unwrap();
                    assert_eq!(n, 1);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut committed = 0;
    let mut pipelined = 0;
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut conn = pool.get().await.unwrap();
        pipelined += usize::from(conn.in_flight() > 0);
        conn.lock()
            .unwrap()
            .execute("BEGIN IMMEDIATE", [])
            .map(drop)
            .unwrap();
        conn.lock()
            .unwrap()
            .execute("INSERT INTO mine VALUES (?1)", [round])
            .unwrap();
        // Anything queued on the connection's thread would run now.
        tokio::time::sleep(Duration::from_millis(2)).await;
        if round % 2 == 0 {
            conn.lock()
                .unwrap()
                .execute_batch("COMMIT")
                .unwrap_or_else(|e| panic!("round {round}: COMMIT failed: {e}"));
            committed += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in inserters {
        t.await.unwrap();
    }
    drop(pool.get().await.unwrap());

    let (answered, kept) = (answered.load(Ordering::Relaxed), count(&path, "calls"));
    eprintln!(
        "pool calls: {answered} answered Ok(1), {kept} kept; {pipelined}/20 checkouts found calls still queued; \
         {committed} transactions committed, {} rows kept",
        count(&path, "mine")
    );
    assert!(
        pipelined > 0,
        "no checkout met a pipelined call: the test tested nothing"
    );
    assert_eq!(kept, answered, "pool calls answered Ok were lost");
    assert_eq!(
        count(&path, "mine"),
        committed,
        "a transaction kept more or less than its own rows"
    );
}

/// A pool call whose closure leaves a transaction open fails: its writes
/// were rolled back, and an `Ok` would say they were kept.
#[tokio::test]
async fn a_pool_call_whose_writes_were_rolled_back_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rb.db");
    let pool = SqlitePool::builder(SqliteManager::new(SqliteConfig::file(&path)).unwrap())
        .max(1)
        .build()
        .unwrap();
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    let mut ok = 0;
    for _ in 0..10 {
        if pool
            .interact(|c| c.execute_batch("BEGIN; INSERT INTO t VALUES (1)"))
            .await
            .is_ok()
        {
            ok += 1;
        }
    }
    drop(pool.get().await.unwrap());
    assert_eq!(count(&path, "t"), ok, "calls answered Ok lost their writes");
    assert_eq!(ok, 0);
}

type Leave = for<'c> fn(
    &'c mut aquifer::Pooled<SqliteManager>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'c>>;

/// `ROUNDS` rounds on a pool of one connection: `leave`, then a plain
/// insert answered `Ok(1)`; returns the inserts answered and the rows a
/// separate connection finds.
async fn rounds(leave: Leave) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rounds.db");
    let pool = SqlitePool::builder(SqliteManager::new(SqliteConfig::file(&path)).unwrap())
        .max(1)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    pool.execute("CREATE TABLE t (id INTEGER)", ())
        .await
        .unwrap();
    let mut answered = 0;
    for i in 0..10 {
        {
            let mut conn = pool.get().await.unwrap();
            leave(&mut conn).await;
        }
        let n = pool
            .execute("INSERT INTO t VALUES (?1)", (i,))
            .await
            .unwrap();
        assert_eq!(n, 1);
        answered += 1;
    }
    drop(pool.get().await.unwrap());
    (answered, count(&path, "t"))
}

const LONG: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                    WHERE i < 300000) SELECT count(*) FROM n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cancellation_point_keeps_the_next_borrowers_writes() {
    let cases: [(&str, Leave); 5] = [
        ("call dropped before it is polled", |c| {
            Box::pin(async move {
                drop(c.interact(|c| c.execute_batch("BEGIN")));
            })
        }),
        ("call dropped after its first poll", |c| {
            Box::pin(poll_once_and_drop(c.interact(|c| c.execute_batch("BEGIN"))))
        }),
        ("call timed out while it runs", |c| {
            Box::pin(async move {
                let slow = c.interact(|c| {
                    c.query_row(LONG, [], |r| r.get::<_, i64>(0))?;
                    c.execute_batch("BEGIN; INSERT INTO t VALUES (-1)")
                });
                let _ = tokio::time::timeout(Duration::from_millis(1), slow).await;
            })
        }),
        ("transaction begun under lock() and left open", |c| {
            Box::pin(async move {
                c.lock()
                    .unwrap()
                    .execute_batch("BEGIN; INSERT INTO t VALUES (-2)")
                    .unwrap();
            })
        }),
        ("a multi-statement string that opens a transaction", |c| {
            Box::pin(async move {
                c.interact(|c| c.execute_batch("SELECT 1; BEGIN; SELECT 2"))
                    .await
                    .unwrap()
                    .unwrap();
            })
        }),
    ];
    for (case, leave) in cases {
        let (answered, kept) = rounds(leave).await;
        eprintln!("{case}: {answered} inserts answered Ok(1), {kept} kept");
        assert_eq!(
            kept, answered,
            "{case}: writes answered as successful were lost"
        );
    }
}
