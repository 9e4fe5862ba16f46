//! A cluster as a replica set, on fake servers whose role a test sets:
//! roles found from the servers, the primary believed on stable evidence,
//! writes that wait through a failover, evidence that re-checks at once,
//! split brain. Real replication is tested in the drivers' crates.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aquifer::{
    Cluster, ClusterError, ClusterPool, Fallback, Manager, Pool, Role, RoleCheck, RoleManager,
    RoleSignal, Roles, SplitBrain,
};
use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
struct FakeError(&'static str);

impl std::fmt::Display for FakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FakeError {}

/// A server whose role, timeline and liveness the test sets.
struct Server {
    role: Mutex<(Role, Option<u64>)>,
    /// WAL position, time behind, replicating.
    lag: Mutex<(Option<u64>, Option<Duration>, Option<bool>)>,
    system: Mutex<Option<u64>>,
    down: AtomicBool,
    checks: AtomicUsize,
    destroyed: AtomicUsize,
    signal: RoleSignal,
}

impl Server {
    fn new(role: Role, timeline: Option<u64>) -> Arc<Self> {
        Arc::new(Server {
            role: Mutex::new((role, timeline)),
            lag: Mutex::new((None, None, None)),
            system: Mutex::new(None),
            down: AtomicBool::new(false),
            checks: AtomicUsize::new(0),
            destroyed: AtomicUsize::new(0),
            signal: RoleSignal::new(),
        })
    }

    fn set(&self, role: Role, timeline: Option<u64>) {
        *self.role.lock() = (role, timeline);
    }
}

#[derive(Clone)]
struct Fake(Arc<Server>);

impl Manager for Fake {
    type Type = ();
    type Error = FakeError;

    async fn create(&self) -> Result<(), FakeError> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(FakeError("connection refused"));
        }
        Ok(())
    }

    async fn destroy(&self, _: &mut ()) -> Result<(), FakeError> {
        self.0.destroyed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl RoleManager for Fake {
    async fn check_role(&self, _: &mut ()) -> Result<RoleCheck, FakeError> {
        self.0.checks.fetch_add(1, Ordering::SeqCst);
        if self.0.down.load(Ordering::SeqCst) {
            return Err(FakeError("server closed the connection"));
        }
        let (role, timeline) = *self.0.role.lock();
        let mut check = RoleCheck::new(role, format!("fake says {role}"));
        if let Some(t) = timeline {
            check = check.timeline(t);
        }
        let (position, behind, replicating) = *self.0.lag.lock();
        if let Some(p) = position {
            check = check.wal_position(p);
        }
        if let Some(b) = behind {
            check = check.behind(b);
        }
        if let Some(r) = replicating {
            check = check.replicating(r);
        }
        if let Some(id) = *self.0.system.lock() {
            check = check.system(id);
        }
        Ok(check)
    }

    fn role_signal(&self) -> Option<&RoleSignal> {
        Some(&self.0.signal)
    }
}

const INTERVAL: Duration = Duration::from_secs(1);

fn set_of(servers: &[(&str, &Arc<Server>)], roles: Roles) -> Cluster<Fake> {
    let c = Cluster::builder()
        .roles(roles)
        .acquire_timeout(Duration::from_secs(5))
        .build();
    for (name, s) in servers {
        let pool = Pool::builder(Fake(Arc::clone(s))).max(4).build().unwrap();
        c.add(ClusterPool::new(*name, pool)).unwrap();
    }
    c
}

/// Lets the checkers run until the cluster knows `primary` (paused time:
/// this advances the clock only as far as the checks need).
async fn until_primary(c: &Cluster<Fake>, primary: Option<&str>) -> Duration {
    let start = Instant::now();
    for _ in 0..10_000 {
        if c.primary().as_deref() == primary {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the primary never became {primary:?}: {:?}", c.primary());
}

#[tokio::test(start_paused = true)]
async fn roles_come_from_the_servers_and_writes_go_to_the_primary() {
    let a = Server::new(Role::Standby, None);
    let b = Server::new(Role::Primary, None);
    let c = set_of(&[("a", &a), ("b", &b)], Roles::default());
    // Before any check nothing is known, and no tag says otherwise.
    assert_eq!(c.role("a").unwrap().role, Role::Unknown);
    let took = until_primary(&c, Some("b")).await;
    assert!(took < INTERVAL, "the first checks run at once: {took:?}");
    let w = c.write().await.unwrap();
    assert_eq!(w.pool_name(), "b");
    let ra = c.role("a").unwrap();
    assert_eq!(ra.role, Role::Standby);
    assert!(!ra.writes_here);
    assert_eq!(ra.evidence, "fake says standby");
    assert!(ra.checked_at.is_some());
    assert!(c.role("b").unwrap().writes_here);
    assert_eq!(c.info().primary.as_deref(), Some("b"));
    assert_eq!(c.info_about("b").unwrap().role.unwrap().role, Role::Primary);

    // Checked again every interval.
    let before = a.checks.load(Ordering::SeqCst);
    tokio::time::sleep(INTERVAL * 3 + Duration::from_millis(10)).await;
    let n = a.checks.load(Ordering::SeqCst) - before;
    assert!((3..=4).contains(&n), "{n} checks in three intervals");
}

#[tokio::test(start_paused = true)]
async fn a_failover_moves_writes_without_handing_out_the_old_primary() {
    let a = Server::new(Role::Primary, None);
    let b = Server::new(Role::Standby, None);
    let c = set_of(&[("a", &a), ("b", &b)], Roles::default());
    until_primary(&c, Some("a")).await;
    let held = c.write().await.unwrap();
    assert_eq!(held.pool_name(), "a");

    // The primary dies; the standby is promoted (no timelines here, so two
    // checks in a row must say so).
    a.down.store(true, Ordering::SeqCst);
    b.set(Role::Primary, None);
    let checks = b.checks.load(Ordering::SeqCst);
    let promoted = Instant::now();
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            let w = c.write().await.map(|w| w.pool_name().to_owned());
            (w, promoted.elapsed())
        })
    };
    let (went, waited) = writer.await.unwrap();
    assert_eq!(went.unwrap(), "b");
    assert_eq!(
        b.checks.load(Ordering::SeqCst) - checks,
        2,
        "believed on the second check that says primary, not the first"
    );
    assert!(
        waited <= INTERVAL * 2,
        "the write waited {waited:?} for the new primary"
    );
    // The connection out on the old primary is closed on return, not kept.
    let destroyed = a.destroyed.load(Ordering::SeqCst);
    drop(held);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.destroyed.load(Ordering::SeqCst), destroyed + 1);
    assert_eq!(c.pool_named("a").unwrap().status().idle, 0);
    let warnings: Vec<String> = c.warnings().into_iter().map(|w| w.message).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("no primary: a is unknown")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.starts_with("primary is now b")),
        "{warnings:?}"
    );

    // The old primary comes back as a standby: it takes no writes.
    a.set(Role::Standby, None);
    a.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(c.role("a").unwrap().role, Role::Standby);
    for _ in 0..8 {
        assert_eq!(c.write().await.unwrap().pool_name(), "b");
    }
}

