//! Drain, close, clear, resize, retain, free, pending objects, reset on
//! return, events, metrics and panics.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use aquifer::{Operation, Pool, PoolError, PoolEvent, Reason};
use common::*;

fn destroyed(f: &Fake) -> usize {
    f.destroyed.load(Ordering::SeqCst)
}

/// A pool whose creates fail waits out its backoff before the next try;
/// a drain (and so a graceful shutdown) does not wait for that try.
#[tokio::test(start_paused = true)]
async fn drain_does_not_wait_out_a_create_backoff() {
    let (f, m) = fake();
    f.create.set(Step::Err);
    let backoff = aquifer::Backoff {
        min: Duration::from_secs(30),
        max: Duration::from_secs(30),
        factor: 1.0,
        jitter: 0.0,
    };
    let p = Pool::builder(m)
        .min(2)
        .max(4)
        .backoff(backoff)
        .build()
        .unwrap();
    settle().await;
    assert!(p.status().creating > 0, "{:?}", p.status());
    let t = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(1), p.drain())
        .await
        .expect("the drain waited for the backoff");
    assert!(t.elapsed() < ms(10), "{:?}", t.elapsed());
    assert_eq!(check_pool(&p).size, 0);
    p.close().await;
}

#[tokio::test(start_paused = true)]
async fn drain_serves_waiters_refuses_newcomers_and_waits_for_returns() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let held = p.get().await.unwrap();
    let p2 = p.clone();
    let waiter = tokio::spawn(async move {
        let o = p2.get().await.unwrap();
        tokio::time::sleep(ms(50)).await;
        drop(o);
    });
    settle().await;
    let p3 = p.clone();
    let drain = tokio::spawn(async move { p3.drain().await });
    settle().await;
    assert!(matches!(p.get().await, Err(PoolError::Draining)));
    assert!(!drain.is_finished());
    drop(held);
    waiter.await.unwrap(); // the queued caller was still served
    drain.await.unwrap();
    let s = check_pool(&p);
    assert_eq!((s.borrowed, s.idle), (0, 1));
    p.close().await;
    assert!(p.is_closed());
}

#[tokio::test(start_paused = true)]
async fn close_fails_waiters_destroys_idle_and_later_returns() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(2).build().unwrap();
    let a = p.get().await.unwrap();
    let b = p.get().await.unwrap();
    drop(b);
    let held = p.get().await.unwrap();
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|_| ()) });
    settle().await;
    p.close().await;
    assert!(matches!(waiter.await.unwrap(), Err(PoolError::Closed)));
    assert!(matches!(p.get().await, Err(PoolError::Closed)));
    assert_eq!(destroyed(&f), 0, "nothing was idle");
    drop(a);
    drop(held);
    settle().await;
    assert_eq!(destroyed(&f), 2);
    assert_eq!(check_pool(&p).size, 0);
    assert_eq!(f.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn clear_destroys_idle_and_refills_to_min() {
    let (f, m) = fake();
    let p = Pool::builder(m).min(2).max(4).build().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(p.get().await.unwrap());
    }
    let keep = held.pop().unwrap();
    drop(held);
    assert_eq!(p.clear().await, 2);
    assert_eq!(destroyed(&f), 2);
    settle().await;
    let s = check_pool(&p);
    assert_eq!(
        (s.size, s.borrowed, s.idle),
        (2, 1, 1),
        "refilled to min: {s:?}"
    );
    drop(keep);
}

#[tokio::test(start_paused = true)]
async fn resize_shrinks_now_and_on_return_and_grows_for_waiters() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(4).build().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(p.get().await.unwrap());
    }
    drop(held.split_off(2)); // two idle, two borrowed
    p.resize(1).unwrap();
    settle().await;
    // Borrowed objects stay above the new max until they come back.
    let s = p.status();
    assert_eq!((s.max, s.size, s.idle, s.borrowed), (1, 2, 0, 2), "{s:?}");
    drop(held.pop());
    settle().await;
    assert_eq!(check_pool(&p).size, 1, "the return above max was destroyed");
    assert_eq!(destroyed(&f), 3);
    // Grow again while a caller waits: it is served by a new object.
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|o| o.obj.id) });
    settle().await;
    assert_eq!(p.status().waiting, 1);
    p.resize(2).unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 5);
    assert!(p.resize(0).is_err());
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn resize_below_min_is_refused() {
    let (_, m) = fake();
    let p = Pool::builder(m).min(2).max(3).build().unwrap();
    assert_eq!(
        p.resize(1).unwrap_err(),
        aquifer::BuildError::MinAboveMax { min: 2, max: 1 }
    );
}

