//! The multiplexer against real PostgreSQL servers: scaling counted on the
//! server, broken and vanished connections, answers that reach the request
//! that asked, statements that would change the shared session.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aquifer::{Backoff, MuxError};
use aquifer_postgres::{PgManager, PgMultiplexer, PgMuxError, PgMuxExt, PgMuxManager};
use aquifer_testkit::{MaxWatcher, PgBouncer, PoolMode};
use common::*;

/// Several tests count sessions and time things: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn manager(url: &str) -> PgMuxManager {
    PgMuxManager::new(url).unwrap()
}

fn sessions_watch(pg: &aquifer_testkit::PgServer) -> MaxWatcher {
    MaxWatcher::start(aquifer_testkit::pg_sessions(pg, "aquifer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_under_load_and_down_to_min_never_above_max() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let (scale_down_after, tick) = (ms(1000), ms(200));
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(2)
        .max(6)
        .max_in_flight(10)
        .scale_down_after(scale_down_after)
        .maintenance_interval(tick)
        .build()
        .unwrap();
    tokio::time::timeout(ms(5000), mux.ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pg.sessions("aquifer").unwrap(), 2);
    let most = sessions_watch(&pg);
    // 30 statements of 200 ms at once: five per connection at six.
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let mux = mux.clone();
            tokio::spawn(async move { mux.simple_query("SELECT pg_sleep(0.2)").await })
        })
        .collect();
    tokio::time::sleep(ms(150)).await;
    assert_eq!(mux.status().connections, 6, "{:?}", mux.status());
    assert_eq!(pg.sessions("aquifer").unwrap(), 6);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stopped = Instant::now();
    while mux.status().connections > 2 {
        assert!(
            stopped.elapsed() < scale_down_after + tick + ms(300),
            "still {:?} after {:?}",
            mux.status(),
            stopped.elapsed()
        );
        tokio::time::sleep(ms(20)).await;
    }
    assert!(stopped.elapsed() >= scale_down_after - ms(300));
    eventually("the surplus backends exited", || {
        pg.sessions("aquifer").unwrap() == 2
    })
    .await;
    assert_eq!(most.finish(), 6, "never more than max on the server");
    let m = mux.metrics();
    assert_eq!((m.opened, m.closes.scaled_down), (6, 4), "{m:?}");
    mux.close().await;
    eventually("every backend exited", || {
        pg.sessions("aquifer").unwrap() == 0
    })
    .await;
}

