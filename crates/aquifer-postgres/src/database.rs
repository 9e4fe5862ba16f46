//! Presets and `PgDatabase`, the connect-once connection manager.

use std::time::{Duration, Instant, SystemTime};

use aquifer::{BuildError, PoolConfig, PoolError, Pooled};
use parking_lot::Mutex;

use crate::config::PgConfigError;
use crate::manager::{PgError, PgManager};
use crate::PgPool;

/// Pool settings for a kind of environment. Change any of them with struct
/// update syntax:
///
/// ```
/// use aquifer_postgres::Preset;
///
/// let cfg = aquifer::PoolConfig { max: 40, ..Preset::Production.pool_config() };
/// assert_eq!((cfg.min, cfg.max), (2, 40));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// min 2, max 20, connect timeout 5 s, idle timeout 30 s.
    Production,
    /// min 1, max 5, connect timeout 5 s, idle timeout 10 s.
    Development,
    /// min 0, max 2, connect timeout 2 s, idle timeout 1 s.
    Test,
}

impl Preset {
    /// `(min, max, connect timeout, idle timeout)`.
    fn numbers(self) -> (usize, usize, Duration, Duration) {
        let s = Duration::from_secs;
        match self {
            Preset::Production => (2, 20, s(5), s(30)),
            Preset::Development => (1, 5, s(5), s(10)),
            Preset::Test => (0, 2, s(2), s(1)),
        }
    }

    /// The pool settings: `min`, `max`, `idle_timeout`, and the connect
    /// timeout as `create_timeout`; every other setting at its default.
    pub fn pool_config(self) -> PoolConfig {
        let (min, max, connect, idle) = self.numbers();
        PoolConfig {
            min,
            max,
            create_timeout: connect,
            idle_timeout: Some(idle),
            // Maintenance must run often enough for the idle timeout.
            eviction_interval: PoolConfig::default().eviction_interval.min(idle),
            ..PoolConfig::default()
        }
    }

    /// The TCP connect timeout.
    pub fn connect_timeout(self) -> Duration {
        self.numbers().2
    }
}

/// Why connecting, disconnecting or checking out through a [`PgDatabase`]
/// failed. Messages name the server as `host:port/db`, never the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The first connection could not be made; the source says why.
    #[error("could not connect to PostgreSQL at {target}")]
    Connect {
        /// `host:port/db`.
        target: String,
        /// The pool's error, with the driver's cause below it.
        #[source]
        source: PoolError<PgError>,
    },
    /// [`PgDatabase::connect`] has not been called (or `disconnect` was).
    #[error("not connected to PostgreSQL: call connect() first")]
    NotConnected,
    /// No connection could be checked out of the connected pool.
    #[error("no connection to PostgreSQL at {target}")]
    Acquire {
        /// `host:port/db`.
        target: String,
        /// The pool's error.
        #[source]
        source: PoolError<PgError>,
    },
    /// Some connections did not close on `disconnect`.
    #[error("disconnected from {target}, but {pending} connection(s) failed to close: {error}")]
    Disconnect {
        /// `host:port/db`.
        target: String,
        /// How many.
        pending: usize,
        /// The first one's error.
        error: String,
    },
    /// The pool settings cannot work.
    #[error("invalid pool settings")]
    Settings(#[from] BuildError),
}

/// Connection counts, as [`PgDatabase::stats`] reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PgStats {
    /// Connections open or being opened.
    pub total: usize,
    /// Connections waiting in the pool.
    pub idle: usize,
    /// Connections in use.
    pub borrowed: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// The result of [`PgDatabase::health_check`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HealthReport {
    /// Connected, and the round trip succeeded.
    pub healthy: bool,
    /// `connect()` has been called and not undone.
    pub connected: bool,
    /// Connection counts at the time of the check.
    pub stats: PgStats,
    /// The round trip's duration (checkout included), when it succeeded.
    #[cfg_attr(feature = "serde", serde(serialize_with = "aquifer::report::opt_secs"))]
    pub latency: Option<Duration>,
    /// When the check ran.
    #[cfg_attr(feature = "serde", serde(serialize_with = "aquifer::report::time"))]
    pub checked_at: SystemTime,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A database handle that connects once: concurrent and repeated
/// [`connect`](PgDatabase::connect) calls share one pool, until
/// [`disconnect`](PgDatabase::disconnect).
///
/// ```no_run
/// use aquifer_postgres::{PgDatabase, Preset};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let db = PgDatabase::with_preset("postgres://app:secret@localhost/app", Preset::Production)?;
/// db.connect().await?;
/// let report = db.health_check().await;
/// assert!(report.healthy, "{:?}", report.error);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PgDatabase {
    manager: PgManager,
    config: PoolConfig,
    pool: Mutex<Option<PgPool>>,
    connecting: tokio::sync::Mutex<()>,
}

impl PgDatabase {
    /// A handle for `url` with these pool settings; nothing connects yet.
    ///
    /// # Errors
    /// [`PgConfigError`] naming the malformed part of the URL.
    pub fn new(url: &str, config: PoolConfig) -> Result<Self, PgConfigError> {
        Ok(Self::from_manager(PgManager::new(url)?, config))
    }

