//! The cluster of named pools, with fake managers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aquifer::{Cluster, ClusterError, ClusterPool, Mode, Pool, Selector};
use common::*;

fn fake_pool(max: usize) -> (Arc<Fake>, Pool<FakeManager>) {
    let (f, m) = fake();
    let pool = Pool::builder(m)
        .max(max)
        .acquire_timeout(ms(1000))
        .build()
        .unwrap();
    (f, pool)
}

/// A cluster of named fake pools; returns the fakes by name.
fn cluster(names: &[&str], mode: Mode) -> (Cluster<FakeManager>, HashMap<String, Arc<Fake>>) {
    let c = Cluster::builder().mode(mode).ban_time(ms(5000)).build();
    let mut fakes = HashMap::new();
    for n in names {
        let (f, p) = fake_pool(4);
        c.add(ClusterPool::new(*n, p)).unwrap();
        fakes.insert((*n).to_owned(), f);
    }
    (c, fakes)
}

async fn tally(c: &Cluster<FakeManager>, sel: &str, gets: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..gets {
        let conn = c.get(sel).await.unwrap();
        *seen.entry(conn.pool_name().to_owned()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_a_typed_error() {
    let (c, _) = cluster(&["asia_1"], Mode::RoundRobin);
    let (_, p) = fake_pool(1);
    assert!(matches!(
        c.add(ClusterPool::new("asia_1", p.clone())),
        Err(ClusterError::Duplicate(n)) if n == "asia_1"
    ));
    for bad in ["", "asia_*", "a b", "x?"] {
        let err = c.add(ClusterPool::new(bad, p.clone())).unwrap_err();
        assert!(
            matches!(err, ClusterError::InvalidName { .. }),
            "{bad}: {err}"
        );
    }
    let err: ClusterError<FakeError> = Selector::regex("asia_(").unwrap_err().into();
    assert!(err.to_string().contains("asia_("), "{err}");
    assert!(matches!(c.get("").await, Err(ClusterError::EmptySelector)));
    assert!(matches!(c.get("europe_*").await, Err(ClusterError::NoMatch(s)) if s == "europe_*"));
    assert!(matches!(c.freeze("nope"), Err(ClusterError::NoMatch(_))));
    assert_eq!(c.remove("asia_1", ms(10)).await.unwrap(), 1);
    assert!(matches!(
        c.remove("asia_1", ms(10)).await,
        Err(ClusterError::NoMatch(_))
    ));
    assert!(
        matches!(c.get_any().await, Err(ClusterError::NoMatch(_))),
        "an empty cluster"
    );
}

#[tokio::test(start_paused = true)]
async fn every_selector_form_picks_the_right_pools() {
    let c: Cluster<FakeManager> = Cluster::builder().build();
    for (name, tag) in [
        ("asia_1", "primary"),
        ("asia_2", "replica"),
        ("africa_1", "replica"),
    ] {
        let (_, p) = fake_pool(2);
        c.add(ClusterPool::new(name, p).tag(tag)).unwrap();
    }
    let names = |seen: HashMap<String, usize>| {
        let mut v: Vec<String> = seen.into_keys().collect();
        v.sort();
        v
    };
    assert_eq!(names(tally(&c, "asia_2", 6).await), ["asia_2"]);
    assert_eq!(names(tally(&c, "asia_*", 6).await), ["asia_1", "asia_2"]);
    assert_eq!(
        names(tally(&c, "*", 6).await),
        ["africa_1", "asia_1", "asia_2"]
    );
    let re = Selector::regex("^a[a-z]+_1$").unwrap();
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let conn = c.get(&re).await.unwrap();
        *seen.entry(conn.pool_name().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(names(seen), ["africa_1", "asia_1"]);
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let conn = c.get(Selector::tag("replica")).await.unwrap();
        *seen.entry(conn.pool_name().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(names(seen), ["africa_1", "asia_2"]);
    assert_eq!(c.names(), ["asia_1", "asia_2", "africa_1"]);
}

#[tokio::test(start_paused = true)]
async fn modes_distribute_as_promised() {
    let (c, _) = cluster(&["a", "b", "c"], Mode::RoundRobin);
    let rr = tally(&c, "*", 3000).await;
    assert!(
        rr.values().all(|&n| n == 1000),
        "round robin: exact thirds {rr:?}"
    );

    c.set_mode(Mode::Random);
    assert_eq!(c.mode(), Mode::Random);
    let random = tally(&c, "*", 3000).await;
    assert!(
        random.values().all(|&n| (900..=1100).contains(&n)),
        "random within 10%: {random:?}"
    );

    c.set_mode(Mode::LeastBusy);
    let held_a = (c.get("a").await.unwrap(), c.get("a").await.unwrap());
    let held_b = c.get("b").await.unwrap();
    let busy = tally(&c, "*", 10).await;
    assert_eq!(
        busy.get("c"),
        Some(&10),
        "least busy picks the idle pool: {busy:?}"
    );
    drop((held_a, held_b));

    let w: Cluster<FakeManager> = Cluster::builder().mode(Mode::Weighted).build();
    for (name, weight) in [("light", 1), ("frozen", 50), ("mid", 2), ("heavy", 7)] {
        let (_, p) = fake_pool(2);
        w.add(ClusterPool::new(name, p).weight(weight)).unwrap();
    }
    w.freeze("frozen").unwrap();
    let weighted = tally(&w, "*", 10_000).await;
    assert_eq!(weighted.get("frozen"), None, "{weighted:?}");
    for (name, share) in [("light", 1000.0), ("mid", 2000.0), ("heavy", 7000.0)] {
        let got = weighted[name] as f64;
        assert!(
            (got - share).abs() < share * 0.1,
            "{name}: {got} vs {share}: {weighted:?}"
        );
    }
    // A selector (not `get_any`): the weights of the matching pools only.
    let some = tally(&w, "*i*", 3_000).await;
    for (name, share) in [("light", 1000.0), ("mid", 2000.0)] {
        let got = some[name] as f64;
        assert!((got - share).abs() < share * 0.1, "{name}: {some:?}");
    }
    assert_eq!(some.len(), 2, "{some:?}");
}

#[tokio::test(start_paused = true)]
async fn least_busy_counts_borrowed_and_waiting_callers_on_every_path() {
    let (c, _) = cluster(&["a", "b", "c"], Mode::LeastBusy);
    let any = |c: &Cluster<FakeManager>| {
        let c = c.clone();
        async move {
            let conn = c.get_any().await.unwrap();
            conn.pool_name().to_owned()
        }
    };
    let held_a = c.get("a").await.unwrap();
    let held_b = c.get("b").await.unwrap();
    for _ in 0..10 {
        assert_eq!(
            any(&c).await,
            "c",
            "get_any picks the pool with nothing out"
        );
    }

    // c: four out and one caller queued, so five; a and b: one each.
    let mut held_c = Vec::new();
    for _ in 0..4 {
        held_c.push(c.get("c").await.unwrap());
    }
    let queued = tokio::spawn({
        let c = c.clone();
        async move { drop(c.get("c").await) }
    });
    tokio::task::yield_now().await;
    assert_eq!(c.info_about("c").unwrap().status.waiting, 1);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(any(&c).await);
    }
    assert!(
        seen.iter().all(|n| n != "c"),
        "the busiest pool is avoided: {seen:?}"
    );
    assert!(seen.iter().any(|n| n == "a") && seen.iter().any(|n| n == "b"));

    // A cancelled wait and returned objects count as soon as they happen.
    queued.abort();
    let _ = queued.await;
    held_c.clear();
    drop(held_b);
    assert_eq!(any(&c).await, "b");
    drop(held_a);
    let mut spread = std::collections::HashSet::new();
    for _ in 0..9 {
        spread.insert(any(&c).await);
    }
    assert_eq!(spread.len(), 3, "ties go round robin: {spread:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_task_looping_on_get_any_still_lets_others_run() {
    let (c, _) = cluster(&["a", "b"], Mode::RoundRobin);
    // Both pools made their objects (creating one waits, and so yields).
    let warm = (c.get_any().await.unwrap(), c.get_any().await.unwrap());
    drop(warm);
    let c = &c;
    let n = gets_before_another_task_runs(|| async move { drop(c.get_any().await.unwrap()) }).await;
    assert!(n.is_some_and(|i| i < 9000), "{n:?}");
}

#[tokio::test(start_paused = true)]
async fn a_get_any_that_waits_counts_as_one_get() {
    let c: Cluster<FakeManager> = Cluster::builder().build();
    let (_, p) = fake_pool(1);
    c.add(ClusterPool::new("only", p.clone())).unwrap();
    let held = c.get_any().await.unwrap();
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { drop(c.get_any().await.unwrap()) }
    });
    tokio::task::yield_now().await;
    drop(held);
    waiting.await.unwrap();
    let m = p.metrics();
    // Both waited: the first for the create, the second in line.
    assert_eq!((m.gets, m.gets_waited), (2, 2), "{m:?}");
    // A plain try_get that misses still counts.
    let _held = p.get().await.unwrap();
    assert!(p.try_get().await.is_err());
    assert_eq!(p.metrics().gets, 4);
}

#[tokio::test(start_paused = true)]
async fn a_broken_server_costs_latency_not_an_error_and_is_banned() {
    let (c, fakes) = cluster(&["down", "up"], Mode::RoundRobin);
    fakes["down"].create.set(Step::Err);
    let seen = tally(&c, "*", 20).await;
    assert_eq!(seen.get("up"), Some(&20), "every get served: {seen:?}");
    assert!(c.is_banned("down"));
    assert!(c
        .warnings()
        .iter()
        .any(|w| w.pool.as_deref() == Some("down") && w.message.contains("banned")));
    // Banned: no traffic while the ban lasts.
    let calls = fakes["down"].create.calls();
    tally(&c, "*", 20).await;
    assert_eq!(
        fakes["down"].create.calls(),
        calls,
        "a banned pool gets no traffic"
    );
    // Back after the ban, used again once it works.
    fakes["down"].create.set(Step::Ok);
    tokio::time::advance(ms(5001)).await;
    assert!(!c.is_banned("down"));
    let seen = tally(&c, "*", 20).await;
    assert_eq!(seen.get("down"), Some(&10), "{seen:?}");
}

/// A pool's own background creates are its health check: when they fail
/// (here refilling to `min` against a server that is down), the pool is
/// banned before any get has to find out, and comes back after the ban.
#[tokio::test(start_paused = true)]
async fn a_failing_background_create_bans_the_pool_before_any_get() {
    let c = Cluster::builder().ban_time(ms(5000)).build();
    let (down, manager) = fake();
    let pool = Pool::builder(manager).min(1).max(4).build().unwrap();
    down.create.set(Step::Err);
    c.add(ClusterPool::new("down", pool.clone())).unwrap();
    let (_, up) = fake_pool(4);
    c.add(ClusterPool::new("up", up)).unwrap();
    assert!(!c.is_banned("down"));
    // Starting the pool starts its refill, which fails in the background
    // (`start` itself waits for it until its timeout).
    let _ = tokio::time::timeout(ms(1), pool.start()).await;
    settle().await;
    assert!(c.is_banned("down"), "{:?}", c.warnings());
    let bans = |c: &Cluster<FakeManager>| {
        c.warnings()
            .iter()
            .filter(|w| w.pool.as_deref() == Some("down") && w.message.contains("banned"))
            .count()
    };
    assert_eq!(bans(&c), 1, "{:?}", c.warnings());
    let seen = tally(&c, "*", 10).await;
    assert_eq!(seen.get("up"), Some(&10), "{seen:?}");

    down.create.set(Step::Ok);
    tokio::time::advance(ms(5001)).await;
    settle().await;
    assert!(!c.is_banned("down"));
    let seen = tally(&c, "*", 10).await;
    assert_eq!(seen.get("down"), Some(&5), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn when_every_match_is_banned_they_are_tried_anyway() {
    let (c, fakes) = cluster(&["x", "y"], Mode::RoundRobin);
    for f in fakes.values() {
        f.create.set(Step::Err);
    }
    let err = c.get_any().await.unwrap_err();
    match &err {
        ClusterError::Unavailable { source, .. } => {
            assert!(source.create_error().is_some(), "{err}")
        }
        other => panic!("{other}"),
    }
    assert!(c.is_banned("x") && c.is_banned("y"));
    fakes["y"].create.set(Step::Ok);
    let conn = c.get_any().await.unwrap();
    assert_eq!(
        conn.pool_name(),
        "y",
        "banned pools were tried rather than failing blind"
    );
}

#[tokio::test(start_paused = true)]
async fn failover_sticks_to_the_pool_that_works() {
    let (c, fakes) = cluster(&["first", "second", "third"], Mode::Failover);
    assert_eq!(tally(&c, "*", 5).await.get("first"), Some(&5));
    let c2: Cluster<FakeManager> = Cluster::builder()
        .mode(Mode::Failover)
        .ban_time(ms(100))
        .build();
    let (fa, pa) = fake_pool(2);
    let (_, pb) = fake_pool(2);
    c2.add(ClusterPool::new("first", pa)).unwrap();
    c2.add(ClusterPool::new("second", pb)).unwrap();
    fa.create.set(Step::Err);
    assert_eq!(c2.get_any().await.unwrap().pool_name(), "second");
    // `first` recovers and its ban ends, yet traffic stays where it went.
    fa.create.set(Step::Ok);
    tokio::time::advance(ms(200)).await;
    assert_eq!(tally(&c2, "*", 5).await.get("second"), Some(&5));
    drop(fakes);
}

#[tokio::test(start_paused = true)]
async fn freezing_stops_new_gets_but_not_work_in_flight() {
    let (c, _) = cluster(&["asia_1", "asia_2"], Mode::RoundRobin);
    let out = c.get("asia_1").await.unwrap();
    assert_eq!(c.freeze("asia_1").unwrap(), 1);
    assert!(matches!(c.get("asia_1").await, Err(ClusterError::Frozen(n)) if n == "asia_1"));
    assert_eq!(tally(&c, "asia_*", 6).await.get("asia_2"), Some(&6));
    assert_eq!(c.frozen(), ["asia_1"]);
    assert_eq!(c.active(), ["asia_2"]);
    assert!(c.has_frozen("asia_*") && c.has_active("asia_*") && !c.has_active("asia_1"));
    let _still_works = &*out;
    drop(out);
    c.freeze("*").unwrap();
    assert!(matches!(
        c.get("asia_*").await,
        Err(ClusterError::Frozen(_))
    ));
    c.unfreeze("asia_1").unwrap();
    assert_eq!(c.get("asia_*").await.unwrap().pool_name(), "asia_1");
    // Frozen pools can be removed.
    assert_eq!(c.remove("asia_2", ms(10)).await.unwrap(), 1);
    assert_eq!(c.names(), ["asia_1"]);
}

#[tokio::test(start_paused = true)]
async fn remove_waits_for_connections_out_then_closes() {
    let (c, fakes) = cluster(&["old", "new"], Mode::RoundRobin);
    let out = c.get("old").await.unwrap();
    let returner = tokio::spawn(async move {
        tokio::time::sleep(ms(300)).await;
        drop(out);
    });
    let start = tokio::time::Instant::now();
    assert_eq!(c.remove("old", ms(5000)).await.unwrap(), 1);
    assert_eq!(
        start.elapsed(),
        ms(300),
        "waited for the borrowed connection"
    );
    returner.await.unwrap();
    assert_eq!(c.names(), ["new"]);
    settle().await;
    assert_eq!(
        fakes["old"].alive.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "closed"
    );
    // A connection held past the wait: removed anyway, with a warning.
    let held = c.get("new").await.unwrap();
    c.remove("new", ms(100)).await.unwrap();
    assert!(c.warnings().iter().any(|w| w.message.contains("still out")));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn connections_that_fail_to_close_are_kept_pending() {
    let (c, fakes) = cluster(&["leaky"], Mode::RoundRobin);
    drop(c.get("leaky").await.unwrap());
    fakes["leaky"].destroy.set(Step::Err);
    c.remove("leaky", ms(10)).await.unwrap();
    assert!(c.has_pending());
    assert_eq!(c.pending()[0].pool, "leaky");
    // The failed close is a warning by the time `remove` returns.
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.pool.as_deref() == Some("leaky") && w.message.contains("failed to close")),
        "{:?}",
        c.warnings()
    );
    let failed_closes = |c: &Cluster<FakeManager>| {
        c.warnings()
            .iter()
            .filter(|w| w.pool.as_deref() == Some("leaky") && w.message.contains("failed to close"))
            .count()
    };
    assert_eq!(failed_closes(&c), 1);
    assert_eq!(c.close_pending(false).await, 1, "still failing: kept");
    // The removed pool is still watched: the retry's failure is counted by
    // the time `close_pending` returns, and summed up once the minute of
    // the first is over.
    assert_eq!(failed_closes(&c), 1, "{:?}", c.warnings());
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(failed_closes(&c), 2, "{:?}", c.warnings());
    assert!(c.warnings()[1]
        .message
        .starts_with("… 1 more like this in the last minute"));
    fakes["leaky"].destroy.set(Step::Ok);
    assert_eq!(c.close_pending(false).await, 0);
    assert!(!c.has_pending());
    assert_eq!(failed_closes(&c), 2);

    // The same for a pool still in the cluster.
    let (c, fakes) = cluster(&["leaky"], Mode::RoundRobin);
    fakes["leaky"].destroy.set(Step::Err);
    c.get("leaky").await.unwrap().into_pooled().destroy();
    settle().await;
    assert!(c.has_pending());
    let before = failed_closes(&c);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(c.close_pending(false).await, 1);
    assert_eq!(failed_closes(&c), before + 1, "{:?}", c.warnings());

    let (c, fakes) = cluster(&["stuck"], Mode::RoundRobin);
    drop(c.get("stuck").await.unwrap());
    fakes["stuck"].destroy.set(Step::Err);
    assert_eq!(
        c.shutdown(ms(10), true).await,
        0,
        "force drops what still fails"
    );
    assert!(matches!(c.get_any().await, Err(ClusterError::ShutDown)));
}

#[tokio::test(start_paused = true)]
async fn trouble_becomes_bounded_warnings() {
    let c: Cluster<FakeManager> = Cluster::builder().max_warnings(3).build();
    let (f, p) = fake_pool(1);
    c.add(ClusterPool::new("busy", p)).unwrap();
    f.create.set(Step::Err);
    // Failing at once: the failure and the ban it brings.
    f.permanent.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = c.get("busy").await;
    settle().await;
    let w = c.warnings();
    assert!(w.iter().all(|w| w.pool.as_deref() == Some("busy")));
    assert!(w[0].message.starts_with("create failed"), "{w:?}");
    assert!(w[1].message.starts_with("banned for 30 s: "), "{w:?}");
    for n in 0..5 {
        c.add_warning(None, format!("note {n}"));
    }
    let w = c.warnings();
    assert_eq!(w.len(), 3, "bounded: {w:?}");
    assert_eq!(w[0].message, "note 2", "the oldest go first");
    c.clear_warnings();
    c.add_warning(None, "maintenance at 02:00");
    assert_eq!(c.warnings()[0].message, "maintenance at 02:00");
    assert_eq!(c.warnings().len(), 1);
}

/// The same trouble again and again is one warning and, once its minute
/// is over, one line that counts the rest.
#[tokio::test(start_paused = true)]
async fn repeated_warnings_are_summed_up_per_minute() {
    let c: Cluster<FakeManager> = Cluster::builder().build();
    let (_, p) = fake_pool(1);
    c.add(ClusterPool::new("busy", p.clone())).unwrap();
    let held = p.get().await.unwrap();
    for _ in 0..5 {
        p.get_timeout(ms(10)).await.unwrap_err();
    }
    settle().await;
    let gave_up = |c: &Cluster<FakeManager>| -> Vec<String> {
        c.warnings()
            .into_iter()
            .filter(|w| w.pool.as_deref() == Some("busy"))
            .map(|w| w.message)
            .collect()
    };
    assert_eq!(gave_up(&c), ["a caller gave up after waiting 10 ms"]);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        gave_up(&c)[1],
        "… 4 more like this in the last minute; the last: a caller gave up after waiting 10 ms"
    );
    // A new minute: the next one is recorded again.
    p.get_timeout(ms(20)).await.unwrap_err();
    settle().await;
    assert_eq!(gave_up(&c).len(), 3);
    assert_eq!(gave_up(&c)[2], "a caller gave up after waiting 20 ms");
    drop(held);
}

/// Like a pool's get: a `get_any` that handed its connection out from its
/// first poll panics when polled again, and takes nothing more.
#[tokio::test]
async fn a_get_any_polled_after_it_completed_panics_and_takes_nothing() {
    let (c, _) = cluster(&["a"], Mode::RoundRobin);
    drop(c.get_any().await.unwrap()); // one idle connection: the next is quick
    let (first, panicked) = poll_after_ready(c.get_any());
    let first = first.unwrap();
    assert!(panicked, "polling a completed get_any must panic");
    let s = c.pool("a").unwrap().status();
    assert_eq!((s.size, s.borrowed), (1, 1), "nothing more was checked out");
    drop(first);
}

/// A pool at `max` with callers queued is doing its job: no warning, as
/// long as every caller is served.
#[tokio::test(start_paused = true)]
async fn a_saturated_pool_whose_callers_are_served_makes_no_warning() {
    let c: Cluster<FakeManager> = Cluster::builder().max_warnings(1000).build();
    let (_, p) = fake_pool(1);
    c.add(ClusterPool::new("busy", p)).unwrap();
    let mut events = c.pool("busy").unwrap().lifecycle_events();
    let held = c.get("busy").await.unwrap();
    let waiters: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("busy").await.map(drop) })
        })
        .collect();
    settle().await;
    drop(held);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    settle().await;
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // The pool still says so in its events.
    let mut reached = false;
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), events.recv()).await {
        reached |= matches!(e, aquifer::PoolEvent::MaxReached { max: 1, .. });
    }
    assert!(reached);
}

