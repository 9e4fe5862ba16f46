//! Query helpers on the pool: check out, run on the connection's thread,
//! return, and report failures on the pool's event stream (where a
//! `Cluster` turns them into warnings), as the PostgreSQL driver does.

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use aquifer::{Operation, PoolError};
use rusqlite::{Connection, Params, Row, Transaction, TransactionBehavior};

use crate::{SqliteError, SqlitePool};

/// Why a query through the pool failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteQueryError {
    /// No connection could be checked out.
    #[error("no connection")]
    Pool(#[from] PoolError<SqliteError>),
    /// The checked-out connection could not run the call (it was closed).
    #[error(transparent)]
    Connection(SqliteError),
    /// SQLite rejected the statement.
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
    /// The call returned inside a transaction it had begun, so the pool
    /// rolled that transaction back before anyone else could use the
    /// connection: none of the call's writes since `BEGIN` were kept. The
    /// source, if any, is the rollback's own failure.
    #[error(
        "the call returned inside an open transaction, which was rolled back: \
         none of its writes since BEGIN were kept; end the transaction inside \
         the call, or use `transaction`"
    )]
    RolledBack(#[source] Option<rusqlite::Error>),
}

impl SqliteQueryError {
    /// SQLite's primary error code, when SQLite reported the error.
    pub fn sqlite_error_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            SqliteQueryError::Db(e) => e.sqlite_error_code(),
            SqliteQueryError::Connection(e) => e.sqlite_error_code(),
            SqliteQueryError::Pool(_) | SqliteQueryError::RolledBack(_) => None,
        }
    }
}

/// How many calls may be queued on one connection before a pool call keeps
/// its checkout until its result is back.
const PIPELINE_DEPTH: usize = 4;

/// How a transaction ended on the connection's thread.
enum Ended<R, E> {
    Committed(R),
    BeginFailed(rusqlite::Error),
    CommitFailed(rusqlite::Error),
    RolledBack {
        error: E,
        rollback: Option<rusqlite::Error>,
    },
    Panicked {
        panic: Box<dyn std::any::Any + Send>,
        rollback: Option<rusqlite::Error>,
    },
}

/// Queries and transactions straight on a [`SqlitePool`]. Every closure
/// runs on the connection's own thread; SQL and parameters are moved there,
/// so they must be owned (`(1, "a".to_string())`, not `params![&x]` of a
/// local).
///
/// ```
/// use aquifer_sqlite::{SqliteConfig, SqliteManager, SqlitePool, SqlitePoolExt, SqliteQueryError};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = SqlitePool::builder(SqliteManager::new(SqliteConfig::memory())?).build()?;
/// pool.execute("CREATE TABLE stock (id INTEGER PRIMARY KEY, n INTEGER)", ()).await?;
/// pool.execute("INSERT INTO stock VALUES (?1, ?2)", (7, 10)).await?;
/// let left = pool
///     .transaction(|tx| {
///         tx.execute("UPDATE stock SET n = n - 1 WHERE id = 7", [])?;
///         tx.query_row("SELECT n FROM stock WHERE id = 7", [], |r| r.get::<_, i64>(0))
///             .map_err(SqliteQueryError::from)
///     })
///     .await?;
/// assert_eq!(left, 9);
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
/// ```
pub trait SqlitePoolExt {
    /// Runs `f` with a pooled connection on its thread. A transaction `f`
    /// begins must end inside `f`: one left open is rolled back at once,
    /// and the call fails with [`SqliteQueryError::RolledBack`].
    ///
    /// # Errors
    /// The checkout's error, [`SqliteQueryError::Connection`], or
    /// [`SqliteQueryError::RolledBack`].
    ///
    /// # Cancel safety
    /// As [`SqliteConnection::interact`](crate::SqliteConnection::interact):
    /// `f` runs to its end; the pool cleans up before the connection is
    /// reused.
    fn interact<F, R>(&self, f: F) -> impl Future<Output = Result<R, SqliteQueryError>> + Send
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static;

