//! What a pool knows about each of its objects.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Stamp;

/// Facts about one pooled object.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub(crate) id: u64,
    pub(crate) created: Stamp,
    pub(crate) last_used: Stamp,
    pub(crate) use_count: u64,
    /// Where the pool's clock starts: `Stamp`s are counted from it.
    pub(crate) base: Instant,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("id", &self.id)
            .field("age", &self.age())
            .field("idle_for", &self.last_used().elapsed())
            .field("use_count", &self.use_count)
            .finish()
    }
}

impl Metadata {
    /// The object's id, unique within its pool.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When it was created.
    pub fn created(&self) -> std::time::Instant {
        self.at(self.created).into_std()
    }

    /// When it was last returned to the pool (its creation, if never).
    pub fn last_used(&self) -> std::time::Instant {
        self.at(self.last_used).into_std()
    }

    /// How many times it has been checked out, this time included.
    pub fn use_count(&self) -> u64 {
        self.use_count
    }

    /// Time since it was created.
    pub fn age(&self) -> Duration {
        self.at(self.created).elapsed()
    }

    fn at(&self, t: Stamp) -> Instant {
        self.base + t.since(Stamp::default())
    }
}

/// How the pool stores an object: boxed, so that handing it around moves a pointer.
pub(crate) type Item<T> = Box<Entry<T>>;

/// An object together with its metadata, as the pool stores it.
///
/// On cache lines of its own (two: Intel fetches in pairs): every checkout
/// and return writes the metadata, and two small entries allocated side by
/// side would otherwise share a line, so that two threads each using its
/// own object would still contend for it.
#[repr(align(128))]
pub(crate) struct Entry<T> {
    pub(crate) obj: T,
    pub(crate) meta: Metadata,
    /// When `max_lifetime` (minus this object's jitter) runs out.
    pub(crate) expires_at: Option<Stamp>,
    /// When it was last validated (or created).
    pub(crate) checked_at: Stamp,
    /// When its current checkout began. Kept here rather than in
    /// [`Pooled`](crate::Pooled), which is then one pointer and moves in a register.
    pub(crate) taken_at: Stamp,
}

impl<T> Entry<T> {
    pub(crate) fn new(
        obj: T,
        id: u64,
        base: Instant,
        now: Stamp,
        expires_at: Option<Stamp>,
    ) -> Self {
        Self {
            obj,
            meta: Metadata {
                id,
                created: now,
                last_used: now,
                use_count: 0,
                base,
            },
            expires_at,
            checked_at: now,
            taken_at: now,
        }
    }

    #[inline]
    pub(crate) fn expired(&self, now: Stamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}
