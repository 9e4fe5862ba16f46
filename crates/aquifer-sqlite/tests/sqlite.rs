//! The SQLite driver against real SQLite databases (bundled): files in
//! temp dirs and shared in-memory databases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aquifer::{CreateError, Manager, Operation, PoolEvent};
use aquifer_sqlite::rusqlite::{self, ErrorCode, TransactionBehavior};
use aquifer_sqlite::{
    JournalMode, SqliteConfig, SqliteError, SqliteManager, SqlitePool, SqlitePoolExt,
    SqliteQueryError,
};
use tokio_stream::StreamExt;

fn pool(manager: SqliteManager, max: usize) -> SqlitePool {
    SqlitePool::builder(manager).max(max).build().unwrap()
}

fn file_pool(dir: &tempfile::TempDir, max: usize) -> SqlitePool {
    let manager = SqliteManager::new(SqliteConfig::file(dir.path().join("t.db"))).unwrap();
    pool(manager, max)
}

/// How many rows `table` has, through the pool.
async fn rows(pool: &SqlitePool, table: &str) -> i64 {
    pool.query_row(&format!("SELECT count(*) FROM {table}"), (), |r| r.get(0))
        .await
        .unwrap()
}

/// Holds `n` connections at once and runs `f` on each.
async fn on_each<R: Send + 'static>(
    pool: &SqlitePool,
    n: usize,
    f: impl Fn(&mut rusqlite::Connection) -> R + Send + Sync + Clone + 'static,
) -> Vec<R> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
    let mut out = Vec::new();
    for conn in &held {
        let f = f.clone();
        out.push(conn.interact(move |c| f(c)).await.unwrap());
    }
    out
}

#[tokio::test]
async fn file_connections_get_the_configured_pragmas_and_hook() {
    let dir = tempfile::tempdir().unwrap();
    let hooked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hooked);
    let config = SqliteConfig::file(dir.path().join("t.db"))
        .busy_timeout(Duration::from_millis(1234))
        .pragma("cache_size", "-2048")
        .unwrap();
    let manager = SqliteManager::new(config).unwrap().after_connect(move |c| {
        seen.fetch_add(1, Ordering::SeqCst);
        c.execute_batch("CREATE TEMP TABLE hooked (x)")
    });
    let pool = pool(manager, 3);
    let settings = on_each(&pool, 3, |c| {
        let get = |sql: &str| c.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap();
        let num = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        (
            get("PRAGMA journal_mode"),
            num("PRAGMA synchronous"),
            num("PRAGMA busy_timeout"),
            num("PRAGMA foreign_keys"),
            num("PRAGMA cache_size"),
            num("SELECT count(*) FROM temp.hooked"),
        )
    })
    .await;
    assert_eq!(hooked.load(Ordering::SeqCst), 3);
    for s in settings {
        assert_eq!(s, ("wal".into(), 1, 1234, 1, -2048, 0));
    }
}

#[tokio::test]
async fn foreign_keys_are_enforced_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let pool = file_pool(&dir, 2);
    pool.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)", ())
        .await
        .unwrap();
    pool.execute("CREATE TABLE c (p INTEGER REFERENCES p(id))", ())
        .await
        .unwrap();
    let err = pool
        .execute("INSERT INTO c VALUES (?1)", (42,))
        .await
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(ErrorCode::ConstraintViolation)
    );
}

