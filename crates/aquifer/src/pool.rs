//! The pool handle and the async machinery around the locked state.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::builder::Builder;
use crate::clock::{PoolClock, Tick};
use crate::config::PoolConfig;
use crate::error::{BuildError, CreateError, DestroyError, PoolError};
use crate::events::{EventBus, EventStream, PoolEvent, Reason};
use crate::internals::{Acquire, Handoff, Phase, Placed, Refusal, State, StateLock, WaitError};
use crate::metrics::Metrics;
use crate::object::{Entry, Item, Metadata, Owned, Pooled};
use crate::shards::{self, Shards};
use crate::sync::Mutex;
use crate::waiters::Slot;
use crate::Manager;

/// A pool of objects made by a [`Manager`].
///
/// `Pool` is a cheap handle: clone it into every task. When the last handle is
/// dropped the pool closes: idle objects are destroyed, and objects still
/// checked out are destroyed when they come back.
///
/// ```
/// # use std::convert::Infallible;
/// # struct Conn;
/// # struct Connector;
/// # impl aquifer::Manager for Connector {
/// #     type Type = Conn;
/// #     type Error = Infallible;
/// #     async fn create(&self) -> Result<Conn, Infallible> { Ok(Conn) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let pool = aquifer::Pool::builder(Connector)
///     .max(16)
///     .acquire_timeout(Duration::from_secs(2))
///     .build()?;
/// let conn = pool.get().await?; // returned to the pool when dropped
/// assert_eq!(pool.status().borrowed, 1);
/// # drop(conn);
/// # Ok(())
/// # }
/// ```
pub struct Pool<M: Manager> {
    shared: Arc<Shared<M>>,
}

/// What the pool keeps about an object whose `destroy` failed.
pub(crate) struct PendingObject<T, E> {
    entry: Item<T>,
    error: DestroyError<E>,
    since: Instant,
    attempts: u32,
}

/// An object whose `destroy` failed or timed out, as
/// [`Pool::pending`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PendingInfo {
    /// The object's id.
    pub id: u64,
    /// The last destroy error's message.
    pub error: String,
    /// When it first failed to close.
    pub since: std::time::Instant,
    /// Destroy attempts so far.
    pub attempts: u32,
}

/// Where a checked-out object was taken, for leak reports.
struct Lease {
    since: Tick,
    location: &'static Location<'static>,
    reported: bool,
}

/// A snapshot of how many objects are where.
///
/// `idle + borrowed + creating == size` always holds, and so does
/// `size <= max` except right after [`Pool::resize`] lowered `max`, until
/// enough borrowed objects came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Status {
    /// Objects alive or being created.
    pub size: usize,
    /// Objects waiting in the pool.
    pub idle: usize,
    /// Objects checked out (or being reset or checked in the background).
    pub borrowed: usize,
    /// Creates in flight.
    pub creating: usize,
    /// Callers waiting for an object.
    pub waiting: usize,
    /// Objects that failed to close and are kept for `close_pending`.
    pub pending: usize,
    /// The configured maximum.
    pub max: usize,
    /// The configured minimum.
    pub min: usize,
    /// Objects that could still be created: `max - size`, or 0 once closed.
    pub spare: usize,
}

pub(crate) struct Shared<M: Manager> {
    pub(crate) manager: M,
    pub(crate) cfg: PoolConfig,
    state: StateLock<Owned<M>, M::Error>,
    events: EventBus,
    /// Woken whenever a draining or closed pool may have settled.
    settled: Notify,
    /// Woken whenever a create job ends an attempt (made or failed), for
    /// [`Pool::start`].
    created: Notify,
    handles: AtomicUsize,
    /// The background task (maintenance and waiter deadlines) is running.
    /// It is restarted on the caller's runtime if its own runtime went away.
    running: AtomicBool,
    /// Wakes the background task when a waiter's deadline is the new earliest.
    rearm: Arc<Notify>,
    runtime: OnceLock<Handle>,
    leases: Option<Mutex<HashMap<u64, Lease>>>,
    pending: Mutex<Vec<PendingObject<Owned<M>, M::Error>>>,
    /// The name of the first cluster member this pool became, so that a
    /// connection can tell where it came from without a reference of its
    /// own to the member.
    pub(crate) cluster_name: OnceLock<Arc<str>>,
    /// Read on checkout and return.
    pub(crate) clock: PoolClock,
    /// The idle objects (shared with the state), reached without the pool
    /// lock while nobody waits.
    idle: crate::sync::Arc<Shards<Owned<M>>>,
}