#[tokio::test(start_paused = true)]
async fn a_higher_timeline_is_believed_at_the_first_check() {
    let a = Server::new(Role::Primary, Some(1));
    let b = Server::new(Role::Standby, None);
    let c = set_of(&[("a", &a), ("b", &b)], Roles::default());
    until_primary(&c, Some("a")).await;
    a.down.store(true, Ordering::SeqCst);
    until_primary(&c, None).await;
    b.set(Role::Primary, Some(2));
    let checks = b.checks.load(Ordering::SeqCst);
    until_primary(&c, Some("b")).await;
    assert_eq!(b.checks.load(Ordering::SeqCst), checks + 1);
    assert_eq!(c.role("b").unwrap().timeline, Some(2));
}

#[tokio::test(start_paused = true)]
async fn evidence_from_a_connection_rechecks_at_once() {
    let a = Server::new(Role::Primary, None);
    let b = Server::new(Role::Standby, None);
    let c = set_of(&[("a", &a), ("b", &b)], Roles::default());
    until_primary(&c, Some("a")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = c.write().await.unwrap();
    drop(c.write().await.unwrap());
    assert_eq!(c.pool_named("a").unwrap().status().idle, 1);
    // Demoted without a restart: the next write fails with the server's
    // read-only error, which the driver reports.
    a.set(Role::ReadOnly, None);
    let checks = a.checks.load(Ordering::SeqCst);
    let at = Instant::now();
    a.signal
        .refused("SQLSTATE 25006: cannot execute INSERT in a read-only transaction");
    until_primary(&c, None).await;
    assert!(
        at.elapsed() < Duration::from_millis(50),
        "{:?}",
        at.elapsed()
    );
    assert_eq!(a.checks.load(Ordering::SeqCst), checks + 1);
    let info = c.role("a").unwrap();
    assert_eq!(info.role, Role::ReadOnly);
    assert_eq!((info.signals, info.read_only_evictions), (1, 1));
    assert!(info.cause.unwrap().contains("25006"));
    // Its connections are retired: the idle one now, the one out when it
    // comes back.
    let pool_a = c.pool_named("a").unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool_a.metrics().destroys, 1);
    drop(held);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool_a.metrics().destroys, 2);
    assert_eq!(pool_a.status().size, 0);

    // No writable member: a write waits out its timeout and says why.
    let err = c.write().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClusterError::NoPrimary { .. }), "{text}");
    assert!(
        text.contains("a is read_only (fake says read_only)"),
        "{text}"
    );
    assert!(text.contains("b is standby"), "{text}");

    // The other member is made writable: writes move there within two
    // (fast) checks.
    b.set(Role::Primary, None);
    let took = until_primary(&c, Some("b")).await;
    assert!(took <= INTERVAL, "{took:?}");
    assert_eq!(c.write().await.unwrap().pool_name(), "b");
}

