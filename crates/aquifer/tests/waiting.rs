//! The wait queue: order, priorities, timeouts, and waiters taking whichever
//! object frees first.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use aquifer::{Pool, PoolError};
use common::*;

/// Spawns a get that records its tag when served, then holds the object
/// for `hold` (paused time) before returning it.
fn waiter(
    p: &Pool<FakeManager>,
    priority: usize,
    tag: usize,
    order: &Arc<Mutex<Vec<usize>>>,
) -> tokio::task::JoinHandle<()> {
    let (p, order) = (p.clone(), Arc::clone(order));
    tokio::spawn(async move {
        let o = p.get_with_priority(priority).await.unwrap();
        order.lock().unwrap().push(tag);
        tokio::time::sleep(ms(1)).await;
        drop(o);
    })
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order_and_newcomers_do_not_barge() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(1).build().unwrap();
    let held = p.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for tag in 0..5 {
        tasks.push(waiter(&p, 0, tag, &order));
        settle().await; // each is queued before the next arrives
        assert_eq!(p.status().waiting, tag + 1);
    }
    drop(held);
    // While the first waiters are being served, newcomers arrive. Each
    // object is held 1 ms, longer than the fairness interval, so every
    // return hands its object to the longest waiter: the newcomers queue
    // behind the ones already waiting.
    settle().await;
    for tag in 5..8 {
        tasks.push(waiter(&p, 0, tag, &order));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    // The very first get waited for its create; every later one queued too,
    // newcomers included: none took an object past a waiter.
    assert_eq!(p.metrics().gets_waited, 9);
}

#[tokio::test(start_paused = true)]
async fn urgent_priorities_go_first_and_out_of_range_means_lowest() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(1).priority_levels(3).build().unwrap();
    let held = p.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    // (priority, tag): tag says the expected service position.
    // 99 is beyond the 3 levels, so it joins level 2, in arrival order.
    let plan = [(2, 3), (99, 4), (1, 1), (0, 0), (2, 5), (1, 2)];
    let mut tasks = Vec::new();
    for (prio, tag) in plan {
        tasks.push(waiter(&p, prio, tag, &order));
        settle().await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_times_out_at_the_acquire_timeout() {
    let (_, m) = fake();
    let p = Pool::builder(m)
        .max(1)
        .acquire_timeout(ms(250))
        .build()
        .unwrap();
    let held = p.get().await.unwrap();
    let start = tokio::time::Instant::now();
    let err = p.get().await.unwrap_err();
    assert_eq!(start.elapsed(), ms(250));
    match &err {
        PoolError::Timeout(t) => {
            assert_eq!(t.waited, ms(250));
            assert!(t.last_create_error.is_none(), "nothing failed to create");
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let err = p.get_timeout(ms(40)).await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(start.elapsed(), ms(290));
    let s = check_pool(&p);
    assert_eq!(s.waiting, 0);
    assert_eq!(p.metrics().timeouts, 2);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn waiters_take_whichever_object_frees_first() {
    let (f, m) = fake();
    let p = Pool::builder(m).max(4).build().unwrap();
    let held = p.get().await.unwrap();
    // From now on creating an object takes a second.
    f.create.set(Step::Slow(ms(1000)));
    let p2 = p.clone();
    let start = tokio::time::Instant::now();
    let w = tokio::spawn(async move {
        p2.get()
            .await
            .map(|o| (o.id(), tokio::time::Instant::now()))
    });
    settle().await;
    assert_eq!(p.status().creating, 1, "the waiter started a create");
    tokio::time::sleep(ms(10)).await;
    drop(held);
    let (id, at) = w.await.unwrap().unwrap();
    assert_eq!(id, 1, "served by the returned object");
    assert_eq!(at - start, ms(10), "without waiting for the slow create");
    tokio::time::sleep(ms(1000)).await;
    settle().await;
    let s = check_pool(&p);
    assert_eq!(
        (s.size, s.idle, s.creating),
        (2, 2, 0),
        "the finished create went idle"
    );
}

#[tokio::test(start_paused = true)]
async fn a_spike_of_waiters_opens_few_objects() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(150)));
    let p = Pool::builder(m).max(50).build().unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                let o = p.get().await.unwrap();
                tokio::time::sleep(ms(2)).await;
                drop(o);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let made = f.create.calls();
    assert!(
        made <= 8,
        "50 callers with 2 ms of work opened {made} objects"
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_that_needs_many_objects_opens_them_several_at_a_time() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(100)));
    let p = Pool::builder(m).max(12).build().unwrap();
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                let o = p.get().await.unwrap();
                let got = start.elapsed();
                tokio::time::sleep(ms(1000)).await;
                drop(o);
                got
            })
        })
        .collect();
    tokio::time::sleep(ms(10)).await;
    assert_eq!(p.status().creating, 4, "the default opens four at once");
    let mut latest = ms(0);
    for t in tasks {
        latest = latest.max(t.await.unwrap());
    }
    // Three waves of four, not six of two.
    assert!(latest <= ms(310), "the last object came at {latest:?}");
    assert_eq!(f.create.calls(), 12);
}

