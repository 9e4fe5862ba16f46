//! The multiplexer over a scripted fake manager, in paused time: where
//! requests go, scaling up and down, faults, cancellation, closing.

mod common;

use std::sync::atomic::Ordering;

use aquifer::{Backoff, Lease, Multiplexer, MuxError, MuxStatus, Spread};
use common::{fake, ms, settle, FakeManager, Step};

impl aquifer::Multiplexed for FakeManager {
    async fn session_changed(&self, c: &common::Conn) -> bool {
        self.0.session_checks.fetch_add(1, Ordering::SeqCst);
        self.0.changed_session.load(Ordering::SeqCst) == c.obj.id
    }
}

type Mux = Multiplexer<FakeManager>;

/// The books a status must balance at every moment.
#[track_caller]
fn check(s: &MuxStatus) -> &MuxStatus {
    let open = s.connections + s.draining;
    assert!(open + s.opening <= s.max, "above max: {s:?}");
    assert_eq!(s.per_connection.len(), open, "{s:?}");
    assert_eq!(s.per_connection.iter().sum::<usize>(), s.in_flight, "{s:?}");
    assert!(
        s.per_connection.iter().all(|&n| n <= s.max_in_flight),
        "{s:?}"
    );
    s
}

fn no_backoff() -> Backoff {
    Backoff {
        min: ms(50),
        max: ms(50),
        factor: 1.0,
        jitter: 0.0,
    }
}

async fn leases(mux: &Mux, n: usize) -> Vec<Lease<FakeManager>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(mux.lease().await.expect("lease"));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn ready_waits_for_min_and_requests_spread_over_the_least_loaded() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(20)));
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(3)
        .max(3)
        .max_in_flight(4)
        .build()
        .unwrap();
    assert_eq!(mux.status().connections, 0);
    mux.ready().await.unwrap();
    assert_eq!(mux.status().connections, 3);
    // Six requests over three connections: two each, none pipelined
    // deeper while another has room.
    let held = leases(&mux, 6).await;
    assert_eq!(check(&mux.status()).per_connection, vec![2, 2, 2]);
    // The least loaded takes the next: free one on the last connection.
    let last = held.iter().rposition(|l| l.id() == held[5].id()).unwrap();
    let mut held = held;
    let freed_on = held.remove(last).id();
    let next = mux.lease().await.unwrap();
    assert_eq!(next.id(), freed_on);
    drop((held, next));
    assert_eq!(check(&mux.status()).in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn below_max_a_busy_connection_makes_a_new_one_open_and_the_first_free_slot_wins() {
    let (f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(1)
        .max(2)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let first = mux.lease().await.unwrap();
    // Opening is slow now: the second request queues, an open starts, and
    // the first request's slot frees long before the open ends.
    f.create.set(Step::Slow(ms(1000)));
    let mux2 = mux.clone();
    let second = tokio::spawn(async move {
        let t = tokio::time::Instant::now();
        let l = mux2.lease().await.unwrap();
        (l.id(), t.elapsed())
    });
    settle().await;
    let s = mux.status();
    assert_eq!((s.queued, s.opening), (1, 1), "{s:?}");
    tokio::time::sleep(ms(10)).await;
    let first_id = first.id();
    drop(first);
    let (id, waited) = second.await.unwrap();
    assert_eq!(id, first_id, "the request took the slot that freed");
    assert!(waited < ms(20), "waited {waited:?} for a connect");
    // The open still ends and the connection joins.
    tokio::time::sleep(ms(1100)).await;
    assert_eq!(check(&mux.status()).connections, 2);
}

#[tokio::test(start_paused = true)]
async fn at_max_requests_pipeline_to_max_in_flight_then_queue_in_order() {
    let (_f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(2)
        .max(2)
        .max_in_flight(3)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let mut held = leases(&mux, 6).await;
    assert_eq!(check(&mux.status()).per_connection, vec![3, 3]);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiting = Vec::new();
    for i in 0..3 {
        let (mux, order) = (mux.clone(), order.clone());
        waiting.push(tokio::spawn(async move {
            let l = mux.lease().await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(ms(1)).await;
            drop(l);
        }));
        settle().await;
    }
    assert_eq!(mux.status().queued, 3);
    for _ in 0..3 {
        drop(held.pop());
        settle().await;
    }
    for w in waiting {
        w.await.unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        vec![0, 1, 2],
        "served in arrival order"
    );
    let m = mux.metrics();
    assert_eq!((m.requests, m.waited), (9, 3));
}

#[tokio::test(start_paused = true)]
async fn scales_up_under_load_and_back_to_min_after_scale_down_after() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(5)));
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(2)
        .max(8)
        .max_in_flight(10)
        .scale_down_after(ms(500))
        .maintenance_interval(ms(100))
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    // Forty requests at once: spread over all eight, five each.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let mux = mux.clone();
        tasks.push(tokio::spawn(async move {
            mux.run(async |_| tokio::time::sleep(ms(200)).await)
                .await
                .unwrap();
        }));
    }
    tokio::time::sleep(ms(50)).await;
    let s = check(&mux.status()).clone();
    assert_eq!(s.connections, 8, "{s:?}");
    assert_eq!(s.per_connection, vec![5; 8], "{s:?}");
    for t in tasks {
        t.await.unwrap();
    }
    let stopped = tokio::time::Instant::now();
    while mux.status().connections > 2 {
        tokio::time::sleep(ms(10)).await;
        assert!(
            stopped.elapsed() <= ms(500 + 100 + 10),
            "{:?}",
            mux.status()
        );
    }
    assert!(
        stopped.elapsed() >= ms(500),
        "closed before scale_down_after"
    );
    settle().await;
    assert_eq!(f.alive.load(Ordering::SeqCst), 2, "closed ones are gone");
    let m = mux.metrics();
    assert_eq!((m.opened, m.closes.scaled_down), (8, 6), "{m:?}");
    assert_eq!(m.run_time.count, 40);
}