/// Least busy counts each pool's load against its own `max`: a pool of 2
/// with both out is fuller than a pool of 4 with 3 out, so a get goes to
/// the larger one instead of queueing on the smaller.
#[tokio::test(start_paused = true)]
async fn least_busy_weighs_load_against_each_pools_max() {
    let c = Cluster::builder().mode(Mode::LeastBusy).build();
    let (_, small) = fake_pool(2);
    let (_, big) = fake_pool(4);
    c.add(ClusterPool::new("small", small.clone())).unwrap();
    c.add(ClusterPool::new("big", big.clone())).unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(small.get().await.unwrap());
    }
    for _ in 0..3 {
        held.push(big.get().await.unwrap());
    }
    for _ in 0..4 {
        let conn = tokio::time::timeout(ms(50), c.get("*"))
            .await
            .expect("the get queued on the full pool");
        let conn = conn.unwrap();
        assert_eq!(conn.pool_name(), "big");
        drop(conn);
    }
    // Room on the small one: 1 of 2 out is lighter than 3 of 4.
    drop(held.remove(0));
    let conn = c.get("*").await.unwrap();
    assert_eq!(conn.pool_name(), "small");
}

#[test]
fn cluster_handles_and_futures_are_send() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Cluster<FakeManager>>();
    send_sync::<aquifer::ClusterConn<FakeManager>>();
    let c: Cluster<FakeManager> = Cluster::builder().build();
    send(&c.get("x"));
    send(&c.remove("x", Duration::ZERO));
    send(&c.shutdown(Duration::ZERO, false));
}