/// Polls a future, turning a panic into an `Err`.
async fn catch_unwind<F: Future>(f: F) -> std::thread::Result<F::Output> {
    let mut f = pin!(f);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

/// Gets that together spend one unit of Tokio's cooperative budget.
const GETS_PER_BUDGET_UNIT: u32 = 64;

/// Counts a get against this thread's share of Tokio's cooperative budget:
/// `true` when this get should spend a unit.
///
/// A task that loops on `get` while objects are free must still yield now
/// and then, or it starves its worker's timers and I/O, so a get takes
/// part in the budget as Tokio's own semaphore does, at a fraction of a
/// unit. The I/O operations the budget is sized for take microseconds; a
/// get that finds an object free takes about 30 ns, and a yield costs the
/// looping task 15–20 µs on a 2-core VM (Tokio wakes the idle worker to
/// look for work). At a unit per get (Tokio's semaphore) such a loop would
/// yield every 128 gets and spend most of its time yielding; at 1/16 it
/// still spent a quarter. At 1/64 it yields every 8,192 gets, about a
/// quarter of a millisecond, and spends about 5%. The count is of gets, not
/// time: a loop that also does work of its own between gets yields later.
#[inline]
fn budget_due() -> bool {
    thread_local!(static GETS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    GETS.with(|n| {
        let v = n.get().wrapping_add(1);
        n.set(v);
        v % GETS_PER_BUDGET_UNIT == 0
    })
}

/// Spends this get's share of the cooperative budget in place, in the
/// first poll of a get's future: `Pending` when the task is out of budget
/// (it yields, and the next poll goes on without spending again). A get
/// that went on to its full checkout to spend it (an async fn, built for
/// one poll) cost every get a sixth of its time at one in sixteen.
#[inline]
pub(crate) fn poll_budget(cx: &mut Context<'_>) -> Poll<()> {
    if budget_due() {
        std::task::ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
    }
    Poll::Ready(())
}

pin_project_lite::pin_project! {
    /// The future of [`Pool::get`] and its variants.
    ///
    /// Its first poll hands out an idle object that can go as it is, with
    /// nothing to await, straight from its own fields. Only a get that must
    /// wait, create, check an object or yield starts the full checkout
    /// (`make`, a zero-sized function item, builds it in place). As an
    /// `async fn` throughout, every get copied its arguments into the
    /// future's state on first poll, two of them as one 16-byte load of
    /// what the caller had just written as two 8-byte stores: a
    /// store-forwarding stall worth a tenth of the get.
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
                std::task::ready!(poll_budget(cx));
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
    fn get(
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

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

impl<M: Manager> Pool<M> {
    /// A builder with every setting at its default.
    pub fn builder(manager: M) -> Builder<M> {
        Builder::new(manager)
    }

    /// Builds a pool from a complete configuration.
    ///
    /// Inside a Tokio runtime with `eager` set (the default), filling to
    /// `min` and background maintenance start at once; otherwise at the first
    /// checkout or [`start`](Pool::start).
    ///
    /// # Errors
    /// A [`BuildError`] when the configuration cannot work.
    pub fn new(manager: M, cfg: PoolConfig) -> Result<Self, BuildError> {
        cfg.validate()?;
        let state = State::new(&cfg, shards::shard_count());
        let shared = Arc::new(Shared {
            idle: crate::sync::Arc::clone(&state.idle),
            state: StateLock::new(state),
            clock: PoolClock::new(cfg.clock),
            events: EventBus::new(cfg.event_capacity),
            settled: Notify::new(),
            created: Notify::new(),
            handles: AtomicUsize::new(1),
            running: AtomicBool::new(false),
            rearm: Arc::new(Notify::new()),
            runtime: OnceLock::new(),
            leases: cfg
                .leak_detection_threshold
                .map(|_| Mutex::new(HashMap::new())),
            pending: Mutex::new(Vec::new()),
            cluster_name: OnceLock::new(),
            manager,
            cfg,
        });
        if shared.cfg.eager {
            shared.ensure_started();
        }
        Ok(Pool { shared })
    }

    /// Checks an object out, waiting up to `acquire_timeout`, at priority 0.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] (with the last create error as its source),
    /// [`PoolError::Create`] when a create failed with an error the manager
    /// calls permanent, [`PoolError::QueueFull`], [`PoolError::Draining`], [`PoolError::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaks nothing: a queued caller leaves
    /// the queue (an object handed to it in the meantime goes to the next
    /// caller), a create it started finishes in the background and the object
    /// goes idle, and an object dropped mid-validation is destroyed and its
    /// slot freed.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.shared.get(0, self.shared.cfg.acquire_timeout, caller)
    }

    /// Like [`get`](Pool::get) with another timeout for this call.
    ///
    /// # Errors
    /// As [`get`](Pool::get).
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.shared.get(0, timeout, caller)
    }

    /// Like [`get`](Pool::get) at a priority: 0 is served first, and a value
    /// beyond `priority_levels - 1` means the lowest. Within a priority,
    /// callers are served in the order they arrived.
    ///
    /// # Errors
    /// As [`get`](Pool::get).
    #[track_caller]
    pub fn get_with_priority(
        &self,
        priority: usize,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.shared
            .get(priority, self.shared.cfg.acquire_timeout, caller)
    }

    /// Checks out an idle object without queueing. The object is still
    /// validated when `validate_on_borrow` asks for it.
    ///
    /// # Errors
    /// [`PoolError::Exhausted`] when no idle object is ready (others wait, or
    /// all are in use), and the refusals of [`get`](Pool::get).
    #[track_caller]
    pub fn try_get(
        &self,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.shared.try_acquire(caller)
    }

    /// The first step of a get that goes on to a full [`get`](Pool::get)
    /// when this returns `None`: the next idle object if it can be handed
    /// out as it is, with nothing to await (not expired, not broken, no
    /// borrow check due) and nobody waiting before the caller. It never
    /// starts a check it could not finish, and a miss is not counted in
    /// [`Metrics::gets`], so that one checkout counts once.
    #[track_caller]
    #[inline]
    pub(crate) fn take_ready(&self) -> Option<Pooled<M>> {
        self.shared.take_ready(Location::caller())
    }

    /// Runs `f` with a checked-out object and returns what it returns. When
    /// `f` fails the object is destroyed rather than reused, as it may be in
    /// a bad state.
    ///
    /// # Errors
    /// `f`'s error, or the checkout's error converted into `E`.
    pub async fn with<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: AsyncFnOnce(&mut M::Type) -> Result<R, E>,
        E: From<PoolError<M::Error>>,
    {
        let mut obj = self.get().await?;
        match f(&mut *obj).await {
            Ok(v) => Ok(v),
            Err(e) => {
                obj.destroy();
                Err(e)
            }
        }
    }

    /// Starts background maintenance (if not yet running) and creates
    /// objects until `min` are alive. Checks nothing out: the metrics
    /// count no get for it.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] with the last create error as its source
    /// when `min` objects could not be made within `acquire_timeout`;
    /// [`PoolError::Create`] at once when a create failed with an error
    /// the manager calls permanent; [`PoolError::Closed`].
    pub async fn start(&self) -> Result<(), PoolError<M::Error>> {
        let shared = &self.shared;
        shared.ensure_started();
        let started = Instant::now();
        let deadline = crate::clock::later(shared.cfg.acquire_timeout);
        let failures_before = shared.state.lock().failure_seq;
        loop {
            let created = shared.created.notified();
            let mut created = pin!(created);
            created.as_mut().enable();
            let failed = {
                let st = shared.state.lock();
                if st.phase == Phase::Closed {
                    return Err(PoolError::Closed);
                }
                if st.size - st.creating >= st.min {
                    return Ok(());
                }
                (st.failure_seq > failures_before)
                    .then(|| st.last_error.clone())
                    .flatten()
            };
            if let Some(CreateError::Backend(e)) = &failed {
                if shared.manager.is_permanent(e) {
                    return Err(PoolError::Create(Box::new(CreateError::Backend(
                        std::sync::Arc::clone(e),
                    ))));
                }
            }
            shared.refill();
            if tokio::time::timeout_at(deadline, created).await.is_err() {
                let last = shared.state.lock().last_error.clone();
                return Err(PoolError::timeout(started.elapsed(), last));
            }
        }
    }

    /// Stops new checkouts (they fail with [`PoolError::Draining`]), serves
    /// the callers already waiting, and returns once every object is back.
    /// Follow it with [`close`](Pool::close) or [`clear`](Pool::clear).
    pub async fn drain(&self) {
        {
            let mut st = self.shared.state.lock();
            if st.phase == Phase::Open {
                st.phase = Phase::Draining;
            }
        }
        self.shared.wait_settled().await;
    }

    /// Destroys every idle object (waiting for the destroys), then lets the
    /// pool refill to `min`. Returns how many were destroyed.
    pub async fn clear(&self) -> usize {
        let taken = self.shared.state.lock().take_idle(|_| true);
        let n = taken.len();
        self.shared.destroy_all(taken, Reason::Cleared).await;
        self.shared.refill();
        n
    }

    /// Closes the pool: new and waiting checkouts fail with
    /// [`PoolError::Closed`], idle objects are destroyed (this waits for
    /// that), and objects still out are destroyed when they come back.
    pub async fn close(&self) {
        let taken = self.shared.close_state();
        self.shared.destroy_all(taken, Reason::Closed).await;
    }

    /// Whether the pool was closed.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().phase == Phase::Closed
    }

    /// Changes `max`. When it shrinks, idle objects above it are destroyed at
    /// once and borrowed ones when they come back. A closed pool ignores
    /// it (as deadpool does): its status keeps the `max` it closed with.
    ///
    /// # Errors
    /// [`BuildError`] when `max` is 0 or below `min`.
    pub fn resize(&self, max: usize) -> Result<(), BuildError> {
        if max == 0 {
            return Err(BuildError::MaxZero);
        }
        let (excess, creates) = {
            let mut st = self.shared.state.lock();
            if st.phase == Phase::Closed {
                return Ok(());
            }
            if st.min > max {
                return Err(BuildError::MinAboveMax { min: st.min, max });
            }
            st.max = max;
            // Returns above the new max must come through the lock from
            // now on: publish before looking at the shards.
            st.publish();
            let excess = st.take_excess();
            let mut creates = 0;
            while st.reserve_create() {
                creates += 1;
            }
            (excess, creates)
        };
        for e in excess {
            self.shared.spawn_destroy(e, Reason::Resized);
        }
        for _ in 0..creates {
            self.shared.spawn_create();
        }
        Ok(())
    }

    /// Destroys the idle objects for which `keep` returns `false`; returns how many.
    pub async fn retain(&self, mut keep: impl FnMut(&M::Type, &Metadata) -> bool) -> usize {
        let taken = self
            .shared
            .state
            .lock()
            .take_idle(|e| !keep(&e.obj.value, &e.meta));
        let n = taken.len();
        self.shared.destroy_all(taken, Reason::Cleared).await;
        self.shared.refill();
        n
    }

    /// Keeps at most `keep` healthy idle objects: broken ones and the
    /// surplus (those idle longest) are destroyed. Returns how many.
    pub async fn free(&self, keep: usize) -> usize {
        let shared = &self.shared;
        let taken = {
            let mut st = shared.state.lock();
            let healthy = st
                .inspect_idle(|idle| idle.iter().filter(|e| !shared.broken(&e.obj.value)).count());
            let mut surplus = healthy.saturating_sub(keep);
            st.take_idle(|e| {
                if shared.broken(&e.obj.value) {
                    true
                } else if surplus > 0 {
                    surplus -= 1;
                    true
                } else {
                    false
                }
            })
        };
        let n = taken.len();
        shared.destroy_all(taken, Reason::Cleared).await;
        n
    }

    /// Objects whose `destroy` failed or timed out, with their errors.
    pub fn pending(&self) -> Vec<PendingInfo> {
        self.shared
            .pending
            .lock()
            .iter()
            .map(|p| PendingInfo {
                id: p.entry.meta.id,
                error: crate::error::error_chain(&p.error),
                since: p.since.into_std(),
                attempts: p.attempts,
            })
            .collect()
    }

    /// Tries to close the pending objects again. With `force`, drops them
    /// without calling `destroy`. Returns how many are still pending.
    pub async fn close_pending(&self, force: bool) -> usize {
        let all = std::mem::take(&mut *self.shared.pending.lock());
        if force {
            let n = all.len();
            for p in &all {
                tracing::debug!(target: "aquifer::pool", id = p.entry.meta.id, "pending object dropped by force");
            }
            drop(all);
            tracing::info!(target: "aquifer::pool", dropped = n, "pending objects dropped");
            return 0;
        }
        for p in all {
            self.shared
                .destroy_now(p.entry, Reason::Closed, p.attempts)
                .await;
        }
        self.shared.pending.lock().len()
    }

    /// How many objects are where, right now.
    pub fn status(&self) -> Status {
        let pending = self.shared.pending.lock().len();
        let st = self.shared.state.lock();
        let (idle, borrowed) = st.idle_and_borrowed();
        Status {
            size: st.size,
            idle,
            borrowed,
            creating: st.creating,
            waiting: st.waiters.len(),
            pending,
            max: st.max,
            min: st.min,
            // A closed pool creates nothing more.
            spare: if st.phase == Phase::Closed {
                0
            } else {
                st.max.saturating_sub(st.size)
            },
        }
    }

    /// Borrowed objects plus waiting callers: how busy the pool is, as of
    /// the last change, read without the lock.
    #[inline]
    pub(crate) fn busy(&self) -> usize {
        self.shared.idle.busy()
    }

    /// Counters and latency summaries since the pool was built.
    pub fn metrics(&self) -> Metrics {
        let st = self.shared.state.lock();
        let mut m = st.m.clone();
        st.idle.merge_into(&mut m);
        drop(st);
        m.snapshot()
    }

    /// A new listener for this pool's events. Listeners that fall behind
    /// lose the oldest events; the pool never waits for them.
    pub fn events(&self) -> EventStream {
        self.shared.events.subscribe()
    }

    /// Like [`events`](Pool::events) but without asking for the
    /// per-checkout [`PoolEvent::Acquired`] and [`PoolEvent::Released`]:
    /// while only such listeners exist those are not even built, so the
    /// checkout path pays nothing for them. (They still arrive while
    /// another listener asks for every event.)
    pub fn lifecycle_events(&self) -> EventStream {
        self.shared.events.subscribe_lifecycle()
    }

    /// Records that work on one of this pool's objects failed, for drivers'
    /// query helpers: listeners get [`PoolEvent::OperationFailed`], `tracing`
    /// a warning, and [`Metrics::operation_failures`] counts it. The message
    /// must not hold secrets.
    pub fn report(&self, op: crate::Operation, error: impl std::fmt::Display) {
        self.shared.state.lock().m.operation_failures += 1;
        self.shared.emit(PoolEvent::OperationFailed {
            op,
            error: error.to_string(),
        });
    }

    /// A guard for a driver's transaction helper: unless
    /// [`finished`](TransactionWatch::finished) is called, dropping it
    /// reports an [`Operation::Transaction`](crate::Operation::Transaction)
    /// failure, saying whether the transaction's code panicked or its
    /// future was dropped mid-way. Rolling back stays the driver's job;
    /// this makes the abandoned transaction visible.
    pub fn watch_transaction(&self) -> TransactionWatch<'_, M> {
        TransactionWatch {
            pool: self,
            armed: true,
        }
    }

    /// The pool's configuration (`max` as built; see [`status`](Pool::status)
    /// for the current one).
    pub fn config(&self) -> &PoolConfig {
        &self.shared.cfg
    }

    pub(crate) fn shared(&self) -> &Shared<M> {
        &self.shared
    }

    /// The manager.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Manager> Drop for Pool<M> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            let taken = self.shared.close_state();
            for e in taken {
                self.shared.spawn_destroy(e, Reason::Closed);
            }
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish()
    }
}

