//! The pool's background work: create jobs, and the one task per pool
//! that runs maintenance and fails waiters at their deadlines.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::CreateError;
use crate::events::PoolEvent;
use crate::internals::{Door, Phase, Tally};
use crate::manager::Manager;
use crate::object::Entry;
use crate::thread;

use super::shared::{catch_unwind, Owned, Shared};

/// A reserved create slot. Given back on drop unless the create finished,
/// so a create job that is cancelled or panics leaks nothing.
pub(super) struct Reservation<M: Manager> {
    shared: Arc<Shared<M>>,
    armed: bool,
}

impl<M: Manager> Drop for Reservation<M> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.locked(|st, _| st.unreserve());
        }
    }
}

impl<M: Manager> Shared<M> {
    /// Starts the background task unless it runs.
    #[inline]
    pub(super) fn ensure_started(self: &Arc<Self>) {
        if !self.running.load(Ordering::Acquire) {
            self.start_background();
        }
    }

    #[cold]
    fn start_background(self: &Arc<Self>) {
        let Ok(handle) = Handle::try_current() else {
            return;
        };
        if self.read(|st| st.phase()) == Phase::Closed || self.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let _ = self.runtime.set(handle.clone());
        let alive = Alive(Arc::downgrade(self));
        handle.spawn(background(
            alive,
            Arc::clone(&self.rearm),
            self.cfg.maintenance_interval(),
        ));
        self.refill();
    }

    /// Starts creates while they are useful: for waiters and up to `min`.
    pub(super) fn refill(self: &Arc<Self>) {
        self.locked(|st, after| st.refill(after));
    }

    /// Spawns a create job for a slot already reserved.
    pub(super) fn spawn_create(self: &Arc<Self>) {
        let res = Reservation {
            shared: Arc::clone(self),
            armed: true,
        };
        self.spawn(create_job(res));
    }

    /// One maintenance pass: eviction, refill, keepalive, leak checks.
    async fn maintain_once(self: &Arc<Self>) {
        let now = self.clock.precise();
        self.locked(|st, after| {
            st.evict_idle(now, &self.cfg, |obj| self.broken(&obj.value), after);
            st.refill(after);
        });
        if let Some(every) = self.cfg.keepalive_interval {
            let due = self.locked(|st, _| st.due_for_keepalive(now, every));
            for entry in due {
                let this = Arc::clone(self);
                self.spawn(async move {
                    let deadline = this.clock.now().after(this.cfg.validate_timeout);
                    if let Some(entry) = this.validate(entry, deadline).await {
                        this.put_back(entry, thread::home());
                    }
                });
            }
        }
        if let (Some(limit), Some(sites)) = (self.cfg.leak_detection_threshold, &self.sites) {
            let mut found = Vec::new();
            for (id, lease) in sites.lock().iter_mut() {
                let held = now.since(lease.since);
                if !lease.reported && held >= limit {
                    lease.reported = true;
                    found.push((*id, held, lease.location));
                }
            }
            if !found.is_empty() {
                self.count(Tally::Leaks(found.len()));
            }
            for (id, held, location) in found {
                self.emit(PoolEvent::LeakSuspected {
                    id,
                    held,
                    location: location.to_string(),
                });
            }
        }
    }
}

