//! The aquifer [`Manager`] for SQLite connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aquifer::Manager;
use parking_lot::Mutex;
use rusqlite::Connection;

use crate::anchor::Anchor;
use crate::config::{SqliteConfig, SqliteConfigError, Target};
use crate::connection::{open_connection, SqliteConnection};

/// Runs on every new connection, on its thread, before the pool hands it
/// out (attach databases, register functions, set per-connection pragmas).
pub type AfterConnect = Arc<dyn Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync>;

/// Why a connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The configuration is malformed.
    #[error(transparent)]
    Config(#[from] SqliteConfigError),
    /// The database file's directory does not exist; SQLite does not create
    /// directories.
    #[error("cannot open {}: its directory does not exist", path.display())]
    MissingDirectory {
        /// The file asked for.
        path: PathBuf,
    },
    /// The file does not exist and the configuration says not to create it
    /// (read-only, or `create(false)`).
    #[error("cannot open {}: no such file; check the path, or let it be created (`create(true)`, `?mode=rwc` in a URL, `create = true` in aquifer's configuration)", path.display())]
    NotFound {
        /// The file asked for.
        path: PathBuf,
    },
    /// The file exists but is not a SQLite database, or is corrupt.
    #[error("{target} is not a SQLite database or is corrupt")]
    NotADatabase {
        /// The file.
        target: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A writable connection was asked for, but the file (or its directory,
    /// which SQLite needs for its journal) cannot be written.
    #[error("{target} can only be opened read-only; open it with read_only(true) or fix its permissions")]
    ReadOnly {
        /// The file.
        target: String,
    },
    /// SQLite could not open the database.
    #[error("cannot open {target}")]
    Open {
        /// The file or in-memory database.
        target: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The `after_connect` hook failed; the connection was closed.
    #[error("after_connect failed")]
    AfterConnect(#[source] rusqlite::Error),
    /// The connection's thread has stopped (the connection was closed).
    #[error("the connection is closed")]
    Closed,
    /// The connection's thread could not be started.
    #[error("could not start a connection thread")]
    Thread(#[source] std::io::Error),
    /// The health check did not finish in time (the connection is busy with
    /// a long statement, or stuck on a lock).
    #[error("the health check did not finish within {}", aquifer::human_duration(*.0))]
    CheckTimeout(Duration),
}

impl SqliteError {
    /// SQLite's primary error code, when SQLite reported the error.
    pub fn sqlite_error_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            SqliteError::NotADatabase { source, .. }
            | SqliteError::Open { source, .. }
            | SqliteError::Sqlite(source)
            | SqliteError::AfterConnect(source) => source.sqlite_error_code(),
            _ => None,
        }
    }
}

/// Opens, checks, resets and closes SQLite connections for an
/// [`aquifer::Pool`]. Each connection runs on its own thread (see
/// [`SqliteConnection`]).
///
/// For an in-memory database the manager keeps one connection of its own
/// open, so the data lives as long as the manager, not as long as the pool
/// happens to hold a connection (all pooled connections closed by an idle
/// timeout would otherwise drop it).
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use aquifer_sqlite::{SqliteConfig, SqliteManager, SqlitePool};
///
/// let manager = SqliteManager::new(SqliteConfig::memory())?;
/// let pool = SqlitePool::builder(manager).max(4).build()?;
/// let conn = pool.get().await?;
/// let two: i64 = conn.interact(|c| c.query_row("SELECT 1 + 1", [], |r| r.get(0))).await??;
/// assert_eq!(two, 2);
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
/// ```
pub struct SqliteManager {
    config: SqliteConfig,
    after_connect: Option<AfterConnect>,
    check_timeout: Duration,
    /// Keeps an in-memory database alive between pooled connections.
    keeper: Option<Mutex<Connection>>,
    /// Keeps the WAL read lock while the pool is busy (see
    /// [`SqliteConfig::read_anchor`]).
    anchor: Option<Anchor>,
}

impl std::fmt::Debug for SqliteManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteManager")
            .field("target", &self.config.target.to_string())
            .field("read_only", &self.config.read_only)
            .field("after_connect", &self.after_connect.is_some())
            .field("check_timeout", &self.check_timeout)
            .field("read_anchor", &self.anchor.is_some())
            .finish_non_exhaustive()
    }
}

impl SqliteManager {
    /// A manager for this database. For an in-memory database this opens
    /// the keeper connection now; for a file, it starts the read anchor's
    /// thread (which opens its connection at the pool's first use).
    ///
    /// # Errors
    /// What opening the in-memory database fails with, or
    /// [`SqliteError::Thread`]; file databases are first opened by the
    /// pool.
    pub fn new(config: SqliteConfig) -> Result<Self, SqliteError> {
        let (keeper, anchor) = match config.target {
            Target::Memory(_) => (Some(Mutex::new(open_connection(&config, None)?)), None),
            Target::File(_) if config.read_anchor => (
                None,
                Some(Anchor::start(config.clone()).map_err(SqliteError::Thread)?),
            ),
            Target::File(_) => (None, None),
        };
        Ok(SqliteManager {
            config,
            after_connect: None,
            check_timeout: Duration::from_secs(5),
            keeper,
            anchor,
        })
    }

    /// A manager from a `sqlite:` URL (see
    /// [`SqliteConfig::from_url`]).
    ///
    /// # Errors
    /// [`SqliteError::Config`] for a malformed URL, and as
    /// [`new`](Self::new).
    pub fn from_url(url: &str) -> Result<Self, SqliteError> {
        Self::new(SqliteConfig::from_url(url)?)
    }

    /// Runs `hook` on every new connection; an error closes it and fails
    /// the create with [`SqliteError::AfterConnect`].
    #[must_use]
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync + 'static,
    {
        self.after_connect = Some(Arc::new(hook));
        self
    }

    /// How long the health check (`SELECT 1`) may take. Default 5 s.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// The configuration connections open with.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// Runs `f` on the keeper connection of an in-memory database (for
    /// setup before the pool starts, say). `None` for a file database.
    pub fn with_keeper<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> Option<R> {
        self.keeper.as_ref().map(|k| f(&mut k.lock()))
    }
}

impl Manager for SqliteManager {
    type Type = SqliteConnection;
    type Error = SqliteError;

    async fn create(&self) -> Result<SqliteConnection, SqliteError> {
        SqliteConnection::open(
            self.config.clone(),
            self.after_connect.clone(),
            self.anchor.as_ref().map(Anchor::signal),
        )
        .await
    }

    async fn validate(&self, conn: &mut SqliteConnection) -> Result<(), SqliteError> {
        let check = conn.interact(|c| c.query_row("SELECT 1", [], |_| Ok(())));
        match tokio::time::timeout(self.check_timeout, check).await {
            Ok(result) => result?.map_err(SqliteError::Sqlite),
            Err(_) => {
                conn.interrupt();
                Err(SqliteError::CheckTimeout(self.check_timeout))
            }
        }
    }

    fn is_broken(&self, conn: &SqliteConnection) -> bool {
        conn.is_closed()
    }

    fn needs_reset(&self, conn: &mut SqliteConnection) -> bool {
        conn.needs_reset()
    }

    /// Waits for calls still running (cancelled ones) and rolls back a
    /// transaction left open.
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), SqliteError> {
        let rolled_back = conn
            .interact(|c| {
                if c.is_autocommit() {
                    Ok(false)
                } else {
                    c.execute_batch("ROLLBACK").map(|()| true)
                }
            })
            .await??;
        if rolled_back {
            tracing::debug!(target: "aquifer::sqlite", "rolled back a transaction left open");
        }
        Ok(())
    }

    /// A malformed configuration, a file in a directory that does not
    /// exist, a missing file that may not be created, a file that is not a
    /// database, or one that cannot be written: waiting does not fix these.
    fn is_permanent(&self, error: &SqliteError) -> bool {
        matches!(
            error,
            SqliteError::Config(_)
                | SqliteError::MissingDirectory { .. }
                | SqliteError::NotFound { .. }
                | SqliteError::NotADatabase { .. }
                | SqliteError::ReadOnly { .. }
        )
    }

    fn driver_name(&self) -> &'static str {
        "sqlite"
    }

    fn server(&self) -> Option<String> {
        Some(self.config.target.to_string())
    }

    async fn destroy(&self, conn: &mut SqliteConnection) -> Result<(), SqliteError> {
        conn.close().await
    }
}
