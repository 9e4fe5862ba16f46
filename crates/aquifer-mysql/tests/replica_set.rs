//! A cluster as a replica set over real MariaDB GTID replication
//! (semi-synchronous, so that an acknowledged write survives the
//! primary): roles found from the servers, failover under 16 writers with
//! every acknowledged write kept, an old primary rejoining that takes no
//! writes, and demotion with `SET GLOBAL read_only = 1`.

mod common;

use std::time::{Duration, Instant};

use aquifer::{Backoff, Cluster, ClusterPool, Role, Roles};
use aquifer_mysql::mysql_async::prelude::Queryable;
use aquifer_mysql::{MySqlManager, MySqlPool};
use aquifer_testkit::{no_primary, MariaDbServer, Outcome, Writers};
use common::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn replica_set(members: &[(&str, &MariaDbServer)]) -> Cluster<MySqlManager> {
    let cluster = Cluster::builder()
        .roles(Roles::default())
        .acquire_timeout(Duration::from_secs(5))
        .build();
    for (name, db) in members {
        let pool = MySqlPool::builder(MySqlManager::new(&db.app_url()).unwrap())
            .max(16)
            .backoff(Backoff {
                min: ms(20),
                max: ms(200),
                ..Backoff::default()
            })
            .build()
            .unwrap();
        cluster.add(ClusterPool::new(*name, pool)).unwrap();
    }
    cluster
}

async fn until(
    c: &Cluster<MySqlManager>,
    what: &str,
    done: impl Fn(&Cluster<MySqlManager>) -> bool,
) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !done(c) {
        assert!(
            Instant::now() < give_up,
            "{what}: primary {:?}, warnings {:?}",
            c.primary(),
            c.warnings()
        );
        tokio::time::sleep(ms(5)).await;
    }
}