    /// A handle for `url` with a [`Preset`]'s settings.
    ///
    /// # Errors
    /// As [`new`](PgDatabase::new).
    pub fn with_preset(url: &str, preset: Preset) -> Result<Self, PgConfigError> {
        let manager = PgManager::new(url)?.connect_timeout(preset.connect_timeout());
        Ok(Self::from_manager(manager, preset.pool_config()))
    }

    /// A handle for a configured manager.
    pub fn from_manager(manager: PgManager, config: PoolConfig) -> Self {
        Self {
            manager,
            config,
            pool: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Builds the pool and proves the server answers with one connection;
    /// returns the same pool to every caller until `disconnect`. Gives up
    /// after the connect timeout (the pool's `create_timeout`; a
    /// [`Preset`]'s connect timeout) and one backoff step.
    ///
    /// # Errors
    /// [`ConnectionError::Connect`] with the cause (refused, wrong password,
    /// unknown database, no answer in time) as its source.
    pub async fn connect(&self) -> Result<PgPool, ConnectionError> {
        if let Some(pool) = self.pool() {
            return Ok(pool);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(pool) = self.pool() {
            return Ok(pool);
        }
        let pool = PgPool::new(self.manager.clone(), self.config.clone())?;
        let started = Instant::now();
        // The first connection gets the connect (create) timeout, not the
        // acquire timeout, plus one backoff step so that the failed
        // attempt's own cause (refused, no answer) is what is reported.
        let within =
            self.config.create_timeout.min(self.config.acquire_timeout) + self.config.backoff.min;
        match pool.get_timeout(within).await {
            Ok(conn) => drop(conn),
            Err(source) => {
                pool.close().await;
                tracing::warn!(
                    target: "aquifer::postgres", server = %self.manager.target(),
                    error = %source, "connect failed"
                );
                return Err(ConnectionError::Connect {
                    target: self.manager.target(),
                    source,
                });
            }
        }
        tracing::info!(
            target: "aquifer::postgres", server = %self.manager.target(),
            took = ?started.elapsed(), "connected"
        );
        *self.pool.lock() = Some(pool.clone());
        Ok(pool)
    }

    /// Closes the pool: idle connections now, borrowed ones when they come
    /// back. Disconnecting twice is fine.
    ///
    /// # Errors
    /// [`ConnectionError::Disconnect`] when connections failed to close
    /// (they stay in the pool's `pending()` list).
    pub async fn disconnect(&self) -> Result<(), ConnectionError> {
        let Some(pool) = self.pool.lock().take() else {
            return Ok(());
        };
        pool.close().await;
        let pending = pool.pending();
        tracing::info!(target: "aquifer::postgres", server = %self.manager.target(), "disconnected");
        match pending.first() {
            None => Ok(()),
            Some(first) => Err(ConnectionError::Disconnect {
                target: self.manager.target(),
                pending: pending.len(),
                error: first.error.clone(),
            }),
        }
    }

    /// Whether `connect` succeeded and `disconnect` has not been called.
    pub fn is_connected(&self) -> bool {
        self.pool.lock().is_some()
    }

    /// The pool, once connected.
    pub fn pool(&self) -> Option<PgPool> {
        self.pool.lock().clone()
    }

    /// A pooled connection.
    ///
    /// # Errors
    /// [`ConnectionError::NotConnected`] before `connect`, else
    /// [`ConnectionError::Acquire`].
    pub async fn client(&self) -> Result<Pooled<PgManager>, ConnectionError> {
        let pool = self.pool().ok_or(ConnectionError::NotConnected)?;
        pool.get().await.map_err(|source| ConnectionError::Acquire {
            target: self.manager.target(),
            source,
        })
    }

    /// Connection counts (all zero when not connected).
    pub fn stats(&self) -> PgStats {
        self.pool().map_or_else(PgStats::default, |p| {
            let s = p.status();
            PgStats {
                total: s.size,
                idle: s.idle,
                borrowed: s.borrowed,
                waiting: s.waiting,
            }
        })
    }

    /// Checks out a connection and runs the manager's health check on it.
    /// Never fails: the report says what went wrong.
    pub async fn health_check(&self) -> HealthReport {
        let checked_at = SystemTime::now();
        let started = Instant::now();
        let outcome = match self.client().await {
            Ok(mut conn) => {
                let r = aquifer::Manager::validate(&self.manager, &mut conn).await;
                if r.is_err() {
                    conn.destroy();
                }
                r.map_err(|e| aquifer::error_chain(&e))
            }
            Err(e) => Err(aquifer::error_chain(&e)),
        };
        let latency = started.elapsed();
        HealthReport {
            healthy: outcome.is_ok(),
            connected: self.is_connected(),
            stats: self.stats(),
            latency: outcome.is_ok().then_some(latency),
            checked_at,
            error: outcome.err(),
        }
    }

    /// The manager (and through it the settings).
    pub fn manager(&self) -> &PgManager {
        &self.manager
    }
}
