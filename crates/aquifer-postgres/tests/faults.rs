//! Faults real servers and networks produce, survived against real servers.

mod common;

use std::time::{Duration, Instant};

use aquifer::{Backoff, CreateError};
use aquifer_postgres::{PgManager, PgPool};
use aquifer_testkit::{Fault, FaultProxy, Load, MaxWatcher, Step};
use common::*;

/// The fault tests measure time; run one at a time so that none of them
/// waits for a core that another is using.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_never_handed_out() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let pool = PgPool::builder(PgManager::new(&pg.url()).unwrap())
        .max(8)
        .min(8)
        .build()
        .unwrap();
    pool.start().await.unwrap();
    assert_eq!(pg.sessions("aquifer").unwrap(), 8);
    let killed = pg
        .psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'aquifer'")
        .unwrap();
    assert_eq!(killed, "8");
    eventually("the backends exited", || {
        pg.sessions("aquifer").unwrap() == 0
    })
    .await;
    for i in 0..1000 {
        let conn = pool.get().await.unwrap();
        if let Err(e) = conn.simple_query("SELECT 1").await {
            panic!("checkout {i} handed out a dead connection: {e}");
        }
    }
    let m = pool.metrics();
    eprintln!(
        "after terminating 8 backends: 1000/1000 checkouts worked; evicted broken {}, validation failures {}, creates {}",
        m.evictions.broken, m.validation_failures, m.creates
    );
    assert!(m.evictions.broken + m.validation_failures >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_fails_gets_in_time_and_recovers() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let url = pg.url();
    let max = 4;
    let acquire = ms(1000);
    let backoff_max = ms(1000);
    let pool = PgPool::builder(PgManager::new(&url).unwrap())
        .max(max)
        .acquire_timeout(acquire)
        .backoff(Backoff {
            min: ms(50),
            max: backoff_max,
            ..Backoff::default()
        })
        .build()
        .unwrap();

    // Watch the server's view: never more sessions than `max`.
    let watcher = MaxWatcher::start(aquifer_testkit::pg_sessions(&pg, "aquifer"));

    // Eight tasks hammer the pool; every failed get is timed and kept.
    let load = {
        let pool = pool.clone();
        Load::start(8, acquire + acquire / 10, move || {
            let pool = pool.clone();
            async move {
                match pool.get().await {
                    Ok(conn) => match conn.simple_query("SELECT 1").await {
                        Ok(_) => Step::Served,
                        Err(_) => Step::QueryFailed,
                    },
                    Err(e) => Step::get_failed(&e),
                }
            }
        })
    };

    // While the server is down, a get carries the connection error.
    let while_down = async {
        let err = pool.get().await.unwrap_err();
        let text = chain(&err);
        assert!(err.create_error().is_some(), "{text}");
        assert!(
            text.to_lowercase().contains("refused") || text.contains("connect"),
            "{text}"
        );
    };
    let (_pg, report, recovered) = load
        .crash_and_restart(pg, ms(1500), backoff_max * 3, while_down)
        .await;
    report.assert_survived_crash(recovered, backoff_max, watcher.finish(), max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_network_times_out_instead_of_hanging() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let proxy = FaultProxy::start(pg.addr()).unwrap();
    let max = 4;
    let manager = PgManager::new(&pg.url_through(&proxy))
        .unwrap()
        .check_timeout(ms(300));
    let pool = PgPool::builder(manager)
        .max(max)
        .acquire_timeout(ms(1000))
        .create_timeout(ms(400))
        .validate_if_idle_for(ms(0))
        .build()
        .unwrap();
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    drop((a, b));
    let accepted_before = proxy.accepted();
    proxy.set(Fault::Blackhole);

    // A storm of gets: each fails at its timeout, none hangs.
    let start = Instant::now();
    let storm: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                (pool.get().await.map(drop), t.elapsed(), pool.status().size)
            })
        })
        .collect();
    for s in storm {
        let (got, took, size) = tokio::time::timeout(Duration::from_secs(5), s)
            .await
            .expect("a get hung on a blackholed network")
            .unwrap();
        // The acquire timeout, with the cause.
        let err = got.unwrap_err();
        assert!(err.is_timeout(), "{}", chain(&err));
        assert!(
            matches!(err.create_error(), Some(CreateError::Timeout(_)) | None),
            "{}",
            chain(&err)
        );
        assert!(took <= ms(1100), "{took:?}");
        assert!(size <= max);
    }
    let attempts = proxy.accepted() - accepted_before;
    let m = pool.metrics();
    eprintln!(
        "blackhole: 20 gets failed in {:?}; {attempts} connection attempts, {} validations timed out",
        start.elapsed(),
        m.validation_failures
    );
    assert_eq!(
        m.validation_failures, 2,
        "both idle connections failed their check"
    );
    assert!(
        attempts <= 2 * max as u64,
        "{attempts} connection attempts in one second"
    );

    proxy.set(Fault::Pass);
    let t = Instant::now();
    loop {
        match pool.get().await {
            Ok(c) => {
                c.simple_query("SELECT 1").await.unwrap();
                break;
            }
            Err(_) => assert!(t.elapsed() < Duration::from_secs(10), "no recovery"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_over_slow_connects_opens_few_connections() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let proxy = FaultProxy::start(pg.addr()).unwrap();
    proxy.set(Fault::Latency(ms(150)));
    let pool = PgPool::builder(PgManager::new(&pg.url_through(&proxy)).unwrap())
        .max(50)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let c = pool.get().await.unwrap();
                c.simple_query("SELECT 1").await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let creates = pool.metrics().creates;
    eprintln!(
        "50 tasks at once over 150 ms latency: served in {:?} with {creates} connections",
        start.elapsed()
    );
    assert!(
        creates <= 15,
        "opened {creates} connections for 50 short tasks"
    );
}

#[tokio::test]
async fn closing_or_dropping_a_pool_leaves_no_session_behind() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let pool =
        PgPool::builder(PgManager::new(&format!("{}?application_name=closed", pg.url())).unwrap())
            .max(5)
            .min(5)
            .build()
            .unwrap();
    pool.start().await.unwrap();
    let held = pool.get().await.unwrap();
    assert_eq!(pg.sessions("closed").unwrap(), 5);
    pool.close().await;
    drop(held);
    eventually("closed sessions left", || {
        pg.sessions("closed").unwrap() == 0
    })
    .await;

    let pool =
        PgPool::builder(PgManager::new(&format!("{}?application_name=dropped", pg.url())).unwrap())
            .max(3)
            .min(3)
            .build()
            .unwrap();
    pool.start().await.unwrap();
    let held = pool.get().await.unwrap();
    assert_eq!(pg.sessions("dropped").unwrap(), 3);
    drop(pool);
    drop(held);
    eventually("dropped sessions left", || {
        pg.sessions("dropped").unwrap() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_has_its_own_timeout() {
    let _serial = SERIAL.lock().await;
    let pg = server();
    let proxy = FaultProxy::start(pg.addr()).unwrap();
    let manager = PgManager::new(&pg.url_through(&proxy))
        .unwrap()
        .check_timeout(ms(200));
    let mut conn = aquifer::Manager::create(&manager).await.unwrap();
    aquifer::Manager::validate(&manager, &mut conn)
        .await
        .unwrap();
    proxy.set(Fault::Blackhole);
    let start = Instant::now();
    let err = aquifer::Manager::validate(&manager, &mut conn)
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, aquifer_postgres::PgError::CheckTimeout(t) if t == ms(200)),
        "{err}"
    );
    assert!(took >= ms(200) && took < ms(1000), "{took:?}");
}

/// `close()` returns once every connection has said goodbye (a `Terminate`
/// message, then the socket closed), so a program that shuts its runtime
/// down right after leaves no connection cut off mid-way. The server,
/// logging at `debug1`, names every connection that ended without the
/// message: "unexpected EOF on client connection".
#[test]
fn close_says_goodbye_on_every_connection_before_it_returns() {
    let pg = aquifer_testkit::PgServer::builder()
        .setting("log_min_messages", "debug1")
        .start()
        .expect("a throwaway PostgreSQL (apt-get install postgresql)");
    for round in 0..3 {
        // One thread: what close() leaves to other tasks never runs.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = format!("{}?application_name=goodbye", pg.url());
            let pool = PgPool::builder(PgManager::new(&url).unwrap())
                .max(6)
                .min(6)
                .build()
                .unwrap();
            pool.start().await.unwrap();
            // One of them comes back while the pool closes.
            let held = pool.get().await.unwrap();
            let closing = pool.close();
            drop(held);
            closing.await;
            assert_eq!(pool.status().size, 0);
        });
        // Whatever the runtime still had to run is dropped with it.
        drop(rt);
        let give_up = Instant::now() + Duration::from_secs(10);
        while pg.sessions("goodbye").unwrap_or(1) > 0 && Instant::now() < give_up {
            std::thread::sleep(ms(20));
        }
        let cut = pg
            .log()
            .matches("unexpected EOF on client connection")
            .count();
        assert_eq!(
            cut, 0,
            "round {round}: {cut} connections were cut off without a goodbye"
        );
    }
}

