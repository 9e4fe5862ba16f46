//! The way back: a checked-out object returns (straight into its thread's
//! shard when it can), is reset, evicted, detached or destroyed.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Stamp;
use crate::error::DestroyError;
use crate::events::{PoolEvent, Reason};
use crate::internals::{Door, Tally};
use crate::manager::Manager;
use crate::object::{Entry, Item};
use crate::shards::Shards;
use crate::thread;

use super::shared::{catch_unwind, Checking, Owned, PendingObject, Shared};

impl<M: Manager> Shared<M> {
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
        if let Some(sites) = &this.sites {
            sites.lock().remove(&entry.meta.id);
        }
        if this.hot_events() {
            this.emit(PoolEvent::Released {
                id: entry.meta.id,
                held: Duration::from_nanos(held),
            });
        }
        if this.broken(&entry.obj.value) {
            this.idle.record_usage(thread::home(), held);
            this.locked(|st, after| st.evict(entry, Reason::Broken, after));
        } else if entry.expired(now) {
            this.idle.record_usage(thread::home(), held);
            this.locked(|st, after| st.evict(entry, Reason::Lifetime, after));
        } else if std::panic::catch_unwind(AssertUnwindSafe(|| {
            this.manager.needs_reset(&mut entry.obj.value)
        }))
        .unwrap_or(true)
        {
            this.idle.record_usage(thread::home(), held);
            entry.obj.pool = Some(Arc::clone(&this));
            let task = Arc::clone(&this);
            this.spawn(async move { task.reset(entry).await });
        } else {
            let home = thread::home();
            let idle: *const Shards<Owned<M>> = &*this.idle;
            entry.obj.pool = Some(this);
            // Nobody waits and the pool needs nothing: no pool lock. The
            // shard records the usage either way. The entry keeps its
            // reference to the pool, so that no reference count changes on
            // the way (idle entries without one cost a count change per
            // checkout and per return: BENCHMARKS.md); hence the pointer.
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
                Self::release_through_lock(entry, now, home);
            }
        }
    }

    /// A return the pool must see (someone waits, or the pool is draining,
    /// closed or above `max`): through the door, which hands it to a waiter
    /// or nudges one (see `internals::checkout`). Out of line, so that the
    /// lock-free return stays small.
    #[cold]
    #[inline(never)]
    fn release_through_lock(entry: Item<Owned<M>>, now: Stamp, home: usize) {
        let this = Arc::clone(entry.obj.pool.as_ref().expect("just put back"));
        this.locked(|st, after| st.place(entry, now, home, after));
    }

    /// A returned object is reset before it is reused.
    pub(super) async fn reset(self: &Arc<Self>, entry: Item<Owned<M>>) {
        // If this task is dropped mid-reset the guard destroys the object.
        let mut guard = Checking {
            shared: self,
            entry: Some(entry),
        };
        let limit = self.cfg.reset_timeout;
        let obj = &mut guard.entry.as_mut().expect("held until taken").obj.value;
        let outcome = tokio::time::timeout(limit, catch_unwind(self.manager.reset(obj))).await;
        let entry = guard.entry.take().expect("held until taken");
        let cause = match outcome {
            Ok(Ok(Ok(()))) => {
                self.put_back(entry, thread::home());
                return;
            }
            Ok(Ok(Err(e))) => Some(std::sync::Arc::new(e)),
            _ => None,
        };
        self.count(Tally::ResetFailure);
        if entry.meta.use_count == 1 {
            self.fresh_failed("first reset", cause);
        }
        self.destroy(entry, Reason::ResetFailed);
    }

    /// A checkout ends without a return: removes its lease and records
    /// how long the object was held.
    pub(crate) fn end_checkout(&self, entry: &Entry<Owned<M>>) {
        if let Some(sites) = &self.sites {
            sites.lock().remove(&entry.meta.id);
        }
        let held = self.clock.now().nanos_since(entry.taken_at);
        self.idle.record_usage(thread::home(), held);
    }

    /// A counted object found expired or broken at checkout: reported,
    /// its slot freed (a replacement starts if one is wanted), closed in
    /// the background.
    pub(super) fn evict(self: &Arc<Self>, entry: Item<Owned<M>>, reason: Reason) {
        self.locked(|st, after| st.evict(entry, reason, after));
    }

    /// Closes a counted object: frees its slot (a replacement starts if
    /// one is wanted) and closes it in the background.
    pub(crate) fn destroy(self: &Arc<Self>, entry: Item<Owned<M>>, reason: Reason) {
        self.locked(|st, after| st.destroy(entry, reason, after));
    }

    /// Closes an object whose slot is already freed, in the background.
    pub(super) fn spawn_destroy(self: &Arc<Self>, entry: Item<Owned<M>>, reason: Reason) {
        let this = Arc::clone(self);
        self.spawn(async move {
            this.destroy_now(entry, reason, 0).await;
        });
    }

    /// Closes objects whose slots are already freed, and waits for it.
    pub(super) async fn destroy_all(
        self: &Arc<Self>,
        entries: Vec<Item<Owned<M>>>,
        reason: Reason,
    ) {
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
    pub(super) async fn destroy_now(
        &self,
        mut entry: Item<Owned<M>>,
        reason: Reason,
        attempts: u32,
    ) {
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
                self.count(Tally::Destroyed);
                self.emit(PoolEvent::Destroyed { id, reason });
                return;
            }
            Ok(Ok(Err(e))) => DestroyError::Backend(std::sync::Arc::new(e)),
            Ok(Err(_)) => {
                // A panicking destroy leaves nothing to retry with.
                drop(entry);
                self.count(Tally::DestroyFailed);
                self.emit(PoolEvent::DestroyFailed {
                    id,
                    error: "destroy panicked; object dropped".into(),
                });
                return;
            }
            Err(_) => DestroyError::Timeout(limit),
        };
        self.count(Tally::DestroyFailed);
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
}
