//! Cancel safety: a `get` dropped at any await point leaks no slot and
//! loses no object, for every combination of manager behaviour.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use aquifer::Pool;
use common::*;

#[tokio::test(start_paused = true)]
async fn cancelled_while_queued() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let held = p.get().await.unwrap();
    assert!(tokio::time::timeout(ms(5), p.get()).await.is_err());
    let s = check_pool(&p);
    assert_eq!(s.waiting, 0, "the cancelled caller left the queue");
    drop(held);
    let s = check_pool(&p);
    assert_eq!((s.idle, s.borrowed), (1, 0));
    assert_eq!(p.metrics().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn an_object_handed_to_a_caller_that_goes_away_is_not_lost() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let held = p.get().await.unwrap();
    let mut fut = Box::pin(p.get());
    // Poll once so that it queues.
    assert!(futures_poll(&mut fut).is_none());
    drop(held); // handed to the queued caller...
    drop(fut); // ...who never looks at it.
    let s = check_pool(&p);
    assert_eq!((s.idle, s.borrowed, s.waiting), (1, 0, 0), "{s:?}");
    assert!(p.try_get().await.is_ok());
}

fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_creating_the_object_goes_idle() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(100)));
    let p = Pool::builder(m).max(2).build().unwrap();
    assert!(tokio::time::timeout(ms(10), p.get()).await.is_err());
    assert_eq!(check_pool(&p).creating, 1);
    tokio::time::sleep(ms(100)).await;
    settle().await;
    let s = check_pool(&p);
    assert_eq!((s.size, s.idle, s.creating), (1, 1, 0));
    assert_eq!(f.alive.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_validating_destroys_the_object_and_frees_the_slot() {
    let (f, m) = fake();
    let p = Pool::builder(m)
        .max(1)
        .validate_if_idle_for(ms(0))
        .build()
        .unwrap();
    drop(p.get().await.unwrap()); // first checkout skips validation (fresh)
    f.validate.set(Step::Never);
    assert!(tokio::time::timeout(ms(10), p.get()).await.is_err());
    settle().await;
    let s = check_pool(&p);
    assert_eq!(s.size, 0, "{s:?}");
    assert_eq!(f.destroyed.load(Ordering::SeqCst), 1);
    f.validate.set(Step::Ok);
    assert_eq!(p.get().await.unwrap().obj.id, 2);
}

/// deadpool's `managed_cancellation.rs` idea, widened: every combination of
/// create / validate behaviour, many callers cancelled at many points, and
/// the books must balance at every step and settle to nothing borrowed.
#[tokio::test(start_paused = true)]
async fn every_combination_of_outcomes_and_cancellation_points() {
    use Step::*;
    let steps = [Ok, Err, Slow(ms(7)), Never];
    let aborts = [0u64, 1, 3, 6, 8, 15, 40];
    for create in steps {
        for validate in steps {
            let (f, m) = fake();
            let p = Pool::builder(m)
                .max(3)
                .validate_if_idle_for(Duration::ZERO)
                .create_timeout(ms(20))
                .validate_timeout(ms(20))
                .acquire_timeout(ms(30))
                .build()
                .unwrap();
            // Seed some idle objects so validation paths are reached.
            f.create.set(Ok);
            let seeded: Vec<_> = (0..2).map(|_| p.get()).collect();
            let mut objs = Vec::new();
            for s in seeded {
                objs.push(s.await.unwrap());
            }
            drop(objs);
            f.create.set(create);
            f.validate.set(validate);
            let mut tasks = Vec::new();
            for (i, abort) in aborts.iter().cycle().take(24).enumerate() {
                let p = p.clone();
                let abort = ms(*abort);
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(ms(i as u64 % 5)).await;
                    if let Result::Ok(Result::Ok(o)) = tokio::time::timeout(abort, p.get()).await {
                        tokio::time::sleep(ms(2)).await;
                        drop(o);
                    }
                }));
            }
            // Walk time forward in small steps, checking the books each time.
            for _ in 0..100 {
                tokio::time::sleep(ms(1)).await;
                check_pool(&p);
            }
            for t in tasks {
                t.await.unwrap();
            }
            // Let creates, destroys and backoff run out.
            tokio::time::sleep(ms(6000)).await;
            settle().await;
            let s = check_pool(&p);
            let ctx = format!("create {create:?}, validate {validate:?}: {s:?}");
            assert_eq!(s.borrowed, 0, "{ctx}");
            assert_eq!(s.waiting, 0, "{ctx}");
            if create != Never {
                assert_eq!(s.creating, 0, "{ctx}");
            }
            // Every object the manager made is either in the pool or was dropped.
            assert_eq!(f.alive.load(Ordering::SeqCst), s.idle + s.pending, "{ctx}");
            // And the pool still works once the manager behaves.
            f.create.set(Ok);
            f.validate.set(Ok);
            let o = p.get_timeout(ms(10_000)).await;
            assert!(o.is_ok(), "{ctx}: {:?}", o.err());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn aborting_tasks_mid_get_leaks_nothing() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(3)));
    let p = Pool::builder(m).max(4).build().unwrap();
    for round in 0..20u64 {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    let o = p.get().await.unwrap();
                    tokio::time::sleep(ms(1)).await;
                    drop(o);
                })
            })
            .collect();
        tokio::time::sleep(ms(round % 4)).await;
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        check_pool(&p);
    }
    tokio::time::sleep(ms(100)).await;
    settle().await;
    let s = check_pool(&p);
    assert_eq!((s.borrowed, s.waiting, s.creating), (0, 0, 0), "{s:?}");
    assert_eq!(f.alive.load(Ordering::SeqCst), s.idle);
}