/// HikariCP's DbDown test: with the server stopped, every get fails at its
/// timeout, no sooner and no later, with the connection error as its
/// cause; after a restart the next get works within `backoff.max`; a wrong
/// password or an unknown database fails at once with the server's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_database_fails_every_get_at_its_timeout_and_bad_credentials_at_once() {
    let _serial = SERIAL.lock().await;
    let mut pg = server();
    let timeout = ms(1000);
    let backoff_max = ms(1000);
    let pool = PgPool::builder(PgManager::new(&pg.url()).unwrap())
        .min(2)
        .max(10)
        .acquire_timeout(timeout)
        .backoff(Backoff {
            min: ms(50),
            max: backoff_max,
            ..Backoff::default()
        })
        .build()
        .unwrap();
    pool.start().await.unwrap();
    pg.stop().unwrap();
    // The idle connections died with the server; drop them so that every
    // get below has to create.
    pool.clear().await;
    let mut took = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let err = pool.get().await.unwrap_err();
        took.push(t.elapsed());
        assert!(err.is_timeout(), "{}", chain(&err));
        assert_eq!(
            chain(&err).matches("could not connect").count(),
            1,
            "{}",
            chain(&err)
        );
        let text = chain(&err);
        assert!(text.contains("could not connect"), "{text}");
    }
    eprintln!("server down, acquire_timeout {timeout:?}: gets failed after {took:?}");
    for t in &took {
        assert!(*t >= timeout && *t <= timeout * 11 / 10, "{took:?}");
    }

    pg.start().unwrap();
    let restarted = Instant::now();
    let conn = pool.get().await.unwrap();
    conn.simple_query("SELECT 1").await.unwrap();
    let back = restarted.elapsed();
    eprintln!("after the restart the next get worked in {back:?} (backoff max {backoff_max:?})");
    assert!(back <= backoff_max + ms(200), "{back:?}");
    drop(conn);

    let wrong = pg
        .url()
        .replace(aquifer_testkit::PG_PASSWORD, "not-the-password");
    for (url, words) in [
        (wrong, "password authentication failed"),
        (pg.url_for("no_such_db"), "does not exist"),
    ] {
        let pool = PgPool::builder(PgManager::new(&url).unwrap())
            .acquire_timeout(ms(5000))
            .build()
            .unwrap();
        let t = Instant::now();
        let err = pool.get().await.unwrap_err();
        let took = t.elapsed();
        let text = chain(&err);
        eprintln!("{words}: failed in {took:?}");
        assert!(matches!(err, aquifer::PoolError::Create(_)), "{text}");
        // Each layer names itself; the server's words come once.
        let line = aquifer::error_chain(&err);
        assert_eq!(line.matches(words).count(), 1, "{line}");
        assert!(!text.contains(aquifer_testkit::PG_PASSWORD), "{text}");
        assert!(took < ms(100), "{took:?}: {text}");
    }
}
