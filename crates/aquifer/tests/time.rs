//! Time-driven behaviour under paused Tokio time: eviction, lifetime,
//! keepalive, leak detection, backoff and a database that is down.

mod common;

use std::error::Error as _;
use std::sync::atomic::Ordering;

use aquifer::{Clock, Pool, PoolError, PoolEvent};
use common::*;

async fn take_all(p: &Pool<FakeManager>, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(p.get().await.unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_evicts_but_never_below_min() {
    let (f, m) = fake();
    let p = Pool::builder(m)
        .min(2)
        .max(5)
        .idle_timeout(ms(10_000))
        .eviction_interval(ms(1_000))
        .build()
        .unwrap();
    take_all(&p, 5).await;
    assert_eq!(check_pool(&p).idle, 5);
    tokio::time::sleep(ms(9_000)).await;
    assert_eq!(check_pool(&p).idle, 5, "not idle long enough yet");
    tokio::time::sleep(ms(2_100)).await;
    settle().await;
    let s = check_pool(&p);
    assert_eq!((s.size, s.idle), (2, 2), "{s:?}");
    assert_eq!(p.metrics().evictions.idle, 3);
    assert_eq!(f.destroyed.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn soft_idle_timeout_only_trims_the_surplus() {
    let (_, m) = fake();
    let p = Pool::builder(m)
        .min(1)
        .max(4)
        .idle_timeout(None)
        .soft_idle_timeout(ms(5_000))
        .eviction_interval(ms(500))
        .build()
        .unwrap();
    take_all(&p, 4).await;
    tokio::time::sleep(ms(6_000)).await;
    settle().await;
    let s = check_pool(&p);
    assert_eq!((s.size, s.idle), (1, 1), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn tests_per_eviction_run_bounds_each_run() {
    let (_, m) = fake();
    let p = Pool::builder(m)
        .max(6)
        .idle_timeout(ms(1_000))
        .eviction_interval(ms(10_000))
        .tests_per_eviction_run(2)
        .build()
        .unwrap();
    take_all(&p, 6).await;
    tokio::time::sleep(ms(10_001)).await;
    settle().await;
    assert_eq!(check_pool(&p).idle, 4, "one run examined two objects");
    tokio::time::sleep(ms(10_000)).await;
    settle().await;
    assert_eq!(check_pool(&p).idle, 2);
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_is_jittered_so_objects_do_not_expire_together() {
    let (_, m) = fake();
    let p = Pool::builder(m)
        .max(40)
        .max_lifetime(ms(100_000))
        .idle_timeout(None)
        .eviction_interval(ms(100))
        .build()
        .unwrap();
    take_all(&p, 40).await;
    tokio::time::sleep(ms(97_400)).await;
    settle().await;
    assert_eq!(
        check_pool(&p).size,
        40,
        "nothing expires before 97.5% of the lifetime"
    );
    tokio::time::sleep(ms(1_350)).await; // 98.75%: halfway through the jitter window
    settle().await;
    let left = check_pool(&p).size;
    assert!(
        left > 0 && left < 40,
        "expiry is spread out, {left} of 40 left halfway"
    );
    tokio::time::sleep(ms(1_400)).await;
    settle().await;
    assert_eq!(check_pool(&p).size, 0);
    assert_eq!(p.metrics().evictions.lifetime, 40);
}

#[tokio::test(start_paused = true)]
async fn an_expired_object_is_not_handed_out_or_taken_back() {
    let (_, m) = fake();
    let p = Pool::builder(m)
        .max(2)
        .max_lifetime(ms(1_000))
        .lifetime_jitter(0.0)
        .eviction_interval(ms(3_600_000))
        .build()
        .unwrap();
    let a = p.get().await.unwrap();
    tokio::time::sleep(ms(1_000)).await;
    drop(a); // expired while held: destroyed on return
    settle().await;
    assert_eq!(check_pool(&p).size, 0);
    let b = p.get().await.unwrap();
    assert_eq!(b.obj.id, 2);
    drop(b);
    tokio::time::sleep(ms(1_000)).await;
    let c = p.get().await.unwrap(); // the idle one expired: skipped on checkout
    assert_eq!(c.obj.id, 3);
    assert_eq!(p.metrics().evictions.lifetime, 2);
}

#[tokio::test(start_paused = true)]
async fn keepalive_validates_idle_objects_and_drops_dead_ones() {
    let (f, m) = fake();
    let p = Pool::builder(m)
        .max(3)
        .keepalive_interval(ms(2_000))
        .validate_on_borrow(false)
        .build()
        .unwrap();
    take_all(&p, 3).await;
    tokio::time::sleep(ms(2_100)).await;
    settle().await;
    assert_eq!(f.validate.calls(), 3);
    assert_eq!(check_pool(&p).idle, 3);
    f.validate.then(&[Step::Err]);
    tokio::time::sleep(ms(2_000)).await;
    settle().await;
    let s = check_pool(&p);
    assert_eq!((s.size, s.idle), (2, 2), "{s:?}");
    assert_eq!(p.metrics().validation_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn validate_on_borrow_skips_recently_used_objects() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap(); // 500 ms default
    drop(p.get().await.unwrap());
    tokio::time::sleep(ms(100)).await;
    drop(p.get().await.unwrap());
    assert_eq!(f.validate.calls(), 0, "used 100 ms ago: no check");
    tokio::time::sleep(ms(600)).await;
    drop(p.get().await.unwrap());
    assert_eq!(f.validate.calls(), 1);
    f.validate.then(&[Step::Err]);
    tokio::time::sleep(ms(600)).await;
    let o = p.get().await.unwrap();
    assert_eq!(
        o.obj.id, 2,
        "the object that failed validation was replaced"
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_object_past_the_threshold_is_reported_as_a_leak() {
    let (_, m) = fake();
    let p = Pool::builder(m)
        .max(2)
        .leak_detection_threshold(ms(2_000))
        .build()
        .unwrap();
    let mut events = p.events();
    let quick = p.get().await.unwrap();
    drop(quick);
    let leaked = p.get().await.unwrap(); // this line is named in the report
    let line = line!() - 1;
    tokio::time::sleep(ms(3_100)).await;
    settle().await;
    let mut found = None;
    while let Ok(Some(ev)) = tokio::time::timeout(ms(1), events.recv()).await {
        if let PoolEvent::LeakSuspected { id, held, location } = ev {
            found = Some((id, held, location));
        }
    }
    let (id, held, location) = found.expect("a leak event");
    assert_eq!(id, leaked.id());
    assert!(held >= ms(2_000));
    assert!(
        location.ends_with(&format!("time.rs:{line}:31"))
            || location.contains(&format!("time.rs:{line}")),
        "{location}"
    );
    assert_eq!(p.metrics().leaks_suspected, 1, "reported once");
    tokio::time::sleep(ms(3_000)).await;
    assert_eq!(p.metrics().leaks_suspected, 1, "not reported again");
}

#[tokio::test(start_paused = true)]
async fn creates_back_off_exponentially_until_the_gets_deadline() {
    let (f, m) = fake();
    f.create.set(Step::Err);
    let backoff = aquifer::Backoff {
        jitter: 0.0,
        ..Default::default()
    };
    let p = Pool::builder(m)
        .max(2)
        .backoff(backoff)
        .acquire_timeout(ms(1_000))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = p.get().await.unwrap_err();
    // Attempts at 0, 100, 300 and 700 ms; the next would be at 1.5 s. The
    // get fails at its deadline, not at any count of failures.
    assert_eq!(start.elapsed(), ms(1_000));
    assert_eq!(f.create.calls(), 4);
    assert!(err.is_timeout(), "{err}");
    let source = err.source().expect("the create error is the source");
    assert!(
        source
            .to_string()
            .contains("password authentication failed"),
        "{source}"
    );
    assert!(err.create_error().unwrap().backend().is_some());
    assert_eq!(p.metrics().create_failures, 4);
}

#[tokio::test(start_paused = true)]
async fn a_down_database_fails_gets_at_the_timeout_with_the_cause_and_never_busy_loops() {
    let (f, m) = fake();
    f.create.set(Step::Err);
    let p = Pool::builder(m)
        .max(4)
        .min(2)
        .acquire_timeout(ms(3_000))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = p.get().await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        ms(3_000),
        "fails at the acquire timeout, not later"
    );
    let Some(cause) = (match &err {
        PoolError::Timeout(t) => t.last_create_error.as_ref(),
        _ => None,
    }) else {
        panic!("expected a timeout carrying the create error, got {err:?}");
    };
    assert!(cause.to_string().contains("password authentication failed"));
    // The message names this layer; the cause comes once, as the source.
    let chain = aquifer::error_chain(&err);
    assert_eq!(
        chain,
        "timed out after 3 s waiting for a pooled object while creates were failing: \
         create failed: password authentication failed"
    );
    // A minute of outage with background refills running: attempts stay
    // logarithmic then capped by backoff.max (5 s), per create slot.
    tokio::time::sleep(ms(60_000)).await;
    let attempts = f.create.calls();
    assert!(
        attempts <= 2 * (8 + 60 / 5),
        "{attempts} attempts in a minute is a busy loop"
    );
    // The database comes back: the pool recovers within backoff.max.
    f.create.set(Step::Ok);
    tokio::time::sleep(ms(5_100)).await;
    settle().await;
    let s = check_pool(&p);
    assert_eq!(s.idle, 2, "refilled to min after recovery: {s:?}");
    assert!(p.get().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn create_timeout_bounds_a_hanging_create() {
    let (f, m) = fake();
    f.create.then(&[Step::Never]);
    let p = Pool::builder(m)
        .max(1)
        .create_timeout(ms(500))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let o = p.get().await.unwrap();
    // 500 ms timeout, then the first backoff of 100 ms (less jitter).
    assert!(
        start.elapsed() >= ms(580) && start.elapsed() <= ms(600),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(o.obj.id, 1);
    assert_eq!(p.metrics().create_failures, 1);
}

/// The default clock in real time: a few short real sleeps, since the
/// coarse clock does not follow paused time.
#[tokio::test]
async fn the_default_coarse_clock_drives_lifetime_validation_and_metrics() {
    let real = |n| std::thread::sleep(ms(n));
    let (f, m) = fake();
    let p = Pool::builder(m)
        .max(1)
        .validate_if_idle_for(ms(40))
        .max_lifetime(ms(400))
        .lifetime_jitter(0.0)
        .eviction_interval(ms(3_600_000))
        .build()
        .unwrap();
    assert_eq!(p.config().clock, Clock::Auto); // coarse: the clock is not paused
    drop(p.get().await.unwrap());
    drop(p.get().await.unwrap());
    assert_eq!(f.validate.calls(), 0, "used just now: no check");
    real(80);
    let held = p.get().await.unwrap();
    assert_eq!(f.validate.calls(), 1, "idle 80 ms: checked");
    real(30);
    drop(held);
    let usage = p.metrics().usage_time;
    assert!(usage.max >= ms(20) && usage.max <= ms(200), "{usage:?}");
    real(400);
    let fresh = p.get().await.unwrap();
    assert_eq!(fresh.obj.id, 2, "past its lifetime: replaced");
}

#[tokio::test(start_paused = true)]
async fn with_the_default_clock_waits_and_checks_still_follow_paused_time() {
    let (f, m) = fake();
    let p = Pool::builder(m)
        .max(1)
        .validate_if_idle_for(ms(0))
        .validate_timeout(ms(5_000))
        .build()
        .unwrap();
    let held = p.get().await.unwrap();
    // Long after the pool started: the coarse timeline is far behind.
    tokio::time::sleep(ms(60_000)).await;
    let before = tokio::time::Instant::now();
    let err = p.get_timeout(ms(2_000)).await.unwrap_err();
    assert!(matches!(err, PoolError::Timeout { .. }), "{err}");
    assert_eq!(tokio::time::Instant::now() - before, ms(2_000));
    drop(held);
    // A check that takes 1 s of paused time fits in its 5 s.
    f.validate.then(&[Step::Slow(ms(1_000))]);
    tokio::time::sleep(ms(60_000)).await;
    let o = p.get().await.unwrap();
    assert_eq!((o.obj.id, f.validate.calls()), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn try_get_gives_each_check_its_own_time() {
    let (f, m) = fake();
    let p = Pool::builder(m)
        .max(2)
        .validate_if_idle_for(ms(0))
        .validate_timeout(ms(1_000))
        .build()
        .unwrap();
    take_all(&p, 2).await;
    // The first idle object's check hangs until its timeout; the second
    // one's takes 100 ms and must get its own second, not what is left.
    f.validate.then(&[Step::Never, Step::Slow(ms(100))]);
    let o = p
        .try_get()
        .await
        .expect("the second object passes its check");
    assert_eq!(o.obj.id, 2);
    assert_eq!(p.metrics().validation_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn held_for_and_usage_count_from_each_checkout_not_from_creation() {
    let (_f, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let first = p.get().await.unwrap();
    tokio::time::sleep(ms(5_000)).await;
    assert_eq!(first.held_for(), ms(5_000));
    drop(first);
    tokio::time::sleep(ms(3_000)).await;
    // The same object again: its checkout time starts over.
    let again = p.get().await.unwrap();
    assert_eq!(again.metadata().use_count(), 2);
    assert_eq!(again.held_for(), ms(0));
    tokio::time::sleep(ms(1_000)).await;
    assert_eq!(again.held_for(), ms(1_000));
    drop(again);
    let usage = p.metrics().usage_time;
    assert_eq!(usage.count, 2);
    assert!(usage.max >= ms(5_000) && usage.max < ms(5_700), "{usage:?}");
    assert!(usage.p50 >= ms(1_000) && usage.p50 < ms(1_200), "{usage:?}");
    // Destroyed or detached instead of returned: still counted, from
    // their own checkouts.
    let destroyed = p.get().await.unwrap();
    tokio::time::sleep(ms(20_000)).await;
    destroyed.destroy();
    let detached = p.get().await.unwrap();
    tokio::time::sleep(ms(40_000)).await;
    drop(detached.detach());
    let usage = p.metrics().usage_time;
    assert_eq!(usage.count, 4);
    assert!(
        usage.max >= ms(40_000) && usage.max < ms(45_000),
        "{usage:?}"
    );
    assert!(usage.p99 >= ms(40_000), "{usage:?}");
}

/// An error the manager calls permanent (a wrong password) fails every
/// waiter at once, with no retry; gets until the backoff runs out fail at
/// once with it, without trying (one attempt per backoff step, however
/// many callers ask); the first get after it tries again.
#[tokio::test(start_paused = true)]
async fn a_permanent_create_error_fails_every_waiter_at_once() {
    let (f, m) = fake();
    f.create.set(Step::Err);
    f.permanent.store(true, std::sync::atomic::Ordering::SeqCst);
    let p = Pool::builder(m)
        .max(4)
        .acquire_timeout(ms(5_000))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let (a, b) = tokio::join!(p.get(), p.get());
    assert_eq!(
        start.elapsed(),
        ms(0),
        "no backoff, no waiting out the timeout"
    );
    for err in [a.unwrap_err(), b.unwrap_err()] {
        assert!(matches!(err, PoolError::Create(_)), "{err}");
        assert!(
            err.source()
                .unwrap()
                .to_string()
                .contains("password authentication failed"),
            "{err}"
        );
    }
    let before = f.create.calls();
    assert!(before <= 2, "{before} creates for two callers");
    for _ in 0..100 {
        let err = p.get().await.unwrap_err();
        assert!(matches!(err, PoolError::Create(_)), "{err}");
        assert!(
            err.source().unwrap().to_string().contains("password"),
            "{err}"
        );
    }
    assert_eq!(f.create.calls(), before, "no attempt within the backoff");
    assert_eq!(start.elapsed(), ms(0));
    tokio::time::advance(ms(101)).await;
    let err = p.get().await.unwrap_err();
    assert!(matches!(err, PoolError::Create(_)), "{err}");
    assert_eq!(f.create.calls(), before + 1, "the first get after it tried");
    // Fixed on the server side: the first get after the next backoff works.
    f.create.set(Step::Ok);
    tokio::time::advance(ms(201)).await;
    drop(p.get().await.unwrap());
    check_pool(&p);
}

/// A manager whose new objects are broken at once (a server that accepts
/// and drops connections): each counts as a failed create, so creates back
/// off, and the get fails at its timeout with the cause.
#[tokio::test(start_paused = true)]
async fn always_broken_new_objects_back_off_and_the_get_fails_with_the_cause() {
    let (f, m) = fake();
    f.born_broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let backoff = aquifer::Backoff {
        jitter: 0.0,
        ..Default::default()
    };
    let p = Pool::builder(m)
        .max(4)
        .backoff(backoff)
        .acquire_timeout(ms(300))
        .build()
        .unwrap();
    let mut events = p.events();
    let start = tokio::time::Instant::now();
    let err = p.get().await.unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    assert!(err.is_timeout(), "{err}");
    let cause = err.source().expect("the cause is the source").to_string();
    assert!(cause.contains("broken at checkout"), "{cause}");
    // Backoff 100 ms, doubling: attempts at 0, 100 and 300 ms at most, a
    // couple more if creates run side by side.
    let creates = f.create.calls();
    assert!((2..=6).contains(&creates), "{creates} creates in 300 ms");
    // Every new object but one the get no longer waited for failed.
    assert!(p.metrics().create_failures as usize + 1 >= creates);
    let mut failed = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(ms(1), events.recv()).await {
        failed += usize::from(matches!(ev, aquifer::PoolEvent::CreateFailed { .. }));
    }
    assert!(failed >= 2, "{failed} CreateFailed events");
}