#[tokio::test(start_paused = true)]
async fn split_brain_warns_and_writes_go_to_one_or_none() {
    let a = Server::new(Role::Primary, None);
    let b = Server::new(Role::Standby, None);
    let c = set_of(&[("a", &a), ("b", &b)], Roles::default());
    until_primary(&c, Some("a")).await;
    b.set(Role::Primary, None);
    tokio::time::sleep(INTERVAL * 3).await;
    // Both claim; no timeline tells them apart: the one already primary.
    assert_eq!(c.primary().as_deref(), Some("a"));
    for _ in 0..8 {
        assert_eq!(c.write().await.unwrap().pool_name(), "a");
    }
    let split: Vec<String> = c
        .warnings()
        .into_iter()
        .map(|w| w.message)
        .filter(|m| m.starts_with("split brain"))
        .collect();
    assert_eq!(split.len(), 1, "warned once: {split:?}");
    assert!(split[0].contains("a, b"), "{split:?}");

    // With timelines, the higher one wins.
    a.set(Role::Primary, Some(3));
    b.set(Role::Primary, Some(4));
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(c.primary().as_deref(), Some("b"));

    // Refused: writes go nowhere while two claim.
    let a = Server::new(Role::Primary, None);
    let b = Server::new(Role::Primary, None);
    let c = set_of(
        &[("a", &a), ("b", &b)],
        Roles::default()
            .split_brain(SplitBrain::Refuse)
            .interval(INTERVAL),
    );
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(c.primary(), None);
    assert!(matches!(
        c.write().await,
        Err(ClusterError::NoPrimary { .. })
    ));
    b.set(Role::Standby, None);
    until_primary(&c, Some("a")).await;
}

#[tokio::test(start_paused = true)]
async fn a_cluster_without_roles_refuses_write_and_removal_stops_checks() {
    let plain: Cluster<Fake> = Cluster::builder().build();
    let err = plain.write().await.unwrap_err();
    assert!(matches!(err, ClusterError::NoRoles), "{err}");
    assert!(err.to_string().contains("ClusterBuilder::roles"), "{err}");
    assert!(plain.role("x").is_none());

    let a = Server::new(Role::Primary, None);
    let c = set_of(&[("a", &a)], Roles::default());
    until_primary(&c, Some("a")).await;
    c.remove("a", Duration::from_secs(1)).await.unwrap();
    assert_eq!(c.primary(), None);
    let checks = a.checks.load(Ordering::SeqCst);
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(a.checks.load(Ordering::SeqCst), checks, "checks stop");
}

