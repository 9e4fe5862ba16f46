//! What one borrower did never changes what the next one gets: a pool of
//! one connection, a borrower that leaves something behind (a request
//! dropped at each point of its life, a transaction, a session setting),
//! then a borrower whose autocommit `INSERT` is answered `Ok(1)`. A
//! separate session counts the rows: every write answered as successful
//! must be there.

mod common;

use std::future::Future;
use std::pin::pin;

use aquifer::Pooled;
use aquifer_postgres::{PgManager, PgPool, ResetMode};
use aquifer_testkit::{poll_once_and_drop, Fault, FaultProxy, PgServer};
use common::*;
use futures_core::Stream;
use futures_util::SinkExt;

const ROUNDS: usize = 10;

fn one_connection(url: &str, reset: ResetMode) -> PgPool {
    PgPool::builder(PgManager::new(url).unwrap().reset(reset))
        .max(1)
        .acquire_timeout(ms(10_000))
        .build()
        .unwrap()
}

/// Runs `ROUNDS` rounds of `leave` then a plain insert on the pool's one
/// connection; returns the inserts answered `Ok(1)` and the rows a
/// separate session finds.
type Leave = for<'c> fn(
    &'c mut Pooled<PgManager>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'c>>;

async fn rounds(pg: &PgServer, pool: &PgPool, table: &str, leave: Leave) -> (usize, usize) {
    pg.psql(&format!("CREATE TABLE {table} (id int)")).unwrap();
    let mut answered = 0;
    for i in 0..ROUNDS {
        {
            let mut conn = pool.get().await.unwrap();
            leave(&mut conn).await;
        }
        let conn = pool.get().await.unwrap();
        let n = conn
            .execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&(i as i32)])
            .await
            .unwrap();
        assert_eq!(n, 1);
        answered += 1;
    }
    // The connection comes back once more, so whatever it holds is
    // rolled back or kept now.
    drop(pool.get().await.unwrap());
    let rows: usize = pg
        .psql(&format!("SELECT count(*) FROM {table}"))
        .unwrap()
        .parse()
        .unwrap();
    if rows != answered {
        eprintln!(
            "{table}: rows kept: {}",
            pg.psql(&format!(
                "SELECT string_agg(id::text, ',' ORDER BY id) FROM {table}"
            ))
            .unwrap()
        );
    }
    (answered, rows)
}

fn report(case: &str, (answered, rows): (usize, usize)) {
    eprintln!("{case}: {answered} inserts answered Ok(1), {rows} kept");
    assert_eq!(
        rows, answered,
        "{case}: writes answered as successful were lost"
    );
}

#[tokio::test]
async fn a_request_dropped_before_it_is_polled_sends_nothing() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(async move {
            drop(c.batch_execute("BEGIN"));
        })
    })
    .await;
    report("dropped before polled", r);
}

/// On a current-thread runtime the connection task cannot run between the
/// poll and the return: the `BEGIN` is still in the client's queue when
/// the connection comes back.
#[tokio::test]
async fn a_request_dropped_after_its_first_poll_is_not_lost() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(poll_once_and_drop(c.batch_execute("BEGIN")))
    })
    .await;
    report("dropped after first poll (current thread)", r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_after_its_first_poll_is_not_lost_on_many_threads() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(poll_once_and_drop(c.batch_execute("BEGIN")))
    })
    .await;
    report("dropped after first poll (two threads)", r);
}

/// 50 ms each way: the request is on the wire, its answer is not back.
#[tokio::test]
async fn a_request_timed_out_after_sending_is_not_lost() {
    let pg = server();
    let proxy = FaultProxy::start(pg.addr()).unwrap();
    let pool = one_connection(&pg.url_through(&proxy), ResetMode::default());
    drop(pool.get().await.unwrap());
    proxy.set(Fault::Latency(ms(50)));
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(async move {
            let _ = tokio::time::timeout(ms(10), c.batch_execute("BEGIN")).await;
        })
    })
    .await;
    report("timed out after sending (50 ms latency)", r);
}

/// The answer is half read: a row set streams in, the `BEGIN` after it is
/// still to come.
#[tokio::test]
async fn a_multi_statement_query_dropped_mid_answer_is_not_lost() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(async move {
            let q = c
                .simple_query("SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g; BEGIN");
            let _ = tokio::time::timeout(ms(2), q).await;
        })
    })
    .await;
    report("multi-statement dropped mid-answer", r);
}

