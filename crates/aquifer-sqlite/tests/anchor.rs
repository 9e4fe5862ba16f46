//! The read anchor (`SqliteConfig::read_anchor`) against real WAL files:
//! it holds a snapshot while the pool is busy, lets go when the pool is
//! idle or gone, and never keeps a checkpoint from finishing.
//!
//! What the anchor holds is seen from outside, the way any other
//! connection would feel it: a passive checkpoint cannot copy frames
//! written after the snapshot some reader still holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aquifer_sqlite::rusqlite::Connection;
use aquifer_sqlite::{SqliteConfig, SqliteManager, SqlitePool, SqlitePoolExt};

fn pool(dir: &tempfile::TempDir, anchor: bool) -> SqlitePool {
    let config = SqliteConfig::file(dir.path().join("t.db")).read_anchor(anchor);
    SqlitePool::builder(SqliteManager::new(config).unwrap())
        .max(2)
        .build()
        .unwrap()
}

/// A connection outside the pool that never waits for a lock.
fn observer(dir: &tempfile::TempDir) -> Connection {
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    c.busy_timeout(Duration::ZERO).unwrap();
    c
}

/// Writes a row, then runs a passive checkpoint: whether it could copy
/// every frame of the log into the database (no reader held it back).
fn checkpoint_completes(c: &Connection) -> bool {
    c.execute("INSERT INTO t (v) VALUES ('x')", []).unwrap();
    let (busy, log, done): (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    busy == 0 && log == done
}

/// Of `n` checkpoints a millisecond apart, how many completed.
async fn completed(c: &Connection, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(checkpoint_completes(c));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    ok
}

/// A task keeping the pool busy with short reads, as an application
/// would, until `stop` is set.
fn reader(pool: &SqlitePool, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let (pool, stop) = (pool.clone(), Arc::clone(stop));
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let mut conn = pool.get().await.unwrap();
            let n: i64 = conn
                .lock()
                .unwrap()
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert!(n >= 0);
            drop(conn);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    })
}

async fn setup(pool: &SqlitePool) {
    pool.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", ())
        .await
        .unwrap();
}

/// Of 40 checkpoints from outside while a task keeps the pool busy, how
/// many completed; then, after the load stops and 50 ms pass, of 20 more.
async fn checkpoints_under_load_then_idle(anchor: bool) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, anchor);
    setup(&pool).await;
    let outside = observer(&dir);

    let stop = Arc::new(AtomicBool::new(false));
    let load = reader(&pool, &stop);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let busy = completed(&outside, 40).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    (busy, completed(&outside, 20).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_holds_a_snapshot_only_while_the_pool_is_busy() {
    let (busy, idle) = checkpoints_under_load_then_idle(true).await;
    // The pool's own reads hold their snapshot for microseconds; the
    // anchor holds one for milliseconds, so nearly every checkpoint
    // finds frames it may not copy yet.
    assert!(busy <= 8, "{busy} of 40 checkpoints completed under load");
    // One period without use and the anchor lets go.
    assert_eq!(idle, 20, "the idle pool still holds a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_anchor_the_same_load_holds_nothing_back() {
    let (busy, idle) = checkpoints_under_load_then_idle(false).await;
    assert!(busy >= 32, "only {busy} of 40 checkpoints completed");
    assert_eq!(idle, 20);
}

/// A truncating checkpoint needs every reader out of the log. Under steady
/// reads and writes through the pool it still gets there within its busy
/// timeout: the anchor renews its snapshot every few milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncating_checkpoint_finishes_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, true);
    setup(&pool).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4).map(|_| reader(&pool, &stop)).collect();
    let writer = {
        let (pool, stop) = (pool.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                pool.execute("INSERT INTO t (v) VALUES ('y')", ())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let wal = dir.path().join("t.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);

    let path = dir.path().join("t.db");
    let truncated = tokio::task::spawn_blocking(move || {
        let c = Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    writer.await.unwrap();
    let (busy, log): (i64, i64) = truncated.unwrap();
    assert_eq!((busy, log), (0, 0), "the checkpoint gave up on a reader");
}

#[test]
fn the_anchor_is_a_file_setting_that_urls_can_turn_off() {
    let url: SqliteConfig = "sqlite://x.db?read_anchor=false".parse().unwrap();
    let manager = SqliteManager::new(url).unwrap();
    assert!(format!("{manager:?}").contains("read_anchor: false"));
    let manager = SqliteManager::new(SqliteConfig::file("x.db")).unwrap();
    assert!(format!("{manager:?}").contains("read_anchor: true"));
    let manager = SqliteManager::new(SqliteConfig::memory()).unwrap();
    assert!(format!("{manager:?}").contains("read_anchor: false"));
    let bad = "sqlite://x.db?read_anchor=maybe".parse::<SqliteConfig>();
    assert!(bad.unwrap_err().to_string().contains("read_anchor"));
}
