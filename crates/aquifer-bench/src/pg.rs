//! `SELECT 1` round trips per second through each PostgreSQL pool, against a
//! throwaway server from the testkit, all in one process and one run.
//!
//! Every pool runs at its defaults (aquifer also with each reset mode that
//! runs on every return) and does the same work per operation:
//! check out, `simple_query("SELECT 1")` (one round trip), return. The floor
//! is `size` raw tokio-postgres clients, each used by one task at a time,
//! with no pool at all.

use std::str::FromStr;
use std::time::Duration;

use aquifer_postgres::{PgManager, PgPool, ResetMode};
use aquifer_testkit::PgServer;
use tokio_postgres::NoTls;

use crate::compare::{self, DbOpts};
use crate::Sample;

/// The pools this benchmark compares.
pub const POOLS: &[&str] = &[
    "aquifer",
    "aquifer-rollback",
    "aquifer-discard",
    "deadpool-postgres",
    "bb8-postgres",
    "raw-exclusive",
];

pub(crate) async fn measure(
    url: &str,
    pool: &str,
    size: usize,
    tasks: usize,
    window: Duration,
) -> Option<Sample> {
    let config = tokio_postgres::Config::from_str(url).expect("testkit URL");
    match pool {
        "aquifer" | "aquifer-rollback" | "aquifer-discard" => {
            // The reset on return: only when needed (the default), a
            // ROLLBACK every time, or ROLLBACK and DISCARD ALL every time.
            let reset = match pool {
                "aquifer" => ResetMode::IfDirty,
                "aquifer-rollback" => ResetMode::Rollback,
                _ => ResetMode::Query("DISCARD ALL".into()),
            };
            let manager = PgManager::new(url).expect("testkit URL").reset(reset);
            let p = PgPool::builder(manager)
                .max(size)
                .build()
                .expect("valid config");
            p.start().await.expect("connect");
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| { conn.simple_query("SELECT 1").await.expect("SELECT 1") }
            )
        }
        "deadpool-postgres" => {
            let p = deadpool(url, size);
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| { conn.simple_query("SELECT 1").await.expect("SELECT 1") }
            )
        }
        "bb8-postgres" => {
            let mgr = bb8_postgres::PostgresConnectionManager::new(config, NoTls);
            let p = bb8::Pool::builder()
                .max_size(size as u32)
                .build(mgr)
                .await
                .expect("connect");
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| { conn.simple_query("SELECT 1").await.expect("SELECT 1") }
            )
        }
        "raw-exclusive" => {
            let clients = connect_raw(&config, size).await;
            exclusive_loop!(clients, tasks, window, |client| {
                client.simple_query("SELECT 1").await.expect("SELECT 1");
            })
        }
        other => unreachable!("unknown pool {other}"),
    }
}

/// `n` raw tokio-postgres clients, connected one after another, each
/// with its connection driven by a task of its own.
pub(crate) async fn connect_raw(
    config: &tokio_postgres::Config,
    n: usize,
) -> Vec<tokio_postgres::Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let (client, conn) = config.connect(NoTls).await.expect("connect");
        tokio::spawn(conn);
        clients.push(client);
    }
    clients
}

/// A deadpool-postgres pool of `size` at its defaults.
pub(crate) fn deadpool(url: &str, size: usize) -> deadpool_postgres::Pool {
    let config = tokio_postgres::Config::from_str(url).expect("testkit URL");
    let mgr = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        deadpool_postgres::ManagerConfig::default(),
    );
    deadpool_postgres::Pool::builder(mgr)
        .max_size(size)
        .build()
        .expect("valid config")
}

/// Runs the comparison and prints a table (or JSON lines).
pub fn run(o: DbOpts) -> std::process::ExitCode {
    let server = match PgServer::builder().max_connections(200).trust().start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start a PostgreSQL server for the benchmark: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let url = server.url();
    let samples = compare::rounds(&o, async |pool| {
        measure(&url, pool, o.size, o.tasks, o.window).await
    });
    compare::report(
        "postgres-select-1",
        "SELECT 1 round trips/s",
        &o,
        &samples,
        Some("raw-exclusive"),
    )
}
