//! A cluster over three real PostgreSQL servers, one of which dies.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aquifer::{Backoff, Cluster, ClusterConn, ClusterPool, Mode, Selector};
use aquifer_postgres::{PgManager, PgPool};
use common::*;

/// These tests watch timing on two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_costs_no_failed_gets_and_comes_back_after_its_ban() {
    let _serial = SERIAL.lock().await;
    let mut servers = vec![server(), server(), server()];
    let cluster: Cluster<PgManager> = Cluster::builder()
        .ban_time(Duration::from_secs(1))
        .acquire_timeout(Duration::from_secs(3))
        .build();
    for (i, pg) in servers.iter().enumerate() {
        let pool = PgPool::builder(PgManager::new(&pg.url()).unwrap())
            .max(4)
            .backoff(Backoff {
                min: ms(20),
                max: ms(200),
                ..Backoff::default()
            })
            .build()
            .unwrap();
        cluster
            .add(ClusterPool::new(format!("pg_{}", i + 1), pool))
            .unwrap();
    }

    let served: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let failed_gets = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (cluster, served, failed, stop) = (
                cluster.clone(),
                served.clone(),
                failed_gets.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match cluster.get_any().await {
                        Ok(conn) => {
                            *served
                                .lock()
                                .unwrap()
                                .entry(conn.pool_name().to_owned())
                                .or_insert(0) += 1;
                            // A connection to the dying server may fail its
                            // query; that is not a failed get.
                            let _ = conn.simple_query("SELECT 1").await;
                        }
                        Err(e) => {
                            eprintln!("get failed: {e}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    let count = |name: &str| served.lock().unwrap().get(name).copied().unwrap_or(0);

    // All three serve first (connecting takes a while on a busy machine).
    let mut waited = 0;
    while ["pg_1", "pg_2", "pg_3"].iter().any(|n| count(n) == 0) {
        tokio::time::sleep(ms(10)).await;
        waited += 1;
        assert!(
            waited < 1000,
            "not every server served: {:?}",
            served.lock().unwrap()
        );
    }
    servers[1].kill().unwrap();
    // Wait for the ban, then watch pg_2's count while it lasts.
    let mut waited = 0;
    while !cluster.is_banned("pg_2") {
        tokio::time::sleep(ms(10)).await;
        waited += 1;
        assert!(waited < 300, "pg_2 was never banned");
    }
    let at_ban = count("pg_2");
    tokio::time::sleep(ms(700)).await;
    let during_ban = count("pg_2") - at_ban;

    let mut pg2 = servers.remove(1);
    let pg2 = tokio::task::spawn_blocking(move || {
        pg2.start().unwrap();
        pg2
    })
    .await
    .unwrap();
    let back = count("pg_2");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = count("pg_2") - back;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("no worker hangs")
            .unwrap();
    }
    let totals = served.lock().unwrap().clone();
    eprintln!(
        "3 servers, pg_2 killed then restarted: served {totals:?}; failed gets {}; pg_2 gets while banned {during_ban}; after restart {after}",
        failed_gets.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed_gets.load(Ordering::SeqCst),
        0,
        "a dead server must cost no failed gets"
    );
    assert_eq!(during_ban, 0, "no traffic to a banned server");
    assert!(after > 0, "pg_2 is used again once it is back");
    assert!(cluster
        .warnings()
        .iter()
        .any(|w| w.pool.as_deref() == Some("pg_2")));
    drop(pg2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_under_load_then_remove_leaves_nothing_on_the_server() {
    let _serial = SERIAL.lock().await;
    let servers = [server(), server()];
    let cluster: Cluster<PgManager> = Cluster::builder().build();
    for (i, pg) in servers.iter().enumerate() {
        let url = format!("{}?application_name=node_{}", pg.url(), i + 1);
        let pool = PgPool::builder(PgManager::new(&url).unwrap())
            .max(6)
            .build()
            .unwrap();
        cluster
            .add(ClusterPool::new(format!("node_{}", i + 1), pool))
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..50)
        .map(|_| {
            let (cluster, stop, finished) = (cluster.clone(), stop.clone(), finished.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let conn = cluster.get_any().await.expect("the other node serves");
                    // Work in flight: it must finish even if its pool freezes.
                    conn.simple_query("SELECT pg_sleep(0.02)").await.unwrap();
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::time::sleep(ms(300)).await;
    let node_1 = cluster.pool("node_1").unwrap();
    cluster.freeze("node_1").unwrap();
    // Gets already queued in node_1 when it froze are work in flight: once
    // they are served, node_1 must serve and open nothing more.
    eventually("node_1's queue drained", || {
        let s = node_1.status();
        s.waiting == 0 && s.creating == 0
    })
    .await;
    // Creates started so far: finished, failed, or still in flight.
    let started = |p: &PgPool| {
        let m = p.metrics();
        m.creates + m.create_failures + p.status().creating as u64
    };
    let (gets, creates) = (node_1.metrics().gets, started(&node_1));
    let done_at_freeze = finished.load(Ordering::SeqCst);
    tokio::time::sleep(ms(500)).await;
    assert_eq!(node_1.metrics().gets, gets, "no new get from a frozen pool");
    assert_eq!(
        started(&node_1),
        creates,
        "no new connection from a frozen pool"
    );
    assert_eq!(
        node_1.status().borrowed,
        0,
        "work in flight finished and came back"
    );
    assert!(
        finished.load(Ordering::SeqCst) > done_at_freeze,
        "node_2 kept serving"
    );
    assert!(
        servers[0].sessions("node_1").unwrap() > 0,
        "frozen, not closed"
    );

    assert_eq!(
        cluster
            .remove("node_1", Duration::from_secs(5))
            .await
            .unwrap(),
        1
    );
    eventually("node_1 sessions gone", || {
        servers[0].sessions("node_1").unwrap() == 0
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(servers[1].sessions("node_2").unwrap() > 0);
    assert_eq!(cluster.names(), ["node_2"]);
}

/// The port of the server a connection is really on, asked of the server.
async fn server_port(conn: &ClusterConn<PgManager>) -> u16 {
    let row = conn
        .query_one("SELECT current_setting('port')", &[])
        .await
        .unwrap();
    row.get::<_, String>(0).parse().unwrap()
}

/// `gets` gets one after another on `sel` (or any pool), each counted by the
/// server that answered it, after checking it is the server of the pool the
/// connection names.
async fn served_by(
    cluster: &Cluster<PgManager>,
    ports: &HashMap<&str, u16>,
    sel: Option<Selector>,
    gets: usize,
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..gets {
        let conn = match &sel {
            Some(sel) => cluster.get(sel.clone()).await.unwrap(),
            None => cluster.get_any().await.unwrap(),
        };
        let name = conn.pool_name().to_owned();
        assert_eq!(
            server_port(&conn).await,
            ports[name.as_str()],
            "{name} handed out a connection to another server"
        );
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_modes_route_to_the_right_servers_in_the_promised_shares() {
    let _serial = SERIAL.lock().await;
    let servers = [server(), server(), server()];
    let names = ["asia_1", "asia_2", "africa_1"];
    let cluster: Cluster<PgManager> = Cluster::builder().build();
    let mut ports = HashMap::new();
    for ((pg, name), weight) in servers.iter().zip(names).zip([1, 2, 7]) {
        let pool = PgPool::builder(PgManager::new(&pg.url()).unwrap())
            .max(4)
            .build()
            .unwrap();
        let tag = if name == "asia_1" {
            "primary"
        } else {
            "replica"
        };
        cluster
            .add(ClusterPool::new(name, pool).tag(tag).weight(weight))
            .unwrap();
        ports.insert(name, pg.port());
    }
    let only = |seen: &HashMap<String, usize>, names: &[&str]| {
        let mut got: Vec<_> = seen.keys().map(String::as_str).collect();
        got.sort_unstable();
        let mut want = names.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "served by {seen:?}");
    };

    // Every selector form reaches exactly the servers it names; round robin
    // (the default) splits evenly among them.
    let seen = served_by(&cluster, &ports, Some("africa_1".into()), 30).await;
    only(&seen, &["africa_1"]);
    let seen = served_by(&cluster, &ports, Some("asia_*".into()), 300).await;
    only(&seen, &["asia_1", "asia_2"]);
    assert_eq!((seen["asia_1"], seen["asia_2"]), (150, 150));
    let regex = Selector::regex("^a[a-z]+_1$").unwrap();
    let seen = served_by(&cluster, &ports, Some(regex), 300).await;
    only(&seen, &["asia_1", "africa_1"]);
    assert_eq!((seen["asia_1"], seen["africa_1"]), (150, 150));
    let seen = served_by(&cluster, &ports, Some(Selector::tag("replica")), 300).await;
    only(&seen, &["asia_2", "africa_1"]);
    let seen = served_by(&cluster, &ports, Some("*".into()), 300).await;
    only(&seen, &names);

    // Over 3,000 gets: round robin in exact thirds, random within 10% of a
    // third, weighted 1:2:7 in its shares, failover all on the first pool.
    let seen = served_by(&cluster, &ports, None, 3000).await;
    for n in names {
        assert_eq!(seen[n], 1000, "round robin: {seen:?}");
    }
    cluster.set_mode(Mode::Random);
    let seen = served_by(&cluster, &ports, None, 3000).await;
    eprintln!("random over 3 servers, 3000 gets: {seen:?}");
    for n in names {
        assert!(seen[n].abs_diff(1000) <= 100, "random: {seen:?}");
    }
    cluster.set_mode(Mode::Weighted);
    let seen = served_by(&cluster, &ports, None, 3000).await;
    eprintln!("weighted 1:2:7 over 3 servers, 3000 gets: {seen:?}");
    for (n, p) in names.into_iter().zip([0.1_f64, 0.2, 0.7]) {
        // Within four standard deviations of each share, so that chance
        // fails it about once in 5,000 runs: ±66 of 300, ±88 of 600, ±100
        // of 2100.
        let got = seen.get(n).copied().unwrap_or(0) as f64;
        let sd = (3000.0 * p * (1.0 - p)).sqrt();
        assert!((got - 3000.0 * p).abs() <= 4.0 * sd, "weighted: {seen:?}");
    }
    cluster.set_mode(Mode::Failover);
    let seen = served_by(&cluster, &ports, None, 300).await;
    assert_eq!(seen.get("asia_1"), Some(&300), "failover: {seen:?}");

    // Least busy: with three connections out on asia_1 and three on
    // asia_2, every get goes to africa_1; with three out on asia_1 and one
    // each on the others, those two share the gets and asia_1 gets none.
    // The margins hold even when connections a get just gave back are
    // still on their way (a return may finish on another task a moment
    // later, two of them on a loaded machine).
    cluster.set_mode(Mode::LeastBusy);
    let mut held = Vec::new();
    for name in ["asia_1", "asia_1", "asia_1", "asia_2", "asia_2", "asia_2"] {
        held.push(cluster.get(name).await.unwrap());
    }
    let seen = served_by(&cluster, &ports, None, 100).await;
    only(&seen, &["africa_1"]);
    held.truncate(4);
    held.push(cluster.get("africa_1").await.unwrap());
    let seen = served_by(&cluster, &ports, None, 100).await;
    only(&seen, &["asia_2", "africa_1"]);
    drop(held);
}
