//! A cluster of MySQL pools: failed queries and transactions become the
//! cluster's warnings, as they do for PostgreSQL.

mod common;

use aquifer::{Cluster, ClusterPool, Mode};
use aquifer_mysql::{MySqlManager, MySqlPool, MySqlPoolExt, MySqlQueryError};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_queries_and_transactions_become_cluster_warnings() {
    let (a, b) = (server(), server());
    let cluster: Cluster<aquifer_mysql::MySqlManager> =
        Cluster::builder().mode(Mode::RoundRobin).build();
    for (name, db) in [("eu_1", &a), ("eu_2", &b)] {
        let pool = MySqlPool::builder(MySqlManager::new(&db.url()).unwrap())
            .max(2)
            .build()
            .unwrap();
        cluster.add(ClusterPool::new(name, pool)).unwrap();
    }
    // Both servers serve through the cluster.
    let mut served = Vec::new();
    for _ in 0..2 {
        served.push(cluster.get_any().await.unwrap().pool_name().to_owned());
    }
    served.sort();
    assert_eq!(served, ["eu_1", "eu_2"]);

    let eu_2 = cluster.pool("eu_2").unwrap();
    eu_2.query_drop("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    let err = eu_2
        .transaction(|tx| {
            Box::pin(async move {
                use aquifer_mysql::mysql_async::prelude::Queryable;
                tx.query_drop("SELEC 1").await?;
                Ok::<_, MySqlQueryError>(())
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(1064));

    eventually("both failures are warnings", || {
        cluster
            .warnings()
            .iter()
            .filter(|w| w.pool.as_deref() == Some("eu_2"))
            .count()
            >= 2
    })
    .await;
    let warnings: Vec<String> = cluster
        .warnings()
        .into_iter()
        .filter(|w| w.pool.as_deref() == Some("eu_2"))
        .map(|w| w.message)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|m| m.starts_with("query failed") && m.contains("no_such_table")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|m| m.starts_with("transaction failed")),
        "{warnings:?}"
    );
    assert!(
        cluster
            .warnings()
            .iter()
            .all(|w| w.pool.as_deref() != Some("eu_1")),
        "the healthy pool has nothing to report"
    );
}

/// A connection whose close fails (the network reset it while it sat idle,
/// so `COM_QUIT` cannot be sent) is kept as the cluster's pending
/// connection when its pool is removed, with the error; `close_pending`
/// then retries and clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_fails_is_kept_pending_until_close_pending() {
    let db = server();
    let proxy = aquifer_testkit::FaultProxy::start(db.addr()).unwrap();
    let cluster: Cluster<MySqlManager> = Cluster::builder().build();
    let pool = MySqlPool::builder(MySqlManager::new(&db.url_through(&proxy)).unwrap())
        .max(2)
        .build()
        .unwrap();
    cluster.add(ClusterPool::new("eu_1", pool)).unwrap();
    {
        use aquifer_mysql::mysql_async::prelude::Queryable;
        let mut conn = cluster.get_any().await.unwrap();
        conn.query_drop("SELECT 1").await.unwrap();
    }
    assert_eq!(proxy.open_connections(), 1);
    proxy.reset_all();
    eventually("the proxy reset the connection", || {
        proxy.open_connections() == 0
    })
    .await;
    // Let the reset reach the client's socket.
    tokio::time::sleep(ms(50)).await;
    assert!(!cluster.has_pending());

    assert_eq!(cluster.remove("eu_1", ms(5000)).await.unwrap(), 1);
    let pending = cluster.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    eprintln!("pending after remove: {pending:?}");
    assert_eq!(pending[0].pool, "eu_1");
    assert!(!pending[0].info.error.is_empty());
    assert!(cluster.has_pending());
    // The warning is recorded by the time `remove` returns.
    assert!(
        cluster
            .warnings()
            .iter()
            .any(|w| w.pool.as_deref() == Some("eu_1") && w.message.contains("failed to close")),
        "{:?}",
        cluster.warnings()
    );

    assert_eq!(cluster.close_pending(false).await, 0);
    assert!(!cluster.has_pending());
    eventually("no session left on the server", || {
        db.sessions().unwrap() == 0
    })
    .await;
}
