//! The pool: its public handle here; what every handle shares in
//! `shared`, the way out in `get`, the way back in `release`, background
//! work in `tasks`, the checked-out object in `pooled`. The state behind
//! the lock, and the decisions made under it, are in `crate::internals`.
//!
//! # Words
//!
//! One meaning each, here and in `internals`, `shards` and `waiters`:
//!
//! - **object**: what the manager makes (a connection).
//! - **entry**: an object with its metadata, as the pool stores and moves
//!   it (`Entry`, boxed as `Item`); it carries its pool (`Owned`).
//! - **slot**: room for one object under `max`. A create reserves one; an
//!   object that leaves for good frees its own. `size` counts slots taken.
//!   (The multiplexer's slot is the same idea one level down: room for one
//!   request on a connection.)
//! - **checkout** and **return**: an entry goes out in a [`Pooled`] and
//!   comes back when it is dropped. **Detach**: it leaves without coming
//!   back; **destroy**: it is closed, its slot freed; **evict**: destroyed
//!   because it expired, idled too long or is broken.
//! - **idle shard**: one of the per-thread lists of idle entries
//!   (`Shards`), reached without the pool lock while nobody waits.
//! - **waiter**: a caller queued for an object (`Waiter`, in `Waiters`);
//!   the get's claim on it is `Queued`.
//! - **handoff**: an entry (or a failure) put straight into a waiter by a
//!   return or a create, under the lock.
//! - **nudge**: a return that puts its entry in an idle shard wakes one
//!   waiter to come and take it (the next running get may take it first).
//! - **door**: `StateLock::locked`, the one way to change the state; it
//!   leaves **work** (`Work`: entries to destroy or report, creates to
//!   start) for the pool to do after the unlock.
//! - **stamp**: an instant on the pool's coarse clock (`Stamp`);
//!   **maintenance interval**: how often the background task runs.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::PoolConfig;
use crate::error::{BuildError, CreateError, PoolError};
use crate::events::{EventStream, Operation, PoolEvent, Reason};
use crate::internals::{Door, Phase, Tally};
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::object::Metadata;
use crate::status::Status;

pub(crate) mod builder;
mod get;
mod pooled;
mod release;
mod shared;
mod tasks;

pub use pooled::Pooled;
pub(crate) use shared::Shared;

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
    handle: Arc<Handle<M>>,
}

/// What every [`Pool`] handle shares: the pool, closed when the last
/// handle goes. Idle objects hold the pool itself (see `Owned`), never
/// this, so that they do not keep it open.
struct Handle<M: Manager> {
    shared: Arc<Shared<M>>,
}

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        for e in self.shared.close_state() {
            self.shared.spawn_destroy(e, Reason::Closed);
        }
    }
}

/// An object whose `destroy` failed or timed out, as
/// [`Pool::pending`] reports it.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PendingInfo {
    /// The object's id.
    pub id: u64,
    /// The last destroy error's message.
    pub error: String,
    /// When it first failed to close (serialized as `pending_for`, the
    /// seconds since then).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "pending_for", serialize_with = "crate::report::age")
    )]
    pub since: std::time::Instant,
    /// Destroy attempts so far.
    pub attempts: u32,
}

impl<M: Manager> Pool<M> {
    /// Builds a pool from a complete configuration.
    ///
    /// Inside a Tokio runtime with `eager` set (the default), filling to
    /// `min` and background maintenance start at once; otherwise at the first
    /// checkout or [`start`](Pool::start).
    ///
    /// # Errors
    /// A [`BuildError`] when the configuration cannot work.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::{Pool, PoolConfig};
    ///
    /// let cfg = PoolConfig { max: 8, ..PoolConfig::default() };
    /// let pool = Pool::new(Connector, cfg)?;
    /// assert_eq!(pool.status().max, 8);
    /// # Ok(()) }
    /// ```
    pub fn new(manager: M, cfg: PoolConfig) -> Result<Self, BuildError> {
        cfg.validate()?;
        let shared = Shared::new(manager, cfg);
        if shared.cfg.eager {
            shared.ensure_started();
        }
        Ok(Pool {
            handle: Arc::new(Handle { shared }),
        })
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
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let conn = pool.get().await?;
    /// assert_eq!(pool.status().borrowed, 1);
    /// drop(conn); // back in the pool
    /// assert_eq!(pool.status().idle, 1);
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.handle
            .shared
            .get(0, self.handle.shared.cfg.acquire_timeout, caller)
    }

