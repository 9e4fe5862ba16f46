//! Checkout and return, the guard, configuration errors.

mod common;

use std::time::Duration;

use aquifer::{BuildError, Order, Pool, PoolConfig, PoolError, Pooled};
use common::*;

fn pool(max: usize) -> (std::sync::Arc<Fake>, Pool<FakeManager>) {
    let (f, m) = fake();
    (f, Pool::builder(m).max(max).build().unwrap())
}

#[test]
fn handles_are_send_sync_and_static() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send + 'static>() {}
    assert_send_sync::<Pool<FakeManager>>();
    assert_send_sync::<Pooled<FakeManager>>();
    assert_send_sync::<PoolError<FakeError>>();
    assert_send::<aquifer::EventStream>();
    fn get_is_send(p: &Pool<FakeManager>) -> impl Send + '_ {
        p.get()
    }
    let _ = get_is_send;
}

/// A checkout's result stays small enough to come back in registers (at
/// four words every successful get went through memory and stalled): the
/// guard is one pointer and each error variant holds at most one word.
#[test]
fn a_get_result_is_two_words() {
    use std::mem::size_of;
    assert_eq!(size_of::<Pooled<FakeManager>>(), size_of::<usize>());
    assert_eq!(
        size_of::<Result<Pooled<FakeManager>, PoolError<FakeError>>>(),
        2 * size_of::<usize>()
    );
}

/// A get's future handed its object out from its first poll; polling it
/// again is the caller's bug, and must not check out a second object.
#[tokio::test]
async fn a_get_polled_after_it_completed_panics_and_takes_nothing() {
    let (_, p) = pool(4);
    drop(p.get().await.unwrap()); // one idle object: the next get is quick
    let (first, panicked) = poll_after_ready(p.get());
    let first = first.unwrap();
    assert!(panicked, "polling a completed get must panic");
    let s = check_pool(&p);
    assert_eq!((s.size, s.borrowed), (1, 1), "nothing more was checked out");
    drop(first);
}

#[tokio::test]
async fn get_and_return_reuses_the_object() {
    let (f, p) = pool(4);
    let a = p.get().await.unwrap();
    let id = a.id();
    assert_eq!(a.obj.id, 1);
    assert_eq!(a.metadata().use_count(), 1);
    let s = check_pool(&p);
    assert_eq!((s.size, s.borrowed, s.idle), (1, 1, 0));
    drop(a);
    let s = check_pool(&p);
    assert_eq!((s.size, s.borrowed, s.idle), (1, 0, 1));
    let b = p.get().await.unwrap();
    assert_eq!(b.id(), id, "the idle object is reused");
    assert_eq!(b.metadata().use_count(), 2);
    assert!(b.metadata().last_used() >= b.metadata().created());
    assert_eq!(f.create.calls(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_task_looping_on_get_still_lets_others_run() {
    let (_, p) = pool(1);
    drop(p.get().await.unwrap());
    let p = &p;
    let n = gets_before_another_task_runs(|| async move { drop(p.get().await.unwrap()) }).await;
    assert!(n.is_some_and(|i| i < 9000), "{n:?}");
}

#[tokio::test]
async fn deref_mut_reaches_the_object() {
    let (_, p) = pool(1);
    let mut a = p.get().await.unwrap();
    a.obj.dirty = true;
    assert!(a.obj.dirty);
    assert!(format!("{a:?}").contains("Pooled"));
}

#[tokio::test]
async fn try_get_never_waits() {
    let (_, p) = pool(1);
    assert!(
        matches!(p.try_get().await, Err(PoolError::Exhausted)),
        "nothing idle yet"
    );
    let a = p.get().await.unwrap();
    assert!(matches!(p.try_get().await, Err(PoolError::Exhausted)));
    drop(a);
    let b = p.try_get().await.expect("an idle object is there now");
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn bounded_queue_refuses_at_once() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(1).max_waiting(1).build().unwrap();
    let _held = p.get().await.unwrap();
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|o| o.id()) });
    settle().await;
    assert_eq!(p.status().waiting, 1);
    let err = p.get().await.unwrap_err();
    assert!(
        matches!(err, PoolError::QueueFull { max_waiting: 1 }),
        "{err}"
    );
    assert!(err.to_string().contains("wait queue is full"));
    assert_eq!(p.metrics().queue_full, 1);
    drop(_held);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    assert_eq!(f.create.calls(), 1);
}