#[tokio::test(start_paused = true)]
async fn retain_and_free_trim_idle_objects() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(5).build().unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(p.get().await.unwrap());
    }
    held[4].obj.broken.store(false, Ordering::SeqCst);
    let odd_broken = held[1].obj.broken.clone();
    drop(held);
    assert_eq!(p.retain(|c, _| c.obj.id != 3).await, 1);
    assert_eq!(check_pool(&p).idle, 4);
    odd_broken.store(true, Ordering::SeqCst);
    // Keep two healthy: the broken one and one surplus go.
    assert_eq!(p.free(2).await, 2);
    let s = check_pool(&p);
    assert_eq!(s.idle, 2);
    assert_eq!(destroyed(&f), 3);
}

#[tokio::test(start_paused = true)]
async fn objects_that_fail_to_close_are_kept_as_pending() {
    let (f, m) = fake();
    let p = Pool::builder(m)
        .max(3)
        .destroy_timeout(ms(100))
        .build()
        .unwrap();
    let a = p.get().await.unwrap();
    let b = p.get().await.unwrap();
    f.destroy.then(&[Step::Err, Step::Never]);
    a.destroy();
    b.destroy();
    tokio::time::sleep(ms(150)).await;
    settle().await;
    let pending = p.pending();
    assert_eq!(pending.len(), 2);
    assert_eq!(p.status().pending, 2);
    assert!(pending.iter().any(|x| x.error.contains("destroy failed")));
    assert!(pending.iter().any(|x| x.error.contains("did not finish")));
    assert_eq!(p.metrics().destroy_failures, 2);
    assert_eq!(
        f.alive.load(Ordering::SeqCst),
        2,
        "nothing was silently dropped"
    );
    // Retry: this time one fails again.
    f.destroy.then(&[Step::Err]);
    assert_eq!(p.close_pending(false).await, 1);
    assert_eq!(p.pending()[0].attempts, 2);
    assert_eq!(f.alive.load(Ordering::SeqCst), 1);
    assert_eq!(p.close_pending(true).await, 0);
    assert_eq!(f.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn dirty_objects_are_reset_on_return_or_destroyed() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let mut a = p.get().await.unwrap();
    a.obj.dirty = true;
    drop(a);
    settle().await;
    assert_eq!(f.reset.calls(), 1);
    let mut b = p.get().await.unwrap();
    assert_eq!(b.obj.id, 1, "reset succeeded: reused");
    assert!(!b.obj.dirty);
    b.obj.dirty = true;
    f.reset.then(&[Step::Err]);
    drop(b);
    settle().await;
    let c = p.get().await.unwrap();
    assert_eq!(c.obj.id, 2, "reset failed: replaced");
    assert_eq!(p.metrics().reset_failures, 1);
    // A caller waiting while the reset runs gets the object afterwards.
    let mut c = c;
    c.obj.dirty = true;
    f.reset.then(&[Step::Slow(ms(30))]);
    let p2 = p.clone();
    let w = tokio::spawn(async move { p2.get().await.map(|o| o.obj.id) });
    settle().await;
    drop(c);
    assert_eq!(w.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn broken_objects_are_dropped_on_return_and_on_checkout() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(2).build().unwrap();
    let a = p.get().await.unwrap();
    a.obj.broken.store(true, Ordering::SeqCst);
    drop(a);
    settle().await;
    assert_eq!(check_pool(&p).size, 0);
    let b = p.get().await.unwrap();
    let flag = b.obj.broken.clone();
    drop(b);
    flag.store(true, Ordering::SeqCst); // breaks while idle
    assert_eq!(p.get().await.unwrap().obj.id, 3);
    assert_eq!(p.metrics().evictions.broken, 2);
}

#[tokio::test(start_paused = true)]
async fn events_report_the_life_of_an_object() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let mut ev = p.events();
    let a = p.get().await.unwrap();
    tokio::time::sleep(ms(5)).await;
    a.destroy();
    f.create.then(&[Step::Err]);
    settle().await;
    let _ = p.get().await.unwrap();
    settle().await;
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), ev.recv()).await {
        seen.push(e);
    }
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            PoolEvent::Created { .. } => "created",
            PoolEvent::Acquired { .. } => "acquired",
            PoolEvent::Released { .. } => "released",
            PoolEvent::Destroyed {
                reason: Reason::Caller,
                ..
            } => "destroyed",
            PoolEvent::CreateFailed { .. } => "create_failed",
            PoolEvent::MaxReached { .. } => "max_reached",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "acquired",
            "destroyed",
            "create_failed",
            "created",
            "acquired",
            "released"
        ],
        "{seen:#?}"
    );
}

