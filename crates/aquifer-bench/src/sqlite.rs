//! Point `SELECT`s per second through each SQLite pool, on one WAL file of
//! 10,000 rows, all in one process and one run.
//!
//! One operation is a checkout, `SELECT v FROM kv WHERE id = ?` on a random
//! id with a cached statement, and the return. The async pools run `tasks`
//! tasks on a 2-worker runtime, each in two ways: handing the query to
//! another thread (aquifer's connection thread, deadpool-sqlite's
//! `interact` on `spawn_blocking`), and running it on the task's own thread
//! under the connection's lock (`-lock`: aquifer's `lock()`,
//! deadpool-sqlite's `lock()`). r2d2_sqlite, being synchronous, runs `tasks`
//! OS threads that query on their own stack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aquifer_sqlite::rusqlite::{self, Connection};
use aquifer_sqlite::{SqliteConfig, SqliteManager, SqlitePool, SqlitePoolExt};

use crate::compare::{self, DbOpts};
use crate::{drive, drive_threads, Sample};

/// The pools this benchmark compares.
pub const POOLS: &[&str] = &[
    "aquifer",
    "aquifer-checkout",
    "aquifer-lock",
    "deadpool-sqlite",
    "deadpool-sqlite-lock",
    "r2d2_sqlite",
];

const ROWS: i64 = 10_000;
const SELECT: &str = "SELECT v FROM kv WHERE id = ?1";

fn point_select(c: &Connection) -> rusqlite::Result<String> {
    let id = fastrand::i64(1..=ROWS);
    c.prepare_cached(SELECT)?.query_row([id], |r| r.get(0))
}

fn fill(path: &Path) -> rusqlite::Result<()> {
    let mut c = Connection::open(path)?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
    )?;
    let tx = c.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO kv (id, v) VALUES (?1, ?2)")?;
        for id in 1..=ROWS {
            insert.execute(rusqlite::params![id, format!("value-{id:05}")])?;
        }
    }
    tx.commit()
}

async fn measure(
    path: &Path,
    pool: &str,
    size: usize,
    tasks: usize,
    window: Duration,
) -> Option<Sample> {
    let aquifer = || async {
        let manager = SqliteManager::new(SqliteConfig::file(path)).expect("file config");
        let p = SqlitePool::builder(manager)
            .max(size)
            .build()
            .expect("valid config");
        p.start().await.expect("open");
        p
    };
    let deadpool = || {
        let mut cfg = deadpool_sqlite::Config::new(path);
        cfg.pool = Some(deadpool_sqlite::PoolConfig::new(size));
        cfg.create_pool(deadpool_sqlite::Runtime::Tokio1)
            .expect("valid config")
    };
    match pool {
        "aquifer" => {
            let p = aquifer().await;
            drive(
                tasks,
                window,
                task!(p, |p| {
                    p.interact(|c| point_select(c))
                        .await
                        .expect("interact")
                        .expect("select");
                }),
            )
            .await
        }
        "aquifer-checkout" => {
            let p = aquifer().await;
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| {
                    conn.interact(|c| point_select(c))
                        .await
                        .expect("interact")
                        .expect("select")
                }
            )
        }
        "aquifer-lock" => {
            let p = aquifer().await;
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| { point_select(&conn.lock().expect("lock")).expect("select") }
            )
        }
        "deadpool-sqlite-lock" => {
            let p = deadpool();
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| { point_select(&conn.lock().expect("lock")).expect("select") }
            )
        }
        "deadpool-sqlite" => {
            let p = deadpool();
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| {
                    conn.interact(|c| point_select(c))
                        .await
                        .expect("interact")
                        .expect("select")
                }
            )
        }
        "r2d2_sqlite" => {
            let p = r2d2::Pool::builder()
                .max_size(size as u32)
                .build(r2d2_sqlite::SqliteConnectionManager::file(path))
                .expect("open");
            drive_threads(tasks, window, move || {
                let conn = p.get().expect("get");
                point_select(&conn).expect("select");
            })
        }
        other => unreachable!("unknown pool {other}"),
    }
}

/// Runs the comparison and prints a table (or JSON lines).
pub fn run(o: DbOpts) -> std::process::ExitCode {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("bench.db");
    if let Err(e) = fill(&path) {
        eprintln!("cannot build the benchmark database: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let samples = compare::rounds(&o, async |pool| {
        measure(&path, pool, o.size, o.tasks, o.window).await
    });
    compare::report(
        "sqlite-point-select",
        "point SELECTs/s on a 10k-row WAL file",
        &o,
        &samples,
        None,
    )
}
