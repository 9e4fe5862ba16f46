//! A cluster as a replica set over real PostgreSQL streaming replication:
//! roles found from the servers, failover under 16 writers with every
//! acknowledged write kept, an old primary re-attached that takes no
//! writes, demotion without a restart, and split brain.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aquifer::{Backoff, Cluster, ClusterError, ClusterPool, Role, Roles};
use aquifer_postgres::{PgManager, PgPool};
use aquifer_testkit::{no_primary, Outcome, PgServer, Writers};
use common::*;

/// Servers and replication on two cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn replica_set(members: &[(&str, &PgServer)]) -> Cluster<PgManager> {
    let cluster = Cluster::builder()
        .roles(Roles::default())
        .acquire_timeout(Duration::from_secs(5))
        .build();
    for (name, pg) in members {
        let pool = PgPool::builder(PgManager::new(&pg.url()).unwrap())
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

async fn until_primary(c: &Cluster<PgManager>, name: Option<&str>) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while c.primary().as_deref() != name {
        assert!(
            Instant::now() < give_up,
            "primary {:?}, not {name:?}; warnings {:?}",
            c.primary(),
            c.warnings()
        );
        tokio::time::sleep(ms(5)).await;
    }
}

async fn until_role(c: &Cluster<PgManager>, name: &str, role: Role) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while c.role(name).unwrap().role != role {
        assert!(Instant::now() < give_up, "{name}: {:?}", c.role(name));
        tokio::time::sleep(ms(5)).await;
    }
}

/// `n` tasks inserting keys into `table` through `write()`; a write
/// that could not get a connection fails with a typed error that says why.
fn writers(cluster: &Cluster<PgManager>, n: usize, table: &'static str) -> Writers {
    let c = cluster.clone();
    Writers::start(n, move |key| {
        let c = c.clone();
        async move {
            match c.write().await {
                Ok(conn) => {
                    let pool = conn.pool_name().to_owned();
                    let sql = format!("INSERT INTO {table} VALUES ($1)");
                    let r = conn.execute(&sql, &[&key]).await;
                    (Some(pool), r.map(drop).map_err(|e| chain(&e)))
                }
                Err(e) => no_primary(&e),
            }
        }
    })
}

