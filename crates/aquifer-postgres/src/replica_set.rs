//! Read-only transactions on a replica set's replicas.

use std::future::Future;

use aquifer::{Cluster, Operation};
use tokio_postgres::Transaction;

use crate::manager::{describe, BoxFuture, PgManager};
use crate::query::QueryError;

/// Transactions on a replica set of PostgreSQL servers (a
/// [`Cluster`] built with [`roles`](aquifer::ClusterBuilder::roles)).
///
/// ```no_run
/// use aquifer_postgres::{PgReplicaSetExt, QueryError};
///
/// # async fn run(set: aquifer::Cluster<aquifer_postgres::PgManager>) -> Result<(), QueryError> {
/// let total: i64 = set
///     .read_transaction(|tx| Box::pin(async move {
///         let row = tx.query_one("SELECT sum(n) FROM stock", &[]).await?;
///         Ok::<_, QueryError>(row.get(0))
///     }))
///     .await?;
/// # let _ = total;
/// # Ok(())
/// # }
/// ```
pub trait PgReplicaSetExt {
    /// Runs `f` in a `READ ONLY` transaction on a connection from
    /// [`Cluster::read`]: a standby in the read rotation, else the
    /// primary (where `READ ONLY` still refuses writes). Commits when `f`
    /// returns `Ok`, rolls back otherwise. A write refused inside it is
    /// the transaction's doing: it does not make the set doubt its
    /// primary.
    ///
    /// # Errors
    /// `f`'s error, or the read, `BEGIN` or `COMMIT` error converted into
    /// `E`.
    fn read_transaction<R, E, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        R: Send,
        E: From<QueryError> + std::fmt::Display + Send,
        F: for<'t> FnOnce(&'t mut Transaction<'_>) -> BoxFuture<'t, Result<R, E>> + Send;
}

impl PgReplicaSetExt for Cluster<PgManager> {
    async fn read_transaction<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send,
        E: From<QueryError> + std::fmt::Display + Send,
        F: for<'t> FnOnce(&'t mut Transaction<'_>) -> BoxFuture<'t, Result<R, E>> + Send,
    {
        let mut conn = self.read().await.map_err(QueryError::from)?;
        let pool = conn.pool_name().to_owned();
        // Until it commits or rolls back, a dropped future leaves a
        // connection the pool must roll back.
        conn.mark_dirty();
        conn.status.intend_read_only(true);
        let outcome = async {
            let mut tx = conn
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(QueryError::from)?;
            match f(&mut tx).await {
                Ok(value) => {
                    tx.commit().await.map_err(QueryError::from)?;
                    Ok(value)
                }
                Err(e) => {
                    if let Err(re) = tx.rollback().await {
                        tracing::warn!(target: "aquifer::postgres", %pool, error = %describe(&re), "rollback of a read-only transaction failed");
                    }
                    Err(e)
                }
            }
        }
        .await;
        conn.status.intend_read_only(false);
        match outcome {
            Ok(value) => {
                conn.clean();
                Ok(value)
            }
            Err(e) => {
                if let Some(p) = self.pool_named(&pool) {
                    p.report(Operation::Transaction, &e);
                }
                Err(e)
            }
        }
    }
}