/// Creates objects while they are wanted, backing off after failures.
pub(super) async fn create_job<M: Manager>(mut res: Reservation<M>) {
    let shared = Arc::clone(&res.shared);
    let cfg = &shared.cfg;
    loop {
        // A drain or close wakes a job waiting out its backoff, which then
        // stops: shutting down never waits for a retry nobody wants.
        let woken = shared.settled.notified();
        let mut woken = std::pin::pin!(woken);
        woken.as_mut().enable();
        let retry_at = shared.read(|st| st.retry_at());
        if let Some(at) = retry_at {
            if at > Instant::now() {
                // Ends at `at`, or earlier when woken.
                let _ = tokio::time::timeout_at(at, woken).await;
                let stop = shared.locked(|st, _| {
                    let stop = !st.keep_creating();
                    if stop {
                        st.unreserve();
                    }
                    stop
                });
                if stop {
                    res.armed = false;
                    return;
                }
                if Instant::now() < at {
                    // Woken early and still wanted: the backoff still holds.
                    continue;
                }
            }
        }
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(cfg.create_timeout, catch_unwind(shared.manager.create())).await;
        // Brings the coarse timeline up to date before `born` is read.
        shared.clock.precise();
        let err = match outcome {
            Ok(Ok(Ok(obj))) => {
                let took = started.elapsed();
                // The object's times come from the pool's clock, as every
                // later reading of them does, so they never run backwards.
                let born = shared.clock.now();
                let expires = shared.expiry(born);
                let (id, again) = shared.locked(|st, after| {
                    let id = st.next_id();
                    st.created(
                        Box::new(Entry::new(
                            Owned::new(obj, &shared),
                            id,
                            shared.clock.base(),
                            born,
                            expires,
                        )),
                        born,
                        took,
                        thread::home(),
                        after,
                    );
                    // The job goes on with the next reservation itself.
                    (id, st.reserve_create())
                });
                res.armed = again;
                shared.emit(PoolEvent::Created { id, took });
                shared.created.notify_waiters();
                if !again {
                    return;
                }
                continue;
            }
            Ok(Ok(Err(e))) => CreateError::Backend(std::sync::Arc::new(e)),
            Ok(Err(_)) => CreateError::Panicked,
            Err(_) => CreateError::Timeout(cfg.create_timeout),
        };
        let permanent = match &err {
            CreateError::Backend(e) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| shared.manager.is_permanent(e)))
                    .unwrap_or(false)
            }
            _ => false,
        };
        let (keep, failures, delay) = shared.locked(|st, after| {
            let failures = st.failures().saturating_add(1);
            let delay = cfg.backoff.delay(failures);
            let keep = st.create_failed(err.clone(), crate::clock::later(delay), permanent, after);
            (keep, failures, delay)
        });
        res.armed = keep;
        shared.emit(PoolEvent::CreateFailed {
            error: crate::error::error_chain(&err),
            failures,
            retry_in: delay,
        });
        shared.created.notify_waiters();
        if !keep {
            return;
        }
    }
}

/// Marks the background task as gone when it ends, however it ends (the
/// pool closed or dropped, or its runtime shut down), and nudges every
/// waiter so that each arms a timer of its own.
pub(super) struct Alive<M: Manager>(pub(super) Weak<Shared<M>>);

impl<M: Manager> Drop for Alive<M> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.running.store(false, Ordering::Release);
            shared.locked(|st, after| st.nudge_all(after));
        }
    }
}

/// The pool's one background task: maintenance every `tick`, and failing
/// waiters whose deadline passed. Holds the pool only weakly; ends when the
/// pool is closed or gone.
pub(super) async fn background<M: Manager>(alive: Alive<M>, rearm: Arc<Notify>, tick: Duration) {
    let tick = crate::clock::bounded(tick);
    let mut interval = tokio::time::interval_at(crate::clock::later(tick), tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    let mut armed_for = None;
    loop {
        let next = {
            let Some(shared) = alive.0.upgrade() else {
                return;
            };
            let now = shared.clock.precise();
            let next = shared.locked(|st, after| {
                if st.phase() == Phase::Closed {
                    return Err(());
                }
                if st.next_deadline().is_some_and(|at| at <= now) {
                    st.expire(now, after);
                }
                Ok(st.next_deadline())
            });
            let Ok(next) = next else {
                return;
            };
            next.map(|at| shared.clock.instant(at))
        };
        if next != armed_for {
            if let Some(at) = next {
                timer.as_mut().reset(at);
            }
            armed_for = next;
        }
        let mut notified = pin!(rearm.notified());
        enum Woke {
            Maintenance,
            Deadline,
            Rearm,
        }
        let woke = std::future::poll_fn(|cx| {
            if interval.poll_tick(cx).is_ready() {
                return Poll::Ready(Woke::Maintenance);
            }
            if armed_for.is_some() && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Deadline);
            }
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Rearm);
            }
            Poll::Pending
        })
        .await;
        if let Woke::Maintenance = woke {
            let Some(shared) = alive.0.upgrade() else {
                return;
            };
            shared.maintain_once().await;
        }
    }
}