#[tokio::test(start_paused = true)]
async fn a_broken_connection_takes_no_new_requests_closes_after_its_last_and_is_replaced() {
    let (f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(2)
        .max(2)
        .max_in_flight(4)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let mut events = mux.events();
    let held = leases(&mux, 2).await;
    let (a, b) = (held[0].id(), held[1].id());
    assert_ne!(a, b);
    held[0].obj.broken.store(true, Ordering::SeqCst);
    // New requests all go to the other connection.
    let more = leases(&mux, 3).await;
    assert!(more.iter().all(|l| l.id() == b));
    let s = check(&mux.status()).clone();
    assert_eq!((s.connections, s.draining), (1, 1), "{s:?}");
    // Its last request ends: it closes and a replacement opens.
    drop(held);
    settle().await;
    let s = check(&mux.status()).clone();
    assert_eq!((s.connections, s.draining), (2, 0), "{s:?}");
    assert_eq!(mux.metrics().closes.broken, 1);
    assert_eq!(f.made.load(Ordering::SeqCst), 3);
    // The events say which closed, why, and what replaced it.
    let (mut closed, mut opened) = (None, 0);
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), events.recv()).await {
        match e {
            aquifer::PoolEvent::Destroyed { id, reason } => closed = Some((id, reason)),
            aquifer::PoolEvent::Created { .. } => opened += 1,
            _ => {}
        }
    }
    assert_eq!(closed, Some((a, aquifer::Reason::Broken)));
    assert_eq!(opened, 1);
    drop(more);
}

