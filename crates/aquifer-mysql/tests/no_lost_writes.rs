//! What one borrower did never changes what the next one gets: a pool of
//! one connection, a borrower that leaves something behind (a command
//! dropped at each point of its life, a transaction, a session setting),
//! then a borrower whose autocommit `INSERT` is answered with one row
//! affected. A separate session counts the rows: every write answered as
//! successful must be there.

mod common;

use std::future::Future;
use std::pin::pin;

use aquifer::Pooled;
use aquifer_mysql::mysql_async::prelude::Queryable;
use aquifer_mysql::{MySqlManager, MySqlPool, ResetMode};
use aquifer_testkit::{poll_once_and_drop, Fault, FaultProxy, MariaDbServer};
use common::*;
use tokio_stream::StreamExt;

const ROUNDS: usize = 10;

fn one_connection(url: &str, reset: ResetMode) -> MySqlPool {
    MySqlPool::builder(MySqlManager::new(url).unwrap().reset_mode(reset))
        .max(1)
        .acquire_timeout(ms(10_000))
        .build()
        .unwrap()
}

type Leave = for<'c> fn(
    &'c mut Pooled<MySqlManager>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'c>>;

/// Runs `ROUNDS` rounds of `leave` then a plain insert on the pool's one
/// connection; returns the inserts answered with one row affected and the
/// rows a separate session finds.
async fn rounds(db: &MariaDbServer, pool: &MySqlPool, table: &str, leave: Leave) -> (usize, usize) {
    db.sql(&format!(
        "CREATE TABLE aquifer.{table} (id INT) ENGINE=InnoDB"
    ))
    .unwrap();
    let mut answered = 0;
    for i in 0..ROUNDS {
        {
            let mut conn = pool.get().await.unwrap();
            leave(&mut conn).await;
        }
        let mut conn = pool.get().await.unwrap();
        conn.exec_drop(format!("INSERT INTO {table} VALUES (?)"), (i,))
            .await
            .unwrap();
        assert_eq!(conn.affected_rows(), 1);
        answered += 1;
    }
    // The connection comes back once more, so whatever it holds is
    // rolled back or kept now.
    drop(pool.get().await.unwrap());
    let rows: usize = db
        .sql(&format!("SELECT count(*) FROM aquifer.{table}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (answered, rows)
}

fn report(case: &str, (answered, rows): (usize, usize)) {
    eprintln!("{case}: {answered} inserts answered, {rows} kept");
    assert_eq!(
        rows, answered,
        "{case}: writes answered as successful were lost"
    );
}

#[tokio::test]
async fn a_command_dropped_before_it_is_polled_sends_nothing() {
    let db = server();
    let pool = one_connection(&db.url(), ResetMode::default());
    let r = rounds(&db, &pool, "t", |c| {
        Box::pin(async move {
            drop(c.query_drop("START TRANSACTION"));
        })
    })
    .await;
    report("dropped before polled", r);
}

#[tokio::test]
async fn a_command_dropped_after_its_first_poll_is_not_lost() {
    let db = server();
    let pool = one_connection(&db.url(), ResetMode::default());
    let r = rounds(&db, &pool, "t", |c| {
        Box::pin(poll_once_and_drop(c.query_drop("START TRANSACTION")))
    })
    .await;
    report("dropped after first poll", r);
}

/// 30 ms each way: the command is on the wire, its answer is not back.
#[tokio::test]
async fn a_command_timed_out_after_sending_is_not_lost() {
    let db = server();
    let proxy = FaultProxy::start(db.addr()).unwrap();
    let pool = one_connection(&db.url_through(&proxy), ResetMode::default());
    drop(pool.get().await.unwrap());
    proxy.set(Fault::Latency(ms(30)));
    let r = rounds(&db, &pool, "t", |c| {
        Box::pin(async move {
            let _ = tokio::time::timeout(ms(10), c.query_drop("START TRANSACTION")).await;
        })
    })
    .await;
    report("timed out after sending (30 ms latency)", r);
}

/// The first result set's rows stream in; the `START TRANSACTION` after
/// them is still unread when the row stream is dropped.
#[tokio::test]
async fn a_multi_statement_query_dropped_mid_rows_is_not_lost() {
    let db = server();
    let pool = one_connection(&db.url(), ResetMode::default());
    let r = rounds(&db, &pool, "t", |c| {
        Box::pin(async move {
            let mut result = c
                .query_iter("SELECT seq FROM seq_1_to_100000; START TRANSACTION")
                .await
                .unwrap();
            let first: Option<u64> = {
                let stream = result.stream::<u64>().await.unwrap().unwrap();
                let mut stream = pin!(stream);
                stream.next().await.map(Result::unwrap)
            };
            assert_eq!(first, Some(1));
        })
    })
    .await;
    report("multi-statement dropped mid-rows", r);
}

/// A multi-statement query whose result sets were never read.
#[tokio::test]
async fn a_multi_statement_query_left_unread_is_not_lost() {
    let db = server();
    let pool = one_connection(&db.url(), ResetMode::default());
    let r = rounds(&db, &pool, "t", |c| {
        Box::pin(async move {
            let result = c.query_iter("DO 1; START TRANSACTION; DO 2").await.unwrap();
            drop(result);
        })
    })
    .await;
    report("multi-statement left unread", r);
}

#[tokio::test]
async fn autocommit_left_off_is_not_handed_on() {
    let db = server();
    let pool = one_connection(&db.url(), ResetMode::default());
    let r = rounds(&db, &pool, "t", |c| {
        Box::pin(async move {
            c.query_drop("SET autocommit = 0").await.unwrap();
        })
    })
    .await;
    report("autocommit left off", r);
}

/// mysql_async's `Transaction`: dropped (rolled back) and committed.
#[tokio::test]
async fn cancelled_and_committed_transactions_keep_exactly_their_writes() {
    let db = server();
    let pool = one_connection(&db.url(), ResetMode::default());
    db.sql("CREATE TABLE aquifer.mine (id INT) ENGINE=InnoDB")
        .unwrap();
    let r = rounds(&db, &pool, "t", |c| {
        Box::pin(async move {
            let n: u64 = c
                .query_first("SELECT count(*) FROM t")
                .await
                .unwrap()
                .unwrap();
            let mut tx = c.start_transaction(Default::default()).await.unwrap();
            tx.query_drop("INSERT INTO mine VALUES (1)").await.unwrap();
            if n % 2 == 0 {
                tx.commit().await.unwrap();
            } else {
                poll_once_and_drop(tx.query_drop("INSERT INTO mine VALUES (2)")).await;
            }
        })
    })
    .await;
    report("transactions", r);
    assert_eq!(
        db.sql("SELECT count(*) FROM aquifer.mine WHERE id = 2")
            .unwrap()
            .trim(),
        "0"
    );
    // Rounds 0, 2, 4, 6 and 8 committed one row each.
    assert_eq!(
        db.sql("SELECT count(*) FROM aquifer.mine").unwrap().trim(),
        "5"
    );
}

/// Session settings are not a transaction: the default reset keeps them
/// (documented), `ResetMode::Connection` clears them.
#[tokio::test]
async fn isolation_changes_are_cleared_by_a_connection_reset() {
    let db = server();
    for (reset, expected) in [
        (ResetMode::IfDirty, "SERIALIZABLE"),
        (ResetMode::Connection, "REPEATABLE-READ"),
    ] {
        let pool = one_connection(&db.url(), reset);
        {
            let mut conn = pool.get().await.unwrap();
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                .await
                .unwrap();
        }
        let mut conn = pool.get().await.unwrap();
        let level: String = conn
            .query_first("SELECT @@session.tx_isolation")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(level, expected, "{reset:?}");
    }
}