#[tokio::test(start_paused = true)]
async fn a_short_deadline_queued_behind_a_long_one_fires_first() {
    let (_, m) = fake();
    let p = Pool::builder(m)
        .max(1)
        .acquire_timeout(ms(1000))
        .build()
        .unwrap();
    let held = p.get().await.unwrap();
    let start = tokio::time::Instant::now();
    let long = {
        let p = p.clone();
        tokio::spawn(async move { (p.get().await.map(drop), start.elapsed()) })
    };
    tokio::task::yield_now().await;
    let short = p.get_timeout(ms(100)).await.unwrap_err();
    assert!(short.is_timeout());
    assert_eq!(
        start.elapsed(),
        ms(100),
        "the later, shorter deadline re-armed"
    );
    assert_eq!(p.status().waiting, 1, "the long waiter still waits");
    let (long, at) = long.await.unwrap();
    assert!(long.unwrap_err().is_timeout());
    assert_eq!(at, ms(1000));
    assert_eq!(p.metrics().timeouts, 2);
    check_pool(&p);
    drop(held);
}

/// A pool used from a second runtime after the runtime that ran its
/// background task shut down (a static pool shared by `#[tokio::test]`s):
/// a caller already waiting still times out, and new callers are served.
#[test]
fn waiters_time_out_after_the_pools_runtime_is_gone() {
    let (_, m) = fake();
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let p = first.block_on(async {
        // Tokio's precise clock: the coarse one may end a wait up to a
        // scheduler tick early, and the test checks the wait's length.
        let p = Pool::builder(m)
            .max(1)
            .acquire_timeout(ms(150))
            .clock(aquifer::Clock::Tokio)
            .build()
            .unwrap();
        p.start().await.unwrap();
        p
    });
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async move {
        let held = p.get().await.unwrap();
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                (p.get().await.map(drop), start.elapsed())
            })
        };
        tokio::time::sleep(ms(20)).await;
        assert_eq!(p.status().waiting, 1);
        // The background task goes with its runtime.
        first.shutdown_background();
        let (got, waited) = tokio::time::timeout(ms(2000), waiting)
            .await
            .expect("the waiter must not hang")
            .unwrap();
        assert!(got.unwrap_err().is_timeout());
        assert!(waited >= ms(150) && waited < ms(1000), "{waited:?}");
        drop(held);
        // The next caller restarts the background task here and is served.
        let again = p.get().await.unwrap();
        drop(again);
        let err = {
            let _held = p.get().await.unwrap();
            p.get().await.unwrap_err()
        };
        assert!(err.is_timeout(), "deadlines work on the new runtime: {err}");
        check_pool(&p);
    });
}

/// Four worker threads, two objects, 32 tasks. Checkouts and returns that
/// skip the pool lock (each thread has a shard of its own) race callers
/// that start to wait and returns that must hand over to them. No wakeup
/// is lost (every get is served long before its timeout), every checkout
/// and return is counted once although they are counted in several
/// shards, and at the end both objects are idle and nothing was made twice.
#[test]
fn checkouts_across_threads_lose_no_wakeup_and_count_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (f, m) = fake();
        let p = Pool::builder(m)
            .max(2)
            .acquire_timeout(ms(20_000))
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move {
                    for n in 0..500 {
                        let o = p.get().await.unwrap();
                        if (n + i) % 3 == 0 {
                            tokio::task::yield_now().await;
                        }
                        drop(o);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = check_pool(&p);
        assert_eq!((s.idle, s.borrowed, s.waiting), (2, 0, 0), "{s:?}");
        let m = p.metrics();
        assert_eq!(m.gets, 16_000);
        assert_eq!(m.usage_time.count, 16_000);
        assert_eq!(m.timeouts, 0);
        assert_eq!(f.made.load(std::sync::atomic::Ordering::Relaxed), 2);
    });
}