#[tokio::test(start_paused = true)]
async fn the_event_log_survives_a_restart_and_keeps_warnings_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.log");
    {
        let c: Cluster<FakeManager> = Cluster::builder().log_file(&path, 1 << 20).build();
        let (f, p) = fake_pool(1);
        c.add(ClusterPool::new("db_1", p)).unwrap();
        c.add_warning(None, "first");
        f.create.set(Step::Err);
        let _ = c.get("db_1").await;
        settle().await;
        c.add_warning(Some("db_1"), "last");
        let logged = c.log_messages().unwrap();
        assert_eq!(logged.first().unwrap().message, "first");
        assert_eq!(logged.last().unwrap().message, "last");
        assert_eq!(logged.len(), c.warnings().len(), "{logged:?}");
    }
    // A new cluster on the same file reads the old run back, then appends.
    let c: Cluster<FakeManager> = Cluster::builder().log_file(&path, 1 << 20).build();
    assert!(c.warnings().is_empty(), "memory starts empty");
    c.add_warning(None, "after restart");
    let logged = c.log_messages().unwrap();
    let messages: Vec<&str> = logged.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(messages.first(), Some(&"first"));
    assert_eq!(messages.last(), Some(&"after restart"));
    assert!(
        messages.iter().any(|m| m.contains("create failed")),
        "{messages:?}"
    );
    assert!(logged.iter().any(|w| w.pool.as_deref() == Some("db_1")));
    let times: Vec<_> = logged.iter().map(|w| w.at).collect();
    assert!(times.windows(2).all(|p| p[0] <= p[1]), "in order");
    assert_eq!(c.log_dropped(), 0);
}

