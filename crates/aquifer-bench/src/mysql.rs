//! `SELECT 1` round trips per second through each MySQL pool, against a
//! throwaway MariaDB from the testkit, all in one process and one run.
//!
//! One operation is a checkout, `query_drop("SELECT 1")` (one round trip
//! on the text protocol) and the return. Neither deadpool nor bb8 ships a
//! mysql_async adapter, so each gets the few lines one would write: create
//! with `Conn::new`, deadpool recycles without a query (like
//! deadpool-postgres's default), bb8 pings in `is_valid` (like
//! bb8-postgres; bb8 tests on checkout by default). mysql_async's own pool
//! runs at its defaults, which reset every returned connection with
//! `COM_RESET_CONNECTION` in the background, and once more with that reset
//! off; aquifer at its default and with `ResetMode::Connection`. The floor is `size` bare connections, each used by one task at a
//! time, with no pool.

use std::time::Duration;

use aquifer_mysql::{MySqlManager, MySqlPool, ResetMode};
use aquifer_testkit::MariaDbServer;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, PoolConstraints, PoolOpts};

use crate::compare::{self, DbOpts};
use crate::Sample;

/// The pools this benchmark compares.
pub const POOLS: &[&str] = &[
    "aquifer",
    "aquifer-reset",
    "mysql_async",
    "mysql_async-noreset",
    "deadpool",
    "bb8",
    "raw-exclusive",
];

/// The adapters deadpool and bb8 do not ship.
struct Adapter(Opts);

impl deadpool::managed::Manager for Adapter {
    type Type = Conn;
    type Error = mysql_async::Error;

    async fn create(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(self.0.clone()).await
    }

    async fn recycle(
        &self,
        conn: &mut Conn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<mysql_async::Error> {
        if conn.is_disconnected() {
            return Err(deadpool::managed::RecycleError::message("disconnected"));
        }
        Ok(())
    }
}

impl bb8::ManageConnection for Adapter {
    type Connection = Conn;
    type Error = mysql_async::Error;

    async fn connect(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(self.0.clone()).await
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), mysql_async::Error> {
        conn.ping().await
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.is_disconnected()
    }
}

async fn measure(
    url: &str,
    pool: &str,
    size: usize,
    tasks: usize,
    window: Duration,
) -> Option<Sample> {
    let opts =
        OptsBuilder::from_opts(Opts::from_url(url).expect("testkit URL")).prefer_socket(false);
    match pool {
        "aquifer" | "aquifer-reset" => {
            // The reset on return: only when needed (the default), or
            // COM_RESET_CONNECTION every time.
            let reset = match pool {
                "aquifer" => ResetMode::IfDirty,
                _ => ResetMode::Connection,
            };
            let manager = MySqlManager::new(url)
                .expect("testkit URL")
                .reset_mode(reset);
            let p = MySqlPool::builder(manager)
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
                |conn| { conn.query_drop("SELECT 1").await.expect("SELECT 1") }
            )
        }
        "mysql_async" | "mysql_async-noreset" => {
            let constraints = PoolConstraints::new(size, size).expect("min <= max");
            let pool_opts = PoolOpts::default()
                .with_constraints(constraints)
                .with_reset_connection(pool == "mysql_async");
            let p = mysql_async::Pool::new(opts.pool_opts(pool_opts));
            let result = checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get_conn().await.expect("get"),
                |conn| conn.query_drop("SELECT 1").await.expect("SELECT 1")
            );
            p.disconnect().await.expect("disconnect");
            result
        }
        "deadpool" => {
            let p: deadpool::managed::Pool<Adapter> =
                deadpool::managed::Pool::builder(Adapter(opts.into()))
                    .max_size(size)
                    .build()
                    .expect("valid config");
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| { conn.query_drop("SELECT 1").await.expect("SELECT 1") }
            )
        }
        "bb8" => {
            let p = bb8::Pool::builder()
                .max_size(size as u32)
                .build(Adapter(opts.into()))
                .await
                .expect("connect");
            checkout_loop!(
                p,
                size,
                tasks,
                window,
                |p| p.get().await.expect("get"),
                |conn| { conn.query_drop("SELECT 1").await.expect("SELECT 1") }
            )
        }
        "raw-exclusive" => {
            let mut conns = Vec::with_capacity(size);
            for _ in 0..size {
                conns.push(Conn::new(opts.clone()).await.expect("connect"));
            }
            exclusive_loop!(conns, tasks, window, |conn| {
                conn.query_drop("SELECT 1").await.expect("SELECT 1");
            })
        }
        other => unreachable!("unknown pool {other}"),
    }
}

/// Runs the comparison and prints a table (or JSON lines).
pub fn run(o: DbOpts) -> std::process::ExitCode {
    let server = match MariaDbServer::builder().max_connections(400).start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start a MariaDB server for the benchmark: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let url = server.url();
    let samples = compare::rounds(&o, async |pool| {
        measure(&url, pool, o.size, o.tasks, o.window).await
    });
    compare::report(
        "mysql-select-1",
        "SELECT 1 round trips/s on MariaDB",
        &o,
        &samples,
        Some("raw-exclusive"),
    )
}
