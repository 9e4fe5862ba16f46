//! Query helpers on the pool: check out, run, return, and report failures
//! on the pool's event stream (where a `Cluster` turns them into warnings).

use std::future::Future;

use aquifer::{Operation, PoolError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Transaction};

use crate::manager::{describe, BoxFuture, PgError};
use crate::PgPool;

/// Why a query through the pool failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No connection could be checked out.
    #[error("no connection")]
    Pool(#[from] PoolError<PgError>),
    /// The server rejected the query, or the connection broke. The
    /// message spells out tokio-postgres's causes (the server's words), so
    /// it returns none as `source()`.
    #[error("{}", describe(.0))]
    Db(tokio_postgres::Error),
    /// No connection could be had from a replica set.
    #[error("no connection from the replica set")]
    Cluster(#[from] aquifer::ClusterError<PgError>),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueryError::Db(e)
    }
}

impl QueryError {
    /// The server's own error (SQLSTATE, message, detail), if it sent one.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            QueryError::Db(e) => e.as_db_error(),
            QueryError::Pool(_) | QueryError::Cluster(_) => None,
        }
    }
}

/// Queries and transactions straight on a [`PgPool`].
///
/// ```no_run
/// use aquifer_postgres::{PgPoolExt, QueryError};
///
/// # async fn run(pool: aquifer_postgres::PgPool) -> Result<(), QueryError> {
/// pool.execute("UPDATE stock SET n = n - 1 WHERE id = $1", &[&7i32]).await?;
/// let moved = pool
///     .transaction(|tx| Box::pin(async move {
///         tx.execute("UPDATE a SET v = v - 1", &[]).await?;
///         let n = tx.execute("UPDATE b SET v = v + 1", &[]).await?;
///         Ok::<_, QueryError>(n)
///     }))
///     .await?;
/// # let _ = moved;
/// # Ok(())
/// # }
/// ```
pub trait PgPoolExt {
    /// Runs a query on a pooled connection and returns its rows. Statements
    /// are prepared once per connection (see
    /// [`PgConnection::prepare_cached`](crate::PgConnection::prepare_cached)).
    ///
    /// # Errors
    /// [`QueryError`]; a server error is also reported as
    /// [`Operation::Query`] on the pool's events.
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, QueryError>> + Send;

    /// Like [`query`](PgPoolExt::query), for exactly one row.
    ///
    /// # Errors
    /// As [`query`](PgPoolExt::query), and when the query does not return
    /// exactly one row.
    fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, QueryError>> + Send;

    /// Runs a statement and returns how many rows it changed.
    ///
    /// # Errors
    /// As [`query`](PgPoolExt::query).
    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, QueryError>> + Send;

    /// Runs `f` inside a transaction on one pooled connection: commits when
    /// it returns `Ok`, rolls back when it returns `Err`, panics (the panic
    /// goes on) or the future is dropped mid-way. Failed commits, rollbacks
    /// and transactions (panicked and abandoned ones included) are reported
    /// on the pool's events.
    ///
    /// # Errors
    /// `f`'s error, or the checkout, `BEGIN` or `COMMIT` error converted
    /// into `E`.
    fn transaction<R, E, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        R: Send,
        E: From<QueryError> + std::fmt::Display + Send,
        F: for<'t> FnOnce(&'t mut Transaction<'_>) -> BoxFuture<'t, Result<R, E>> + Send;
}

impl PgPoolExt for PgPool {
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, QueryError> {
        let mut conn = self.get().await?;
        let result = if self.manager().uses_prepared_statements() {
            match conn.prepare_cached(sql).await {
                Ok(st) => conn.query(&st, params).await,
                Err(e) => Err(e),
            }
        } else if params.is_empty() {
            conn.query_typed(sql, &[]).await
        } else {
            pinned::query(&mut conn, sql, params).await
        };
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, QueryError> {
        let mut conn = self.get().await?;
        let result = if self.manager().uses_prepared_statements() {
            match conn.prepare_cached(sql).await {
                Ok(st) => conn.query_one(&st, params).await,
                Err(e) => Err(e),
            }
        } else if params.is_empty() {
            conn.query_typed_one(sql, &[]).await
        } else {
            pinned::query_one(&mut conn, sql, params).await
        };
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, QueryError> {
        let mut conn = self.get().await?;
        let result = if self.manager().uses_prepared_statements() {
            match conn.prepare_cached(sql).await {
                Ok(st) => conn.execute(&st, params).await,
                Err(e) => Err(e),
            }
        } else if params.is_empty() {
            pinned::execute_simple(&conn, sql).await
        } else {
            pinned::execute(&mut conn, sql, params).await
        };
        result.map_err(|e| self.failed(Operation::Query, e))
    }

    async fn transaction<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send,
        E: From<QueryError> + std::fmt::Display + Send,
        F: for<'t> FnOnce(&'t mut Transaction<'_>) -> BoxFuture<'t, Result<R, E>> + Send,
    {
        let mut conn = self.get().await.map_err(QueryError::from)?;
        // Until it commits or rolls back, a dropped future leaves a
        // connection the pool must roll back.
        conn.mark_dirty();
        let mut tx = match conn.transaction().await {
            Ok(tx) => tx,
            Err(e) => return Err(self.failed(Operation::Transaction, e).into()),
        };
        let watch = self.watch_transaction();
        let outcome = f(&mut tx).await;
        match outcome {
            Ok(value) => {
                let committed = tx.commit().await;
                watch.finished();
                match committed {
                    Ok(()) => {
                        conn.clean();
                        Ok(value)
                    }
                    Err(e) => Err(self.failed(Operation::Commit, e).into()),
                }
            }
            Err(e) => {
                let rolled_back = tx.rollback().await;
                watch.finished();
                match rolled_back {
                    Ok(()) => conn.clean(),
                    Err(re) => {
                        self.report(Operation::Rollback, describe(&re));
                    }
                }
                self.report(Operation::Transaction, &e);
                Err(e)
            }
        }
    }
}

/// Without named statements kept across transactions (PgBouncer in
/// transaction pooling mode): a statement with parameters is prepared and
/// run inside one transaction, which keeps it on one server connection;
/// one without parameters goes as a single unnamed round trip.
mod pinned {
    use tokio_postgres::types::ToSql;
    use tokio_postgres::{Error, Row, SimpleQueryMessage};

    use crate::PgConnection;

    pub(super) async fn query(
        conn: &mut PgConnection,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let tx = conn.transaction().await?;
        let rows = tx.query(sql, params).await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub(super) async fn query_one(
        conn: &mut PgConnection,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let tx = conn.transaction().await?;
        let row = tx.query_one(sql, params).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub(super) async fn execute(
        conn: &mut PgConnection,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let tx = conn.transaction().await?;
        let n = tx.execute(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    }

    pub(super) async fn execute_simple(conn: &PgConnection, sql: &str) -> Result<u64, Error> {
        let messages = conn.simple_query(sql).await?;
        Ok(messages
            .iter()
            .rev()
            .find_map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(0))
    }
}

trait Failed {
    fn failed(&self, op: Operation, e: tokio_postgres::Error) -> QueryError;
}

impl Failed for PgPool {
    fn failed(&self, op: Operation, e: tokio_postgres::Error) -> QueryError {
        self.report(op, describe(&e));
        QueryError::Db(e)
    }
}