/// The `MaxReached` events a listener has buffered, as `waiting` counts.
fn max_reached(ev: &mut aquifer::EventStream) -> Vec<usize> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut seen = Vec::new();
    while let std::task::Poll::Ready(Some(e)) =
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut *ev), &mut cx)
    {
        if let PoolEvent::MaxReached { max, waiting } = e {
            assert_eq!(max, 2);
            seen.push(waiting);
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_saturated_pool_reports_max_reached_at_most_once_a_second() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(2).build().unwrap();
    let mut ev = p.lifecycle_events();
    let held = [p.get().await.unwrap(), p.get().await.unwrap()];
    assert_eq!(max_reached(&mut ev), [] as [usize; 0], "nobody queued yet");
    let queue = |n: usize| {
        (0..n)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.get().await.map(drop) })
            })
            .collect::<Vec<_>>()
    };
    let mut waiters = queue(10);
    settle().await;
    assert_eq!(
        max_reached(&mut ev),
        [1],
        "the first caller to queue reports"
    );
    tokio::time::advance(ms(999)).await;
    waiters.extend(queue(5));
    settle().await;
    assert_eq!(max_reached(&mut ev), [] as [usize; 0], "within the second");
    tokio::time::advance(ms(1)).await;
    waiters.extend(queue(1));
    settle().await;
    assert_eq!(max_reached(&mut ev), [16], "a second later, with the count");
    drop(held);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!(max_reached(&mut ev), [] as [usize; 0], "the queue drained");
}

#[tokio::test(start_paused = true)]
async fn a_lagging_listener_loses_the_oldest_events_and_never_blocks() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(1).event_capacity(4).build().unwrap();
    let mut slow = p.events();
    for _ in 0..100 {
        drop(p.get().await.unwrap());
    }
    let first = slow.recv().await.unwrap();
    assert!(matches!(
        first,
        PoolEvent::Acquired { .. } | PoolEvent::Released { .. }
    ));
    assert!(slow.lost() >= 190, "lost {}", slow.lost());
}

#[tokio::test(start_paused = true)]
async fn metrics_count_and_time_what_happened() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(20)));
    let p = Pool::builder(m).max(1).build().unwrap();
    let a = p.get().await.unwrap(); // waits 20 ms for the create
    tokio::time::sleep(ms(10)).await;
    drop(a);
    for _ in 0..3 {
        let o = p.get().await.unwrap();
        tokio::time::sleep(ms(10)).await;
        drop(o);
    }
    let m = p.metrics();
    assert_eq!(m.gets, 4);
    assert_eq!(m.gets_waited, 1);
    assert_eq!(m.creates, 1);
    assert_eq!(m.create_time.count, 1);
    assert!(
        m.create_time.p50 >= ms(20) && m.create_time.p50 <= ms(23),
        "{:?}",
        m.create_time
    );
    assert_eq!(m.wait_time.count, 4);
    assert_eq!(m.wait_time.p50, Duration::ZERO);
    assert!(m.wait_time.max >= ms(20), "{:?}", m.wait_time);
    assert_eq!(m.usage_time.count, 4);
    assert!(
        m.usage_time.p50 >= ms(10) && m.usage_time.p99 <= ms(12),
        "{:?}",
        m.usage_time
    );
}

