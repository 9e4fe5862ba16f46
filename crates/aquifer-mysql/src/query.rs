//! Query helpers on the pool: check out, run, return, and report failures
//! on the pool's event stream, the same way the PostgreSQL and SQLite
//! drivers do, so a `Cluster` of MySQL pools warns alike.

use std::future::Future;

use aquifer::{Operation, PoolError};
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Params, TxOpts};

use crate::MySqlTransaction;

use crate::manager::{BoxFuture, MySqlError};
use crate::MySqlPool;

/// Why a query through the pool failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MySqlQueryError {
    /// No connection could be checked out.
    #[error("no connection")]
    Pool(#[from] PoolError<MySqlError>),
    /// The server rejected the query, or the connection broke.
    #[error(transparent)]
    Db(#[from] mysql_async::Error),
}

impl MySqlQueryError {
    /// The server's error code, if the server sent one.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            MySqlQueryError::Db(mysql_async::Error::Server(e)) => Some(e.code),
            _ => None,
        }
    }
}

/// Queries and transactions straight on a [`MySqlPool`].
///
/// ```no_run
/// use aquifer_mysql::{MySqlPool, MySqlPoolExt, MySqlQueryError};
///
/// # async fn run(pool: MySqlPool) -> Result<(), MySqlQueryError> {
/// pool.exec_drop("UPDATE stock SET n = n - 1 WHERE id = ?", (7,)).await?;
/// let names: Vec<String> = pool.query("SELECT name FROM item ORDER BY name").await?;
/// pool.transaction(|tx| Box::pin(async move {
///     use aquifer_mysql::mysql_async::prelude::Queryable;
///     tx.query_drop("UPDATE a SET v = v - 1").await?;
///     tx.query_drop("UPDATE b SET v = v + 1").await?;
///     Ok::<_, MySqlQueryError>(())
/// }))
/// .await?;
/// # let _ = names;
/// # Ok(())
/// # }
/// ```
pub trait MySqlPoolExt {
    /// Runs a text query and discards its result.
    ///
    /// # Errors
    /// [`MySqlQueryError`]; a server error is also reported as
    /// [`Operation::Query`] on the pool's events.
    fn query_drop(&self, sql: &str) -> impl Future<Output = Result<(), MySqlQueryError>> + Send;

    /// Runs a text query and converts every row.
    ///
    /// # Errors
    /// As [`query_drop`](MySqlPoolExt::query_drop).
    fn query<T>(&self, sql: &str) -> impl Future<Output = Result<Vec<T>, MySqlQueryError>> + Send
    where
        T: FromRow + Send + 'static;

    /// Runs a prepared statement (cached per connection by mysql_async)
    /// and discards its result.
    ///
    /// # Errors
    /// As [`query_drop`](MySqlPoolExt::query_drop).
    fn exec_drop<P>(
        &self,
        sql: &str,
        params: P,
    ) -> impl Future<Output = Result<(), MySqlQueryError>> + Send
    where
        P: Into<Params> + Send;

    /// Runs a prepared statement and converts every row.
    ///
    /// # Errors
    /// As [`query_drop`](MySqlPoolExt::query_drop).
    fn exec<T, P>(
        &self,
        sql: &str,
        params: P,
    ) -> impl Future<Output = Result<Vec<T>, MySqlQueryError>> + Send
    where
        T: FromRow + Send + 'static,
        P: Into<Params> + Send;

    /// Runs a prepared statement and converts its first row, if any.
    ///
    /// # Errors
    /// As [`query_drop`](MySqlPoolExt::query_drop).
    fn exec_first<T, P>(
        &self,
        sql: &str,
        params: P,
    ) -> impl Future<Output = Result<Option<T>, MySqlQueryError>> + Send
    where
        T: FromRow + Send + 'static,
        P: Into<Params> + Send;

    /// Runs `f` inside a transaction on one pooled connection: commits when
    /// it returns `Ok`, rolls back when it returns `Err`, panics (the panic
    /// goes on) or the future is dropped mid-way. Failed commits, rollbacks
    /// and transactions (panicked and abandoned ones included) are reported
    /// on the pool's events.
    ///
    /// # Errors
    /// `f`'s error, or the checkout, `START TRANSACTION` or `COMMIT` error
    /// converted into `E`.
    fn transaction<R, E, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        R: Send,
        E: From<MySqlQueryError> + std::fmt::Display + Send,
        F: for<'t> FnOnce(&'t mut MySqlTransaction<'_>) -> BoxFuture<'t, Result<R, E>> + Send;
}

impl MySqlPoolExt for MySqlPool {
    async fn query_drop(&self, sql: &str) -> Result<(), MySqlQueryError> {
        let mut conn = self.get().await?;
        let result = conn.query_drop(sql).await;
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn query<T>(&self, sql: &str) -> Result<Vec<T>, MySqlQueryError>
    where
        T: FromRow + Send + 'static,
    {
        let mut conn = self.get().await?;
        let result = conn.query(sql).await;
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn exec_drop<P>(&self, sql: &str, params: P) -> Result<(), MySqlQueryError>
    where
        P: Into<Params> + Send,
    {
        let mut conn = self.get().await?;
        let result = conn.exec_drop(sql, params).await;
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn exec<T, P>(&self, sql: &str, params: P) -> Result<Vec<T>, MySqlQueryError>
    where
        T: FromRow + Send + 'static,
        P: Into<Params> + Send,
    {
        let mut conn = self.get().await?;
        let result = conn.exec(sql, params).await;
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn exec_first<T, P>(&self, sql: &str, params: P) -> Result<Option<T>, MySqlQueryError>
    where
        T: FromRow + Send + 'static,
        P: Into<Params> + Send,
    {
        let mut conn = self.get().await?;
        let result = conn.exec_first(sql, params).await;
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn transaction<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send,
        E: From<MySqlQueryError> + std::fmt::Display + Send,
        F: for<'t> FnOnce(&'t mut MySqlTransaction<'_>) -> BoxFuture<'t, Result<R, E>> + Send,
    {
        let mut conn = self.get().await.map_err(MySqlQueryError::from)?;
        // Until it commits or rolls back, a dropped future leaves a
        // connection the pool must roll back.
        conn.mark_dirty();
        let mut tx = match conn.start_transaction(TxOpts::default()).await {
            Ok(tx) => tx,
            Err(e) => return Err(self.failed(Operation::Transaction, e).into()),
        };
        let watch = self.watch_transaction();
        let outcome = f(&mut tx).await;
        let ended = match outcome {
            Ok(value) => {
                let committed = tx.commit().await;
                watch.finished();
                match committed {
                    Ok(()) => Ok(value),
                    Err(e) => Err(self.failed(Operation::Commit, e).into()),
                }
            }
            Err(e) => {
                let rolled_back = tx.rollback().await;
                watch.finished();
                if let Err(re) = rolled_back {
                    self.report(Operation::Rollback, &re);
                }
                self.report(Operation::Transaction, &e);
                Err(e)
            }
        };
        if !conn.is_disconnected() {
            // Committed or rolled back: the status flags tell from here on.
            conn.clean();
        }
        ended
    }
}

trait Failed {
    fn failed(&self, op: Operation, e: mysql_async::Error) -> MySqlQueryError;
}

impl Failed for MySqlPool {
    fn failed(&self, op: Operation, e: mysql_async::Error) -> MySqlQueryError {
        self.report(op, &e);
        MySqlQueryError::Db(e)
    }
}