#[tokio::test]
async fn the_event_log_rotates_by_size_and_a_bad_path_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.log");
    let c: Cluster<FakeManager> = Cluster::builder().log_file(&path, 300).build();
    for i in 0..40 {
        c.add_warning(None, format!("warning number {i}"));
    }
    let logged = c.log_messages().unwrap();
    assert!(dir.path().join("small.log.1").exists(), "rotated");
    assert!(std::fs::metadata(&path).unwrap().len() <= 300);
    assert_eq!(logged.last().unwrap().message, "warning number 39");
    assert!(
        logged.len() < 40,
        "the oldest rotated away: {}",
        logged.len()
    );

    let bad = dir.path().join("no/such/dir/x.log");
    let err = Cluster::<FakeManager>::builder()
        .log_file(&bad, 100)
        .try_build()
        .unwrap_err();
    let aquifer::ClusterBuildError::EventLog { source, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    // A zero budget is refused as a pool refuses it; `build` keeps the
    // default and warns.
    let err = Cluster::<FakeManager>::builder()
        .acquire_timeout(Duration::ZERO)
        .try_build()
        .unwrap_err();
    assert!(
        aquifer::error_chain(&err).contains("`acquire_timeout` must be greater than zero"),
        "{err}"
    );
    let c: Cluster<FakeManager> = Cluster::builder().acquire_timeout(Duration::ZERO).build();
    assert!(
        c.warnings()[0].message.contains("acquire_timeout"),
        "{:?}",
        c.warnings()
    );
    let c: Cluster<FakeManager> = Cluster::builder()
        .mode(Mode::Random)
        .log_file(&bad, 100)
        .build();
    assert_eq!(c.mode(), Mode::Random, "settings kept without the log");
    assert!(
        c.warnings()[0].message.contains("unavailable"),
        "{:?}",
        c.warnings()
    );
}

