//! Real replication between throwaway servers: what the replica-set tests
//! stand on.

use std::time::Instant;

use aquifer_testkit::{MariaDbServer, PgServer, MARIADB_APP_USER};

#[test]
fn postgres_replicas_stream_pause_promote_and_follow() {
    let start = Instant::now();
    let mut primary = PgServer::new().unwrap();
    primary
        .psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .unwrap();
    let replica = primary.start_replica().unwrap();
    let second = primary.start_replica().unwrap();
    eprintln!("primary and two replicas up in {:?}", start.elapsed());
    assert!(!primary.is_in_recovery().unwrap());
    assert!(replica.is_in_recovery().unwrap());
    assert_eq!(replica.psql("SELECT v FROM t").unwrap(), "1");

    // A standby refuses writes with the server's read-only error.
    let err = replica.psql("INSERT INTO t VALUES (9)").unwrap_err();
    assert!(err.to_string().contains("read-only transaction"), "{err}");

    // Paused, a replica falls behind; resumed, it catches up.
    replica.pause_replay().unwrap();
    primary.psql("INSERT INTO t VALUES (2)").unwrap();
    second.wait_replayed(&primary).unwrap();
    assert_eq!(second.psql("SELECT count(*) FROM t").unwrap(), "2");
    assert_eq!(replica.psql("SELECT count(*) FROM t").unwrap(), "1");
    replica.resume_replay().unwrap();
    replica.wait_replayed(&primary).unwrap();
    assert_eq!(replica.psql("SELECT count(*) FROM t").unwrap(), "2");

    // The primary stops; the replica is promoted and takes writes.
    primary.stop().unwrap();
    replica.promote().unwrap();
    assert!(!replica.is_in_recovery().unwrap());
    replica.psql("INSERT INTO t VALUES (3)").unwrap();

    // The old primary comes back as a standby of the new one and sees the
    // write made after it stopped; it refuses writes.
    let t = Instant::now();
    primary.follow(&replica).unwrap();
    eprintln!("old primary re-attached in {:?}", t.elapsed());
    assert!(primary.is_in_recovery().unwrap());
    primary.wait_replayed(&replica).unwrap();
    assert_eq!(primary.psql("SELECT count(*) FROM t").unwrap(), "3");
    assert!(primary.psql("INSERT INTO t VALUES (4)").is_err());
    eprintln!("whole test {:?}", start.elapsed());
}

#[test]
fn mariadb_replicas_follow_by_gtid_stop_promote_and_follow() {
    let start = Instant::now();
    let mut primary = MariaDbServer::builder().binlog().start().unwrap();
    primary
        .sql("CREATE TABLE aquifer.t (v int); INSERT INTO aquifer.t VALUES (1)")
        .unwrap();
    primary.create_app_user().unwrap();
    let replica = primary.start_replica().unwrap();
    eprintln!("primary and replica up in {:?}", start.elapsed());
    replica.wait_replayed(&primary).unwrap();
    assert!(replica.is_read_only().unwrap());
    assert!(!primary.is_read_only().unwrap());
    assert_eq!(replica.sql("SELECT v FROM aquifer.t").unwrap().trim(), "1");
    // The application's user replicated too, and read_only stops it.
    let users = replica
        .sql(&format!(
            "SELECT count(*) FROM mysql.user WHERE user = '{MARIADB_APP_USER}'"
        ))
        .unwrap();
    assert_eq!(users.trim(), "1");

    // With its SQL thread stopped, the replica falls behind.
    replica.stop_replica_sql().unwrap();
    primary.sql("INSERT INTO aquifer.t VALUES (2)").unwrap();
    assert_eq!(
        replica
            .sql("SELECT count(*) FROM aquifer.t")
            .unwrap()
            .trim(),
        "1"
    );
    replica.start_replica_sql().unwrap();
    replica.wait_replayed(&primary).unwrap();
    assert_eq!(
        replica
            .sql("SELECT count(*) FROM aquifer.t")
            .unwrap()
            .trim(),
        "2"
    );

    // The primary dies; the replica is promoted and takes writes.
    primary.kill().unwrap();
    replica.promote().unwrap();
    assert!(!replica.is_read_only().unwrap());
    replica.sql("INSERT INTO aquifer.t VALUES (3)").unwrap();

    // The old primary rejoins as a replica of the new one.
    primary.follow(&replica).unwrap();
    primary.wait_replayed(&replica).unwrap();
    assert!(primary.is_read_only().unwrap());
    assert_eq!(
        primary
            .sql("SELECT count(*) FROM aquifer.t")
            .unwrap()
            .trim(),
        "3"
    );
    eprintln!("whole test {:?}", start.elapsed());
}
