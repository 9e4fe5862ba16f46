//! The way out: a get's future, the checkout with its checks, and the
//! wait in the queue.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::Stamp;
use crate::error::{CreateError, PoolError};
use crate::events::{PoolEvent, Reason};
use crate::internals::checkout::Queued;
use crate::internals::{Acquire, Door, Handoff, Tally, WaitError};
use crate::manager::Manager;
use crate::object::{Entry, Item};
use crate::thread;
use crate::waiters::Waiter;

use super::pooled::Pooled;
use super::shared::{catch_unwind, Checking, CheckoutSite, Owned, Shared};

pin_project_lite::pin_project! {
    /// The future of [`Pool::get`] and its variants.
    ///
    /// Its first poll hands out an idle object that can go as it is, with
    /// nothing to await, straight from its own fields. Only a get that must
    /// wait, create, check an object or yield starts the full checkout
    /// (`make`, a zero-sized function item, builds it in place), so the
    /// common case never copies its arguments into an `async fn`'s state.
    struct Get<'a, M: Manager, Mk, F> {
        pool: &'a Arc<Shared<M>>,
        caller: &'static Location<'static>,
        timeout: Duration,
        priority: usize,
        make: Mk,
        // Handed out from the first poll: polling again is a bug in the
        // caller, which must not check out a second object.
        done: bool,
        #[pin]
        full: Option<F>,
    }
}

impl<'a, M, Mk, F> Future for Get<'a, M, Mk, F>
where
    M: Manager,
    Mk: Fn(&'a Arc<Shared<M>>, usize, Duration, &'static Location<'static>) -> F,
    F: Future<Output = Result<Pooled<M>, PoolError<M::Error>>>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if this.full.is_none() {
            assert!(
                !*this.done,
                "a pool's get future was polled after it completed"
            );
            if this.pool.idle.anyone_waits() {
                // Callers wait: a full unit of the budget, so that a task
                // looping on gets yields every 128 and the waiting tasks
                // get to run and take the objects they are woken for.
                std::task::ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
            } else {
                std::task::ready!(thread::poll_budget(cx));
            }
            if let Some(got) = this.pool.take_ready(this.caller) {
                *this.done = true;
                return Poll::Ready(Ok(got));
            }
            let full = (this.make)(this.pool, *this.priority, *this.timeout, this.caller);
            this.full.set(Some(full));
        }
        this.full.as_pin_mut().expect("started above").poll(cx)
    }
}

impl<M: Manager> Shared<M> {
    /// A get's future: see [`Get`].
    #[inline]
    pub(super) fn get(
        self: &Arc<Self>,
        priority: usize,
        timeout: Duration,
        caller: &'static Location<'static>,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        Get {
            pool: self,
            caller,
            timeout,
            priority,
            make: Shared::acquire,
            done: false,
            full: None,
        }
    }
}

/// The waiter a queued caller waits on.
type WaiterRef<M> = crate::sync::Arc<Waiter<Handoff<Owned<M>, <M as Manager>::Error>>>;

impl<M: Manager> Shared<M> {
    /// A full checkout.
    async fn acquire(
        self: &Arc<Self>,
        priority: usize,
        timeout: Duration,
        caller: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let this = self;
        this.ensure_started();
        let home = thread::home();
        // Nobody waits and an object is idle: no pool lock (the shard
        // counts the checkout).
        let mut fast = this.idle.take(home, |_| true);
        // A caller that may wait reads the clock precisely: the coarse
        // clock lags by up to a tick, and a deadline taken from it would
        // fail the caller that much before its timeout.
        let start = if fast.is_some() {
            this.clock.now()
        } else {
            this.clock.precise()
        };
        let deadline = start.after(timeout);
        let mut now = start;
        let mut first = fast.is_none();
        loop {
            let step = match fast.take() {
                Some(e) => Acquire::Got(e),
                None => {
                    this.locked(|st, after| st.acquire(priority, now, deadline, first, home, after))
                }
            };
            first = false;
            let entry = match step {
                Acquire::Got(e) => e,
                Acquire::Wait {
                    waiter,
                    max_reached,
                    rearm,
                } => {
                    if rearm {
                        this.rearm.notify_one();
                    }
                    if let Some((max, waiting)) = max_reached {
                        this.emit(PoolEvent::MaxReached { max, waiting });
                    }
                    let (e, handed_at) = this.wait(waiter, deadline, start).await?;
                    now = handed_at;
                    e
                }
                Acquire::Refused(r) => return Err(this.refused(r)),
            };
            if let Some(entry) = this.check_out(entry, now, deadline).await {
                return Ok(this.hand_out(entry, start, now, caller));
            }
            now = this.clock.now();
            if now >= deadline {
                let last_create_error = this.locked(|st, _| {
                    st.count(Tally::Timeout);
                    st.last_error()
                });
                this.emit(PoolEvent::QueueTimeout {
                    waited: now.since(start),
                });
                return Err(PoolError::timeout(now.since(start), last_create_error));
            }
        }
    }