    /// Runs a statement (prepared once per connection) and returns how many
    /// rows it changed.
    ///
    /// # Errors
    /// [`SqliteQueryError`]; a statement error is also reported as
    /// [`Operation::Query`] on the pool's events.
    fn execute<P>(
        &self,
        sql: &str,
        params: P,
    ) -> impl Future<Output = Result<usize, SqliteQueryError>> + Send
    where
        P: Params + Send + 'static;

    /// Runs a query and maps its first row (an error if there is none).
    ///
    /// # Errors
    /// As [`execute`](SqlitePoolExt::execute); no row is
    /// `rusqlite::Error::QueryReturnedNoRows`.
    fn query_row<P, T, M>(
        &self,
        sql: &str,
        params: P,
        map: M,
    ) -> impl Future<Output = Result<T, SqliteQueryError>> + Send
    where
        P: Params + Send + 'static,
        T: Send + 'static,
        M: FnOnce(&Row<'_>) -> rusqlite::Result<T> + Send + 'static;

    /// Runs a query and maps every row.
    ///
    /// # Errors
    /// As [`execute`](SqlitePoolExt::execute).
    fn query<P, T, M>(
        &self,
        sql: &str,
        params: P,
        map: M,
    ) -> impl Future<Output = Result<Vec<T>, SqliteQueryError>> + Send
    where
        P: Params + Send + 'static,
        T: Send + 'static,
        M: FnMut(&Row<'_>) -> rusqlite::Result<T> + Send + 'static;

    /// Runs `f` inside a deferred transaction on one pooled connection:
    /// commits when it returns `Ok`, rolls back when it returns `Err` or
    /// panics (the panic goes on in the caller). Failed commits, rollbacks
    /// and transactions are reported on the pool's events.
    ///
    /// # Errors
    /// `f`'s error, or the checkout, `BEGIN` or `COMMIT` error converted
    /// into `E`.
    ///
    /// # Cancel safety
    /// The whole transaction is one call on the connection's thread: once
    /// it has started, dropping the future does not stop it, it commits or
    /// rolls back as `f` decides. It is never left open.
    fn transaction<R, E, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        R: Send + 'static,
        E: From<SqliteQueryError> + std::fmt::Display + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, E> + Send + 'static,
    {
        self.transaction_with(TransactionBehavior::Deferred, f)
    }

    /// [`transaction`](SqlitePoolExt::transaction) with `BEGIN IMMEDIATE`
    /// or `EXCLUSIVE`: take the write lock up front, so a read-then-write
    /// transaction waits for it at `BEGIN` (within `busy_timeout`) instead
    /// of failing with `SQLITE_BUSY` half-way.
    ///
    /// # Errors
    /// As [`transaction`](SqlitePoolExt::transaction).
    fn transaction_with<R, E, F>(
        &self,
        behavior: TransactionBehavior,
        f: F,
    ) -> impl Future<Output = Result<R, E>> + Send
    where
        R: Send + 'static,
        E: From<SqliteQueryError> + std::fmt::Display + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, E> + Send + 'static;
}

impl SqlitePoolExt for SqlitePool {
    async fn interact<F, R>(&self, f: F) -> Result<R, SqliteQueryError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.get().await?;
        let (done, depth) = conn.send(f, true).map_err(SqliteQueryError::Connection)?;
        // Pipelining, under load only: when callers wait for a connection
        // and few calls are queued on this one, it goes back to the pool now
        // and the next caller queues behind this call, so the connection's
        // thread runs calls back to back instead of waiting a round of
        // wake-ups between them. Without waiters it is held as usual, so an
        // idle connection in the pool is really idle; deeper queues hold it
        // too, so the pool's wait queue, timeouts and limits still apply.
        let pipeline = depth <= PIPELINE_DEPTH && self.status().waiting > 0;
        let held = (!pipeline).then_some(conn);
        let done = done.await;
        drop(held);
        let done = done.map_err(|_| SqliteQueryError::Connection(SqliteError::Closed))?;
        if let Some(rolled_back) = done.rolled_back {
            self.report(
                Operation::Transaction,
                "a pool call returned inside a transaction; it was rolled back",
            );
            if let Err(e) = &rolled_back {
                self.report(Operation::Rollback, e);
            }
            // The closure's panic, if any, goes on; otherwise its value is
            // dropped, as its writes were.
            if let Err(panic) = done.result {
                resume_unwind(panic);
            }
            return Err(SqliteQueryError::RolledBack(rolled_back.err()));
        }
        done.unwrap().map_err(SqliteQueryError::Connection)
    }

    async fn execute<P>(&self, sql: &str, params: P) -> Result<usize, SqliteQueryError>
    where
        P: Params + Send + 'static,
    {
        let sql = sql.to_owned();
        let result = self
            .interact(move |c| c.prepare_cached(&sql)?.execute(params))
            .await?;
        result.map_err(|e| self.failed(e))
    }

    async fn query_row<P, T, M>(&self, sql: &str, params: P, map: M) -> Result<T, SqliteQueryError>
    where
        P: Params + Send + 'static,
        T: Send + 'static,
        M: FnOnce(&Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let sql = sql.to_owned();
        let result = self
            .interact(move |c| c.prepare_cached(&sql)?.query_row(params, map))
            .await?;
        result.map_err(|e| self.failed(e))
    }

    async fn query<P, T, M>(&self, sql: &str, params: P, map: M) -> Result<Vec<T>, SqliteQueryError>
    where
        P: Params + Send + 'static,
        T: Send + 'static,
        M: FnMut(&Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let sql = sql.to_owned();
        let result = self
            .interact(move |c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(params, map)?;
                rows.collect::<rusqlite::Result<Vec<T>>>()
            })
            .await?;
        result.map_err(|e| self.failed(e))
    }

