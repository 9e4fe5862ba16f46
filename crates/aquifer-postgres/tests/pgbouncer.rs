//! Behind PgBouncer in transaction pooling mode.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aquifer_postgres::{PgManager, PgPool, PgPoolExt, QueryError};
use aquifer_testkit::{PgBouncer, PoolMode};
use common::*;

/// 8 client connections sharing 2 server connections.
fn bounced_pool(bouncer: &PgBouncer, prepared: bool) -> PgPool {
    let manager = PgManager::new(&bouncer.url())
        .unwrap()
        .prepared_statements(prepared);
    PgPool::builder(manager).max(8).build().unwrap()
}

async fn hammer(pool: &PgPool, table: &str) -> (usize, Vec<String>) {
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (pool, ok, errors, table) =
                (pool.clone(), ok.clone(), errors.clone(), table.to_owned());
            tokio::spawn(async move {
                for i in 0..40i32 {
                    let n = t * 1000 + i;
                    let r = async {
                        let row = pool.query_one("SELECT $1::int4 + 1", &[&n]).await?;
                        assert_eq!(row.get::<_, i32>(0), n + 1);
                        pool.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&n])
                            .await?;
                        pool.query("SELECT 1", &[]).await?;
                        Ok::<_, QueryError>(())
                    }
                    .await;
                    match r {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => errors.lock().unwrap().push(aquifer::error_chain(&e)),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    (ok.load(Ordering::SeqCst), errors)
}

/// One client prepares and runs a statement; a second client then holds
/// that server connection in a transaction, so PgBouncer (which reuses the
/// most recently released server connection, and has two) must send the
/// first client's next statement to the other one. Forced that way, not
/// left to load, so the outcome does not depend on scheduling.
async fn run_while_the_server_connection_is_held(
    bouncer: &PgBouncer,
    prepared: bool,
) -> Result<(), String> {
    // One client connection, whose statement cache the pool keeps.
    let manager = PgManager::new(&bouncer.url())
        .unwrap()
        .prepared_statements(prepared);
    let one = PgPool::builder(manager).max(1).build().unwrap();
    let other = bounced_pool(bouncer, false);
    let row = one
        .query_one("SELECT $1::int4 + 1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let holder = other.get().await.unwrap();
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let again = one
        .query_one("SELECT $1::int4 + 1", &[&2i32])
        .await
        .map(|row| row.get::<_, i32>(0))
        .map_err(|e| aquifer::error_chain(&e));
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(again.as_ref().map_or(true, |&v| v == 3), "{again:?}");
    again.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_break_in_transaction_mode_and_the_setting_fixes_it() {
    let pg = server();
    let bouncer = PgBouncer::start(&pg, PoolMode::Transaction, 2).unwrap();
    pg.psql("CREATE TABLE unnamed (v int)").unwrap();

    // The default keeps named statements per client connection; PgBouncer
    // moves the next statement to another server connection.
    let err = run_while_the_server_connection_is_held(&bouncer, true)
        .await
        .unwrap_err();
    assert!(
        err.contains("prepared statement") && err.contains("does not exist"),
        "transaction pooling should break cached named statements: {err}"
    );

    // Unnamed statements: the same moves, and under load, work.
    run_while_the_server_connection_is_held(&bouncer, false)
        .await
        .unwrap();
    let pool = bounced_pool(&bouncer, false);
    let (ok, errors) = hammer(&pool, "unnamed").await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ok, 8 * 40);
    assert_eq!(pg.psql("SELECT count(*) FROM unnamed").unwrap(), "320");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_run_through_pgbouncer() {
    let pg = server();
    let bouncer = PgBouncer::start(&pg, PoolMode::Transaction, 2).unwrap();
    pg.psql(
        "CREATE TABLE acct (id int primary key, n int); INSERT INTO acct VALUES (1, 1000), (2, 0)",
    )
    .unwrap();
    let pool = bounced_pool(&bouncer, false);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    pool.transaction(|tx| {
                        Box::pin(async move {
                            let amount = 1i32;
                            tx.execute("UPDATE acct SET n = n - $1 WHERE id = 1", &[&amount])
                                .await?;
                            tx.execute("UPDATE acct SET n = n + $1 WHERE id = 2", &[&amount])
                                .await?;
                            Ok::<_, QueryError>(())
                        })
                    })
                    .await
                    .unwrap();
                }
                // A failing transaction through PgBouncer rolls back too.
                let err = pool
                    .transaction(|tx| {
                        Box::pin(async move {
                            tx.execute("UPDATE acct SET n = n - 500 WHERE id = 1", &[])
                                .await?;
                            tx.execute("SELECT 1/0", &[]).await?;
                            Ok::<_, QueryError>(())
                        })
                    })
                    .await
                    .unwrap_err();
                assert_eq!(err.as_db_error().unwrap().code().code(), "22012");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        pg.psql("SELECT n FROM acct ORDER BY id").unwrap(),
        "800\n200"
    );
}