/// The slot a queued caller waits on.
type WaitSlot<M> = crate::sync::Arc<Slot<Handoff<Owned<M>, <M as Manager>::Error>>>;

/// A queued caller's claim; dropping it leaves the queue and puts back
/// anything handed over in the meantime.
struct WaitGuard<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    slot: Option<WaitSlot<M>>,
}

impl<M: Manager> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut st = self.shared.state.lock();
            let placed = match st.cancel(&slot, false) {
                Some(Ok((entry, _))) => {
                    Some(st.place(entry, self.shared.clock.now(), shards::home()))
                }
                _ => None,
            };
            let settled = st.phase != Phase::Open && st.settled();
            drop(st);
            self.shared.after_place(placed, settled);
        }
    }
}

/// An object being validated or reset; if that is cancelled mid-way the
/// object is destroyed (its state is unknown) and its slot freed.
struct Checkout<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    entry: Option<Item<Owned<M>>>,
}

impl<M: Manager> Drop for Checkout<'_, M> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.shared.discard(entry, Reason::ValidationFailed);
        }
    }
}

/// A reserved create slot. Given back on drop unless the create finished,
/// so a create job that is cancelled or panics leaks nothing.
struct Reservation<M: Manager> {
    shared: Arc<Shared<M>>,
    armed: bool,
}

