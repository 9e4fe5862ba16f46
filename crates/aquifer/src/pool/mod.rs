//! The pool: its public handle here, the operator's calls in `control`;
//! what every handle shares in `shared`, the way out in `get`, the way
//! back in `release`, background work in `tasks`, the checked-out object
//! in `pooled`. The state behind the lock, and the decisions made under
//! it, are in `crate::internals`.
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
use std::sync::Arc;
use std::time::Duration;

use crate::config::PoolConfig;
use crate::error::{BuildError, CreateError, PoolError};
use crate::events::{EventStream, Operation, PoolEvent, Reason};
use crate::internals::Tally;
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::status::Status;

pub(crate) mod builder;
pub(crate) mod control;
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

    /// Names the pool after the first cluster member it becomes, so that
    /// its connections can say where they came from (see
    /// [`Pooled::cluster_name`]) without a reference to the member. Later
    /// names are ignored.
    pub(crate) fn set_cluster_name(&self, name: &Arc<str>) {
        let _ = self.handle.shared.cluster_name.set(Arc::clone(name));
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