#[tokio::test(start_paused = true)]
async fn info_counts_the_cluster_and_describes_each_pool() {
    let c: Cluster<FakeManager> = Cluster::builder().ban_time(ms(5000)).build();
    let mut fakes = Vec::new();
    for (name, tag) in [
        ("eu_1", "primary"),
        ("eu_2", "replica"),
        ("eu_3", "replica"),
    ] {
        let (f, p) = fake_pool(4);
        c.add(ClusterPool::new(name, p).tag(tag).weight(2)).unwrap();
        fakes.push(f);
    }
    let held = c.get("eu_1").await.unwrap();
    c.freeze("eu_2").unwrap();
    fakes[2].create.set(Step::Err);
    let _ = c.get("eu_3").await;
    let info = c.info();
    assert_eq!(
        (
            info.pools,
            info.active,
            info.frozen,
            info.banned,
            info.borrowed
        ),
        (3, 2, 1, 1, 1),
        "{info:?}"
    );
    assert!(info.warnings >= 1);
    let eu_1 = c.info_about("eu_1").unwrap();
    assert_eq!((eu_1.id, eu_1.driver, eu_1.weight), (1, "custom", 2));
    assert_eq!(eu_1.tags, ["primary"]);
    assert_eq!(eu_1.status.borrowed, 1);
    assert_eq!(eu_1.metrics.gets, 1);
    let eu_3 = c.info_about("eu_3").unwrap();
    assert!(eu_3.banned_for.is_some_and(|d| d <= ms(5000)));
    assert!(eu_3.metrics.create_failures >= 1);
    assert!(c.info_about("eu_2").unwrap().frozen);
    assert!(c.info_about("nope").is_none());
    let json = serde_json::to_value(&eu_3).unwrap();
    assert_eq!(json["name"], "eu_3");
    assert!(serde_json::to_string(&info)
        .unwrap()
        .contains("\"mode\":\"round_robin\""));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_server_costs_a_share_of_the_budget_not_an_error() {
    let c: Cluster<FakeManager> = Cluster::builder().acquire_timeout(ms(1000)).build();
    let (hang, p) = fake_pool(2);
    hang.create.set(Step::Never);
    c.add(ClusterPool::new("hang", p)).unwrap();
    let (_, p) = fake_pool(2);
    c.add(ClusterPool::new("ok", p)).unwrap();
    // Round robin starts with `hang` once in two gets.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let start = tokio::time::Instant::now();
        let conn = c.get_any().await.expect("the other pool serves");
        assert_eq!(conn.pool_name(), "ok");
        slow.push(start.elapsed());
    }
    slow.sort();
    assert_eq!(
        slow,
        [ms(0), ms(500)],
        "half the budget on the hanging pool, then served"
    );
}