    pub(super) async fn try_acquire(
        self: &Arc<Self>,
        caller: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.ensure_started();
        let home = thread::home();
        // One clock reading serves the call unless an object fails its
        // check (which may have taken a validation's time).
        let start = self.clock.now();
        let mut now = start;
        loop {
            let got = self.locked(|st, _| st.try_acquire(true, |_| true, home));
            match got {
                Ok(Some(entry)) => {
                    let deadline = now.after(self.cfg.validate_timeout);
                    if let Some(entry) = self.check_out(entry, now, deadline).await {
                        return Ok(self.hand_out(entry, start, now, caller));
                    }
                    now = self.clock.now();
                }
                Ok(None) => return Err(PoolError::Exhausted),
                Err(r) => return Err(self.refused(r)),
            }
        }
    }

    #[inline]
    pub(super) fn take_ready(
        self: &Arc<Self>,
        caller: &'static Location<'static>,
    ) -> Option<Pooled<M>> {
        self.ensure_started();
        let home = thread::home();
        let now = self.clock.now();
        // The checks run under the shard's lock so that an object that
        // fails one stays in place for the full get (which evicts or
        // validates it) and the checkout is counted once. `is_broken` is
        // cheap and sync, as eviction (which also calls it under a lock)
        // relies on.
        let ready = |e: &Item<Owned<M>>| {
            !e.expired(now) && !self.check_due(e, now) && !self.broken(&e.obj.value)
        };
        let entry = self.idle.take(home, ready)?;
        Some(self.hand_out(entry, now, now, caller))
    }

    /// Whether the borrow check is due for an object about to go out.
    #[inline]
    fn check_due(&self, entry: &Entry<Owned<M>>, now: Stamp) -> bool {
        let cfg = &self.cfg;
        cfg.validate_on_borrow
            && now.at_least(entry.meta.last_used, cfg.validate_if_idle_for)
            && now.at_least(entry.checked_at, cfg.validate_if_idle_for)
    }

    /// Checks an object before handing it out; `None` when it was bad (and
    /// has been destroyed).
    #[inline]
    async fn check_out(
        self: &Arc<Self>,
        entry: Item<Owned<M>>,
        now: Stamp,
        deadline: Stamp,
    ) -> Option<Item<Owned<M>>> {
        if entry.expired(now) {
            self.evict(entry, Reason::Lifetime);
            return None;
        }
        if self.broken(&entry.obj.value) {
            if entry.meta.use_count == 0 {
                self.fresh_failed("broken at checkout", None);
            }
            self.evict(entry, Reason::Broken);
            return None;
        }
        if self.check_due(&entry, now) {
            return self.validate(entry, deadline).await;
        }
        Some(entry)
    }

    #[cold]
    pub(super) async fn validate(
        self: &Arc<Self>,
        entry: Item<Owned<M>>,
        deadline: Stamp,
    ) -> Option<Item<Owned<M>>> {
        let mut guard = Checking {
            shared: self,
            entry: Some(entry),
        };
        let limit = self
            .cfg
            .validate_timeout
            .min(deadline.since(self.clock.now()));
        let obj = &mut guard.entry.as_mut().expect("held until taken").obj.value;
        let outcome = tokio::time::timeout(limit, catch_unwind(self.manager.validate(obj))).await;
        let mut entry = guard.entry.take().expect("held until taken");
        let (error, cause) = match outcome {
            Ok(Ok(Ok(()))) => {
                entry.checked_at = self.clock.now();
                return Some(entry);
            }
            Ok(Ok(Err(e))) => (crate::error::error_chain(&e), Some(std::sync::Arc::new(e))),
            Ok(Err(_)) => ("validate panicked".to_owned(), None),
            Err(_) => (
                format!(
                    "validate did not finish within {}",
                    crate::error::human_duration(limit)
                ),
                None,
            ),
        };
        self.validation_failed(entry, error, cause);
        None
    }

