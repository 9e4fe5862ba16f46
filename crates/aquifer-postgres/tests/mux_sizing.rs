//! The multiplexer's adaptive limit against a real PostgreSQL on this
//! machine: short statements end below `max`, statements that wait make
//! it grow, and with `adaptive` off it scales with the demand as before.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aquifer::LimitReason;
use aquifer_postgres::{PgMultiplexer, PgMuxExt, PgMuxManager};
use aquifer_testkit::MaxWatcher;
use common::*;

/// The tests load the server's cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `tasks` callers running `sql` in a loop until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(mux: &PgMultiplexer, tasks: usize, sql: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..tasks)
            .map(|_| {
                let (mux, stop, done) = (mux.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        mux.simple_query(sql).await.expect(sql);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load { stop, done, tasks }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.done.load(Ordering::Relaxed)
    }
}

fn mux(url: &str, adaptive: bool) -> PgMultiplexer {
    PgMultiplexer::builder(PgMuxManager::new(url).unwrap())
        .min(1)
        .max(16)
        .adaptive(adaptive)
        .build()
        .unwrap()
}

fn limit(mux: &PgMultiplexer) -> usize {
    mux.status().limit.expect("adaptive").limit
}

/// On this machine's few cores, 16 backends running `SELECT 1` compete
/// for them: the limit comes down from `max` by what it measures, the
/// backends above it exit, and when the load falls to four callers the
/// limit follows it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_short_statements_the_limit_ends_below_max_and_follows_the_load() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let mux = mux(&pg.url(), true);
    mux.ready().await.unwrap();
    let most = MaxWatcher::start(aquifer_testkit::pg_sessions(&pg, "aquifer"));
    let load = Load::start(&mux, 64, "SELECT 1");
    eventually("the limit came down from max, by measuring", || {
        let l = mux.status().limit.unwrap();
        l.limit <= 8 && l.measured.len() >= 2
    })
    .await;
    let s = mux.status();
    assert!(s.connections <= s.limit.as_ref().unwrap().limit, "{s:?}");
    assert!(load.stop().await > 0);
    // The backends above the limit exited.
    eventually("the backends above the limit exited", || {
        pg.sessions("aquifer").unwrap() <= limit(&mux)
    })
    .await;
    assert!(most.finish() <= 16, "never above max on the server");
    assert!(mux.metrics().closes.limited > 0, "{:?}", mux.metrics());

    // Four callers use four connections at most.
    let load = Load::start(&mux, 4, "SELECT 1");
    eventually("the limit followed four callers down", || limit(&mux) <= 4).await;
    load.stop().await;
    mux.close().await;
}

/// Statements that wait (`pg_sleep`) keep a connection busy without
/// loading the server: requests queue past the pipeline horizon, and the
/// limit rises at once, however low the measurements had set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_statements_that_wait_the_limit_grows() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let mux = mux(&pg.url(), true);
    mux.ready().await.unwrap();
    // First a light load of short statements brings the limit down.
    let load = Load::start(&mux, 2, "SELECT 1");
    eventually("a light load brought the limit down", || limit(&mux) <= 2).await;
    load.stop().await;

    // 32 callers of 50 ms sleeps: within the 100 ms horizon a connection
    // carries two, so the load needs all 16.
    let load = Load::start(&mux, 32, "SELECT pg_sleep(0.05)");
    eventually("the limit rose with the sleeps", || limit(&mux) == 16).await;
    let l = mux.status().limit.unwrap();
    assert!(
        matches!(
            l.reason,
            LimitReason::Queued | LimitReason::Measured | LimitReason::Probe
        ),
        "{l:?}"
    );
    eventually("16 connections carried them", || {
        mux.status().connections >= 15
    })
    .await;
    let before = load.done.load(Ordering::Relaxed);
    tokio::time::sleep(ms(1000)).await;
    let per_second = load.done.load(Ordering::Relaxed) - before;
    // 16 connections of 20 sleeps a second each: 320 a second, of which
    // a few probes may cost some.
    assert!(
        per_second >= 200,
        "{per_second} sleeps a second: {:?}",
        mux.status()
    );
    load.stop().await;
    mux.close().await;
}

/// `adaptive(false)`, and `min == max`, keep scaling with the demand:
/// 64 callers of `SELECT 1` open all 16 connections, and no limit is
/// reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_adaptive_off_connections_follow_the_demand_to_max() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    for fixed in [false, true] {
        let mux = if fixed {
            PgMultiplexer::builder(PgMuxManager::new(&pg.url()).unwrap())
                .min(16)
                .max(16)
                .build()
                .unwrap()
        } else {
            mux(&pg.url(), false)
        };
        mux.ready().await.unwrap();
        let load = Load::start(&mux, 64, "SELECT 1");
        eventually("16 connections", || mux.status().connections == 16).await;
        tokio::time::sleep(ms(1500)).await;
        let s = mux.status();
        assert_eq!((s.connections, s.limit.clone()), (16, None), "{s:?}");
        assert_eq!(mux.metrics().closes.limited, 0);
        load.stop().await;
        mux.close().await;
    }
}