/// A connection names the pool that served it, also when the pool serves
/// two clusters under two names (the shortcut that reads the name off the
/// pool must not answer for the second).
#[tokio::test(start_paused = true)]
async fn a_connection_names_its_pool_in_every_cluster_and_every_mode() {
    let (_, shared) = fake_pool(4);
    let first: Cluster<FakeManager> = Cluster::builder().build();
    let second: Cluster<FakeManager> = Cluster::builder().build();
    first.add(ClusterPool::new("eu_1", shared.clone())).unwrap();
    second.add(ClusterPool::new("primary", shared)).unwrap();
    for mode in [
        Mode::RoundRobin,
        Mode::Random,
        Mode::LeastBusy,
        Mode::Weighted,
        Mode::Failover,
    ] {
        first.set_mode(mode);
        second.set_mode(mode);
        assert_eq!(first.get_any().await.unwrap().pool_name(), "eu_1");
        assert_eq!(second.get_any().await.unwrap().pool_name(), "primary");
        assert_eq!(second.get("prim*").await.unwrap().pool_name(), "primary");
    }
}

/// `get_any` takes a shortcut when a pool has an idle object; when it has
/// none, the get waits in line like any other.
#[tokio::test(start_paused = true)]
async fn get_any_waits_in_line_when_the_chosen_pool_is_busy() {
    let (c, _) = cluster(&["only"], Mode::RoundRobin);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(c.get_any().await.unwrap());
    }
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.get_any().await.map(|conn| conn.pool_name().to_owned()) })
    };
    tokio::time::sleep(ms(10)).await;
    assert!(!waiter.is_finished());
    held.pop();
    assert_eq!(waiter.await.unwrap().unwrap(), "only");
    // Frozen: the shortcut does not apply, the general path says why.
    c.freeze("only").unwrap();
    assert!(matches!(c.get_any().await, Err(ClusterError::Frozen(_))));
}