    /// Like [`get`](Pool::get) with another timeout for this call.
    ///
    /// # Errors
    /// As [`get`](Pool::get).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use std::time::Duration;
    ///
    /// let conn = pool.get_timeout(Duration::from_millis(100)).await?;
    /// # drop(conn);
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.handle.shared.get(0, timeout, caller)
    }

    /// Like [`get`](Pool::get) at a priority: 0 is served first, and a value
    /// beyond `priority_levels - 1` means the lowest. Within a priority,
    /// callers are served in the order they arrived.
    ///
    /// # Errors
    /// As [`get`](Pool::get).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// // 0 is served first when callers queue.
    /// let urgent = pool.get_with_priority(0).await?;
    /// let batch = pool.get_with_priority(2).await?;
    /// # drop((urgent, batch));
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn get_with_priority(
        &self,
        priority: usize,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.handle
            .shared
            .get(priority, self.handle.shared.cfg.acquire_timeout, caller)
    }

    /// Checks out an idle object without queueing. The object is still
    /// validated when `validate_on_borrow` asks for it.
    ///
    /// # Errors
    /// [`PoolError::Exhausted`] when no idle object is ready (others wait, or
    /// all are in use), and the refusals of [`get`](Pool::get).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolError;
    ///
    /// // Nothing idle yet: no object to hand out without waiting.
    /// assert!(matches!(pool.try_get().await, Err(PoolError::Exhausted)));
    /// drop(pool.get().await?);
    /// let conn = pool.try_get().await?; // the idle one
    /// # drop(conn);
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn try_get(
        &self,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        self.handle.shared.try_acquire(caller)
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
        self.handle.shared.take_ready(Location::caller())
    }

    /// Runs `f` with a checked-out object and returns what it returns. When
    /// `f` fails the object is destroyed rather than reused, as it may be in
    /// a bad state.
    ///
    /// # Errors
    /// `f`'s error, or the checkout's error converted into `E`.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolError;
    ///
    /// let n = pool
    ///     .with(async |_conn| Ok::<_, PoolError<std::convert::Infallible>>(42))
    ///     .await?;
    /// assert_eq!(n, 42);
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let pool = aquifer::Pool::builder(Connector).min(2).eager(false).build()?;
    /// pool.start().await?; // two connections open before the first request
    /// assert_eq!(pool.status().idle, 2);
    /// # Ok(()) }
    /// ```
    pub async fn start(&self) -> Result<(), PoolError<M::Error>> {
        let shared = &self.handle.shared;
        shared.ensure_started();
        let started = Instant::now();
        let deadline = crate::clock::later(shared.cfg.acquire_timeout);
        let failures_before = shared.read(|st| st.failure_seq());
        loop {
            let created = shared.created.notified();
            let mut created = pin!(created);
            created.as_mut().enable();
            let (phase, has_min, failed) = shared.read(|st| {
                let failed = (st.failure_seq() > failures_before)
                    .then(|| st.last_error())
                    .flatten();
                (st.phase(), st.has_min(), failed)
            });
            if phase == Phase::Closed {
                return Err(PoolError::Closed);
            }
            if has_min {
                return Ok(());
            }
            if let Some(CreateError::Backend(e)) = &failed {
                if shared.manager.is_permanent(e) {
                    return Err(PoolError::Create(Box::new(CreateError::Backend(
                        std::sync::Arc::clone(e),
                    ))));
                }
            }
            shared.refill();
            if tokio::time::timeout_at(deadline, created).await.is_err() {
                let last = shared.read(|st| st.last_error());
                return Err(PoolError::timeout(started.elapsed(), last));
            }
        }
    }

    /// Stops new checkouts (they fail with [`PoolError::Draining`]), serves
    /// the callers already waiting, and returns once every object is back.
    /// Follow it with [`close`](Pool::close) or [`clear`](Pool::clear).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolError;
    ///
    /// let conn = pool.get().await?;
    /// let drained = tokio::spawn({
    ///     let pool = pool.clone();
    ///     async move { pool.drain().await }
    /// });
    /// tokio::task::yield_now().await;
    /// assert!(matches!(pool.get().await, Err(PoolError::Draining)));
    /// drop(conn); // the last one back: the drain completes
    /// drained.await?;
    /// pool.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn drain(&self) {
        self.handle.shared.locked(|st, _| st.drain());
        // Wakes create jobs waiting out a backoff, so that they stop.
        self.handle.shared.settled.notify_waiters();
        self.handle.shared.wait_settled().await;
    }

    /// Destroys every idle object (waiting for the destroys), then lets the
    /// pool refill to `min`. Returns how many were destroyed.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// drop(pool.get().await?);
    /// assert_eq!(pool.clear().await, 1); // the idle connection, closed
    /// assert_eq!(pool.status().idle, 0);
    /// # Ok(()) }
    /// ```
    pub async fn clear(&self) -> usize {
        let taken = self.handle.shared.locked(|st, _| st.take_idle(|_| true));
        let n = taken.len();
        self.handle.shared.destroy_all(taken, Reason::Cleared).await;
        self.handle.shared.refill();
        n
    }

    /// Closes the pool: new and waiting checkouts fail with
    /// [`PoolError::Closed`], idle objects are destroyed (this waits for
    /// that), and objects still out are destroyed when they come back.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolError;
    ///
    /// pool.close().await;
    /// assert!(pool.is_closed());
    /// assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        let taken = self.handle.shared.close_state();
        self.handle.shared.destroy_all(taken, Reason::Closed).await;
    }

    /// Whether the pool was closed.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// assert!(!pool.is_closed());
    /// pool.close().await;
    /// assert!(pool.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.handle.shared.read(|st| st.phase()) == Phase::Closed
    }

    /// Changes `max`. When it shrinks, idle objects above it are destroyed at
    /// once and borrowed ones when they come back. A closed pool ignores
    /// it (as deadpool does): its status keeps the `max` it closed with.
    ///
    /// # Errors
    /// [`BuildError`] when `max` is 0 or below `min`.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// pool.resize(16)?;
    /// assert_eq!(pool.status().max, 16);
    /// assert!(pool.resize(0).is_err()); // a pool of nothing is refused
    /// # Ok(()) }
    /// ```
    pub fn resize(&self, max: usize) -> Result<(), BuildError> {
        self.handle
            .shared
            .locked(|st, after| st.set_max(max, after))
    }

    /// Destroys the idle objects for which `keep` returns `false`; returns how many.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let (a, b) = (pool.get().await?, pool.get().await?);
    /// let keep = a.id();
    /// drop((a, b));
    /// assert_eq!(pool.retain(|_conn, meta| meta.id() == keep).await, 1);
    /// # Ok(()) }
    /// ```
    pub async fn retain(&self, mut keep: impl FnMut(&M::Type, &Metadata) -> bool) -> usize {
        let taken = self
            .handle
            .shared
            .locked(|st, _| st.take_idle(|e| !keep(&e.obj.value, &e.meta)));
        let n = taken.len();
        self.handle.shared.destroy_all(taken, Reason::Cleared).await;
        self.handle.shared.refill();
        n
    }

    /// Keeps at most `keep` healthy idle objects: broken ones and the
    /// surplus (those idle longest) are destroyed. Returns how many.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let (a, b, c) = (pool.get().await?, pool.get().await?, pool.get().await?);
    /// drop((a, b, c));
    /// assert_eq!(pool.free(1).await, 2); // one idle connection left
    /// assert_eq!(pool.status().idle, 1);
    /// # Ok(()) }
    /// ```
    pub async fn free(&self, keep: usize) -> usize {
        let shared = &self.handle.shared;
        let taken = shared.locked(|st, _| {
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
        });
        let n = taken.len();
        shared.destroy_all(taken, Reason::Cleared).await;
        n
    }

    /// Objects whose `destroy` failed or timed out, with their errors.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// // Nothing failed to close.
    /// assert!(pool.pending().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn pending(&self) -> Vec<PendingInfo> {
        self.handle
            .shared
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
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// // Retries every failed close; with `true`, drops them instead.
    /// assert_eq!(pool.close_pending(false).await, 0);
    /// # Ok(()) }
    /// ```
    pub async fn close_pending(&self, force: bool) -> usize {
        let all = std::mem::take(&mut *self.handle.shared.pending.lock());
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
            self.handle
                .shared
                .destroy_now(p.entry, Reason::Closed, p.attempts)
                .await;
        }
        self.handle.shared.pending.lock().len()
    }

    /// How many objects are where, right now.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let conn = pool.get().await?;
    /// let s = pool.status();
    /// assert_eq!((s.size, s.borrowed, s.idle), (1, 1, 0));
    /// # drop(conn);
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> Status {
        let pending = self.handle.shared.pending.lock().len();
        self.handle.shared.read(|st| st.status(pending))
    }

    /// How busy the pool is and its `max`, as of the last change, read
    /// without the lock: its load is the first over the second.
    #[inline]
    pub(crate) fn load(&self) -> (usize, usize) {
        (
            self.handle.shared.idle.busy(),
            self.handle.shared.idle.max().max(1),
        )
    }

    /// A health check: one checkout and one round trip on it
    /// ([`Manager::validate`]), within `timeout` in all. A connection that
    /// fails the round trip is closed, as a failed validation is.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use std::time::Duration;
    ///
    /// let health = pool.check(Duration::from_secs(1)).await;
    /// assert!(health.healthy, "{:?}", health.error);
    /// # Ok(()) }
    /// ```
    pub async fn check(&self, timeout: Duration) -> crate::status::Health {
        let start = Instant::now();
        // The checkout's own timeout carries the last create error.
        let error = match self.get_timeout(timeout).await {
            Err(e) => Some(crate::error::error_chain(&e)),
            Ok(mut obj) => {
                let left = timeout.saturating_sub(start.elapsed());
                let answer =
                    tokio::time::timeout(left, self.handle.shared.manager.validate(&mut obj));
                match answer.await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => {
                        obj.destroy_for(Reason::ValidationFailed);
                        Some(crate::error::error_chain(&e))
                    }
                    Err(_) => {
                        obj.destroy_for(Reason::ValidationFailed);
                        Some(format!(
                            "no answer within {}: the server is slow or unreachable",
                            crate::error::human_duration(timeout)
                        ))
                    }
                }
            }
        };
        crate::status::Health {
            healthy: error.is_none(),
            latency: start.elapsed(),
            error,
        }
    }

    /// Counters and latency summaries since the pool was built.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// drop(pool.get().await?);
    /// let m = pool.metrics();
    /// assert_eq!((m.gets, m.creates), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> Metrics {
        self.handle.shared.read(|st| st.counters()).snapshot()
    }

    /// A new listener for this pool's events. Listeners that fall behind
    /// lose the oldest events; the pool never waits for them.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolEvent;
    ///
    /// let mut events = pool.events();
    /// drop(pool.get().await?);
    /// let first = events.recv().await;
    /// assert!(matches!(first, Some(PoolEvent::Created { .. })), "{first:?}");
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> EventStream {
        self.handle.shared.events.subscribe()
    }

    /// Like [`events`](Pool::events) but without asking for the
    /// per-checkout [`PoolEvent::Acquired`] and [`PoolEvent::Released`]:
    /// while only such listeners exist those are not even built, so the
    /// checkout path pays nothing for them. (They still arrive while
    /// another listener asks for every event.)
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolEvent;
    ///
    /// let mut events = pool.lifecycle_events();
    /// drop(pool.get().await?);
    /// // A create, but no Acquired or Released.
    /// assert!(matches!(events.recv().await, Some(PoolEvent::Created { .. })));
    /// # Ok(()) }
    /// ```
    pub fn lifecycle_events(&self) -> EventStream {
        self.handle.shared.events.subscribe_lifecycle()
    }

    /// Records that work on one of this pool's objects failed, for drivers'
    /// query helpers: listeners get [`PoolEvent::OperationFailed`], `tracing`
    /// a warning, and [`Metrics::operation_failures`] counts it. The message
    /// must not hold secrets.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::Operation;
    ///
    /// pool.report(Operation::Query, "relation \"users\" does not exist");
    /// assert_eq!(pool.metrics().operation_failures, 1);
    /// # Ok(()) }
    /// ```
    pub fn report(&self, op: Operation, error: impl std::fmt::Display) {
        self.handle.shared.count(Tally::OperationFailed);
        self.handle.shared.emit(PoolEvent::OperationFailed {
            op,
            error: error.to_string(),
        });
    }

    /// A guard for a driver's transaction helper: unless
    /// [`finished`](TransactionWatch::finished) is called, dropping it
    /// reports an [`Operation::Transaction`]
    /// failure, saying whether the transaction's code panicked or its
    /// future was dropped mid-way. Rolling back stays the driver's job;
    /// this makes the abandoned transaction visible.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let watch = pool.watch_transaction();
    /// // ... BEGIN, the transaction's work, COMMIT ...
    /// watch.finished(); // dropped without this, it reports the transaction
    /// assert_eq!(pool.metrics().operation_failures, 0);
    /// # Ok(()) }
    /// ```
    pub fn watch_transaction(&self) -> TransactionWatch<'_, M> {
        TransactionWatch {
            pool: self,
            armed: true,
        }
    }

    /// The pool's configuration (`max` as built; see [`status`](Pool::status)
    /// for the current one).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// assert_eq!(pool.config().max, 4);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &PoolConfig {
        &self.handle.shared.cfg
    }

    pub(crate) fn shared(&self) -> &Shared<M> {
        &self.handle.shared
    }

    /// The newest create failure since the last success, if creates are
    /// failing now: what a caller that gave up waiting can report.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// drop(pool.get().await?);
    /// assert!(pool.last_create_error().is_none()); // creates succeed
    /// # Ok(()) }
    /// ```
    pub fn last_create_error(&self) -> Option<CreateError<M::Error>> {
        self.handle.shared.read(|st| st.last_error())
    }

    /// The manager.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let _connector: &Connector = pool.manager();
    /// # Ok(()) }
    /// ```
    pub fn manager(&self) -> &M {
        &self.handle.shared.manager
    }
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            handle: Arc::clone(&self.handle),
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

/// Reports a transaction that ends without a commit or a rollback; see
/// [`Pool::watch_transaction`].
#[must_use = "dropping the watch at once reports the transaction as abandoned"]
pub struct TransactionWatch<'a, M: Manager> {
    pool: &'a Pool<M>,
    armed: bool,
}

impl<M: Manager> TransactionWatch<'_, M> {
    /// The transaction committed or rolled back: nothing to report.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let watch = pool.watch_transaction();
    /// watch.finished();
    /// assert_eq!(pool.metrics().operation_failures, 0);
    /// # Ok(()) }
    /// ```
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
            self.pool.report(Operation::Transaction, why);
        }
    }
}