/// Callers that a create will serve are not queued: `max_waiting` counts
/// only those waiting for a return.
#[tokio::test(start_paused = true)]
async fn a_bounded_queue_refuses_nobody_while_the_pool_can_grow() {
    // Max 2, one waiting allowed: two gets at once on an empty pool both
    // get an object.
    let (_, m) = fake();
    let p = Pool::builder(m).max(2).max_waiting(1).build().unwrap();
    let (a, b) = tokio::join!(p.get(), p.get());
    assert!(a.is_ok() && b.is_ok(), "{:?}", (a.err(), b.err()));
    drop((a, b));

    // Max 10, five waiting allowed, a burst of 18 on an empty pool, slow
    // creates: ten are served by creates, five wait for returns, three
    // are refused.
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(10)));
    let p = Pool::builder(m).max(10).max_waiting(5).build().unwrap();
    let burst: Vec<_> = (0..18)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                let got = p.get().await;
                tokio::time::sleep(ms(50)).await;
                got.map(drop)
            })
        })
        .collect();
    let mut refused = 0;
    for t in burst {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(PoolError::QueueFull { max_waiting: 5 }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 3);
    assert_eq!(check_pool(&p).size, 10, "the pool grew to max");

    // Zero: grow to max, then refuse instead of queueing.
    let (_, m) = fake();
    let p = Pool::builder(m).max(2).max_waiting(0).build().unwrap();
    let held = (p.get().await.unwrap(), p.get().await.unwrap());
    let err = p.get().await.unwrap_err();
    assert!(
        matches!(err, PoolError::QueueFull { max_waiting: 0 }),
        "{err}"
    );
    drop(held);
    assert!(p.get().await.is_ok());
}