/// An idle connection that needs its borrow check (idle longer than
/// `validate_if_idle_for`) is checked and handed out by `get_any`, however
/// long the check takes: the shortcut must not give up on it half way and
/// throw a good connection away.
#[tokio::test(start_paused = true)]
async fn get_any_keeps_a_connection_whose_check_takes_time() {
    let (c, fakes) = cluster(&["only"], Mode::RoundRobin);
    let f = &fakes["only"];
    let first = c.get_any().await.unwrap().obj.id;
    tokio::time::sleep(ms(1000)).await;
    f.validate.set(Step::Slow(ms(20)));
    let conn = c.get_any().await.unwrap();
    assert_eq!(conn.obj.id, first, "the idle connection was not reused");
    assert_eq!(f.validate.calls(), 1);
    assert_eq!(f.made.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(conn);
    settle().await;
    assert_eq!(f.destroyed.load(std::sync::atomic::Ordering::SeqCst), 0);
    let m = c.pool("only").unwrap().metrics();
    assert_eq!(m.validation_failures, 0);
    // The shortcut declined the second get: still one get each.
    assert_eq!(m.gets, 2);
}

/// `get_any` picks from a per-thread copy of the member list: a pool added
/// or removed must show in the very next gets on the same thread, in every
/// mode that picks without a full get.
#[tokio::test(flavor = "current_thread")]
async fn get_any_sees_an_added_or_removed_pool_at_once() {
    for mode in [Mode::RoundRobin, Mode::Random, Mode::Weighted] {
        let (c, _) = cluster(&["a", "b"], mode);
        let names = |n: usize| {
            let c = c.clone();
            async move {
                let mut seen = std::collections::HashSet::new();
                for _ in 0..n {
                    seen.insert(c.get_any().await.unwrap().pool_name().to_owned());
                }
                seen
            }
        };
        assert_eq!(names(40).await.len(), 2, "{mode:?}: both pools serve");
        let (_, p) = fake_pool(4);
        c.add(ClusterPool::new("c", p)).unwrap();
        assert!(
            names(200).await.contains("c"),
            "{mode:?}: the added pool serves"
        );
        c.remove("a", Duration::ZERO).await.unwrap();
        assert!(
            !names(200).await.contains("a"),
            "{mode:?}: the removed pool is gone"
        );
    }
}

/// `Duration::MAX` means "never": as a cluster's budget, a ban time or a
/// pool's maintenance interval it saturates instead of overflowing an
/// `Instant` when a server is down.
#[tokio::test(start_paused = true)]
async fn durations_of_max_saturate_instead_of_panicking() {
    let c = Cluster::builder()
        .acquire_timeout(Duration::MAX)
        .ban_time(Duration::MAX)
        .build();
    let (down, manager) = fake();
    down.create.set(Step::Err);
    down.permanent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let pool = Pool::builder(manager)
        .max(2)
        .eviction_interval(Duration::MAX)
        .build()
        .unwrap();
    c.add(ClusterPool::new("down", pool)).unwrap();
    let (_, up) = fake_pool(2);
    c.add(ClusterPool::new("up", up)).unwrap();
    for _ in 0..4 {
        let conn = c.get("*").await.unwrap();
        assert_eq!(conn.pool_name(), "up");
    }
    assert!(c.is_banned("down"));
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    assert!(c.is_banned("down"), "banned for good");
}

/// A get that falls back picks the next pool as its mode does: in weighted
/// mode a pool of weight 0 is not a fallback while a weighted one can serve.
#[tokio::test(start_paused = true)]
async fn a_weighted_get_falls_back_by_weight() {
    let c = Cluster::builder()
        .mode(Mode::Weighted)
        .ban_time(Duration::ZERO)
        .acquire_timeout(ms(300))
        .build();
    let (down, p) = fake_pool(2);
    down.create.set(Step::Err);
    c.add(ClusterPool::new("down", p)).unwrap();
    let (_, p) = fake_pool(2);
    c.add(ClusterPool::new("drained", p).weight(0)).unwrap();
    let (_, p) = fake_pool(2);
    c.add(ClusterPool::new("live", p)).unwrap();
    let seen = tally(&c, "*", 40).await;
    assert_eq!(seen.get("live"), Some(&40), "{seen:?}");
    assert!(
        down.create.calls() > 0,
        "some gets tried the failing pool first"
    );
}

/// Weight 0: no share of weighted gets while a weighted pool can serve;
/// named gets still reach it, and it serves when it is all that is left.
#[tokio::test(start_paused = true)]
async fn a_pool_of_weight_zero_gets_no_weighted_traffic() {
    let c = Cluster::builder().mode(Mode::Weighted).build();
    let (_, drained) = fake_pool(2);
    let (_, live) = fake_pool(2);
    c.add(ClusterPool::new("drained", drained).weight(0))
        .unwrap();
    c.add(ClusterPool::new("live", live).weight(1)).unwrap();
    let seen = tally(&c, "*", 200).await;
    assert_eq!(seen.get("live"), Some(&200), "{seen:?}");
    assert_eq!(c.get("drained").await.unwrap().pool_name(), "drained");
    c.freeze("live").unwrap();
    let seen = tally(&c, "*", 10).await;
    assert_eq!(seen.get("drained"), Some(&10), "{seen:?}");
}