#[tokio::test]
async fn an_in_memory_database_is_shared_and_outlives_every_pooled_connection() {
    let manager = SqliteManager::new(SqliteConfig::memory()).unwrap();
    let pool = pool(manager, 2);
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    pool.execute("INSERT INTO t VALUES (1), (2)", ())
        .await
        .unwrap();
    // Both connections, held at once, see the same data.
    let counts = on_each(&pool, 2, |c| {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap()
    })
    .await;
    assert_eq!(counts, vec![2, 2]);

    // Close every pooled connection: the data stays.
    pool.clear().await;
    assert_eq!(pool.status().size, 0);
    let n: i64 = pool
        .query_row("SELECT sum(v) FROM t", (), |r| r.get(0))
        .await
        .unwrap();
    assert_eq!(n, 3);

    // Another unnamed memory database is a different one.
    let other = self::pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    let err = other
        .query_row("SELECT count(*) FROM t", (), |r| r.get::<_, i64>(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
}

#[tokio::test]
async fn named_memory_databases_are_shared_between_managers() {
    let name = format!("named-{}", std::process::id());
    let a = pool(
        SqliteManager::new(SqliteConfig::memory_named(&name).unwrap()).unwrap(),
        1,
    );
    let b = pool(
        SqliteManager::new(SqliteConfig::memory_named(&name).unwrap()).unwrap(),
        1,
    );
    a.execute("CREATE TABLE t (v TEXT)", ()).await.unwrap();
    a.execute("INSERT INTO t VALUES ('x')", ()).await.unwrap();
    let v: String = b
        .query_row("SELECT v FROM t", (), |r| r.get(0))
        .await
        .unwrap();
    assert_eq!(v, "x");
}

#[tokio::test]
async fn a_writer_waits_for_a_locked_memory_database_instead_of_failing() {
    let manager = SqliteManager::new(SqliteConfig::memory()).unwrap();
    let pool = pool(manager, 2);
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    let holder = pool.get().await.unwrap();
    holder
        .interact(|c| c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);"))
        .await
        .unwrap()
        .unwrap();
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.execute("INSERT INTO t VALUES (2)", ()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "the writer should wait on the lock");
    holder
        .interact(|c| c.execute_batch("COMMIT"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(writer.await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn concurrent_writers_on_a_wal_file_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let pool = file_pool(&dir, 4);
    pool.execute("CREATE TABLE t (task INTEGER, i INTEGER)", ())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                pool.transaction_with(TransactionBehavior::Immediate, move |tx| {
                    tx.execute("INSERT INTO t VALUES (?1, ?2)", (task, i))?;
                    Ok::<_, SqliteQueryError>(())
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = rows(&pool, "t").await;
    assert_eq!(n, 200);
}

#[tokio::test]
async fn transactions_commit_roll_back_and_report() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    let mut events = pool.events();
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();

    pool.transaction(|tx| {
        tx.execute("INSERT INTO t VALUES (1)", [])?;
        Ok::<_, SqliteQueryError>(())
    })
    .await
    .unwrap();

    let err = pool
        .transaction(|tx| {
            tx.execute("INSERT INTO t VALUES (2)", [])?;
            tx.execute("INSERT INTO nowhere VALUES (3)", [])?;
            Ok::<_, SqliteQueryError>(())
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such table: nowhere"), "{err}");

    // A commit that fails: a deferred foreign key checked at COMMIT.
    pool.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)", ())
        .await
        .unwrap();
    pool.execute(
        "CREATE TABLE c (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)",
        (),
    )
    .await
    .unwrap();
    let err = pool
        .transaction(|tx| {
            tx.execute("INSERT INTO c VALUES (9)", [])?;
            Ok::<_, SqliteQueryError>(())
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(ErrorCode::ConstraintViolation)
    );

    let values: Vec<i64> = pool
        .query("SELECT v FROM t ORDER BY v", (), |r| r.get(0))
        .await
        .unwrap();
    assert_eq!(values, vec![1], "the failed transaction left nothing");
    let orphans = rows(&pool, "c").await;
    assert_eq!(orphans, 0, "the failed commit left nothing");
    let in_tx = pool.interact(|c| !c.is_autocommit()).await.unwrap();
    assert!(!in_tx);

    let mut failed = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
    {
        if let PoolEvent::OperationFailed { op, .. } = event {
            failed.push(op);
        }
    }
    assert_eq!(failed, vec![Operation::Transaction, Operation::Commit]);
    assert_eq!(pool.metrics().operation_failures, 2);
}

#[tokio::test]
async fn a_panicking_transaction_rolls_back_and_the_pool_goes_on() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    let mut events = pool.events();
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    let task = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.transaction(|tx| {
                tx.execute("INSERT INTO t VALUES (1)", [])?;
                if tx.is_autocommit() {
                    return Ok::<_, SqliteQueryError>(());
                }
                panic!("boom in the transaction");
            })
            .await
        })
    };
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    let n = rows(&pool, "t").await;
    assert_eq!(n, 0);
    let reported = loop {
        match events.next().await {
            Some(PoolEvent::OperationFailed { op, error }) => break (op, error),
            Some(_) => continue,
            None => panic!("no failure reported"),
        }
    };
    assert_eq!(reported.0, Operation::Transaction);
    assert!(reported.1.contains("panicked"));
}

#[tokio::test]
async fn a_failed_statement_is_reported_as_a_query_failure() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    let err = pool.execute("SELEC 1", ()).await.unwrap_err();
    assert!(matches!(err, SqliteQueryError::Db(_)), "{err:?}");
    assert_eq!(pool.metrics().operation_failures, 1);
}

/// sqlx #1869: a call cancelled while its closure runs must not hand the
/// next user a connection inside a transaction.
#[tokio::test]
async fn a_cancelled_call_never_leaves_the_next_user_in_a_transaction() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    let slow = pool.interact(|c| {
        c.execute_batch("BEGIN; INSERT INTO t VALUES (1);").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    assert!(tokio::time::timeout(Duration::from_millis(20), slow)
        .await
        .is_err());
    // The only connection is back; its next user waits for the cancelled
    // closure and finds the transaction rolled back.
    let (autocommit, n) = pool
        .interact(|c| {
            let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
            Ok::<_, rusqlite::Error>((c.is_autocommit(), n))
        })
        .await
        .unwrap()
        .unwrap();
    assert!(autocommit);
    assert_eq!(n, 0);
    assert_eq!(
        pool.status().size,
        1,
        "the connection was kept, not replaced"
    );
}

#[tokio::test]
async fn a_transaction_begun_by_hand_is_rolled_back_on_return() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    {
        let conn = pool.get().await.unwrap();
        conn.interact(|c| c.execute_batch("BEGIN; INSERT INTO t VALUES (1);"))
            .await
            .unwrap()
            .unwrap();
        assert!(conn.in_transaction());
    }
    let n = rows(&pool, "t").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_panic_in_a_call_is_resumed_in_the_caller_and_the_connection_lives() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    let task = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.interact(|_| panic!("user code")).await })
    };
    assert!(task.await.unwrap_err().is_panic());
    let one: i64 = pool.query_row("SELECT 1", (), |r| r.get(0)).await.unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn the_health_check_times_out_on_a_busy_connection_and_interrupts_it() {
    let manager = SqliteManager::new(SqliteConfig::memory())
        .unwrap()
        .check_timeout(Duration::from_millis(50));
    let mut conn = manager.create().await.unwrap();
    // A statement that runs until interrupted.
    let long = conn.interact(|c| {
        c.query_row(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
            [],
            |r| r.get::<_, i64>(0),
        )
    });
    assert!(tokio::time::timeout(Duration::from_millis(10), long)
        .await
        .is_err());
    let err = manager.validate(&mut conn).await.unwrap_err();
    assert!(matches!(err, SqliteError::CheckTimeout(_)), "{err:?}");
    // Interrupted, the connection answers again.
    manager.validate(&mut conn).await.unwrap();
}

#[tokio::test]
async fn destroy_closes_the_connection_and_its_thread() {
    let manager = SqliteManager::new(SqliteConfig::memory()).unwrap();
    let mut conn = manager.create().await.unwrap();
    assert!(!manager.is_broken(&conn));
    manager.destroy(&mut conn).await.unwrap();
    assert!(manager.is_broken(&conn));
    assert!(matches!(
        conn.interact(|_| ()).await,
        Err(SqliteError::Closed)
    ));
    // Closing twice is fine (a pending destroy is retried).
    manager.destroy(&mut conn).await.unwrap();
}

#[tokio::test]
async fn read_only_connections_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let rw = file_pool(&dir, 1);
    rw.execute("CREATE TABLE t (v INTEGER)", ()).await.unwrap();
    let ro = pool(
        SqliteManager::new(SqliteConfig::file(&path).read_only(true)).unwrap(),
        1,
    );
    let n = rows(&ro, "t").await;
    assert_eq!(n, 0);
    let err = ro
        .execute("INSERT INTO t VALUES (1)", ())
        .await
        .unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ReadOnly));
    assert_eq!(
        ro.manager().config().journal_mode_in_effect(),
        None,
        "read-only connections leave the journal mode alone"
    );
}