impl<M: Manager> Drop for Reservation<M> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.shared.state.lock();
            st.unreserve();
            let settled = st.phase != Phase::Open && st.settled();
            drop(st);
            if settled {
                self.shared.settled.notify_waiters();
            }
        }
    }
}

impl<M: Manager> Shared<M> {
    #[inline]
    fn ensure_started(self: &Arc<Self>) {
        if !self.running.load(Ordering::Acquire) {
            self.start_background();
        }
    }

    #[cold]
    fn start_background(self: &Arc<Self>) {
        let Ok(handle) = Handle::try_current() else {
            return;
        };
        if self.state.lock().phase == Phase::Closed || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.runtime.set(handle.clone());
        let alive = Alive(Arc::downgrade(self));
        handle.spawn(background(alive, Arc::clone(&self.rearm), self.cfg.tick()));
        self.refill();
    }

    /// Runs `fut` on the caller's runtime, or else on the one the pool
    /// started in.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        match Handle::try_current()
            .ok()
            .or_else(|| self.runtime.get().cloned())
        {
            Some(h) => {
                h.spawn(fut);
            }
            // No runtime to run it on: dropping the future runs its guards.
            None => drop(fut),
        }
    }

    /// A cheap broken check that survives a panicking manager.
    #[inline]
    fn broken(&self, obj: &M::Type) -> bool {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.manager.is_broken(obj))).unwrap_or(true)
    }

    fn emit(&self, ev: PoolEvent) {
        self.events.send(ev);
    }

    /// Whether a per-checkout event is worth building.
    #[inline]
    fn hot_events(&self) -> bool {
        self.events.wanted() || tracing::enabled!(target: "aquifer::pool", tracing::Level::TRACE)
    }

    /// Starts creates while they are useful: for waiters and up to `min`.
    fn refill(self: &Arc<Self>) {
        loop {
            if !self.state.lock().reserve_create() {
                break;
            }
            self.spawn_create();
        }
    }

    /// Spawns a create job for a slot already reserved.
    fn spawn_create(self: &Arc<Self>) {
        let res = Reservation {
            shared: Arc::clone(self),
            armed: true,
        };
        self.spawn(create_job(res));
    }

    fn expiry(&self, now: Tick) -> Option<Tick> {
        self.cfg.max_lifetime.map(|life| {
            let cut = self.cfg.lifetime_jitter * fastrand::f64();
            now.after(life.mul_f64(1.0 - cut))
        })
    }

    async fn wait_settled(&self) {
        loop {
            let mut notified = pin!(self.settled.notified());
            notified.as_mut().enable();
            if self.state.lock().settled() {
                return;
            }
            notified.await;
        }
    }

    fn close_state(&self) -> Vec<Item<Owned<M>>> {
        let mut wake = Vec::new();
        let taken = self.state.lock().close(&mut wake);
        wake_all(wake);
        self.settled.notify_waiters();
        taken
    }

    /// Wakes or destroys after a `place`, and signals a settled pool.
    fn after_place(self: &Arc<Self>, placed: Option<Placed<Owned<M>>>, settled: bool) {
        match placed {
            Some(Placed::Handed(Some(w)) | Placed::Nudged(Some(w))) => w.wake(),
            Some(Placed::Destroy(e)) => {
                let reason = if self.state.lock().phase == Phase::Closed {
                    Reason::Closed
                } else {
                    Reason::Resized
                };
                self.spawn_destroy(e, reason);
            }
            _ => {}
        }
        if settled {
            self.settled.notify_waiters();
        }
    }

    fn refused(&self, r: Refusal) -> PoolError<M::Error> {
        match r {
            Refusal::QueueFull(max_waiting) => {
                self.emit(PoolEvent::QueueFull { max_waiting });
                PoolError::QueueFull { max_waiting }
            }
            Refusal::Draining => PoolError::Draining,
            Refusal::Closed => PoolError::Closed,
        }
    }

    /// A full checkout.
    async fn acquire(
        self: &Arc<Self>,
        priority: usize,
        timeout: Duration,
        caller: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let this = self;
        this.ensure_started();
        let home = shards::home();
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
                None => this
                    .state
                    .lock()
                    .acquire(priority, now, deadline, first, home),
            };
            first = false;
            let entry = match step {
                Acquire::Got(e) => e,
                Acquire::Wait {
                    slot,
                    wake,
                    create,
                    max_reached,
                    rearm,
                } => {
                    if let Some(w) = wake {
                        w.wake();
                    }
                    if rearm {
                        this.rearm.notify_one();
                    }
                    if create {
                        this.spawn_create();
                    }
                    if let Some((max, waiting)) = max_reached {
                        this.emit(PoolEvent::MaxReached { max, waiting });
                    }
                    let (e, handed_at) = this.wait(slot, deadline, start).await?;
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
                let last_create_error = {
                    let mut st = this.state.lock();
                    st.m.timeouts += 1;
                    st.last_error.clone()
                };
                this.emit(PoolEvent::QueueTimeout {
                    waited: now.since(start),
                });
                return Err(PoolError::timeout(now.since(start), last_create_error));
            }
        }
    }

    async fn try_acquire(
        self: &Arc<Self>,
        caller: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.ensure_started();
        let home = shards::home();
        // One clock reading serves the call unless an object fails its
        // check (which may have taken a validation's time).
        let start = self.clock.now();
        let mut now = start;
        loop {
            let got = self.state.lock().try_acquire(true, |_| true, home);
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
    fn take_ready(self: &Arc<Self>, caller: &'static Location<'static>) -> Option<Pooled<M>> {
        self.ensure_started();
        let home = shards::home();
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
    fn check_due(&self, entry: &Entry<Owned<M>>, now: Tick) -> bool {
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
        now: Tick,
        deadline: Tick,
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
    async fn validate(
        self: &Arc<Self>,
        entry: Item<Owned<M>>,
        deadline: Tick,
    ) -> Option<Item<Owned<M>>> {
        let mut guard = Checkout {
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
            Err(_) => (format!("validate did not finish within {limit:?}"), None),
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
        self.state.lock().m.validation_failures += 1;
        if entry.meta.use_count == 0 {
            self.fresh_failed("first check", cause);
        }
        self.emit(PoolEvent::ValidationFailed {
            id: entry.meta.id,
            error,
        });
        self.discard(entry, Reason::ValidationFailed);
    }

    /// A new object failed before its first use: that is a failed create,
    /// with its backoff, its cause on later timeouts and its event, so that
    /// a server handing out broken connections is not hammered.
    #[cold]
    fn fresh_failed(&self, what: &'static str, source: Option<std::sync::Arc<M::Error>>) {
        let err = CreateError::Unusable { what, source };
        let (failures, delay) = {
            let mut st = self.state.lock();
            let failures = st.failures.saturating_add(1);
            let delay = self.cfg.backoff.delay(failures);
            st.failed(err.clone(), crate::clock::later(delay));
            (failures, delay)
        };
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
        start: Tick,
        now: Tick,
        caller: &'static Location<'static>,
    ) -> Pooled<M> {
        entry.meta.use_count += 1;
        entry.taken_at = now;
        if let Some(leases) = &self.leases {
            leases.lock().insert(
                entry.meta.id,
                Lease {
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
        slot: WaitSlot<M>,
        deadline: Tick,
        start: Tick,
    ) -> Result<(Item<Owned<M>>, Tick), PoolError<M::Error>> {
        let mut guard = WaitGuard {
            shared: self,
            slot: Some(slot),
        };
        // The background task fails this caller at its deadline, so no timer
        // is armed per wait. Only when that task is gone (its runtime shut
        // down) does the caller fall back to a timer of its own; the task
        // nudges every waiter when it goes, so none misses the switch.
        let mut own_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let handed = loop {
            let polled = std::future::poll_fn(|cx| {
                let slot = guard.slot.as_ref().expect("held until the wait ends");
                if let Poll::Ready(v) = slot.poll(cx) {
                    return Poll::Ready(Some(v));
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
            match polled {
                Some(Some(handed)) => break Some(handed),
                // Nudged: a return put an object in the idle shards. Take
                // one if it is still there; else wait on, at the same place.
                Some(None) => {
                    let slot = guard.slot.as_ref().expect("held until the wait ends");
                    let now = self.clock.now();
                    let got = self.state.lock().retry(slot, now, shards::home());
                    if got.is_some() {
                        break got;
                    }
                }
                None => break None,
            }
        };
        let slot = guard.slot.take().expect("held until the wait ends");
        let handed = match handed {
            Some(v) => v,
            None => {
                let (late, seen) = {
                    let mut st = self.state.lock();
                    let late = st.cancel(&slot, true);
                    (late, st.error_seen_by(&slot))
                };
                match late {
                    // Handed over just as the time ran out: take it.
                    Some(v) => v,
                    None => {
                        let waited = self.clock.now().since(start);
                        self.emit(PoolEvent::QueueTimeout { waited });
                        return Err(PoolError::timeout(waited, seen));
                    }
                }
            }
        };
        match handed {
            Ok(got) => {
                // Recorded here, in this thread's shard, rather than by
                // whoever handed the object over under the pool lock.
                self.idle
                    .record_wait(shards::home(), got.1.nanos_since(slot.since));
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

    /// A checked-out object comes back to the pool it holds. The entry's
    /// reference to the pool moves out for the checks and back in before
    /// the entry is stored: no reference count changes on the way.
    #[inline]
    pub(crate) fn release(mut entry: Item<Owned<M>>) {
        let this = entry
            .obj
            .pool
            .take()
            .expect("a checked-out object holds its pool");
        let now = this.clock.now();
        let held = now.nanos_since(entry.taken_at);
        entry.meta.last_used = now;
        if let Some(leases) = &this.leases {
            leases.lock().remove(&entry.meta.id);
        }
        if this.hot_events() {
            this.emit(PoolEvent::Released {
                id: entry.meta.id,
                held: Duration::from_nanos(held),
            });
        }
        if this.broken(&entry.obj.value) {
            this.idle.record_usage(shards::home(), held);
            this.evict(entry, Reason::Broken);
        } else if entry.expired(now) {
            this.idle.record_usage(shards::home(), held);
            this.evict(entry, Reason::Lifetime);
        } else if std::panic::catch_unwind(AssertUnwindSafe(|| {
            this.manager.needs_reset(&mut entry.obj.value)
        }))
        .unwrap_or(true)
        {
            this.idle.record_usage(shards::home(), held);
            entry.obj.pool = Some(Arc::clone(&this));
            let task = Arc::clone(&this);
            this.spawn(async move { task.reset(entry).await });
        } else {
            let home = shards::home();
            let idle: *const Shards<Owned<M>> = &*this.idle;
            entry.obj.pool = Some(this);
            // Nobody waits and the pool needs nothing: no pool lock. The
            // shard records the usage either way.
            #[allow(unsafe_code)]
            // SAFETY: `idle` points into the pool (its shards are freed only
            // with it), and the reference that just moved into `entry` keeps
            // the pool alive while this thread owns the entry. `put` stores
            // the entry under its shard's lock; no other thread can take it
            // out, and so drop that reference, before the lock is released,
            // which is `put`'s last access to `*idle`. On `Err` the entry
            // comes back to this thread.
            let refused = unsafe { Shards::put(idle, home, entry, held) };
            if let Err(entry) = refused {
                let this = Arc::clone(entry.obj.pool.as_ref().expect("just put back"));
                let mut st = this.state.lock();
                let placed = st.place(entry, now, home);
                let settled = st.phase != Phase::Open && st.settled();
                drop(st);
                this.after_place(Some(placed), settled);
            }
        }
    }

    /// A returned object is reset before it is reused.
    async fn reset(self: &Arc<Self>, entry: Item<Owned<M>>) {
        // If this task is dropped mid-reset the guard destroys the object.
        let mut guard = Checkout {
            shared: self,
            entry: Some(entry),
        };
        let limit = self.cfg.reset_timeout;
        let obj = &mut guard.entry.as_mut().expect("held until taken").obj.value;
        let outcome = tokio::time::timeout(limit, catch_unwind(self.manager.reset(obj))).await;
        let entry = guard.entry.take().expect("held until taken");
        let cause = match outcome {
            Ok(Ok(Ok(()))) => {
                let mut st = self.state.lock();
                let placed = st.place(entry, self.clock.now(), shards::home());
                let settled = st.phase != Phase::Open && st.settled();
                drop(st);
                self.after_place(Some(placed), settled);
                return;
            }
            Ok(Ok(Err(e))) => Some(std::sync::Arc::new(e)),
            _ => None,
        };
        self.state.lock().m.reset_failures += 1;
        if entry.meta.use_count == 1 {
            self.fresh_failed("first reset", cause);
        }
        self.discard(entry, Reason::ResetFailed);
    }

    /// Removes a checked-out object's lease and records how long it was held.
    pub(crate) fn forget(&self, entry: &Entry<Owned<M>>) {
        if let Some(leases) = &self.leases {
            leases.lock().remove(&entry.meta.id);
        }
        let held = self.clock.now().nanos_since(entry.taken_at);
        self.idle.record_usage(shards::home(), held);
    }

    /// A detached object frees its slot.
    pub(crate) fn detached(self: &Arc<Self>) {
        let mut st = self.state.lock();
        let create = st.discard();
        let settled = st.phase != Phase::Open && st.settled();
        drop(st);
        if create {
            self.spawn_create();
        }
        if settled {
            self.settled.notify_waiters();
        }
    }

    /// Evicts a counted object (checkout or return found it expired or broken).
    fn evict(self: &Arc<Self>, entry: Item<Owned<M>>, reason: Reason) {
        {
            let mut st = self.state.lock();
            match reason {
                Reason::Idle => st.m.evicted_idle += 1,
                Reason::Lifetime => st.m.evicted_lifetime += 1,
                _ => st.m.evicted_broken += 1,
            }
        }
        self.emit(PoolEvent::Evicted {
            id: entry.meta.id,
            reason,
        });
        self.discard(entry, reason);
    }

    /// Destroys a counted object: frees its slot (starting a replacement if
    /// one is needed) and closes it in the background.
    pub(crate) fn discard(self: &Arc<Self>, entry: Item<Owned<M>>, reason: Reason) {
        self.detached();
        self.spawn_destroy(entry, reason);
    }

    /// Closes an object whose slot is already freed, in the background.
    fn spawn_destroy(self: &Arc<Self>, entry: Item<Owned<M>>, reason: Reason) {
        let this = Arc::clone(self);
        self.spawn(async move {
            this.destroy_now(entry, reason, 0).await;
        });
    }

    /// Closes objects whose slots are already freed, and waits for it.
    async fn destroy_all(self: &Arc<Self>, entries: Vec<Item<Owned<M>>>, reason: Reason) {
        match self.runtime.get() {
            Some(h) => {
                let tasks: Vec<_> = entries
                    .into_iter()
                    .map(|e| {
                        let this = Arc::clone(self);
                        h.spawn(async move { this.destroy_now(e, reason, 0).await })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            }
            None => {
                for e in entries {
                    self.destroy_now(e, reason, 0).await;
                }
            }
        }
    }

    /// Runs `destroy`; a failure or timeout keeps the object as pending.
    async fn destroy_now(&self, mut entry: Item<Owned<M>>, reason: Reason, attempts: u32) {
        let limit = self.cfg.destroy_timeout;
        let outcome = tokio::time::timeout(
            limit,
            catch_unwind(self.manager.destroy(&mut entry.obj.value)),
        )
        .await;
        let id = entry.meta.id;
        let error = match outcome {
            Ok(Ok(Ok(()))) => {
                drop(entry);
                self.state.lock().m.destroys += 1;
                self.emit(PoolEvent::Destroyed { id, reason });
                return;
            }
            Ok(Ok(Err(e))) => DestroyError::Backend(std::sync::Arc::new(e)),
            Ok(Err(_)) => {
                // A panicking destroy leaves nothing to retry with.
                drop(entry);
                self.state.lock().m.destroy_failures += 1;
                self.emit(PoolEvent::DestroyFailed {
                    id,
                    error: "destroy panicked; object dropped".into(),
                });
                return;
            }
            Err(_) => DestroyError::Timeout(limit),
        };
        self.state.lock().m.destroy_failures += 1;
        self.emit(PoolEvent::DestroyFailed {
            id,
            error: crate::error::error_chain(&error),
        });
        // A pending object is on its way out: it no longer keeps the pool
        // alive (the pool's own list would hold it forever).
        entry.obj.pool = None;
        self.pending.lock().push(PendingObject {
            entry,
            error,
            since: Instant::now(),
            attempts: attempts + 1,
        });
    }

    /// One maintenance pass: eviction, refill, keepalive, leak checks.
    async fn maintain_once(self: &Arc<Self>) {
        let now = self.clock.precise();
        let evicted = self
            .state
            .lock()
            .evict(now, &self.cfg, |obj| self.broken(&obj.value));
        for (e, reason) in evicted {
            self.emit(PoolEvent::Evicted {
                id: e.meta.id,
                reason,
            });
            self.spawn_destroy(e, reason);
        }
        self.refill();
        if let Some(every) = self.cfg.keepalive_interval {
            let due = self.state.lock().due_for_keepalive(now, every);
            for entry in due {
                let this = Arc::clone(self);
                self.spawn(async move {
                    let deadline = this.clock.now().after(this.cfg.validate_timeout);
                    if let Some(entry) = this.validate(entry, deadline).await {
                        let mut st = this.state.lock();
                        let placed = st.place(entry, this.clock.now(), shards::home());
                        let settled = st.phase != Phase::Open && st.settled();
                        drop(st);
                        this.after_place(Some(placed), settled);
                    }
                });
            }
        }
        if let (Some(limit), Some(leases)) = (self.cfg.leak_detection_threshold, &self.leases) {
            let mut found = Vec::new();
            for (id, lease) in leases.lock().iter_mut() {
                let held = now.since(lease.since);
                if !lease.reported && held >= limit {
                    lease.reported = true;
                    found.push((*id, held, lease.location));
                }
            }
            if !found.is_empty() {
                self.state.lock().m.leaks += found.len() as u64;
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
async fn create_job<M: Manager>(mut res: Reservation<M>) {
    let shared = Arc::clone(&res.shared);
    let cfg = &shared.cfg;
    loop {
        let retry_at = shared.state.lock().retry_at;
        if let Some(at) = retry_at {
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
                let mut st = shared.state.lock();
                if !st.keep_creating() {
                    st.unreserve();
                    res.armed = false;
                    let settled = st.phase != Phase::Open && st.settled();
                    drop(st);
                    if settled {
                        shared.settled.notify_waiters();
                    }
                    return;
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
                let (placed, id, again, settled) = {
                    let mut st = shared.state.lock();
                    let id = st.next_id();
                    let placed = st.created(
                        Box::new(Entry::new(
                            Owned::new(obj, &shared),
                            id,
                            shared.clock.base(),
                            born,
                            expires,
                        )),
                        born,
                        took,
                        shards::home(),
                    );
                    let again = st.reserve_create();
                    let settled = st.phase != Phase::Open && st.settled();
                    (placed, id, again, settled)
                };
                res.armed = again;
                shared.emit(PoolEvent::Created { id, took });
                shared.after_place(Some(placed), settled);
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
        let mut wake = Vec::new();
        let (keep, failures, delay, settled) = {
            let mut st = shared.state.lock();
            let failures = st.failures.saturating_add(1);
            let delay = cfg.backoff.delay(failures);
            let keep = st.create_failed(
                err.clone(),
                crate::clock::later(delay),
                permanent,
                &mut wake,
            );
            let settled = st.phase != Phase::Open && st.settled();
            (keep, failures, delay, settled)
        };
        res.armed = keep;
        wake_all(wake);
        shared.emit(PoolEvent::CreateFailed {
            error: crate::error::error_chain(&err),
            failures,
            retry_in: delay,
        });
        if settled {
            shared.settled.notify_waiters();
        }
        shared.created.notify_waiters();
        if !keep {
            return;
        }
    }
}

/// Marks the background task as gone when it ends, however it ends (the
/// pool closed or dropped, or its runtime shut down), and nudges every
/// waiter so that each arms a timer of its own.
struct Alive<M: Manager>(Weak<Shared<M>>);

impl<M: Manager> Drop for Alive<M> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.running.store(false, Ordering::Release);
            let mut wake = Vec::new();
            shared.state.lock().waiters.nudge_all(&mut wake);
            wake_all(wake);
        }
    }
}

/// The pool's one background task: maintenance every `tick`, and failing
/// waiters whose deadline passed. Holds the pool only weakly; ends when the
/// pool is closed or gone.
async fn background<M: Manager>(alive: Alive<M>, rearm: Arc<Notify>, tick: Duration) {
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
            let mut st = shared.state.lock();
            if st.phase == Phase::Closed {
                return;
            }
            let now = shared.clock.precise();
            if st.next_deadline.is_some_and(|at| at <= now) {
                let mut wake = Vec::new();
                st.expire(now, &mut wake);
                let next = st.next_deadline;
                drop(st);
                wake_all(wake);
                next.map(|at| shared.clock.instant(at))
            } else {
                st.next_deadline.map(|at| shared.clock.instant(at))
            }
        };
        if next != armed_for {
            if let Some(at) = next {
                timer.as_mut().reset(at);
            }
            armed_for = next;
        }
        let mut notified = pin!(rearm.notified());
        enum Woke {
            Tick,
            Deadline,
            Rearm,
        }
        let woke = std::future::poll_fn(|cx| {
            if interval.poll_tick(cx).is_ready() {
                return Poll::Ready(Woke::Tick);
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
        if let Woke::Tick = woke {
            let Some(shared) = alive.0.upgrade() else {
                return;
            };
            shared.maintain_once().await;
        }
    }
}

/// Reports a transaction that ends without a commit or a rollback; see
/// [`Pool::watch_transaction`].
#[must_use = "dropping the watch at once reports the transaction as abandoned"]
pub struct TransactionWatch<'a, M: Manager> {
    pool: &'a Pool<M>,
    armed: bool,
}

impl<M: Manager> TransactionWatch<'_, M> {
    /// The transaction committed or rolled back: nothing to report.
    pub fn finished(mut self) {
        self.armed = false;
    }
}

impl<M: Manager> Drop for TransactionWatch<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            let why = if std::thread::panicking() {
                "the transaction's closure panicked"
            } else {
                "the transaction was dropped before it finished"
            };
            self.pool.report(crate::Operation::Transaction, why);
        }
    }
}