#[tokio::test(start_paused = true)]
async fn writes_dropped_while_they_wait_leak_nothing() {
    let a = Server::new(Role::Primary, None);
    let b = Server::new(Role::Standby, None);
    let c = set_of(&[("a", &a), ("b", &b)], Roles::default());
    until_primary(&c, Some("a")).await;
    // Every connection of the primary out, so writes queue in its pool;
    // then the primary goes, so writes wait for a new one: each is dropped
    // at some point of that.
    let held: Vec<_> = write_all(&c, 4).await;
    a.down.store(true, Ordering::SeqCst);
    b.set(Role::Primary, None);
    for i in 0..40u64 {
        let w = c.write();
        let _ = tokio::time::timeout(Duration::from_millis(5 + i * 7), w).await;
    }
    drop(held);
    until_primary(&c, Some("b")).await;
    for name in ["a", "b"] {
        let s = c.pool_named(name).unwrap().status();
        assert_eq!((s.borrowed, s.waiting), (0, 0), "{name}: {s:?}");
    }
    assert_eq!(c.write().await.unwrap().pool_name(), "b");
}

async fn write_all(c: &Cluster<Fake>, n: usize) -> Vec<aquifer::WriteConn<Fake>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.write().await.unwrap());
    }
    out
}

/// Lets the checkers run `n` intervals.
async fn ticks(n: u32) {
    tokio::time::sleep(INTERVAL * n + Duration::from_millis(10)).await;
}