/// `n` tasks inserting keys through `write()`; a write that could not get
/// a connection fails with a typed error that says why.
fn writers(cluster: &Cluster<MySqlManager>, n: usize) -> Writers {
    let c = cluster.clone();
    Writers::start(n, move |key| {
        let c = c.clone();
        async move {
            match c.write().await {
                Ok(mut conn) => {
                    let pool = conn.pool_name().to_owned();
                    let r = conn.exec_drop("INSERT INTO kv VALUES (?)", (key,)).await;
                    (Some(pool), r.map_err(|e| chain(&e)))
                }
                Err(e) => no_primary(&e),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_sixteen_writers_keeps_every_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let mut first = MariaDbServer::builder().binlog().start().unwrap();
    first
        .sql("CREATE TABLE aquifer.kv (k bigint PRIMARY KEY)")
        .unwrap();
    first.create_app_user().unwrap();
    let mut second = first.start_replica().unwrap();
    second.wait_replayed(&first).unwrap();
    let cluster = replica_set(&[("a", &second), ("b", &first)]);
    until(&cluster, "roles", |c| {
        c.primary().as_deref() == Some("b") && c.role("a").unwrap().role == Role::Standby
    })
    .await;
    let a = cluster.role("a").unwrap();
    assert!(
        a.evidence
            .starts_with("read_only = 1, replicating from 127.0.0.1:"),
        "{}",
        a.evidence
    );

    let writers = writers(&cluster, 16);
    let (mut primary, mut standby) = (("b", &mut first), ("a", &mut second));
    let mut took = Vec::new();
    for round in 0..5 {
        tokio::time::sleep(ms(300)).await;
        // Caught up, the replica acknowledges each commit from here on
        // (semi-synchronous); commits made while it was away are async.
        standby.1.wait_replayed(primary.1).unwrap();
        tokio::time::sleep(ms(100)).await;
        primary.1.kill().unwrap();
        standby.1.promote().unwrap();
        let promoted = Instant::now();
        let t = writers.first_ok_on(standby.0, promoted).await;
        eprintln!(
            "round {round}: first write on {} {t:?} after the promotion",
            standby.0
        );
        took.push(t);
        primary.1.follow(standby.1).unwrap();
        std::mem::swap(&mut primary, &mut standby);
    }
    let rejoined = standby.0;
    until(&cluster, "the old primary rejoined", |c| {
        c.role(rejoined).unwrap().role == Role::Standby
    })
    .await;
    let since = Instant::now();
    tokio::time::sleep(ms(500)).await;
    let outcomes = writers.finish().await;
    assert!(outcomes
        .iter()
        .filter(|o| o.at > since)
        .all(|o| o.pool.as_deref() == Some(primary.0)));

    let ok: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.key)
        .collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let on_standby = failed
        .iter()
        .filter(|o| o.result.as_ref().unwrap_err().contains("read-only"))
        .count();
    assert_eq!(on_standby, 0, "writes ran on a standby");
    // Every key the last primary has, compared here: thousands of keys
    // do not fit one command line.
    let stored: std::collections::HashSet<i64> = primary
        .1
        .sql("SELECT k FROM aquifer.kv")
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let lost: Vec<&i64> = ok.iter().filter(|k| !stored.contains(k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    took.sort();
    let (median, worst) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!(
        "MariaDB failover, 16 writers, 5 rounds: {} writes ok, {} failed; \
         promotion to first write: median {median:?}, worst {worst:?}",
        ok.len(),
        failed.len()
    );
    assert!(worst < Duration::from_secs(3), "worst {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotion_with_read_only_evicts_refused_connections_and_writes_move_on() {
    let _serial = SERIAL.lock().await;
    let (one, two) = (server(), server());
    for db in [&one, &two] {
        db.sql("CREATE TABLE aquifer.kv (k bigint)").unwrap();
        db.create_app_user().unwrap();
    }
    two.sql("SET GLOBAL read_only = 1").unwrap();
    let cluster = replica_set(&[("one", &one), ("two", &two)]);
    until(&cluster, "roles", |c| {
        c.primary().as_deref() == Some("one") && c.role("two").unwrap().role == Role::ReadOnly
    })
    .await;
    let writers = writers(&cluster, 16);
    tokio::time::sleep(ms(300)).await;
    one.sql("SET GLOBAL read_only = 1").unwrap();
    until(&cluster, "demoted", |c| {
        c.role("one").unwrap().role == Role::ReadOnly
    })
    .await;
    two.sql("SET GLOBAL read_only = 0").unwrap();
    let writable = Instant::now();
    let took = writers.first_ok_on("two", writable).await;
    eprintln!("writes moved to the other member {took:?} after it was made writable");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let outcomes = writers.finish().await;
    let refused = outcomes
        .iter()
        .filter(|o| o.result.as_ref().is_err_and(|e| e.contains("read-only")))
        .count();
    let created = usize::try_from(cluster.pool_named("one").unwrap().metrics().creates).unwrap();
    assert!(
        refused <= created,
        "{refused} refusals from {created} connections"
    );
    assert!(cluster.role("one").unwrap().changes >= 1);
}

/// Where a read ran (`@@read_only`) and whether it sees note 1, in one
/// statement.
async fn sees(c: &mut aquifer::ClusterConn<MySqlManager>) -> (bool, i64) {
    let row: Option<(i64, i64)> = c
        .query_first("SELECT @@read_only, (SELECT count(*) FROM notes WHERE id = 1)")
        .await
        .unwrap();
    let (ro, n) = row.unwrap();
    (ro == 1, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gtid_token_reads_your_write_from_another_process() {
    let _serial = SERIAL.lock().await;
    let primary = MariaDbServer::builder().binlog().start().unwrap();
    primary
        .sql("CREATE TABLE aquifer.notes (id int PRIMARY KEY, body text)")
        .unwrap();
    primary.create_app_user().unwrap();
    let replica = primary.start_replica().unwrap();
    replica.wait_replayed(&primary).unwrap();
    let members = [("primary", &primary), ("replica", &replica)];
    let writer = replica_set(&members);
    until(&writer, "roles", |c| {
        c.primary().as_deref() == Some("primary")
    })
    .await;

    // The replica applies each change two seconds late (a stopped applier
    // would be out of the rotation): the write and its token.
    replica.delay_replica(Duration::from_secs(2)).unwrap();
    let reader = replica_set(&members);
    // Restarting its threads took the replica out of the rotation for a
    // moment: wait until the reader sees it replicating.
    until(&reader, "the replica in the rotation", |c| {
        c.role("replica").unwrap().in_rotation
    })
    .await;
    let mut w = writer.write().await.unwrap();
    w.query_drop("INSERT INTO notes VALUES (1, 'hello')")
        .await
        .unwrap();
    let token = w.token().await.unwrap().expect("MariaDB has tokens");
    drop(w);
    let header = token.to_string();
    assert!(header.starts_with("gtid.0-"), "{header}");

    // Another process (a set of its own, `reader`), the token from its
    // string.
    let token: aquifer::WriteToken = header.parse().unwrap();
    let before = reader.read_stats();
    let mut read = reader
        .read_at_least(&token, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        sees(&mut read).await,
        (false, 1),
        "on the primary, row seen"
    );
    drop(read);
    let after = reader.read_stats();
    assert_eq!(after.token_waits, before.token_waits + 1);
    assert_eq!(after.fallbacks, before.fallbacks + 1);

    // A read that waits long enough gets it from the replica once it has
    // applied it.
    let waiting = {
        let (reader, token) = (reader.clone(), token.clone());
        tokio::spawn(async move {
            reader
                .read_at_least(&token, Duration::from_secs(10))
                .await
                .unwrap()
        })
    };
    let mut read = waiting.await.unwrap();
    assert_eq!(read.pool_name(), "replica");
    assert_eq!(sees(&mut read).await, (true, 1), "on the replica, row seen");
    drop(read);

    // Once the replica's check shows the GTID: no wait.
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let s = reader.read_stats();
        let mut read = reader
            .read_at_least(&token, Duration::from_secs(5))
            .await
            .unwrap();
        if reader.read_stats().token_known == s.token_known + 1 {
            assert_eq!(sees(&mut read).await, (true, 1));
            break;
        }
        assert!(Instant::now() < give_up, "never known to have it");
        drop(read);
        tokio::time::sleep(ms(100)).await;
    }
}