/// The driver error a pool's `get` fails with (as the source of a
/// timeout or of a create failure).
/// The error of a get on a database that cannot open; time cannot fix
/// any of these, so the get fails at once, not at its timeout.
async fn create_error(config: SqliteConfig) -> Arc<SqliteError> {
    let manager = SqliteManager::new(config).unwrap();
    let pool = SqlitePool::builder(manager)
        .max(1)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    let err = match pool.get().await {
        Err(e) => e,
        Ok(_) => panic!("the bad database opened"),
    };
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}: {err}",
        t.elapsed()
    );
    assert!(matches!(err, aquifer::PoolError::Create(_)), "{err}");
    match err.create_error() {
        Some(CreateError::Backend(e)) => Arc::clone(e),
        _ => panic!("not a driver error: {err:?}"),
    }
}

#[tokio::test]
async fn bad_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();

    let missing_dir = dir.path().join("no/such/dir/t.db");
    let e = create_error(SqliteConfig::file(&missing_dir)).await;
    assert!(
        matches!(&*e, SqliteError::MissingDirectory { path } if *path == missing_dir),
        "{e:?}"
    );
    assert!(e.to_string().contains("directory does not exist"));

    let absent = dir.path().join("absent.db");
    let e = create_error(SqliteConfig::file(&absent).create(false)).await;
    assert!(matches!(*e, SqliteError::NotFound { .. }), "{e:?}");
    let e = create_error(SqliteConfig::file(&absent).read_only(true)).await;
    assert!(matches!(*e, SqliteError::NotFound { .. }), "{e:?}");
    assert!(!absent.exists());

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let e = create_error(SqliteConfig::file(&garbage)).await;
    assert!(matches!(*e, SqliteError::NotADatabase { .. }), "{e:?}");
    // Each layer names itself; SQLite's words come once.
    let text = aquifer::error_chain(&*e);
    assert_eq!(text.matches("file is not a database").count(), 1, "{text}");
    assert_eq!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase));
}