/// Connections past `max_lifetime` are replaced on the server, one at a
/// time, while a steady stream of statements goes on without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_their_lifetime_are_replaced_without_failing_a_statement() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(2)
        .max(2)
        .max_lifetime(Some(ms(500)))
        .maintenance_interval(ms(50))
        .build()
        .unwrap();
    tokio::time::timeout(ms(5000), mux.ready())
        .await
        .unwrap()
        .unwrap();
    let most = sessions_watch(&pg);
    let mut backends = std::collections::BTreeSet::new();
    let start = Instant::now();
    let mut statements = 0;
    while start.elapsed() < ms(2000) {
        let row = mux
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("no statement fails while connections retire");
        backends.insert(row.get::<_, i32>(0));
        statements += 1;
        tokio::time::sleep(ms(5)).await;
    }
    let m = mux.metrics();
    eprintln!(
        "{statements} statements over {} backends, {} retired",
        backends.len(),
        m.closes.lifetime
    );
    // Two at the start, then one every 500 ms or so, each in turn.
    assert!(m.closes.lifetime >= 3, "{m:?}");
    assert!(backends.len() >= 4, "{backends:?}");
    assert_eq!(most.finish(), 2, "never more than max on the server");
    mux.close().await;
    eventually("every backend exited", || {
        pg.sessions("aquifer").unwrap() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_fails_its_requests_with_a_typed_error_and_is_replaced() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(1)
        .max(1)
        .pipeline_horizon(None)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    // Five statements pipelined on the one connection.
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let mux = mux.clone();
            tokio::spawn(async move { mux.simple_query("SELECT pg_sleep(30)").await })
        })
        .collect();
    eventually("the first statement runs", || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND application_name = 'aquifer'")
            .unwrap()
            == "1"
    })
    .await;
    assert_eq!(mux.status().in_flight, 5);
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'aquifer'",
    )
    .unwrap();
    for t in tasks {
        let err = tokio::time::timeout(ms(5000), t)
            .await
            .expect("nothing hangs")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, PgMuxError::ConnectionLost { .. }), "{err:?}");
        assert!(
            err.may_have_run(),
            "sent before the connection broke: {err}"
        );
        assert!(err.to_string().contains("may have run"), "{err}");
    }
    // The next requests work, on a new connection.
    for i in 0..20i32 {
        let row = mux.query_one("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
    }
    let m = mux.metrics();
    assert_eq!((m.closes.broken, m.opened), (1, 2), "{m:?}");
    assert_eq!(pg.sessions("aquifer").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_fails_requests_in_time_and_then_recovers() {
    let _serial = SERIAL.lock().await;
    let mut pg = server();
    let acquire = ms(1000);
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(2)
        .max(4)
        .acquire_timeout(acquire)
        .maintenance_interval(ms(100))
        .backoff(Backoff {
            min: ms(50),
            max: ms(200),
            factor: 2.0,
            jitter: 0.0,
        })
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    pg.stop().unwrap();
    // Requests fail: at once with a lost connection, or at the timeout
    // with the connect error as the cause.
    for _ in 0..3 {
        let t = Instant::now();
        let err = mux.simple_query("SELECT 1").await.unwrap_err();
        assert!(t.elapsed() <= acquire + ms(300), "{:?}: {err}", t.elapsed());
        match &err {
            PgMuxError::ConnectionLost { .. } => {}
            PgMuxError::Unavailable(MuxError::Timeout { .. }) => {
                let chain = chain(&err);
                assert!(chain.contains("could not connect"), "{chain}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    pg.start().unwrap();
    let t = Instant::now();
    loop {
        match mux.simple_query("SELECT 1").await {
            Ok(_) => break,
            Err(e) => assert!(t.elapsed() < ms(5000), "not back: {e}"),
        }
    }
    eventually("min restored", || mux.status().connections >= 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_reaches_the_request_that_asked_even_when_others_are_dropped() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(2)
        .max(3)
        .max_in_flight(64)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let (checked, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks: Vec<_> = (0..48i32)
        .map(|t| {
            let (mux, checked, dropped) = (mux.clone(), checked.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                for i in 0..150i32 {
                    let n = t * 100_000 + i;
                    let text = format!("t{t}-{i}");
                    // Some wait a moment on the server, so that drops
                    // land while requests are on the wire.
                    let sleep = if rng.u8(0..4) == 0 { 0.002f64 } else { 0.0 };
                    let ask = async {
                        let row = mux
                            .query_one(
                                "SELECT $1::int4, $2::text, pg_sleep($3::float8)::text",
                                &[&n, &text, &sleep],
                            )
                            .await
                            .unwrap();
                        assert_eq!(row.get::<_, i32>(0), n, "another request's answer");
                        assert_eq!(row.get::<_, String>(1), text);
                    };
                    let give_up = Duration::from_micros(rng.u64(500..40_000));
                    match tokio::time::timeout(give_up, ask).await {
                        Ok(()) => checked.fetch_add(1, Ordering::SeqCst),
                        Err(_) => dropped.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (checked, dropped) = (
        checked.load(Ordering::SeqCst),
        dropped.load(Ordering::SeqCst),
    );
    eprintln!("{checked} answers checked, {dropped} requests dropped mid-way");
    assert!(
        checked > 1000 && dropped > 100,
        "{checked} checked, {dropped} dropped"
    );
    let s = mux.status();
    assert_eq!((s.in_flight, s.queued), (0, 0), "{s:?}");
    assert!(s.connections + s.draining <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_change_the_session_are_refused_before_they_are_sent() {
    let pg = server();
    pg.psql("CREATE TABLE t (v int)").unwrap();
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(1)
        .max(1)
        .build()
        .unwrap();
    for sql in [
        "BEGIN",
        "START TRANSACTION",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s",
        "SET application_name = 'changed'",
        "SET SESSION search_path = nowhere",
        "RESET ALL",
        "DISCARD ALL",
        "LISTEN news",
        "UNLISTEN *",
        "PREPARE q AS SELECT 1",
        "DEALLOCATE ALL",
        "CREATE TEMP TABLE scratch (v int)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "LOCK TABLE t",
        "SELECT pg_advisory_lock(42)",
        "SELECT pg_try_advisory_lock(42)",
        "SELECT set_config('application_name', 'changed', false)",
        "INSERT INTO t VALUES (1); BEGIN",
        "DO $$ BEGIN PERFORM set_config('search_path', 'nowhere', false); END $$",
        "CALL commit_and_slow_everyone()",
        "COPY t FROM STDIN",
        "COPY t TO STDOUT",
        "LOAD 'auto_explain'",
        "SELECT 1 AS v INTO TEMP scratch",
    ] {
        for err in [
            mux.simple_query(sql).await.map(drop).unwrap_err(),
            mux.execute(sql, &[]).await.map(drop).unwrap_err(),
            mux.query(sql, &[]).await.map(drop).unwrap_err(),
        ] {
            assert!(
                matches!(err, PgMuxError::SessionState { .. }),
                "{sql}: {err:?}"
            );
            assert!(!err.may_have_run());
            assert!(err.to_string().contains("exclusive pool"), "{err}");
        }
    }
    // Nothing reached the server: no name change, no lock, no row, and a
    // temporary table was never made.
    assert_eq!(pg.sessions("changed").unwrap(), 0);
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            .unwrap(),
        "0"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "0");
    // What a request may do alone works.
    mux.simple_query("SET LOCAL statement_timeout = 1000; SELECT 1")
        .await
        .unwrap();
    mux.query_one("SELECT set_config('x.y', 'z', true)", &[])
        .await
        .unwrap();
    mux.query_one("SELECT pg_advisory_xact_lock(7)::text", &[])
        .await
        .unwrap();
    assert_eq!(
        mux.execute("INSERT INTO t VALUES ($1)", &[&5i32])
            .await
            .unwrap(),
        1
    );
}

/// A function of the user's can change the session where the statement
/// text does not show it: the check at the next tick finds it, the
/// connection is retired and replaced, and requests see a clean session
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_changed_inside_a_function_is_clean_again_within_a_tick() {
    let pg = server();
    pg.psql(
        "CREATE TABLE t (v int); \
         CREATE FUNCTION sneaky() RETURNS text LANGUAGE plpgsql AS \
         $$ BEGIN RETURN set_config('search_path', 'nowhere', false); END $$",
    )
    .unwrap();
    let tick = Duration::from_millis(300);
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(1)
        .max(1)
        .maintenance_interval(tick)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let first = mux.lease().await.unwrap().id();
    mux.query_one("SELECT sneaky()", &[]).await.unwrap();
    let changed_at = Instant::now();
    // The gap the checks close: until the tick, the change is visible.
    let path = |row: tokio_postgres::Row| row.get::<_, String>(0);
    let clean = loop {
        let row = mux
            .query_one("SELECT current_setting('search_path')", &[])
            .await
            .unwrap();
        if path(row) != "nowhere" {
            break changed_at.elapsed();
        }
        assert!(
            changed_at.elapsed() < tick * 10,
            "still changed after {:?}",
            changed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(clean <= tick * 3 + Duration::from_millis(500), "{clean:?}");
    let lease = mux.lease().await.unwrap();
    assert_ne!(lease.id(), first);
    // Another request's unqualified table works again.
    lease
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    drop(lease);
    assert_eq!(mux.metrics().closes.session_changed, 1);
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "1");
}

/// A session lock taken before an error survives the rollback: a failed
/// request has its session checked at once, and its connection retires
/// as it gives its slot back, without waiting for a tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_that_left_a_session_lock_retires_its_connection_at_once() {
    let pg = server();
    pg.psql(
        "CREATE FUNCTION lock_then_fail() RETURNS int LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_advisory_lock(99); RAISE EXCEPTION 'boom'; END $$",
    )
    .unwrap();
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(1)
        .max(1)
        .maintenance_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let first = mux.lease().await.unwrap().id();
    let err = mux
        .query_one("SELECT lock_then_fail()", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(matches!(err, PgMuxError::Db(_)), "{err:?}");
    let lease = mux.lease().await.unwrap();
    assert_ne!(
        lease.id(),
        first,
        "the changed connection took another request"
    );
    drop(lease);
    // The old backend is gone, and its lock with it.
    let end = Instant::now() + Duration::from_secs(5);
    while pg
        .psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        .unwrap()
        != "0"
    {
        assert!(
            Instant::now() < end,
            "the session lock outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An ordinary failure changes nothing and keeps the connection.
    let kept = mux.lease().await.unwrap().id();
    mux.query_one("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(mux.lease().await.unwrap().id(), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_through_the_raw_client_retires_the_connection() {
    let pg = server();
    pg.psql("CREATE TABLE t (v int)").unwrap();
    let mux = PgMultiplexer::builder(manager(&pg.url()))
        .min(1)
        .max(1)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let lease = mux.lease().await.unwrap();
    let first = lease.id();
    lease.client().batch_execute("BEGIN").await.unwrap();
    drop(lease);
    // The next request runs on a fresh connection, outside that
    // transaction: its insert is there for everyone.
    let lease = mux.lease().await.unwrap();
    assert_ne!(lease.id(), first);
    lease
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    drop(lease);
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "1");
    assert_eq!(mux.metrics().closes.broken, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_in_transaction_mode_unnamed_statements_work() {
    let pg = server();
    let bouncer = PgBouncer::start(&pg, PoolMode::Transaction, 2).unwrap();
    pg.psql("CREATE TABLE bounced (v int)").unwrap();
    let manager = PgManager::new(&bouncer.url())
        .unwrap()
        .prepared_statements(false);
    let mux = PgMultiplexer::builder(PgMuxManager::from(manager))
        .min(2)
        .max(4)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..16i32)
        .map(|t| {
            let mux = mux.clone();
            tokio::spawn(async move {
                for i in 0..25i32 {
                    let n = t * 1000 + i;
                    let row = mux.query_one("SELECT $1::int4 + 1", &[&n]).await.unwrap();
                    assert_eq!(row.get::<_, i32>(0), n + 1);
                    let changed = mux
                        .execute("INSERT INTO bounced VALUES ($1)", &[&n])
                        .await
                        .unwrap();
                    assert_eq!(changed, 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(pg.psql("SELECT count(*) FROM bounced").unwrap(), "400");
}