fn median_and_worst(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_sixteen_writers_keeps_every_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let mut first = server();
    first
        .psql("CREATE TABLE kv (k bigint PRIMARY KEY)")
        .unwrap();
    let mut second = first.start_replica().unwrap();
    // No tags: the set finds which is which, whatever the order.
    let cluster = replica_set(&[("a", &second), ("b", &first)]);
    until_primary(&cluster, Some("b")).await;
    until_role(&cluster, "a", Role::Standby).await;
    let a = cluster.role("a").unwrap();
    assert_eq!(a.role, Role::Standby);
    assert!(
        a.evidence
            .starts_with("pg_is_in_recovery() = t, WAL receiver streaming")
            && a.evidence.ends_with("in_hot_standby = on"),
        "{}",
        a.evidence
    );
    let b = cluster.role("b").unwrap();
    assert_eq!((b.role, b.timeline), (Role::Primary, Some(1)));

    let writers = writers(&cluster, 16, "kv");
    // Each round: the primary stops, its replica is promoted, writes move
    // there; the old primary is rewound and re-attached as a standby.
    let (mut primary, mut standby) = (("b", &mut first), ("a", &mut second));
    let mut took = Vec::new();
    for round in 0..5 {
        tokio::time::sleep(ms(300)).await;
        primary.1.stop().unwrap();
        standby.1.promote().unwrap();
        let promoted = Instant::now();
        let t = writers.first_ok_on(standby.0, promoted).await;
        eprintln!(
            "round {round}: first write on {} {t:?} after the promotion",
            standby.0
        );
        took.push(t);
        assert_eq!(cluster.primary().as_deref(), Some(standby.0));
        primary.1.follow(standby.1).unwrap();
        std::mem::swap(&mut primary, &mut standby);
    }
    // The re-attached old primary is a standby and takes no writes.
    let writes_before = writers.count();
    let since = Instant::now();
    until_role(&cluster, standby.0, Role::Standby).await;
    tokio::time::sleep(ms(500)).await;
    let outcomes = writers.finish().await;
    assert!(outcomes.len() > writes_before + 16, "writes went on");
    assert!(
        outcomes
            .iter()
            .filter(|o| o.at > since)
            .all(|o| o.pool.as_deref() == Some(primary.0)),
        "every write after the re-attach went to {}",
        primary.0
    );

    // Every write answered Ok is on the last primary; none ran on a standby.
    let ok: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.key)
        .collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let on_standby: Vec<&&Outcome> = failed
        .iter()
        .filter(|o| o.failed_with("read-only transaction"))
        .collect();
    assert!(
        on_standby.is_empty(),
        "writes ran on a standby: {on_standby:?}"
    );
    let last = primary.1;
    // Every key the last primary has, compared here: thousands of keys
    // do not fit one command line.
    let stored: HashSet<i64> = last
        .psql("SELECT k FROM kv")
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let lost: Vec<&i64> = ok.iter().filter(|k| !stored.contains(k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let kinds: HashSet<String> = failed
        .iter()
        .map(|o| o.result.clone().unwrap_err().chars().take(60).collect())
        .collect();
    let (median, worst) = median_and_worst(took);
    eprintln!(
        "PostgreSQL failover, 16 writers, 5 rounds: {} writes ok, {} failed; \
         promotion to first write: median {median:?}, worst {worst:?}; errors: {kinds:?}",
        ok.len(),
        failed.len()
    );
    assert!(worst < Duration::from_secs(3), "worst {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotion_evicts_each_refused_connection_once_and_writes_move_on() {
    let _serial = SERIAL.lock().await;
    let (one, two) = (server(), server());
    for pg in [&one, &two] {
        pg.psql("CREATE TABLE t (k bigint)").unwrap();
    }
    let read_only = |pg: &PgServer, on: bool| {
        let set = if on {
            "ALTER SYSTEM SET default_transaction_read_only = on"
        } else {
            "ALTER SYSTEM RESET default_transaction_read_only"
        };
        pg.psql(set).unwrap();
        pg.psql("SELECT pg_reload_conf()").unwrap();
    };
    read_only(&two, true);
    let cluster = replica_set(&[("one", &one), ("two", &two)]);
    until_primary(&cluster, Some("one")).await;
    until_role(&cluster, "two", Role::ReadOnly).await;

    let writers = writers(&cluster, 16, "t");
    tokio::time::sleep(ms(300)).await;
    read_only(&one, true);
    until_primary(&cluster, None).await;
    until_role(&cluster, "one", Role::ReadOnly).await;
    read_only(&two, false);
    let writable = Instant::now();
    let took = writers.first_ok_on("two", writable).await;
    eprintln!("writes moved to the other member {took:?} after it was made writable");
    assert!(took < Duration::from_secs(2), "{took:?}");
    tokio::time::sleep(ms(200)).await;
    let outcomes = writers.finish().await;
    // Each connection to the demoted server was refused at most once: the
    // driver saw 25006 and the pool evicted it.
    let refused = outcomes
        .iter()
        .filter(|o| o.failed_with("read-only transaction"))
        .count();
    let pool = cluster.pool_named("one").unwrap();
    let created = usize::try_from(pool.metrics().creates).unwrap();
    assert!(refused >= 1, "the demotion was seen by a write");
    assert!(
        refused <= created,
        "{refused} read-only errors from {created} connections"
    );
    // The cluster counted them (as of its last look at the driver's count).
    let info = cluster.role("one").unwrap();
    assert!(
        info.signals >= 1 && info.read_only_evictions >= 1,
        "{info:?}"
    );
    assert!(
        info.read_only_evictions <= u64::try_from(refused).unwrap(),
        "{info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_warns_and_writes_go_to_one_member_only() {
    let _serial = SERIAL.lock().await;
    let (one, two) = (server(), server());
    for pg in [&one, &two] {
        pg.psql("CREATE TABLE t (k bigint)").unwrap();
    }
    two.psql("ALTER SYSTEM SET default_transaction_read_only = on")
        .unwrap();
    two.psql("SELECT pg_reload_conf()").unwrap();
    let cluster = replica_set(&[("one", &one), ("two", &two)]);
    until_primary(&cluster, Some("one")).await;
    let writers = writers(&cluster, 8, "t");
    two.psql("ALTER SYSTEM RESET default_transaction_read_only")
        .unwrap();
    two.psql("SELECT pg_reload_conf()").unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    while !cluster
        .warnings()
        .iter()
        .any(|w| w.message.starts_with("split brain: one, two"))
    {
        assert!(Instant::now() < give_up, "{:?}", cluster.warnings());
        tokio::time::sleep(ms(10)).await;
    }
    tokio::time::sleep(ms(500)).await;
    let outcomes = writers.finish().await;
    assert!(outcomes.iter().all(|o| o.pool.as_deref() != Some("two")));
    assert_eq!(two.psql("SELECT count(*) FROM t").unwrap(), "0");
    assert_eq!(cluster.primary().as_deref(), Some("one"));
}

/// Where a read ran, asked in the read's own statement.
async fn ran_on_standby(c: &aquifer::ClusterConn<PgManager>) -> bool {
    c.query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_falls_behind_leaves_the_read_rotation_and_comes_back() {
    let _serial = SERIAL.lock().await;
    let primary = server();
    primary.psql("CREATE TABLE big (v text)").unwrap();
    let replica = primary.start_replica().unwrap();
    let set = |fallback| {
        let c = Cluster::builder()
            .roles(Roles::default().max_lag_bytes(1 << 20).fallback(fallback))
            .acquire_timeout(Duration::from_secs(5))
            .build();
        for (name, pg) in [("primary", &primary), ("replica", &replica)] {
            let pool = PgPool::builder(PgManager::new(&pg.url()).unwrap())
                .max(4)
                .build()
                .unwrap();
            c.add(ClusterPool::new(name, pool)).unwrap();
        }
        c
    };
    let cluster = set(aquifer::Fallback::Primary);
    let strict = set(aquifer::Fallback::Error);
    for c in [&cluster, &strict] {
        until_primary(c, Some("primary")).await;
        until_role(c, "replica", Role::Standby).await;
    }
    let read = cluster.read().await.unwrap();
    assert_eq!(read.pool_name(), "replica");
    assert!(ran_on_standby(&read).await);
    drop(read);

    // An idle primary is no lag: caught up, the replica's lag does not
    // grow with the time since the last write (a background WAL record may
    // move it by a few bytes for a tick, never by seconds).
    let give_up = Instant::now() + Duration::from_secs(10);
    while cluster.role("replica").unwrap().lag != Some(Duration::ZERO) {
        assert!(Instant::now() < give_up, "{:?}", cluster.role("replica"));
        tokio::time::sleep(ms(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let idle = cluster.role("replica").unwrap();
    assert!(idle.lag.unwrap() < Duration::from_secs(1), "{idle:?}");

    // Replay paused and 10 MB written: out within two ticks.
    replica.pause_replay().unwrap();
    primary
        .psql("INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 10000)")
        .unwrap();
    let written = Instant::now();
    let give_up = written + Duration::from_secs(10);
    while cluster.role("replica").unwrap().in_rotation {
        assert!(Instant::now() < give_up, "{:?}", cluster.role("replica"));
        tokio::time::sleep(ms(10)).await;
    }
    let left_after = written.elapsed();
    let info = cluster.role("replica").unwrap();
    eprintln!("out of the rotation {left_after:?} after 10 MB: {info:?}");
    assert!(left_after < Duration::from_secs(3), "{left_after:?}");
    assert!(info.lag_bytes.unwrap() > 10_000_000, "{info:?}");
    assert!(info.lag.unwrap() > Duration::ZERO, "{info:?}");

    // Reads go to the primary, counted; the strict set refuses them.
    let before = cluster.read_stats();
    let read = cluster.read().await.unwrap();
    assert_eq!(read.pool_name(), "primary");
    assert!(!ran_on_standby(&read).await);
    drop(read);
    assert_eq!(cluster.read_stats().fallbacks, before.fallbacks + 1);
    let until_out = Instant::now() + Duration::from_secs(10);
    while strict.role("replica").unwrap().in_rotation {
        assert!(Instant::now() < until_out);
        tokio::time::sleep(ms(10)).await;
    }
    let err = strict.read().await.unwrap_err();
    assert!(matches!(err, ClusterError::NoReplica { .. }), "{err}");
    assert!(err.to_string().contains("bytes behind"), "{err}");

    // Resumed, it catches up and comes back.
    replica.resume_replay().unwrap();
    let resumed = Instant::now();
    while !cluster.role("replica").unwrap().in_rotation {
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "{:?}",
            cluster.role("replica")
        );
        tokio::time::sleep(ms(10)).await;
    }
    eprintln!(
        "back in the rotation {:?} after resuming",
        resumed.elapsed()
    );
    let read = cluster.read().await.unwrap();
    assert_eq!(read.pool_name(), "replica");
    assert!(ran_on_standby(&read).await);
    let rows: i64 = read
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 10_000);
}

/// A primary with an empty `notes` table, for its replicas to copy.
fn server_with_notes() -> PgServer {
    let pg = server();
    pg.psql("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        .unwrap();
    pg
}

/// Where a read ran and whether it sees note 1, in one statement.
async fn sees(c: &aquifer::ClusterConn<PgManager>) -> (bool, i64) {
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery(), (SELECT count(*) FROM notes WHERE id = 1)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A replica set over `members` as another process would build it: its
/// own pools, nothing shared with the one that wrote.
async fn fresh_set(members: &[(&str, &PgServer)]) -> Cluster<PgManager> {
    let c = replica_set(members);
    assert!(c.roles_checked(Duration::from_secs(10)).await);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_token_reads_your_write_from_another_process() {
    let _serial = SERIAL.lock().await;
    let primary = server_with_notes();
    let replica = primary.start_replica().unwrap();
    let members = [("primary", &primary), ("replica", &replica)];
    let writer = fresh_set(&members).await;
    until_primary(&writer, Some("primary")).await;

    // Replay paused on the only replica: the write and its token.
    replica.pause_replay().unwrap();
    let mut w = writer.write().await.unwrap();
    w.execute("INSERT INTO notes VALUES (1, 'hello')", &[])
        .await
        .unwrap();
    let token = w.token().await.unwrap().expect("PostgreSQL has tokens");
    drop(w);
    let header = token.to_string();
    assert!(header.starts_with("pg.") && header.len() < 48, "{header}");

    // Another process: a set of its own, the token from its string.
    let reader = fresh_set(&members).await;
    let token: aquifer::WriteToken = header.parse().unwrap();
    // The replica has not got it: a short wait there, then the primary.
    let before = reader.read_stats();
    let read = reader
        .read_at_least(&token, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        sees(&read).await,
        (false, 1),
        "read on the primary, row seen"
    );
    drop(read);
    let after = reader.read_stats();
    assert_eq!(after.token_waits, before.token_waits + 1);
    assert_eq!(after.fallbacks, before.fallbacks + 1);
    assert!(after.token_wait_time >= Duration::from_millis(200));

    // A read that waits long enough gets it from the replica once replay
    // resumes.
    let waiting = {
        let reader = reader.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let c = reader
                .read_at_least(&token, Duration::from_secs(10))
                .await
                .unwrap();
            let name = c.pool_name().to_owned();
            (name, c)
        })
    };
    tokio::time::sleep(ms(300)).await;
    replica.resume_replay().unwrap();
    let (name, read) = waiting.await.unwrap();
    assert_eq!(name, "replica");
    assert_eq!(
        sees(&read).await,
        (true, 1),
        "read on the replica, row seen"
    );
    drop(read);

    // Once the replica's check shows it past the token: no wait at all.
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let s = reader.read_stats();
        let read = reader
            .read_at_least(&token, Duration::from_secs(5))
            .await
            .unwrap();
        if reader.read_stats().token_known == s.token_known + 1 {
            assert_eq!(sees(&read).await, (true, 1));
            assert_eq!(reader.read_stats().token_waits, s.token_waits);
            break;
        }
        assert!(Instant::now() < give_up, "never known to have it");
        drop(read);
        tokio::time::sleep(ms(100)).await;
    }

    // A token of another database system is never trusted to a replica.
    let stranger =
        aquifer::WriteToken::wal(token.system().unwrap() ^ 1, token.timeline().unwrap(), 0);
    let read = reader
        .read_at_least(&stranger, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(read.pool_name(), "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_session_never_reads_from_the_paused_replica_after_the_caught_up_one() {
    let _serial = SERIAL.lock().await;
    let primary = server_with_notes();
    let fresh = primary.start_replica().unwrap();
    let paused = primary.start_replica().unwrap();
    paused.pause_replay().unwrap();
    primary
        .psql("INSERT INTO notes SELECT g, 'x' FROM generate_series(1, 100) g")
        .unwrap();
    fresh.wait_replayed(&primary).unwrap();
    let cluster = fresh_set(&[
        ("primary", &primary),
        ("fresh", &fresh),
        ("paused", &paused),
    ])
    .await;
    // Both replicas checked since the insert: their positions differ.
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let (f, p) = (
            cluster.role("fresh").unwrap(),
            cluster.role("paused").unwrap(),
        );
        if f.lag_bytes == Some(0) && p.lag_bytes.is_some_and(|b| b > 0) {
            break;
        }
        assert!(Instant::now() < give_up, "{f:?} {p:?}");
        tokio::time::sleep(ms(20)).await;
    }
    let session = cluster.read_session();
    loop {
        let conn = session.read().await.unwrap();
        if conn.pool_name() == "fresh" {
            break;
        }
    }
    for _ in 0..20 {
        let conn = session.read().await.unwrap();
        assert_ne!(conn.pool_name(), "paused");
        let rows: i64 = conn
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            rows,
            100,
            "on {}: the session never goes back",
            conn.pool_name()
        );
    }
    // A read outside the session may still land on the paused one.
    let mut outside = std::collections::HashSet::new();
    for _ in 0..4 {
        outside.insert(cluster.read().await.unwrap().pool_name().to_owned());
    }
    assert!(outside.contains("paused"), "{outside:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_before_a_failover_waits_for_replicas_on_the_new_timeline() {
    let _serial = SERIAL.lock().await;
    let mut old = server_with_notes();
    let new = old.start_replica().unwrap();
    let mut other = old.start_replica().unwrap();
    let members = [("old", &old), ("new", &new), ("other", &other)];
    let cluster = fresh_set(&members).await;
    until_primary(&cluster, Some("old")).await;
    let mut w = cluster.write().await.unwrap();
    w.execute("INSERT INTO notes VALUES (1, 'before')", &[])
        .await
        .unwrap();
    let token = w.token().await.unwrap().unwrap();
    drop(w);
    assert_eq!(token.timeline(), Some(1));
    for r in [&new, &other] {
        r.wait_replayed(&old).unwrap();
    }

    // The primary stops and `new` is promoted onto timeline 2; `other`
    // still follows the old timeline: it has the write, but is not
    // trusted with the token, and the read goes to the new primary.
    old.stop().unwrap();
    new.promote().unwrap();
    until_primary(&cluster, Some("new")).await;
    assert_eq!(cluster.role("new").unwrap().timeline, Some(2));
    let read = cluster
        .read_at_least(&token, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(read.pool_name(), "new");
    assert_eq!(sees(&read).await, (false, 1));
    drop(read);

    // Re-pointed at the new primary, `other` shows timeline 2 and serves
    // the old token again, without a wait.
    other.follow(&new).unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    while cluster.role("other").unwrap().timeline != Some(2)
        || !cluster.role("other").unwrap().in_rotation
    {
        assert!(Instant::now() < give_up, "{:?}", cluster.role("other"));
        tokio::time::sleep(ms(20)).await;
    }
    let waits = cluster.read_stats().token_waits;
    let read = cluster
        .read_at_least(&token, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(read.pool_name(), "other");
    assert_eq!(sees(&read).await, (true, 1));
    assert_eq!(cluster.read_stats().token_waits, waits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_go_to_replicas_and_their_refusals_raise_no_doubt() {
    use aquifer_postgres::{PgReplicaSetExt, QueryError};
    let _serial = SERIAL.lock().await;
    let primary = server_with_notes();
    let replica = primary.start_replica().unwrap();
    let cluster = fresh_set(&[("primary", &primary), ("replica", &replica)]).await;
    until_primary(&cluster, Some("primary")).await;
    until_role(&cluster, "replica", Role::Standby).await;
    let (standby, read_only): (bool, String) = cluster
        .read_transaction(|tx| {
            Box::pin(async move {
                let row = tx
                    .query_one(
                        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
                        &[],
                    )
                    .await?;
                Ok::<_, QueryError>((row.get(0), row.get(1)))
            })
        })
        .await
        .unwrap();
    assert_eq!((standby, read_only.as_str()), (true, "on"));

    // With the replica frozen, the transaction runs on the primary, still
    // read-only: its write is refused, and the primary is not doubted.
    cluster.freeze("replica").unwrap();
    let signals = cluster.role("primary").unwrap().signals;
    let err = cluster
        .read_transaction(|tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO notes VALUES (1, 'no')", &[])
                    .await?;
                Ok::<_, QueryError>(())
            })
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("25006"),
        "{err}"
    );
    tokio::time::sleep(ms(50)).await;
    let info = cluster.role("primary").unwrap();
    assert_eq!(info.signals, signals, "{info:?}");
    assert!(info.writes_here);
    // The connection is fine for writes afterwards.
    let w = cluster.write().await.unwrap();
    w.execute("INSERT INTO notes VALUES (1, 'yes')", &[])
        .await
        .unwrap();
}