#[tokio::test(start_paused = true)]
async fn connections_past_their_lifetime_retire_one_at_a_time_without_failing_a_request() {
    let (f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(2)
        .max(2)
        .max_in_flight(4)
        .max_lifetime(Some(ms(1000)))
        .maintenance_interval(ms(100))
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let mut events = mux.events();
    let first: Vec<u64> = {
        let held = leases(&mux, 2).await;
        held.iter().map(|l| l.id()).collect()
    };
    // A request running on the oldest connection when both expire.
    let running = mux.lease().await.unwrap();
    let old = running.id();
    tokio::time::sleep(ms(1100)).await;
    settle().await;
    // Only one retires at a tick; it finishes its request first, and a
    // replacement opens for `min`.
    let s = check(&mux.status()).clone();
    assert_eq!(s.draining, 1, "{s:?}");
    assert_eq!(mux.metrics().closes.lifetime, 0);
    let during = leases(&mux, 3).await;
    assert!(
        during.iter().all(|l| l.id() != old),
        "a retiring connection took a request"
    );
    drop(during);
    drop(running);
    settle().await;
    assert_eq!(mux.metrics().closes.lifetime, 1);
    // The next tick retires the other; both are new afterwards.
    tokio::time::sleep(ms(300)).await;
    settle().await;
    let s = check(&mux.status()).clone();
    assert_eq!((s.connections, s.draining), (2, 0), "{s:?}");
    assert_eq!(mux.metrics().closes.lifetime, 2);
    assert_eq!(f.made.load(Ordering::SeqCst), 4);
    let now: Vec<u64> = leases(&mux, 2).await.iter().map(|l| l.id()).collect();
    assert!(
        now.iter().all(|id| !first.contains(id)),
        "{first:?} -> {now:?}"
    );
    let mut retired = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), events.recv()).await {
        if let aquifer::PoolEvent::Destroyed { id, reason } = e {
            assert_eq!(reason, aquifer::Reason::Lifetime);
            retired.push(id);
        }
    }
    retired.sort_unstable();
    let mut first = first;
    first.sort_unstable();
    assert_eq!(retired, first);
}