/// A return that takes the lock-free path races the drop of the last
/// handle, which closes the pool and frees it. Built on a runtime that is
/// then shut down, so that a destroy is dropped at once instead of queued:
/// the pool can be freed within the race, right after the return stores
/// the object. Whichever side wins, the pool is freed exactly once and the
/// object with it. Under Miri this also checks that the return touches no
/// freed memory (see `Shards::put`).
#[test]
fn a_return_racing_the_last_handle_drop_frees_the_pool_once() {
    let rounds = if cfg!(miri) { 40 } else { 400 };
    for _ in 0..rounds {
        let (f, m) = fake();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (p, o) = rt.block_on(async {
            let p = Pool::builder(m).max(1).build().unwrap();
            let o = p.get().await.unwrap();
            (p, o)
        });
        drop(rt);
        let both = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                both.wait();
                drop(o);
            });
            s.spawn(|| {
                both.wait();
                drop(p);
            });
        });
        assert_eq!(Arc::strong_count(&f), 1, "the pool was freed");
        assert_eq!(f.alive.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}

/// `tasks` tasks on two threads looping on get and drop over a pool of 8
/// built empty, whose creates take 5 ms: every task queues before the
/// first object exists.
struct ColdBurst {
    pool: Pool<FakeManager>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ColdBurst {
    fn start(tasks: usize) -> Self {
        let (f, m) = fake();
        f.create
            .set(Step::Slow(std::time::Duration::from_millis(5)));
        let pool = Pool::builder(m).max(8).build().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|_| {
                let (p, stop) = (pool.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        drop(p.get().await.unwrap());
                    }
                })
            })
            .collect();
        ColdBurst { pool, stop, tasks }
    }

    /// Stops the tasks and waits for them.
    async fn stop(self) -> Pool<FakeManager> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.pool
    }
}

/// A pool built empty under a burst: 64 tasks on two threads loop on get
/// and drop over 8 objects. Waiters queue while the objects are created;
/// afterwards an idle object goes to whichever task asks, so the queue
/// drains instead of every get waiting behind it, and no waiter starves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_formed_under_a_cold_burst_drains_and_no_waiter_starves() {
    let burst = ColdBurst::start(64);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let p = burst.stop().await;
    let m = p.metrics();
    eprintln!(
        "cold burst: {} gets, {} waited ({:.2}%), worst wait {:?}",
        m.gets,
        m.gets_waited,
        100.0 * m.gets_waited as f64 / m.gets as f64,
        m.wait_time.max
    );
    assert!(
        m.gets_waited * 10 < m.gets,
        "a convoy: {} of {} gets waited",
        m.gets_waited,
        m.gets
    );
    assert!(
        m.wait_time.max < std::time::Duration::from_millis(250),
        "{:?}",
        m.wait_time.max
    );
}

/// The same burst with four times the tasks, so that by the time the
/// objects exist the first waiters have waited long enough to be starving.
/// A return then goes straight to the longest waiter, which is asleep: if
/// every return did, the running tasks would find nothing idle and queue
/// behind the sleepers, and the queue would never drain (seen: ~200 queued
/// for the whole run, every get a task switch, 100 times slower). One
/// object at a time travels to a sleeping waiter; the rest stay with the
/// running tasks, and the queue drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starving_waiters_under_a_cold_burst_do_not_hold_the_pool_in_a_convoy() {
    let burst = ColdBurst::start(256);
    let p = &burst.pool;
    // The queue formed at the start drains (in 50-300 ms here, by build),
    // then stays drained: sampled every 5 ms for 200 ms. This thread is
    // not one of the runtime's workers, and their timers run late while
    // every task loops: it sleeps itself.
    let start = std::time::Instant::now();
    let mut drained = None;
    while start.elapsed() < std::time::Duration::from_secs(3) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        if p.status().waiting == 0 {
            drained = Some(start.elapsed());
            break;
        }
    }
    let mut queued = Vec::new();
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        queued.push(p.status().waiting);
    }
    let p = burst.stop().await;
    queued.sort();
    let m = p.metrics();
    eprintln!(
        "starving burst: {} gets, {} waited, worst wait {:?}, drained after {:?}, \
         then queued: median {}, most {}",
        m.gets, m.gets_waited, m.wait_time.max, drained, queued[20], queued[39]
    );
    assert!(
        drained.is_some(),
        "the queue formed at the start never drained in 3 s"
    );
    assert!(
        queued[20] == 0,
        "the queue did not drain: {queued:?} callers queued in samples over 200 ms"
    );
    assert!(
        m.wait_time.max < std::time::Duration::from_secs(2),
        "{:?}",
        m.wait_time.max
    );
}

