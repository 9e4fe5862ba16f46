//! A cluster over three real PostgreSQL servers, one of which dies.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aquifer::{Backoff, Cluster, ClusterPool};
use aquifer_postgres::{PgManager, PgPool};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_costs_no_failed_gets_and_comes_back_after_its_ban() {
    let mut servers = vec![server(), server(), server()];
    let cluster: Cluster<PgManager> = Cluster::builder()
        .ban_time(Duration::from_secs(1))
        .acquire_timeout(Duration::from_secs(3))
        .build();
    for (i, pg) in servers.iter().enumerate() {
        let pool = PgPool::builder(PgManager::new(&pg.url()).unwrap())
            .max(4)
            .retries(0)
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

    tokio::time::sleep(ms(400)).await;
    assert!(count("pg_2") > 0, "all three serve at first");
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
