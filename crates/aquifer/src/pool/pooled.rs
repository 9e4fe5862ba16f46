//! A checked-out object.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use crate::events::Reason;
use crate::manager::Manager;
use crate::object::{Entry, Item, Metadata};

use crate::internals::Door;

use super::shared::{Owned, Shared};

/// An object checked out of a [`Pool`](crate::Pool). It derefs to the object
/// and goes back to the pool when dropped.
///
/// Dropping it outside a Tokio runtime still returns it; only a `reset` or
/// `destroy` that has to run asynchronously then needs the runtime the pool
/// started in, which the pool keeps a handle to.
#[must_use = "dropping a Pooled returns the object at once"]
pub struct Pooled<M: Manager> {
    /// One pointer: the entry carries the pool (see `Owned`).
    pub(crate) entry: Option<Item<Owned<M>>>,
}

const HELD: &str = "a Pooled always holds its object until consumed";
const OWNED: &str = "a checked-out object holds its pool";

impl<M: Manager> Pooled<M> {
    #[inline]
    fn entry(&self) -> &Entry<Owned<M>> {
        self.entry.as_ref().expect(HELD)
    }

    #[inline]
    fn pool(&self) -> &Shared<M> {
        self.entry().obj.pool.as_ref().expect(OWNED)
    }

    /// The name of the first cluster member its pool became, if any.
    #[inline]
    pub(crate) fn cluster_name(&self) -> Option<&Arc<str>> {
        self.pool().cluster_name.get()
    }

    /// The object's id, unique within its pool.
    pub fn id(&self) -> u64 {
        self.entry().meta.id
    }

    /// Creation time, last use and use count.
    pub fn metadata(&self) -> Metadata {
        self.entry().meta
    }

    /// Whether the object has outlived `max_lifetime` (minus its jitter).
    pub(crate) fn expired(&self) -> bool {
        self.entry().expired(self.pool().clock.now())
    }

    /// How long this checkout has held the object.
    pub fn held_for(&self) -> Duration {
        self.pool().clock.now().since(self.entry().taken_at)
    }

    /// Takes the object out of the pool for good. Its slot is freed, so the
    /// pool may create a replacement.
    pub fn detach(mut self) -> M::Type {
        let mut entry = self.entry.take().expect(HELD);
        let pool = entry.obj.pool.take().expect(OWNED);
        pool.end_checkout(&entry);
        pool.locked(|st, after| st.free_slot(after));
        entry.obj.value
    }

    /// Closes the object (in the background, within `destroy_timeout`)
    /// instead of returning it; frees its slot.
    pub fn destroy(self) {
        self.destroy_for(Reason::Caller);
    }

    /// Closes the object for `reason`, as [`destroy`](Pooled::destroy) does.
    pub(crate) fn destroy_for(mut self, reason: Reason) {
        let mut entry = self.entry.take().expect(HELD);
        let pool = entry.obj.pool.take().expect(OWNED);
        pool.end_checkout(&entry);
        pool.destroy(entry, reason);
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Type;

    #[inline]
    fn deref(&self) -> &M::Type {
        &self.entry().obj.value
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    #[inline]
    fn deref_mut(&mut self) -> &mut M::Type {
        &mut self.entry.as_mut().expect(HELD).obj.value
    }
}

impl<M: Manager> AsRef<M::Type> for Pooled<M> {
    fn as_ref(&self) -> &M::Type {
        self
    }
}

impl<M: Manager> AsMut<M::Type> for Pooled<M> {
    fn as_mut(&mut self) -> &mut M::Type {
        self
    }
}

impl<M: Manager> Drop for Pooled<M> {
    #[inline]
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            Shared::release(entry);
        }
    }
}

impl<M: Manager> fmt::Debug for Pooled<M>
where
    M::Type: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("obj", &self.entry().obj.value)
            .field("metadata", &self.entry().meta)
            .finish()
    }
}
