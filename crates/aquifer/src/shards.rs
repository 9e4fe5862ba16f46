//! The idle objects, split into shards so that two threads checking out
//! and returning at once do not fight over one lock.
//!
//! Each thread has a home shard. A checkout that nobody waits before takes
//! from its home shard, then from the others in turn; a return goes to the
//! home shard. Neither touches the pool lock, which guards everything else
//! (size, creates, waiters, phase). A checkout counts itself and a return
//! records how long the object was held in the shard's own counters;
//! [`Shards::merge_into`] adds them to the pool's.
//!
//! # Returns that race a new waiter
//!
//! A return may only go to a shard while nobody waits and the pool needs
//! nothing of it (open, not above `max`): otherwise the object must go to
//! a waiter, or the pool must destroy it or learn that it settled. The pool
//! publishes both facts ([`Shards::publish`]) under its lock, and a return
//! reads them under its shard's lock. Whoever changes them (the first
//! caller to wait, `close`, `drain`, `resize`) publishes first and then
//! locks every shard to look at it. For each shard, either the return's
//! critical section comes first, and the pool sees the object when it
//! looks, or it comes after, and the return sees what was published (the
//! shard lock orders the two), goes to the pool lock instead and hands the
//! object over. No object is ever left in a shard while a caller waits.
//! A caller that queues behind others need not look: every return since
//! the first of them looked has read a count above zero.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::metrics::{Counters, Histogram};
use crate::object::Item;
use crate::sync::{AtomicBool, AtomicUsize, SpinLock};

/// One shard: its idle objects and what its checkouts and returns counted.
pub(crate) struct Shard<T> {
    idle: VecDeque<Item<T>>,
    /// Checkouts served here without the pool lock.
    gets: u64,
    /// How long the objects returned here were held; made at the first
    /// return (a histogram is 4 KiB, and most of a pool's shards may
    /// never see one on a machine with many CPUs).
    usage: Option<Histogram>,
    /// How long the callers served here after waiting waited; made at the
    /// first such caller.
    wait: Option<Histogram>,
}

impl<T> Default for Shard<T> {
    fn default() -> Self {
        Self {
            idle: VecDeque::new(),
            gets: 0,
            usage: None,
            wait: None,
        }
    }
}

/// A shard on cache lines of its own (two lines: Intel fetches in pairs).
#[repr(align(128))]
struct Cell<T> {
    shard: SpinLock<Shard<T>>,
    /// `shard.idle.len()`, stored under the shard lock, for readings that
    /// need not be exact.
    len: AtomicUsize,
}

/// The pool's facts a lock-free return must respect, published under the
/// pool lock.
#[repr(align(128))]
struct Published {
    /// Callers waiting.
    waiting: AtomicUsize,
    /// Returns must go through the pool lock (draining, closed, or above
    /// `max`).
    slow: AtomicBool,
    /// Objects alive and not being created (`size - creating`).
    live: AtomicUsize,
    /// The pool's current `max`.
    max: AtomicUsize,
}

/// All the shards of one pool.
pub(crate) struct Shards<T> {
    cells: Box<[Cell<T>]>,
    /// `cells.len() - 1`: the count is a power of two.
    mask: usize,
    lifo: bool,
    published: Published,
}

/// Records `nanos` in one of a shard's histograms, made at its first use.
#[inline]
fn record_in(histogram: &mut Option<Histogram>, nanos: u64) {
    histogram
        .get_or_insert_with(Histogram::default)
        .record_nanos(nanos);
}

impl<T> Shards<T> {
    /// `count` shards (rounded up to a power of two).
    pub(crate) fn new(count: usize, lifo: bool) -> Self {
        let count = count.max(1).next_power_of_two();
        Self {
            mask: count - 1,
            cells: (0..count)
                .map(|_| Cell {
                    shard: SpinLock::new(Shard::default()),
                    len: AtomicUsize::new(0),
                })
                .collect(),
            lifo,
            published: Published {
                waiting: AtomicUsize::new(0),
                slow: AtomicBool::new(false),
                live: AtomicUsize::new(0),
                max: AtomicUsize::new(1),
            },
        }
    }

    #[inline]
    fn cell(&self, i: usize) -> &Cell<T> {
        &self.cells[i & self.mask]
    }