#[tokio::test(start_paused = true)]
async fn reads_go_to_replicas_in_the_rotation_and_fall_back_when_none_is() {
    let p = Server::new(Role::Primary, None);
    let r1 = Server::new(Role::Standby, None);
    let r2 = Server::new(Role::Standby, None);
    *p.lag.lock() = (Some(50_000_000), None, None);
    for r in [&r1, &r2] {
        *r.lag.lock() = (Some(50_000_000), Some(Duration::ZERO), Some(true));
    }
    let c = set_of(
        &[("p", &p), ("r1", &r1), ("r2", &r2)],
        Roles::default().max_lag_bytes(1_000_000),
    );
    until_primary(&c, Some("p")).await;
    ticks(1).await;
    let mut served = std::collections::HashMap::new();
    for _ in 0..10 {
        *served
            .entry(c.read().await.unwrap().pool_name().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        served.get("r1").zip(served.get("r2")),
        Some((&5, &5)),
        "{served:?}"
    );

    // r1 falls 3 MB behind: out at its next check, and reads go to r2.
    *p.lag.lock() = (Some(53_000_000), None, None);
    *r1.lag.lock() = (Some(50_000_000), Some(Duration::from_secs(4)), Some(true));
    *r2.lag.lock() = (Some(53_000_000), Some(Duration::ZERO), Some(true));
    ticks(1).await;
    let info = c.role("r1").unwrap();
    assert_eq!(info.lag_bytes, Some(3_000_000));
    assert_eq!(info.lag, Some(Duration::from_secs(4)));
    assert!(!info.in_rotation);
    assert!(
        info.out_of_rotation
            .as_deref()
            .unwrap()
            .starts_with("3000000 bytes behind (max_lag_bytes 1000000"),
        "{info:?}"
    );
    for _ in 0..6 {
        assert_eq!(c.read().await.unwrap().pool_name(), "r2");
    }
    // Back under the bound but not under half of it: still out.
    *r1.lag.lock() = (Some(52_300_000), Some(Duration::from_secs(1)), Some(true));
    ticks(1).await;
    assert!(!c.role("r1").unwrap().in_rotation);
    *r1.lag.lock() = (Some(52_600_000), Some(Duration::ZERO), Some(true));
    ticks(1).await;
    assert!(c.role("r1").unwrap().in_rotation, "{:?}", c.role("r1"));

    // A stopped replica is out whatever its lag says; a per-read bound
    // in time leaves out the one behind it.
    *r2.lag.lock() = (Some(53_000_000), None, Some(false));
    ticks(1).await;
    assert_eq!(
        c.role("r2").unwrap().out_of_rotation.as_deref(),
        Some("not replicating")
    );
    *r1.lag.lock() = (
        Some(52_900_000),
        Some(Duration::from_millis(800)),
        Some(true),
    );
    ticks(1).await;
    assert_eq!(c.read().await.unwrap().pool_name(), "r1");
    let before = c.read_stats();
    let conn = c
        .read_within(Some(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!(
        conn.pool_name(),
        "p",
        "no replica within 500 ms: the primary"
    );
    drop(conn);
    let after = c.read_stats();
    assert_eq!(after.fallbacks, before.fallbacks + 1);
    assert_eq!(after.replica_reads, before.replica_reads);
}

#[tokio::test(start_paused = true)]
async fn with_fallback_error_a_read_no_replica_can_serve_says_why() {
    let p = Server::new(Role::Primary, None);
    let r = Server::new(Role::Standby, None);
    *r.lag.lock() = (None, None, Some(false));
    let c = set_of(
        &[("p", &p), ("r", &r)],
        Roles::default().fallback(Fallback::Error),
    );
    until_primary(&c, Some("p")).await;
    ticks(1).await;
    let err = c.read().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClusterError::NoReplica { .. }), "{text}");
    assert!(text.contains("p is primary"), "{text}");
    assert!(
        text.contains("r is out of the rotation: not replicating"),
        "{text}"
    );
    *r.lag.lock() = (None, Some(Duration::ZERO), Some(true));
    ticks(1).await;
    assert_eq!(c.read().await.unwrap().pool_name(), "r");
}

#[tokio::test(start_paused = true)]
async fn a_read_session_never_goes_back_to_a_replica_behind_what_it_read() {
    let p = Server::new(Role::Primary, Some(1));
    let ahead = Server::new(Role::Standby, Some(1));
    let behind = Server::new(Role::Standby, Some(1));
    *p.lag.lock() = (Some(900), None, None);
    *ahead.lag.lock() = (Some(900), Some(Duration::ZERO), Some(true));
    *behind.lag.lock() = (Some(400), Some(Duration::from_secs(2)), Some(true));
    // One database system, so that positions compare.
    for s in [&p, &ahead, &behind] {
        *s.system.lock() = Some(7);
    }
    let c = set_of(
        &[("p", &p), ("ahead", &ahead), ("behind", &behind)],
        Roles::default(),
    );
    until_primary(&c, Some("p")).await;
    ticks(1).await;
    let session = c.read_session();
    // Until it has read from "ahead", reads may go anywhere in rotation.
    loop {
        let conn = session.read().await.unwrap();
        if conn.pool_name() == "ahead" {
            break;
        }
    }
    assert_eq!(session.floor().unwrap().lsn(), Some(900));
    for _ in 0..20 {
        let conn = session.read().await.unwrap();
        assert_ne!(conn.pool_name(), "behind");
    }
    // Another session, not bound by this one's reads, still uses both.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let fresh = c.read_session();
        seen.insert(fresh.read().await.unwrap().pool_name().to_owned());
    }
    assert!(seen.contains("behind"), "{seen:?}");
    // Once "behind" catches up past the floor, the session uses it again.
    *behind.lag.lock() = (Some(900), Some(Duration::ZERO), Some(true));
    ticks(1).await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..6 {
        names.insert(session.read().await.unwrap().pool_name().to_owned());
    }
    assert!(names.contains("behind"), "{names:?}");
}