#[tokio::test]
async fn detach_and_destroy_free_the_slot() {
    let (f, p) = pool(1);
    let a = p.get().await.unwrap();
    let conn = a.detach();
    assert_eq!(conn.obj.id, 1);
    assert_eq!(check_pool(&p).size, 0);
    let b = p.get().await.unwrap();
    assert_eq!(b.obj.id, 2, "a new object replaces the detached one");
    b.destroy();
    settle().await;
    assert_eq!(check_pool(&p).size, 0);
    assert_eq!(f.destroyed.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(conn);
}

#[derive(Debug)]
enum AppError {
    Pool(#[allow(dead_code)] PoolError<FakeError>),
    Query,
}

impl From<PoolError<FakeError>> for AppError {
    fn from(e: PoolError<FakeError>) -> Self {
        AppError::Pool(e)
    }
}

#[tokio::test]
async fn with_returns_the_result_and_destroys_on_error() {
    let (f, p) = pool(2);
    let n = p
        .with(async |c: &mut Conn| -> Result<u64, AppError> { Ok(c.obj.id * 10) })
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(check_pool(&p).idle, 1, "Ok returns the object");
    let r = p
        .with(async |_: &mut Conn| -> Result<(), AppError> { Err(AppError::Query) })
        .await;
    assert!(matches!(r, Err(AppError::Query)));
    settle().await;
    let s = check_pool(&p);
    assert_eq!(s.size, 0, "Err destroys the object: {s:?}");
    assert_eq!(f.destroyed.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fifo_and_lifo_pick_different_idle_objects() {
    for (order, expect_first) in [(Order::Fifo, 1), (Order::Lifo, 2)] {
        let (_, m) = fake();
        let p = Pool::builder(m).max(2).order(order).build().unwrap();
        let a = p.get().await.unwrap();
        let b = p.get().await.unwrap();
        drop(a); // id 1 idles first
        drop(b); // id 2 idles last
        let c = p.get().await.unwrap();
        assert_eq!(c.id(), expect_first, "{order:?}");
    }
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let (_, m) = fake();
    let build = |cfg: PoolConfig| Pool::new(m.clone(), cfg).map(|_| ()).unwrap_err();
    assert_eq!(
        build(PoolConfig {
            max: 0,
            ..Default::default()
        }),
        BuildError::MaxZero
    );
    let e = build(PoolConfig {
        min: 5,
        max: 2,
        ..Default::default()
    });
    assert_eq!(e, BuildError::MinAboveMax { min: 5, max: 2 });
    assert!(e.to_string().contains("lower `min` or raise `max`"), "{e}");
    let e = build(PoolConfig {
        acquire_timeout: Duration::ZERO,
        ..Default::default()
    });
    assert!(
        matches!(
            e,
            BuildError::ZeroDuration {
                setting: "acquire_timeout",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("try_get"),
        "the message says what to do: {e}"
    );
    let e = build(PoolConfig {
        priority_levels: 0,
        ..Default::default()
    });
    assert!(
        matches!(
            e,
            BuildError::OutOfRange {
                setting: "priority_levels",
                ..
            }
        ),
        "{e}"
    );
    let mut cfg = PoolConfig::default();
    cfg.backoff.factor = 0.5;
    assert!(matches!(
        build(cfg),
        BuildError::OutOfRange {
            setting: "backoff.factor",
            ..
        }
    ));
    let mut cfg = PoolConfig::default();
    cfg.backoff.max = Duration::from_millis(1);
    assert!(matches!(
        build(cfg),
        BuildError::OutOfRange {
            setting: "backoff.max",
            ..
        }
    ));
    let e = build(PoolConfig {
        lifetime_jitter: 1.5,
        ..Default::default()
    });
    assert!(matches!(
        e,
        BuildError::OutOfRange {
            setting: "lifetime_jitter",
            ..
        }
    ));
    let e = build(PoolConfig {
        idle_timeout: Some(Duration::ZERO),
        ..Default::default()
    });
    assert!(e.to_string().contains("pass `None`"), "{e}");
    // The builder reports the same errors.
    let e = Pool::builder(m.clone()).max(0).build().unwrap_err();
    assert_eq!(e, BuildError::MaxZero);
}

#[tokio::test]
async fn building_outside_a_runtime_starts_lazily() {
    let (f, m) = fake();
    let p = std::thread::spawn(move || Pool::builder(m).min(2).max(3).build().unwrap())
        .join()
        .unwrap();
    settle().await;
    assert_eq!(f.create.calls(), 0, "nothing runs before the first use");
    p.start().await.unwrap();
    let s = check_pool(&p);
    assert_eq!((s.size, s.idle), (2, 2));
}

#[tokio::test]
async fn eager_pools_fill_to_min_and_start_reports_errors() {
    let (_, m) = fake();
    let p = Pool::builder(m).min(3).max(5).build().unwrap();
    p.start().await.unwrap();
    assert_eq!(check_pool(&p).idle, 3);

    let (f, m) = fake();
    f.create.set(Step::Err);
    let p = Pool::builder(m)
        .min(1)
        .max(2)
        .eager(false)
        .acquire_timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let err = p.start().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        aquifer::error_chain(&err).contains("password authentication failed"),
        "{err}"
    );
}

/// Idle objects hold their pool (so that a checkout moves that reference
/// instead of counting it): the pool must still be freed, manager and all,
/// once its last handle and last borrowed object are gone, even when an
/// idle object fails to close and is kept as pending.
#[tokio::test]
async fn a_dropped_pool_is_freed_with_its_idle_borrowed_and_pending_objects() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(4).build().unwrap();
    let (a, b) = (p.get().await.unwrap(), p.get().await.unwrap());
    drop(b);
    assert_eq!(p.status().idle, 1);
    let manager_refs = || std::sync::Arc::strong_count(&f) - 1;
    assert_eq!(manager_refs(), 1, "the pool holds its manager");
    f.destroy.then(&[Step::Err]);
    drop(p);
    settle().await;
    assert_eq!(f.destroy.calls(), 1, "closing destroyed the idle object");
    assert_eq!(manager_refs(), 1, "a borrowed object keeps its pool");
    drop(a);
    settle().await;
    assert_eq!(f.destroy.calls(), 2, "and the borrowed one on return");
    assert_eq!(manager_refs(), 0, "the pool is freed, pending object too");
    assert_eq!(f.alive.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_pool() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(3).build().unwrap();
    let p2 = p.clone();
    let a = p.get().await.unwrap();
    let b = p.get().await.unwrap();
    drop(b);
    drop(p);
    assert!(!p2.is_closed(), "a clone is still alive");
    drop(p2);
    settle().await;
    assert_eq!(
        f.destroyed.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the idle object is closed"
    );
    drop(a);
    settle().await;
    assert_eq!(
        f.destroyed.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the borrowed one on return"
    );
    assert_eq!(f.alive.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Every status read is one consistent snapshot while tasks check out,
/// return, time out and are cancelled on two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_read_balances_under_concurrent_checkouts() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(4).build().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (p, stop) = (p.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match i % 3 {
                    0 => drop(p.get().await),
                    1 => drop(p.get_timeout(std::time::Duration::from_micros(50)).await),
                    _ => {
                        // Cancelled at its first await.
                        let _ = tokio::time::timeout(std::time::Duration::ZERO, p.get()).await;
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let reads = {
        let p = p.clone();
        tokio::task::spawn_blocking(move || {
            let mut reads = 0;
            let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
            while std::time::Instant::now() < until {
                check(&p.status());
                reads += 1;
            }
            reads
        })
        .await
        .unwrap()
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(reads > 1000, "{reads} reads");
    assert!(p.metrics().gets > 1000);
}

/// `start` fills to `min` without checking anything out.
#[tokio::test]
async fn start_fills_to_min_and_counts_no_gets() {
    let (f, m) = fake();
    let p = Pool::builder(m).min(3).max(5).eager(false).build().unwrap();
    p.start().await.unwrap();
    assert_eq!(check_pool(&p).idle, 3);
    assert_eq!(f.create.calls(), 3);
    let m = p.metrics();
    assert_eq!((m.gets, m.gets_waited, m.creates), (0, 0, 3));
    assert_eq!(m.wait_time.count, 0);
}

/// A closed pool ignores `resize`; an open one reports its new `max` in
/// `MaxReached`.
#[tokio::test(start_paused = true)]
async fn resize_is_ignored_after_close_and_max_reached_reports_the_new_max() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(2).build().unwrap();
    p.resize(3).unwrap();
    let mut events = p.events();
    let held = (
        p.get().await.unwrap(),
        p.get().await.unwrap(),
        p.get().await.unwrap(),
    );
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(drop) });
    let mut max = None;
    while let Ok(Some(ev)) = tokio::time::timeout(ms(10), events.recv()).await {
        if let aquifer::PoolEvent::MaxReached { max: m, .. } = ev {
            max = Some(m);
        }
    }
    assert_eq!(max, Some(3));
    drop(held);
    waiter.await.unwrap().unwrap();

    p.close().await;
    p.resize(10).unwrap();
    let s = p.status();
    assert_eq!((s.max, s.spare), (3, 0));
}