    #[inline]
    fn pop(&self, shard: &mut Shard<T>) -> Option<Item<T>> {
        if self.lifo {
            shard.idle.pop_back()
        } else {
            shard.idle.pop_front()
        }
    }

    #[inline]
    fn peek<'a>(&self, shard: &'a Shard<T>) -> Option<&'a Item<T>> {
        if self.lifo {
            shard.idle.back()
        } else {
            shard.idle.front()
        }
    }

    /// Stores what returns must respect. Call with the pool lock held,
    /// before looking at the shards.
    #[inline]
    pub(crate) fn publish(&self, waiting: usize, slow: bool, live: usize, max: usize) {
        let p = &self.published;
        p.waiting.store(waiting, Ordering::Relaxed);
        p.slow.store(slow, Ordering::Relaxed);
        p.live.store(live, Ordering::Relaxed);
        p.max.store(max, Ordering::Relaxed);
    }

    /// The `max` last published.
    pub(crate) fn max(&self) -> usize {
        self.published.max.load(Ordering::Relaxed)
    }

    /// Borrowed objects plus waiting callers, from the published counts
    /// and the shards' lengths: not exact while checkouts run, never
    /// locking.
    pub(crate) fn busy(&self) -> usize {
        let p = &self.published;
        p.live
            .load(Ordering::Relaxed)
            .saturating_sub(self.len_relaxed())
            + p.waiting.load(Ordering::Relaxed)
    }

    /// Idle objects, summed without locking: for load readings, which need
    /// not be exact.
    /// Whether callers wait, as of the last change (no lock).
    #[inline]
    pub(crate) fn anyone_waits(&self) -> bool {
        self.published.waiting.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn len_relaxed(&self) -> usize {
        self.cells
            .iter()
            .map(|c| c.len.load(Ordering::Relaxed))
            .sum()
    }

    /// A checkout without the pool lock: the next idle object from the
    /// home shard, else from the others, if the pool is open and `ready`
    /// accepts it (else it stays). Counted in the shard it came from.
    #[inline]
    pub(crate) fn take(&self, home: usize, ready: impl Fn(&Item<T>) -> bool) -> Option<Item<T>> {
        let p = &self.published;
        // A pool that drains or closes refuses checkouts: the full get
        // says so. Waiters do not stop it: an idle object goes to whoever
        // asks (see `internals::checkout::FAIR_EVERY`).
        if p.slow.load(Ordering::Relaxed) {
            return None;
        }
        for i in 0..self.cells.len() {
            let cell = self.cell(home.wrapping_add(i));
            if cell.len.load(Ordering::Relaxed) == 0 && i > 0 {
                continue;
            }
            let mut shard = cell.shard.lock();
            if self.peek(&shard).is_some_and(&ready) {
                let e = self.pop(&mut shard);
                shard.gets += 1;
                cell.len.store(shard.idle.len(), Ordering::Relaxed);
                return e;
            }
            if !shard.idle.is_empty() {
                // The next object here needs the full checkout's care.
                return None;
            }
        }
        None
    }

    /// A return without the pool lock, into the home shard; `Err` gives
    /// the object back when the pool must see it (someone waits, or the
    /// pool is draining, closed or above `max`). Either way the home shard
    /// records how long the object was held, under the one lock taken.
    ///
    /// It takes the shards by raw pointer, because the entry it stores may
    /// be what keeps them alive (see `Shared::release`): once the shard is
    /// unlocked, another thread may take the entry and free the shards
    /// before this call returns. A `&self` argument would promise Rust that
    /// they stay allocated until the return; a pointer promises nothing, and
    /// the references made from it are not used after the unlock.
    ///
    /// # Safety
    /// `this` must point to live shards, and stay valid for as long as this
    /// thread owns `entry` or holds the lock of the shard it was put in: for
    /// example because `entry` holds a strong reference to their owner.
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) unsafe fn put(
        this: *const Self,
        home: usize,
        entry: Item<T>,
        held_nanos: u64,
    ) -> Result<(), Item<T>> {
        // SAFETY: valid on entry (the caller's promise), and every use of
        // `this` and `cell` below happens before `shard` is unlocked.
        let this = unsafe { &*this };
        let cell = this.cell(home);
        let mut shard = cell.shard.lock();
        record_in(&mut shard.usage, held_nanos);
        let p = &this.published;
        if p.waiting.load(Ordering::Relaxed) != 0 || p.slow.load(Ordering::Relaxed) {
            return Err(entry);
        }
        shard.idle.push_back(entry);
        cell.len.store(shard.idle.len(), Ordering::Relaxed);
        // The unlock is the last access to the shards.
        drop(shard);
        Ok(())
    }

    /// Under the pool lock: the next idle object, home shard first, that
    /// `ready` accepts.
    pub(crate) fn pop_where(
        &self,
        home: usize,
        ready: impl Fn(&Item<T>) -> bool,
    ) -> Option<Item<T>> {
        for i in 0..self.cells.len() {
            let cell = self.cell(home.wrapping_add(i));
            let mut shard = cell.shard.lock();
            if self.peek(&shard).is_some_and(&ready) {
                let e = self.pop(&mut shard);
                cell.len.store(shard.idle.len(), Ordering::Relaxed);
                return e;
            }
        }
        None
    }

    /// Under the pool lock: puts an object in the home shard.
    pub(crate) fn push(&self, home: usize, entry: Item<T>) {
        let cell = self.cell(home);
        let mut shard = cell.shard.lock();
        shard.idle.push_back(entry);
        cell.len.store(shard.idle.len(), Ordering::Relaxed);
    }

    /// Under the pool lock: the exact number of idle objects (each shard
    /// locked in turn, so that a return racing this is either counted or
    /// sees what was published).
    pub(crate) fn len_locked(&self) -> usize {
        self.cells.iter().map(|c| c.shard.lock().idle.len()).sum()
    }

    /// Under the pool lock: the idle count at one instant, every shard
    /// locked at once (in order; every other path holds one shard lock at
    /// a time), so that an object moving between shards during the count
    /// is counted once. For status reports, not hot paths.
    pub(crate) fn len_snapshot(&self) -> usize {
        let shards: Vec<_> = self.cells.iter().map(|c| c.shard.lock()).collect();
        shards.iter().map(|s| s.idle.len()).sum()
    }

    /// Under the pool lock: takes every idle object out, the one returned
    /// longest ago first.
    pub(crate) fn drain(&self) -> VecDeque<Item<T>> {
        let mut all: Vec<Item<T>> = Vec::new();
        for cell in self.cells.iter() {
            let mut shard = cell.shard.lock();
            all.extend(shard.idle.drain(..));
            cell.len.store(0, Ordering::Relaxed);
        }
        all.sort_by_key(|e| e.meta.last_used);
        all.into()
    }

    /// Under the pool lock: puts back what [`drain`](Self::drain) took and
    /// was kept, in the same order, into the home shard.
    pub(crate) fn restore(&self, home: usize, kept: VecDeque<Item<T>>) {
        if kept.is_empty() {
            return;
        }
        let cell = self.cell(home);
        let mut shard = cell.shard.lock();
        let mut kept = kept;
        kept.extend(shard.idle.drain(..));
        shard.idle = kept;
        cell.len.store(shard.idle.len(), Ordering::Relaxed);
    }

    /// Records, in the home shard, how long an object was held (a return
    /// that goes through the pool lock: the pool lock then has less to do,
    /// and the shard's line is this thread's own).
    pub(crate) fn record_usage(&self, home: usize, held_nanos: u64) {
        record_in(&mut self.cell(home).shard.lock().usage, held_nanos);
    }

    /// Records, in the home shard, how long a caller that was handed an
    /// object waited for it.
    pub(crate) fn record_wait(&self, home: usize, waited_nanos: u64) {
        record_in(&mut self.cell(home).shard.lock().wait, waited_nanos);
    }

    /// Adds what the shards counted to the pool's counters.
    pub(crate) fn merge_into(&self, m: &mut Counters) {
        for cell in self.cells.iter() {
            let shard = cell.shard.lock();
            m.gets += shard.gets;
            m.immediate += shard.gets;
            if let Some(usage) = &shard.usage {
                m.usage.merge(usage);
            }
            if let Some(wait) = &shard.wait {
                m.wait.merge(wait);
            }
        }
    }
}