/// A row stream dropped after its first row, inside a transaction the
/// borrower opened by hand.
#[tokio::test]
async fn a_row_stream_dropped_mid_rows_is_not_lost() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(async move {
            c.batch_execute("BEGIN").await.unwrap();
            let params: [i32; 0] = [];
            let rows = c
                .query_raw("SELECT g FROM generate_series(1, 100000) g", params)
                .await
                .unwrap();
            let mut rows = pin!(rows);
            let first = std::future::poll_fn(|cx| rows.as_mut().poll_next(cx)).await;
            assert!(first.is_some());
        })
    })
    .await;
    report("row stream dropped mid-rows", r);
}

/// A statement that fails inside a transaction leaves it aborted.
#[tokio::test]
async fn an_aborted_transaction_is_not_handed_on() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(async move {
            c.batch_execute("BEGIN").await.unwrap();
            assert!(c.batch_execute("SELECT 1/0").await.is_err());
        })
    })
    .await;
    report("aborted transaction", r);
}

/// tokio-postgres's `Transaction`: dropped (rolled back) and committed.
#[tokio::test]
async fn cancelled_and_committed_transactions_keep_exactly_their_writes() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    pg.psql("CREATE TABLE mine (id int)").unwrap();
    let r = rounds(&pg, &pool, "t", |c| {
        Box::pin(async move {
            // Rounds 0, 2, 4, 6 and 8 commit.
            let round: i64 = c
                .query_one("SELECT count(*) FROM t", &[])
                .await
                .unwrap()
                .get(0);
            let commit = round % 2 == 0;
            let tx = c.transaction().await.unwrap();
            tx.execute("INSERT INTO mine VALUES (1)", &[])
                .await
                .unwrap();
            if commit {
                tx.commit().await.unwrap();
            } else {
                // Dropped mid-flight: the insert is sent, then the
                // transaction is dropped.
                poll_once_and_drop(tx.execute("INSERT INTO mine VALUES (2)", &[])).await;
            }
        })
    })
    .await;
    report("transactions", r);
    // Half of them committed one row each; the others kept nothing.
    assert_eq!(pg.psql("SELECT count(*) FROM mine").unwrap(), "5");
    assert_eq!(
        pg.psql("SELECT count(*) FROM mine WHERE id = 2").unwrap(),
        "0"
    );
}

/// Session settings are not a transaction: the default reset keeps them
/// (documented), `DISCARD ALL` clears them.
#[tokio::test]
async fn isolation_changes_are_cleared_by_discard_all() {
    let pg = server();
    for (reset, expected) in [
        (ResetMode::default(), "serializable"),
        (ResetMode::Query("DISCARD ALL".into()), "read committed"),
    ] {
        let pool = one_connection(&pg.url(), reset.clone());
        {
            let conn = pool.get().await.unwrap();
            conn.batch_execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            )
            .await
            .unwrap();
        }
        let conn = pool.get().await.unwrap();
        let row = conn
            .query_one("SHOW transaction_isolation", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), expected, "{reset:?}");
    }
}

/// A connection at rest goes back as it is: a statement closed on drop
/// (its Close still in flight) or a finished copy-in costs no `ROLLBACK`
/// and no new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_rest_is_not_reset() {
    let pg = server();
    let pool = one_connection(&pg.url(), ResetMode::default());
    pg.psql("CREATE TABLE c (id int)").unwrap();
    let pid = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    let first = pid(pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap());
    for i in 0..50 {
        let conn = pool.get().await.unwrap();
        // Prepared, run, and closed on drop: Close and Sync go out after
        // the answer is in, and nobody waits for them.
        let row = conn
            .query_one("SELECT pg_backend_pid(), $1::int4", &[&i])
            .await
            .unwrap();
        assert_eq!(pid(row), first);
    }
    {
        let conn = pool.get().await.unwrap();
        let sink = conn.copy_in("COPY c FROM STDIN").await.unwrap();
        let mut sink = pin!(sink);
        sink.send(bytes::Bytes::from_static(b"1\n2\n3\n"))
            .await
            .unwrap();
        assert_eq!(sink.as_mut().finish().await.unwrap(), 3);
    }
    let conn = pool.get().await.unwrap();
    assert_eq!(
        pid(conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()),
        first
    );
    drop(conn);
    assert_eq!(pg.psql("SELECT count(*) FROM c").unwrap(), "3");
    let m = pool.metrics();
    assert_eq!((m.creates, m.reset_failures), (1, 0));
    assert!(
        !pg.log().contains("there is no transaction in progress"),
        "a connection at rest was rolled back"
    );
}