    fn validation_failed(
        self: &Arc<Self>,
        entry: Item<Owned<M>>,
        error: String,
        cause: Option<std::sync::Arc<M::Error>>,
    ) {
        self.count(Tally::ValidationFailure);
        if entry.meta.use_count == 0 {
            self.fresh_failed("first check", cause);
        }
        self.emit(PoolEvent::ValidationFailed {
            id: entry.meta.id,
            error,
        });
        self.destroy(entry, Reason::ValidationFailed);
    }

    /// A new object failed before its first use: that is a failed create,
    /// with its backoff, its cause on later timeouts and its event, so that
    /// a server handing out broken connections is not hammered.
    #[cold]
    pub(super) fn fresh_failed(
        self: &Arc<Self>,
        what: &'static str,
        source: Option<std::sync::Arc<M::Error>>,
    ) {
        let err = CreateError::Unusable { what, source };
        let (failures, delay) = self.locked(|st, _| {
            let failures = st.failures().saturating_add(1);
            let delay = self.cfg.backoff.delay(failures);
            st.failed(err.clone(), crate::clock::later(delay));
            (failures, delay)
        });
        self.emit(PoolEvent::CreateFailed {
            error: crate::error::error_chain(&err),
            failures,
            retry_in: delay,
        });
    }

    #[inline]
    fn hand_out(
        self: &Arc<Self>,
        mut entry: Item<Owned<M>>,
        start: Stamp,
        now: Stamp,
        caller: &'static Location<'static>,
    ) -> Pooled<M> {
        entry.meta.use_count += 1;
        entry.taken_at = now;
        if let Some(sites) = &self.sites {
            sites.lock().insert(
                entry.meta.id,
                CheckoutSite {
                    since: now,
                    location: caller,
                    reported: false,
                },
            );
        }
        if self.hot_events() {
            self.emit(PoolEvent::Acquired {
                id: entry.meta.id,
                waited: now.since(start),
            });
        }
        debug_assert!(
            entry.obj.pool.is_some(),
            "an object handed out holds its pool"
        );
        Pooled { entry: Some(entry) }
    }

    async fn wait(
        self: &Arc<Self>,
        waiter: WaiterRef<M>,
        deadline: Stamp,
        start: Stamp,
    ) -> Result<(Item<Owned<M>>, Stamp), PoolError<M::Error>> {
        let since = waiter.since;
        let mut queued = Queued::new(self, waiter, thread::home());
        // The background task fails this caller at its deadline, so no timer
        // is armed per wait. Only when that task is gone (its runtime shut
        // down) does the caller fall back to a timer of its own; the task
        // nudges every waiter when it goes, so none misses the switch.
        let mut own_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let polled = std::future::poll_fn(|cx| {
            if let Poll::Ready(handed) = queued.poll_handoff(cx) {
                return Poll::Ready(Some(handed));
            }
            if own_timer.is_none() && !self.running.load(Ordering::Acquire) {
                own_timer = Some(Box::pin(tokio::time::sleep_until(
                    self.clock.instant(deadline),
                )));
            }
            if let Some(timer) = own_timer.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await;
        let handed = match polled {
            Some(handed) => handed,
            None => match queued.time_out() {
                // Handed over just as the time ran out: take it.
                Ok(handed) => handed,
                Err(seen) => {
                    let waited = self.clock.now().since(start);
                    self.emit(PoolEvent::QueueTimeout { waited });
                    return Err(PoolError::timeout(waited, seen));
                }
            },
        };
        match handed {
            Ok(got) => {
                // Recorded here, in this thread's shard, rather than by
                // whoever handed the object over under the pool lock.
                self.idle
                    .record_wait(thread::home(), got.1.nanos_since(since));
                Ok(got)
            }
            Err(WaitError::Create(e)) => Err(PoolError::Create(Box::new(e))),
            Err(WaitError::Closed) => Err(PoolError::Closed),
            Err(WaitError::Timeout(last_create_error)) => {
                let waited = self.clock.now().since(start);
                self.emit(PoolEvent::QueueTimeout { waited });
                Err(PoolError::timeout(waited, last_create_error))
            }
        }
    }
}