#[tokio::test(start_paused = true)]
async fn panics_in_callers_and_managers_do_not_poison_the_pool() {
    let (f, m) = fake();
    let p = Pool::builder(m)
        .max(1)
        .validate_if_idle_for(Duration::ZERO)
        .build()
        .unwrap();
    let p2 = p.clone();
    let r = tokio::spawn(async move {
        let _o = p2.get().await.unwrap();
        panic!("user code panics while holding an object");
    })
    .await;
    assert!(r.is_err());
    let s = check_pool(&p);
    assert_eq!((s.idle, s.borrowed), (1, 0), "returned during unwinding");
    // A panicking validate counts as a failed validation.
    f.validate.then(&[Step::Panic]);
    let o = p.get().await.unwrap();
    assert_eq!(o.obj.id, 2);
    drop(o);
    // A panicking create counts as a failed create and is retried.
    p.clear().await;
    f.create.then(&[Step::Panic]);
    let o = p.get().await.unwrap();
    assert_eq!(o.obj.id, 3);
    assert_eq!(p.metrics().create_failures, 1);
    // A panicking reset destroys the object.
    let mut o = o;
    o.obj.dirty = true;
    f.reset.then(&[Step::Panic]);
    drop(o);
    settle().await;
    assert_eq!(p.get().await.unwrap().obj.id, 4);
    check_pool(&p);
}

#[tokio::test(start_paused = true)]
async fn drivers_report_failed_work_as_events_and_metrics() {
    let (_, m) = fake();
    let p = Pool::builder(m).build().unwrap();
    let mut ev = p.events();
    p.report(Operation::Commit, "could not serialize access");
    p.report(Operation::Query, "syntax error at or near \"SELEC\"");
    assert_eq!(
        ev.recv().await,
        Some(PoolEvent::OperationFailed {
            op: Operation::Commit,
            error: "could not serialize access".into()
        })
    );
    assert!(matches!(
        ev.recv().await,
        Some(PoolEvent::OperationFailed {
            op: Operation::Query,
            ..
        })
    ));
    assert_eq!(p.metrics().operation_failures, 2);
    assert_eq!(Operation::Transaction.as_str(), "transaction");
}

#[tokio::test(start_paused = true)]
async fn a_transaction_watch_reports_only_unfinished_transactions() {
    let (_, m) = fake();
    let p = Pool::builder(m).build().unwrap();
    let mut ev = p.events();
    p.watch_transaction().finished();
    drop(p.watch_transaction());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _watch = p.watch_transaction();
        panic!("user code");
    }));
    assert!(panicked.is_err());
    let mut reasons = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), ev.recv()).await {
        if let PoolEvent::OperationFailed { op, error } = e {
            assert_eq!(op, Operation::Transaction);
            reasons.push(error);
        }
    }
    assert_eq!(
        reasons,
        [
            "the transaction was dropped before it finished",
            "the transaction's closure panicked"
        ]
    );
    assert_eq!(p.metrics().operation_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn lifecycle_listeners_do_not_switch_on_per_checkout_events() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let mut quiet = p.lifecycle_events();
    drop(p.get().await.unwrap());
    drop(p.get().await.unwrap());
    f.create.then(&[Step::Err]);
    p.get().await.unwrap().destroy();
    settle().await;
    let _ = p.get().await;
    settle().await;
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), quiet.recv()).await {
        seen.push(e);
    }
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, PoolEvent::Acquired { .. } | PoolEvent::Released { .. })),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|e| matches!(e, PoolEvent::Created { .. })));
    assert!(
        seen.iter()
            .any(|e| matches!(e, PoolEvent::CreateFailed { .. })),
        "{seen:#?}"
    );
    // With a full listener too, checkouts are reported again.
    let mut all = p.events();
    drop(p.get().await.unwrap());
    assert!(matches!(all.recv().await, Some(PoolEvent::Acquired { .. })));
}