/// Makes a file unwritable even for root (`chattr +i`), and writable again
/// on drop so the temp dir can be removed.
struct Unwritable(std::path::PathBuf);

impl Unwritable {
    fn new(path: &std::path::Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        if root {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("chattr (e2fsprogs) is needed to make a file read-only for root");
            assert!(status.success(), "chattr +i failed on {}", path.display());
        }
        Unwritable(path.to_path_buf())
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_read_only_file_opened_for_writing_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frozen.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
    }
    let _guard = Unwritable::new(&path);
    let e = create_error(SqliteConfig::file(&path).journal_mode(JournalMode::Delete)).await;
    assert!(matches!(*e, SqliteError::ReadOnly { .. }), "{e:?}");
    assert!(e.to_string().contains("read_only(true)"));
    // Asked for read-only, the same file opens and reads.
    let ro = pool(
        SqliteManager::new(SqliteConfig::file(&path).read_only(true)).unwrap(),
        1,
    );
    let n = rows(&ro, "t").await;
    assert_eq!(n, 0);
}

#[test]
fn the_manager_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SqliteManager>();
    check::<SqlitePool>();
    check::<aquifer_sqlite::SqliteConnection>();
}

#[tokio::test]
async fn locked_use_on_the_callers_thread_is_cleaned_up_like_interact() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        let mut c = conn.lock().unwrap();
        let caller = std::thread::current().id();
        let tx = c.transaction().unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        c.execute_batch("BEGIN; INSERT INTO t VALUES (2);").unwrap();
        assert_eq!(std::thread::current().id(), caller);
        drop(c);
        assert!(conn.in_transaction());
        // interact sees what the lock left.
        let open = conn.interact(|c| !c.is_autocommit()).await.unwrap();
        assert!(open);
    }
    let values: Vec<i64> = pool
        .query("SELECT v FROM t", (), |r| r.get(0))
        .await
        .unwrap();
    assert_eq!(
        values,
        vec![1],
        "the open transaction was rolled back on return"
    );
}