    async fn transaction_with<R, E, F>(&self, behavior: TransactionBehavior, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<SqliteQueryError> + std::fmt::Display + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, E> + Send + 'static,
    {
        let ended = self
            .interact(move |c| {
                let tx = match c.transaction_with_behavior(behavior) {
                    Ok(tx) => tx,
                    Err(e) => return Ended::BeginFailed(e),
                };
                match catch_unwind(AssertUnwindSafe(|| f(&tx))) {
                    Ok(Ok(value)) => match tx.commit() {
                        Ok(()) => Ended::Committed(value),
                        Err(e) => Ended::CommitFailed(e),
                    },
                    Ok(Err(error)) => Ended::RolledBack {
                        error,
                        rollback: tx.rollback().err(),
                    },
                    Err(panic) => Ended::Panicked {
                        panic,
                        rollback: tx.rollback().err(),
                    },
                }
            })
            .await
            .map_err(E::from)?;
        match ended {
            Ended::Committed(value) => Ok(value),
            Ended::BeginFailed(e) => {
                self.report(Operation::Transaction, &e);
                Err(E::from(SqliteQueryError::Db(e)))
            }
            Ended::CommitFailed(e) => {
                self.report(Operation::Commit, &e);
                Err(E::from(SqliteQueryError::Db(e)))
            }
            Ended::RolledBack { error, rollback } => {
                if let Some(re) = rollback {
                    self.report(Operation::Rollback, re);
                }
                self.report(Operation::Transaction, &error);
                Err(error)
            }
            Ended::Panicked { panic, rollback } => {
                if let Some(re) = rollback {
                    self.report(Operation::Rollback, re);
                }
                self.report(Operation::Transaction, "the transaction's closure panicked");
                resume_unwind(panic)
            }
        }
    }
}

trait Failed {
    fn failed(&self, e: rusqlite::Error) -> SqliteQueryError;
}

impl Failed for SqlitePool {
    fn failed(&self, e: rusqlite::Error) -> SqliteQueryError {
        self.report(Operation::Query, &e);
        SqliteQueryError::Db(e)
    }
}
