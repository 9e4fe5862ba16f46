//! What every handle, checked-out object and task of one pool shares:
//! [`Shared`], its door into the state (every change goes through
//! [`Door::locked`], which acts on the [`Work`] the unlock leaves), and the
//! helpers the get, return and background paths have in common.

use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::task::Poll;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::{PoolClock, Stamp};
use crate::config::PoolConfig;
use crate::error::{DestroyError, PoolError};
use crate::events::Reason;
use crate::events::{EventBus, PoolEvent};
use crate::internals::{After, Door, Refusal, State, StateLock, Tally, Work};
use crate::manager::Manager;
use crate::object::Item;
use crate::shards::Shards;
use crate::sync::Mutex;
use crate::thread;

pub(crate) struct Shared<M: Manager> {
    pub(crate) manager: M,
    pub(crate) cfg: PoolConfig,
    pub(super) state: StateLock<Owned<M>, M::Error>,
    pub(super) events: EventBus,
    /// Woken whenever a draining or closed pool may have settled, and when
    /// a drain or close begins (create jobs in a backoff then stop).
    pub(super) settled: Notify,
    /// Woken whenever a create job ends an attempt (made or failed), for
    /// [`Pool::start`](crate::Pool::start).
    pub(super) created: Notify,
    /// The background task (maintenance and waiter deadlines) is running.
    /// It is restarted on the caller's runtime if its own runtime went away.
    pub(super) running: AtomicBool,
    /// Wakes the background task when a waiter's deadline is the new earliest.
    pub(super) rearm: Arc<Notify>,
    pub(super) runtime: OnceLock<Handle>,
    pub(super) sites: Option<Mutex<HashMap<u64, CheckoutSite>>>,
    pub(super) pending: Mutex<Vec<PendingObject<Owned<M>, M::Error>>>,
    /// The name of the first cluster member this pool became, so that a
    /// connection can tell where it came from without a reference of its
    /// own to the member.
    pub(super) cluster_name: OnceLock<Arc<str>>,
    /// Read on checkout and return.
    pub(crate) clock: PoolClock,
    /// The idle objects (shared with the state), reached without the pool
    /// lock while nobody waits.
    pub(super) idle: crate::sync::Arc<Shards<Owned<M>>>,
}

/// What the pool keeps about an object whose `destroy` failed.
pub(super) struct PendingObject<T, E> {
    pub(super) entry: Item<T>,
    pub(super) error: DestroyError<E>,
    pub(super) since: Instant,
    pub(super) attempts: u32,
}

/// Where a checked-out object was taken, for leak reports.
pub(super) struct CheckoutSite {
    pub(super) since: Stamp,
    pub(super) location: &'static Location<'static>,
    pub(super) reported: bool,
}

/// What a pool stores for each of its objects: the manager's object and a
/// strong reference to the pool. The reference travels with the object,
/// idle in a shard, handed to a waiter or checked out, so that a checkout
/// moves it into the [`Pooled`](crate::Pooled) and a return moves it back,
/// and neither touches a reference count.
///
/// Idle objects thus keep their own pool alive. The cycle ends when the last
/// [`Pool`](crate::Pool) handle is dropped: the pool closes and takes every
/// idle object out, and objects still out are destroyed when they come back.
pub(crate) struct Owned<M: Manager> {
    pub(crate) value: M::Type,
    /// `None` only once the object is on its way out of the pool for good
    /// (being destroyed, or kept as pending), never while it can be handed
    /// out.
    pub(crate) pool: Option<Arc<Shared<M>>>,
}

impl<M: Manager> Owned<M> {
    pub(crate) fn new(value: M::Type, pool: &Arc<Shared<M>>) -> Self {
        Owned {
            value,
            pool: Some(Arc::clone(pool)),
        }
    }
}

/// An object being validated or reset; if that is cancelled mid-way the
/// object is destroyed (its state is unknown) and its slot freed.
pub(super) struct Checking<'a, M: Manager> {
    pub(super) shared: &'a Arc<Shared<M>>,
    pub(super) entry: Option<Item<Owned<M>>>,
}

impl<M: Manager> Drop for Checking<'_, M> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.shared.destroy(entry, Reason::ValidationFailed);
        }
    }
}