#[tokio::test(start_paused = true)]
async fn a_token_is_trusted_only_to_standbys_on_the_primarys_timeline() {
    let p = Server::new(Role::Primary, Some(2));
    let left_behind = Server::new(Role::Standby, Some(1));
    let following = Server::new(Role::Standby, Some(2));
    *p.lag.lock() = (Some(5_000), None, None);
    *left_behind.lag.lock() = (Some(5_000), Some(Duration::ZERO), Some(true));
    *following.lag.lock() = (Some(4_000), Some(Duration::ZERO), Some(true));
    for s in [&p, &left_behind, &following] {
        *s.system.lock() = Some(7);
    }
    let c = set_of(
        &[
            ("p", &p),
            ("left_behind", &left_behind),
            ("following", &following),
        ],
        Roles::default(),
    );
    until_primary(&c, Some("p")).await;
    ticks(1).await;
    // A write on timeline 1 at 3,000: "left_behind" (timeline 1) has it,
    // but the primary moved on to timeline 2; "following" is on it.
    let token = aquifer::WriteToken::wal(7, 1, 3_000);
    for _ in 0..4 {
        let c = c.read_at_least(&token, Duration::ZERO).await.unwrap();
        assert_eq!(c.pool_name(), "following");
    }
    // A token past where "following" is: asked to wait (the fake never
    // has it), then the primary.
    let ahead = aquifer::WriteToken::wal(7, 2, 4_500);
    assert_eq!(
        c.read_at_least(&ahead, Duration::ZERO)
            .await
            .unwrap()
            .pool_name(),
        "p"
    );
    // Another system's token: the primary, and no standby is even asked.
    let waits = c.read_stats().token_waits;
    let stranger = aquifer::WriteToken::wal(8, 2, 10);
    assert_eq!(
        c.read_at_least(&stranger, Duration::ZERO)
            .await
            .unwrap()
            .pool_name(),
        "p"
    );
    assert_eq!(c.read_stats().token_waits, waits);
}

#[tokio::test(start_paused = true)]
async fn a_standby_behind_in_bytes_is_behind_in_time_since_it_was_last_caught_up() {
    let p = Server::new(Role::Primary, None);
    let r = Server::new(Role::Standby, None);
    *p.lag.lock() = (Some(1_000), None, None);
    // Caught up in bytes: no lag, whatever time since its last replayed
    // transaction the server gives (an idle primary is no lag).
    *r.lag.lock() = (Some(1_000), Some(Duration::from_secs(5)), Some(true));
    let c = set_of(&[("p", &p), ("r", &r)], Roles::default());
    until_primary(&c, Some("p")).await;
    ticks(1).await;
    assert_eq!(c.role("r").unwrap().lag, Some(Duration::ZERO));
    *r.lag.lock() = (Some(1_000), Some(Duration::ZERO), Some(true));
    // The primary moves on; the standby has replayed all it received, so
    // it says zero, but it is 4,000 bytes behind: the time since it was
    // last caught up.
    *p.lag.lock() = (Some(5_000), None, None);
    *r.lag.lock() = (Some(1_000), Some(Duration::ZERO), Some(true));
    ticks(3).await;
    let info = c.role("r").unwrap();
    assert_eq!(info.lag_bytes, Some(4_000));
    let lag = info.lag.unwrap();
    assert!(
        lag >= INTERVAL * 2 && lag <= INTERVAL * 4,
        "{lag:?}: about three intervals"
    );
}

#[test]
fn a_pool_added_outside_a_runtime_says_why_its_role_is_unknown() {
    let a = Server::new(Role::Primary, None);
    let c = set_of(&[("a", &a)], Roles::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let err = rt.block_on(c.write()).unwrap_err();
    assert!(
        err.to_string()
            .contains("a is unknown (never checked: added outside a Tokio runtime"),
        "{err}"
    );
    assert_eq!(a.checks.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn zero_role_intervals_are_refused_and_build_says_what_it_does_instead() {
    let roles = Roles::default()
        .interval(Duration::ZERO)
        .check_timeout(Duration::ZERO);
    let err = Cluster::<Fake>::builder()
        .roles(roles.clone())
        .try_build()
        .unwrap_err();
    let text = aquifer::error_chain(&err);
    assert!(
        text.contains("`roles.interval` must be greater than zero"),
        "{text}"
    );
    let a = Server::new(Role::Primary, None);
    let c: Cluster<Fake> = Cluster::builder().roles(roles).build();
    let warnings: Vec<String> = c.warnings().into_iter().map(|w| w.message).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].ends_with("; roles are checked every second"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("`roles.check_timeout` must be"),
        "{warnings:?}"
    );
    let pool = Pool::builder(Fake(Arc::clone(&a))).build().unwrap();
    c.add(ClusterPool::new("a", pool)).unwrap();
    until_primary(&c, Some("a")).await;
    let checks = a.checks.load(Ordering::SeqCst);
    ticks(3).await;
    let n = a.checks.load(Ordering::SeqCst) - checks;
    assert!(
        (2..=4).contains(&n),
        "{n} checks in three seconds: the default interval"
    );
}