#[tokio::test(start_paused = true)]
async fn a_failing_server_times_requests_out_with_the_cause_and_recovers() {
    let (f, m) = fake();
    f.create.set(Step::Err);
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(1)
        .max(2)
        .acquire_timeout(ms(300))
        .backoff(no_backoff())
        .build()
        .unwrap();
    let t = tokio::time::Instant::now();
    let err = mux.lease().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(!err.may_have_run());
    assert!(
        (ms(300)..=ms(330)).contains(&t.elapsed()),
        "{:?}",
        t.elapsed()
    );
    let chain = aquifer::error_chain(&err);
    assert!(chain.contains("password authentication failed"), "{chain}");
    // A handful of opens per backoff step, not a busy loop.
    assert!(f.create.calls() <= 12, "{} creates", f.create.calls());
    f.create.set(Step::Ok);
    tokio::time::sleep(ms(1100)).await;
    drop(mux.lease().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_fails_queued_requests_at_once() {
    let (f, m) = fake();
    f.create.set(Step::Err);
    f.permanent.store(true, Ordering::SeqCst);
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(0)
        .max(2)
        .build()
        .unwrap();
    let t = tokio::time::Instant::now();
    let err = mux.lease().await.unwrap_err();
    assert!(matches!(err, MuxError::Connect(_)), "{err}");
    assert!(t.elapsed() < ms(10));
    assert!(aquifer::error_chain(&err).contains("password authentication failed"));
}

#[tokio::test(start_paused = true)]
async fn ready_gives_up_at_the_acquire_timeout_with_the_cause_and_at_once_on_a_permanent_error() {
    let (f, m) = fake();
    f.create.set(Step::Err);
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(2)
        .max(2)
        .acquire_timeout(ms(3000))
        .build()
        .unwrap();
    let t = tokio::time::Instant::now();
    let err = mux.ready().await.unwrap_err();
    assert!(matches!(err, MuxError::Timeout { .. }), "{err}");
    assert!(
        t.elapsed() >= ms(3000) && t.elapsed() < ms(3100),
        "{:?}",
        t.elapsed()
    );
    assert!(
        aquifer::error_chain(&err).contains("password authentication failed"),
        "{}",
        aquifer::error_chain(&err)
    );
    assert!(mux.last_open_error().is_some());

    // An error waiting cannot fix ends the wait with it.
    let (f, m) = fake();
    f.create.set(Step::Err);
    f.permanent.store(true, Ordering::SeqCst);
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(2)
        .max(2)
        .acquire_timeout(ms(3000))
        .build()
        .unwrap();
    let t = tokio::time::Instant::now();
    let err = mux.ready().await.unwrap_err();
    assert!(matches!(err, MuxError::Connect(_)), "{err}");
    // The failure it hears of: at most one backoff step (100 ms) away.
    assert!(t.elapsed() < ms(200), "{:?}", t.elapsed());

    // Once the server lets it in, ready resolves (after the pool's
    // backoff, up to its 5 s max) and the cause is gone.
    f.permanent.store(false, Ordering::SeqCst);
    f.create.set(Step::Ok);
    tokio::time::sleep(ms(5100)).await;
    mux.ready().await.unwrap();
    assert_eq!(mux.status().connections, 2);
    assert!(mux.last_open_error().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_session_changed_is_retired_within_the_next_tick_and_replaced() {
    let (f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(2)
        .max(2)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let mut events = mux.events();
    let running = leases(&mux, 2).await.pop().unwrap();
    let (changed, obj) = (running.id(), running.obj.id);
    f.changed_session.store(obj, Ordering::SeqCst);
    // The tick at 1 s checks the two connections half a tick apart.
    tokio::time::sleep(ms(1600)).await;
    settle().await;
    assert!(f.session_checks.load(Ordering::SeqCst) >= 2);
    // It finishes the request it carries, takes no other, and a
    // replacement opens.
    let s = check(&mux.status()).clone();
    assert_eq!((s.draining, s.in_flight), (1, 1), "{s:?}");
    let during = leases(&mux, 3).await;
    assert!(
        during.iter().all(|l| l.id() != changed),
        "a changed session took a request"
    );
    drop(during);
    assert_eq!(mux.metrics().closes.session_changed, 0);
    drop(running);
    settle().await;
    assert_eq!(mux.metrics().closes.session_changed, 1);
    let s = check(&mux.status()).clone();
    assert_eq!((s.connections, s.draining), (2, 0), "{s:?}");
    assert_eq!(f.made.load(Ordering::SeqCst), 3);
    let mut reasons = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), events.recv()).await {
        if let aquifer::PoolEvent::Destroyed { id, reason } = e {
            reasons.push((id, reason));
        }
    }
    assert_eq!(reasons, [(changed, aquifer::Reason::SessionChanged)]);
}

#[tokio::test(start_paused = true)]
async fn session_checks_are_not_use_so_idle_connections_still_scale_down() {
    let (f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(0)
        .max(2)
        .scale_down_after(ms(3000))
        .build()
        .unwrap();
    drop(mux.lease().await.unwrap());
    assert_eq!(mux.status().connections, 1);
    tokio::time::sleep(ms(2500)).await;
    settle().await;
    assert!(f.session_checks.load(Ordering::SeqCst) >= 2);
    assert_eq!(mux.status().connections, 1);
    tokio::time::sleep(ms(1000)).await;
    settle().await;
    let s = check(&mux.status()).clone();
    assert_eq!((s.connections, s.draining), (0, 0), "{s:?}");
    assert_eq!(mux.metrics().closes.scaled_down, 1);
    assert_eq!(f.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_frozen_multiplexer_refuses_new_requests_and_keeps_the_running_ones() {
    let (_, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(1)
        .max(1)
        .max_in_flight(1)
        .build()
        .unwrap();
    let running = mux.lease().await.unwrap();
    let queued = tokio::spawn({
        let mux = mux.clone();
        async move { mux.lease().await.map(drop) }
    });
    settle().await;
    mux.freeze();
    assert!(mux.is_frozen());
    assert!(matches!(mux.lease().await, Err(MuxError::Frozen)));
    drop(running);
    queued
        .await
        .unwrap()
        .expect("a request queued before the freeze is served");
    assert_eq!(mux.status().connections, 1, "the connections stay open");
    mux.unfreeze();
    drop(mux.lease().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn dropped_requests_leave_the_queue_and_slots_handed_to_them_come_back() {
    let (_f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(1)
        .max(1)
        .max_in_flight(1)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let held = mux.lease().await.unwrap();
    // Queued, then dropped before any slot frees.
    let gone = tokio::time::timeout(ms(10), mux.lease()).await;
    assert!(gone.is_err());
    assert_eq!(mux.status().queued, 0);
    // Queued, handed the slot, then dropped before it ran.
    let mux2 = mux.clone();
    let waiter = tokio::spawn(async move { mux2.lease().await.map(drop) });
    settle().await;
    assert_eq!(mux.status().queued, 1);
    drop(held);
    waiter.abort();
    let _ = waiter.await;
    settle().await;
    let s = check(&mux.status()).clone();
    assert_eq!((s.in_flight, s.queued), (0, 0), "{s:?}");
    drop(mux.lease().await.expect("the slot came back"));
    assert_eq!(mux.metrics().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_and_close_fails_the_queued_and_waits_for_the_running() {
    let (f, m) = fake();
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(1)
        .max(1)
        .max_in_flight(1)
        .max_queued(Some(1))
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let held = mux.lease().await.unwrap();
    let mux2 = mux.clone();
    let queued = tokio::spawn(async move { mux2.lease().await.map(drop) });
    settle().await;
    let err = mux.lease().await.unwrap_err();
    assert!(
        matches!(err, MuxError::QueueFull { max_queued: 1 }),
        "{err}"
    );
    let mux3 = mux.clone();
    let closing = tokio::spawn(async move { mux3.close().await });
    settle().await;
    assert!(matches!(queued.await.unwrap(), Err(MuxError::Closed)));
    assert!(
        !closing.is_finished(),
        "close waits for the running request"
    );
    assert!(matches!(mux.lease().await, Err(MuxError::Closed)));
    drop(held);
    closing.await.unwrap();
    settle().await;
    assert_eq!(f.alive.load(Ordering::SeqCst), 0);
    assert!(matches!(mux.ready().await, Err(MuxError::Closed)));
}

#[tokio::test(start_paused = true)]
async fn least_loaded_packs_onto_the_oldest_so_the_newest_fall_idle_and_round_robin_takes_turns() {
    for spread in [Spread::LeastLoaded, Spread::RoundRobin] {
        let (_f, m) = fake();
        let mux = Multiplexer::builder(m)
            .pipeline_horizon(None)
            .min(3)
            .max(3)
            .spread(spread)
            .build()
            .unwrap();
        mux.ready().await.unwrap();
        // One request at a time: every connection has room each time.
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(mux.lease().await.unwrap().id());
        }
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        match spread {
            Spread::LeastLoaded => assert_eq!(distinct.len(), 1, "{ids:?}"),
            _ => {
                assert_eq!(distinct.len(), 3, "{ids:?}");
                assert_eq!(ids[..3], ids[3..], "{ids:?}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn never_above_max_under_a_random_load_with_cancellations() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(3)));
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(1)
        .max(5)
        .max_in_flight(3)
        .scale_down_after(ms(50))
        .maintenance_interval(ms(10))
        .acquire_timeout(ms(40))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..40u64 {
        let mux = mux.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t);
            for _ in 0..50 {
                let work = ms(rng.u64(0..10));
                let give_up = ms(rng.u64(1..30));
                let _ = tokio::time::timeout(
                    give_up,
                    mux.run(async |_| tokio::time::sleep(work).await),
                )
                .await;
                tokio::time::sleep(ms(rng.u64(0..20))).await;
            }
        }));
    }
    let watch = {
        let mux = mux.clone();
        tokio::spawn(async move {
            for _ in 0..3000 {
                check(&mux.status());
                tokio::time::sleep(ms(1)).await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    watch.abort();
    let s = check(&mux.status()).clone();
    assert_eq!((s.in_flight, s.queued), (0, 0), "{s:?}");
    tokio::time::sleep(ms(100)).await;
    assert_eq!(mux.status().connections, 1);
    assert!(f.alive.load(Ordering::SeqCst) <= 5);
}

#[tokio::test(start_paused = true)]
async fn several_connections_open_at_once_when_several_are_needed() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(100)));
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(0)
        .max(8)
        .max_in_flight(1)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mux = mux.clone();
            tokio::spawn(async move {
                let l = mux.lease().await.unwrap();
                let got = start.elapsed();
                tokio::time::sleep(ms(1000)).await;
                drop(l);
                got
            })
        })
        .collect();
    tokio::time::sleep(ms(10)).await;
    assert_eq!(check(&mux.status()).opening, 4, "{:?}", mux.status());
    let mut latest = ms(0);
    for t in tasks {
        latest = latest.max(t.await.unwrap());
    }
    assert!(latest <= ms(210), "the last request started at {latest:?}");
    assert_eq!(mux.metrics().opened, 8);
}

#[tokio::test(start_paused = true)]
async fn short_requests_pipeline_and_long_ones_wait_for_a_free_slot() {
    let (_f, m) = fake();
    let mux = Multiplexer::builder(m)
        .min(1)
        .max(1)
        .max_in_flight(10)
        .pipeline_horizon(Some(ms(100)))
        .acquire_timeout(ms(50))
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    // Nothing timed yet: a second request does not queue behind the first.
    let first = mux.lease().await.unwrap();
    assert!(mux.lease().await.unwrap_err().is_timeout());
    drop(first);
    // Requests of 1 ms (enough for the moving average to forget the
    // first, held 50 ms): five pipeline at once.
    for _ in 0..40 {
        mux.run(async |_| tokio::time::sleep(ms(1)).await)
            .await
            .unwrap();
    }
    let held = leases(&mux, 5).await;
    assert_eq!(mux.status().per_connection, vec![5]);
    drop(held);
    // Requests of 300 ms: one at a time.
    for _ in 0..20 {
        mux.run(async |_| tokio::time::sleep(ms(300)).await)
            .await
            .unwrap();
    }
    let first = mux.lease().await.unwrap();
    assert!(mux.lease().await.unwrap_err().is_timeout());
    drop(first);
}

/// The status reports the measurements the sizing of connections rests
/// on: how long a request keeps a connection busy (shared by the requests
/// pipelined with it) and how long an open takes; none before any.
#[tokio::test(start_paused = true)]
async fn status_reports_the_service_and_open_times_it_measured() {
    let (f, m) = fake();
    f.create.set(Step::Slow(ms(20)));
    let mux = Multiplexer::builder(m)
        .pipeline_horizon(None)
        .min(1)
        .max(1)
        .max_in_flight(2)
        .build()
        .unwrap();
    let before = mux.status();
    assert_eq!((before.service_time, before.open_time), (None, None));
    mux.ready().await.unwrap();
    assert_eq!(mux.status().open_time, Some(ms(20)));
    // One request alone for 10 ms: 10 ms of the connection's time.
    let one = mux.lease().await.unwrap();
    tokio::time::sleep(ms(10)).await;
    drop(one);
    assert_eq!(mux.status().service_time, Some(ms(10)));
    // Two pipelined for 40 ms: the first, given the connection alone,
    // counts 40 ms, the second (given it with one ahead) 20 ms; each moves
    // the average an eighth of the way.
    let (a, b) = (mux.lease().await.unwrap(), mux.lease().await.unwrap());
    tokio::time::sleep(ms(40)).await;
    drop(a);
    let micros = |d: Option<std::time::Duration>| d.map(|d| d.as_micros());
    assert_eq!(micros(mux.status().service_time), Some(13_750));
    drop(b);
    assert_eq!(micros(mux.status().service_time), Some(14_531));
    check(&mux.status());
}