/// Polls a future, turning a panic into an `Err`.
pub(super) async fn catch_unwind<F: Future>(f: F) -> std::thread::Result<F::Output> {
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

impl<M: Manager> Shared<M> {
    /// The shared part of a new pool; `cfg` is valid.
    pub(super) fn new(manager: M, cfg: PoolConfig) -> Arc<Self> {
        let state = State::new(&cfg, thread::shard_count());
        Arc::new(Shared {
            idle: crate::sync::Arc::clone(state.shards()),
            state: StateLock::new(state),
            clock: PoolClock::new(cfg.clock),
            events: EventBus::new(cfg.event_capacity),
            settled: Notify::new(),
            created: Notify::new(),
            running: AtomicBool::new(false),
            rearm: Arc::new(Notify::new()),
            runtime: OnceLock::new(),
            sites: cfg
                .leak_detection_threshold
                .map(|_| Mutex::new(HashMap::new())),
            pending: Mutex::new(Vec::new()),
            cluster_name: OnceLock::new(),
            manager,
            cfg,
        })
    }

    /// Runs `fut` on the caller's runtime, or else on the one the pool
    /// started in.
    pub(super) fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
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
    pub(super) fn broken(&self, obj: &M::Type) -> bool {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.manager.is_broken(obj))).unwrap_or(true)
    }

    pub(super) fn emit(&self, ev: PoolEvent) {
        self.events.send(ev);
    }

    /// Whether a per-checkout event is worth building.
    #[inline]
    pub(super) fn hot_events(&self) -> bool {
        self.events.wanted() || tracing::enabled!(target: "aquifer::pool", tracing::Level::TRACE)
    }

    pub(super) fn expiry(&self, now: Stamp) -> Option<Stamp> {
        self.cfg.max_lifetime.map(|life| {
            let cut = self.cfg.lifetime_jitter * fastrand::f64();
            now.after(life.mul_f64(1.0 - cut))
        })
    }

    pub(super) async fn wait_settled(&self) {
        loop {
            let mut notified = pin!(self.settled.notified());
            notified.as_mut().enable();
            if self.read(|st| st.settled()) {
                return;
            }
            notified.await;
        }
    }

    /// Closes the state: fails every waiter, and returns the idle objects
    /// (their slots freed) for the caller to destroy.
    pub(super) fn close_state(self: &Arc<Self>) -> Vec<Item<Owned<M>>> {
        let taken = self.locked(|st, after| st.close(after));
        self.settled.notify_waiters();
        taken
    }

    /// Looks at the state under its lock without changing it.
    #[inline]
    pub(super) fn read<R>(&self, f: impl FnOnce(&State<Owned<M>, M::Error>) -> R) -> R {
        self.state.read(f)
    }

    /// Counts one event, through the door.
    pub(super) fn count(&self, t: Tally) {
        let ((), work) = self.state.locked(|st, _| st.count(t));
        debug_assert!(work.destroy.is_empty() && work.evicted.is_empty() && work.creates == 0);
        if work.settled {
            self.settled.notify_waiters();
        }
    }

    /// Does what an unlock left to do once its waiters are woken: reports
    /// and destroys evicted objects, destroys objects whose slots were
    /// freed, starts the creates reserved, and tells whoever waits for a
    /// draining or closed pool that it settled.
    fn finish(self: &Arc<Self>, work: Work<Owned<M>>) {
        for (e, reason) in work.evicted {
            self.emit(PoolEvent::Evicted {
                id: e.meta.id,
                reason,
            });
            self.spawn_destroy(e, reason);
        }
        for (e, reason) in work.destroy {
            self.spawn_destroy(e, reason);
        }
        for _ in 0..work.creates {
            self.spawn_create();
        }
        if work.settled {
            self.settled.notify_waiters();
        }
    }

    pub(super) fn refused(&self, r: Refusal) -> PoolError<M::Error> {
        match r {
            Refusal::QueueFull(max_waiting) => {
                self.emit(PoolEvent::QueueFull { max_waiting });
                PoolError::QueueFull { max_waiting }
            }
            Refusal::Draining => PoolError::Draining,
            Refusal::Closed => PoolError::Closed,
            Refusal::FailingForGood => {
                let last = self.read(|st| st.last_error());
                // Set with the failure that made it so; never cleared apart.
                PoolError::Create(Box::new(last.unwrap_or(crate::CreateError::Unusable {
                    what: "a create",
                    source: None,
                })))
            }
        }
    }
}

impl<M: Manager> Door<Owned<M>, M::Error> for Arc<Shared<M>> {
    #[inline]
    fn locked<R>(
        &self,
        f: impl FnOnce(&mut State<Owned<M>, M::Error>, &mut After<Owned<M>>) -> R,
    ) -> R {
        let (r, work) = self.state.locked(f);
        self.finish(work);
        r
    }

    #[inline]
    fn now(&self) -> Stamp {
        self.clock.now()
    }
}