#[tokio::test]
async fn a_pool_call_that_leaves_a_transaction_open_is_rolled_back_and_fails() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    pool.execute("CREATE TABLE t (v INTEGER)", ())
        .await
        .unwrap();
    let err = pool
        .interact(|c| c.execute_batch("BEGIN; INSERT INTO t VALUES (1);"))
        .await
        .unwrap_err();
    assert!(matches!(err, SqliteQueryError::RolledBack(None)), "{err:?}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(pool.metrics().operation_failures, 1);
    let n = rows(&pool, "t").await;
    assert_eq!(n, 0);
}

/// Under load, pool calls are pipelined: the connection goes back to the
/// pool while the call runs on it, and the next caller queues behind.
#[tokio::test]
async fn pool_calls_pipeline_under_load_and_all_complete_in_order() {
    let pool = pool(SqliteManager::new(SqliteConfig::memory()).unwrap(), 1);
    let held = pool.get().await.unwrap();
    let spawn_query = |sql: &'static str| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.query_row(sql, (), |r| r.get::<_, i64>(0)).await })
    };
    let slow = spawn_query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) \
         SELECT count(*) FROM n",
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let quick = spawn_query("SELECT 7");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(pool.status().waiting, 2);
    drop(held);
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The slow call found a caller waiting and let the connection go: the
    // quick call has it, queued behind, and nobody waits in the pool.
    assert!(!slow.is_finished(), "the slow query is still running");
    assert_eq!(pool.status().waiting, 0);
    assert_eq!(slow.await.unwrap().unwrap(), 1_000_000);
    assert_eq!(quick.await.unwrap().unwrap(), 7);
    assert_eq!(pool.status().size, 1);
    // Calls queue on one connection and all complete, in order.
    let mut calls = Vec::new();
    for i in 0..20i64 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            pool.query_row("SELECT ?1", (i,), |r| r.get::<_, i64>(0))
                .await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as i64);
    }
}

/// Switching a new file to WAL takes a lock SQLite's busy handler does not
/// wait for (it would risk a deadlock): connections opened at once used to
/// fail with "database is locked" (seen as a warning and a ban on the
/// first `aquifer serve`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_at_once_on_a_new_file_all_succeed() {
    let mut failures = Vec::new();
    for _ in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let manager =
            Arc::new(SqliteManager::new(SqliteConfig::file(dir.path().join("new.db"))).unwrap());
        let opens: Vec<_> = (0..16)
            .map(|_| {
                let m = Arc::clone(&manager);
                tokio::spawn(async move {
                    let mut conn = m.create().await?;
                    // A write right away, as a first user would (its own
                    // busy errors are the application's to retry).
                    let _ = conn
                        .interact(|c| c.execute_batch("CREATE TABLE IF NOT EXISTS t (x)"))
                        .await;
                    m.destroy(&mut conn).await
                })
            })
            .collect();
        for o in opens {
            if let Err(e) = o.await.unwrap() {
                failures.push(aquifer::error_chain(&e));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}
