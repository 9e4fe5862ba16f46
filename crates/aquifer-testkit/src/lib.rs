//! Real servers and real faults for aquifer's tests.
//!
//! - [`PgServer`]: a throwaway PostgreSQL in a temporary directory on a free
//!   port of 127.0.0.1, started from the installed server binaries in about
//!   a second; `stop`, `kill` (a crash), `start` again on the same data and
//!   port; removed on drop.
//! - [`MariaDbServer`]: the same for MariaDB (`mariadb-install-db` once
//!   per machine into a cached template), as the `mysql` user when root.
//! - [`PgBouncer`]: PgBouncer in session or transaction pooling mode in
//!   front of a `PgServer`.
//! - [`TestPki`]: a throwaway CA and server certificate for TLS tests;
//!   [`CapturedLogs`]: what `tracing` wrote, for redaction tests; [`Load`]
//!   and [`MaxWatcher`]: tasks that keep a pool busy through a fault;
//!   [`Writers`]: tasks that write numbered keys through a failover.
//! - Replication: [`PgServer::start_replica`] (streaming; pause and resume
//!   replay, promote, follow a new primary) and
//!   [`MariaDbServer::start_replica`] (GTID, semi-synchronous).
//! - [`FaultProxy`]: a TCP proxy between a pool and a server that passes,
//!   delays, blackholes, refuses or resets traffic on demand.
//!
//! ```no_run
//! use aquifer_testkit::{Fault, FaultProxy, PgServer};
//!
//! # fn main() -> Result<(), aquifer_testkit::TestkitError> {
//! let pg = PgServer::new()?;
//! let proxy = FaultProxy::start(pg.addr())?;
//! let url = pg.url_through(&proxy); // clients connect through the proxy
//! proxy.set(Fault::Blackhole);      // ...and now hang
//! # let _ = url;
//! # Ok(())
//! # }
//! ```

mod bouncer;
mod load;
mod mariadb;
mod pg;
mod pki;
mod process;
mod proxy;
mod writers;

pub use bouncer::{PgBouncer, PoolMode};
pub use load::{pg_sessions, Load, LoadReport, MaxWatcher, Restartable, Step};
pub use mariadb::{
    MariaDbServer, MariaDbServerBuilder, MARIADB_APP_USER, MARIADB_PASSWORD, MARIADB_USER,
};
pub use pg::{PgServer, PgServerBuilder, PG_PASSWORD};
pub use pki::{CapturedLogs, TestPki};
pub use proxy::{Fault, FaultProxy};
pub use writers::{no_primary, Outcome, Writers};

/// Why a test server or proxy could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// Something the tests need is not installed.
    #[error("{what} not found: install it with `{install}`")]
    Missing {
        /// What is missing.
        what: &'static str,
        /// How to install it.
        install: &'static str,
    },
    /// The server did not come up; `log` is the tail of its log.
    #[error("{server} did not start:\n{log}")]
    Startup {
        /// Which server.
        server: &'static str,
        /// The end of its log.
        log: String,
    },
    /// A helper command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        message: String,
    },
    /// An I/O error while `context`.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Polls `cond` (a blocking check, such as a query through the server's
/// command-line client) every 20 ms until it holds.
///
/// # Panics
/// When it still does not hold after 10 s, naming `what`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < give_up,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls `f` once and drops it, as a cancelled caller does after its
/// first poll (an HTTP handler dropped by its client, a `select!` that
/// took another branch): whatever `f` started in that poll stays started.
pub async fn poll_once_and_drop<F: std::future::Future>(f: F) {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        let _ = f.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
}

/// An error's message followed by its sources', joined by ` <- `: what a
/// test asserts on when the cause matters.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(" <- ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl TestkitError {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> Self {
        Self::Io { context, source }
    }
}