/// A waiter nudged to take an idle object may be handed another one
/// before it looks: the nudge must pass to the next waiter, or the idle
/// object sits unused while callers wait (seen as a pool of 100 serving
/// long statements with 94 connections).
#[tokio::test(flavor = "current_thread")]
async fn an_object_left_idle_by_a_nudge_is_never_stranded_while_callers_wait() {
    let (_f, m) = fake();
    let p = Pool::builder(m)
        .max(3)
        .acquire_timeout(ms(2000))
        .build()
        .unwrap();
    let mut held: Vec<_> = Vec::new();
    for _ in 0..3 {
        held.push(p.get().await.unwrap());
    }
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                let o = p.get().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((o, t.elapsed()))
            })
        })
        .collect();
    settle().await;
    assert_eq!(p.status().waiting, 3);
    // Without yielding: the first return is handed to the first waiter;
    // the second, within the fairness window, goes idle and nudges the
    // second waiter; the third, after the window, is handed to the
    // second waiter before it looked.
    drop(held.pop());
    drop(held.pop());
    std::thread::sleep(ms(20));
    drop(held.pop());
    let mut results = Vec::new();
    for w in waiters {
        results.push(w.await.unwrap());
    }
    for r in &results {
        let (_, waited) = r.as_ref().expect("every waiter is served");
        assert!(
            *waited < ms(500),
            "a waiter waited {waited:?} with an object idle"
        );
    }
}

/// The same when the nudged waiter gives up before it looks: the nudge
/// goes on to the next waiter.
#[tokio::test(flavor = "current_thread")]
async fn a_nudged_waiter_that_gives_up_passes_the_nudge_on() {
    let (_f, m) = fake();
    let p = Pool::builder(m)
        .max(2)
        .acquire_timeout(ms(2000))
        .build()
        .unwrap();
    let mut held = vec![p.get().await.unwrap(), p.get().await.unwrap()];
    let spawn = |p: &Pool<FakeManager>| {
        let p = p.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            p.get()
                .await
                .map(|o| (o, t.elapsed()))
                .map_err(|e| e.to_string())
        })
    };
    let (a, b, c) = (spawn(&p), spawn(&p), spawn(&p));
    settle().await;
    assert_eq!(p.status().waiting, 3);
    // Handed to the first; idle with a nudge for the second, which gives
    // up before it looks.
    drop(held.pop());
    drop(held.pop());
    b.abort();
    // The first waiter keeps its object: only the idle one can serve the third.
    let first = a.await.unwrap().expect("the first waiter is served");
    let (_, waited) = c.await.unwrap().expect("the third waiter is served");
    drop(first);
    assert!(waited < ms(500), "waited {waited:?} with an object idle");
}

/// Steady overload: 64 tasks share 16 objects, each held about a
/// millisecond. A caller that keeps losing the race for a returned object
/// to one that is running is served once it has waited a few
/// milliseconds, whatever the clock's resolution: no waiter waits a fair
/// interval (a scheduler tick on the coarse clock) per caller ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_steady_overload_no_waiter_waits_a_tick_per_caller_ahead() {
    let (_, m) = fake();
    let p = Pool::builder(m).max(16).build().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (p, stop) = (p.clone(), stop.clone());
            tokio::spawn(async move {
                let mut worst = std::time::Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let asked = std::time::Instant::now();
                    let held = p.get().await.unwrap();
                    worst = worst.max(asked.elapsed());
                    tokio::time::sleep(std::time::Duration::from_micros(500)).await;
                    drop(held);
                }
                worst
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut worst = Vec::new();
    for t in tasks {
        worst.push(t.await.unwrap());
    }
    worst.sort();
    let m = p.metrics();
    eprintln!(
        "steady overload: {} gets, median of the tasks' worst waits {:?}, worst {:?}, p99 {:?}",
        m.gets, worst[32], worst[63], m.wait_time.p99
    );
    assert!(
        worst[63] < std::time::Duration::from_millis(100),
        "a waiter waited {:?} (median of the tasks' worst: {:?})",
        worst[63],
        worst[32]
    );
}
