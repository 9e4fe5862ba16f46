//! The cluster's pools: each member and its bans, and the member list
//! that gets read without contending.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::manager::Manager;
use crate::pool::Pool;
use crate::sync::{SpinGuard, SpinLock};
use crate::thread;

use super::error::ClusterError;
use super::role::{MemberRole, RoleInfo};
use super::watcher::Watcher;

/// A pool and how the cluster knows it, for [`Cluster::add`](super::Cluster::add).
pub struct ClusterPool<M: Manager> {
    pub(super) name: String,
    pub(super) pool: Pool<M>,
    pub(super) tags: Vec<String>,
    pub(super) weight: u32,
}

impl<M: Manager> ClusterPool<M> {
    /// `pool` under `name` (non-empty, without `*`, `?`, brackets or spaces).
    pub fn new(name: impl Into<String>, pool: Pool<M>) -> Self {
        Self {
            name: name.into(),
            pool,
            tags: Vec::new(),
            weight: 1,
        }
    }

    /// Adds a tag (`primary`, `replica`, a region…) that [`Selector::Tag`](crate::selector::Selector::Tag) finds.
    #[must_use]
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_owned());
        self
    }

    /// The share of gets in [`Mode::Weighted`](super::Mode::Weighted). Default 1. `0` gives the
    /// pool no share: weighted gets go to it only when no pool with a
    /// weight can serve, and gets that name it are served as usual (for
    /// draining a server gradually).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

pub(super) struct Member<M: Manager> {
    pub(super) id: u64,
    pub(super) added_at: SystemTime,
    pub(super) name: Arc<str>,
    pub(super) pool: Pool<M>,
    pub(super) tags: Vec<String>,
    pub(super) weight: u32,
    frozen: AtomicBool,
    /// Set with `banned_until`; lets the hot path skip the clock and the
    /// lock while no ban exists.
    banned: AtomicBool,
    banned_until: Mutex<Option<Instant>>,
    /// Bans so far.
    bans: AtomicU64,
    /// Why the current (or last) ban was laid.
    ban_reason: Mutex<Option<String>>,
    pub(super) watcher: Mutex<Option<Watcher>>,
    /// Its role, in a cluster that watches roles.
    pub(super) role: Mutex<MemberRole>,
    pub(super) retired: AtomicU64,
    /// The task that checks its role, stopped when it is removed.
    pub(super) checker: Mutex<Option<tokio::task::AbortHandle>>,
}

/// A removed pool that still holds connections that failed to close.
pub(super) struct Retired<M: Manager> {
    pub(super) name: String,
    pub(super) pool: Pool<M>,
    pub(super) watcher: Option<Watcher>,
}

impl<M: Manager> Member<M> {
    /// Its server stopped being the primary: the connections `write()`
    /// handed out close when they come back, and its idle ones close now.
    pub(super) fn retire(&self) {
        self.retired.fetch_add(1, Ordering::AcqRel);
        let pool = self.pool.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(async move {
                pool.clear().await;
            });
        }
    }

    /// Its role as an operator sees it; `writes_here`: writes go to it now.
    pub(super) fn role_info(&self, writes_here: bool) -> RoleInfo {
        self.role.lock().info(writes_here)
    }

    /// A new member for `p`, active and not banned.
    pub(super) fn new(
        id: u64,
        name: Arc<str>,
        (pool, tags, weight): (Pool<M>, Vec<String>, u32),
        watcher: Option<Watcher>,
    ) -> Self {
        Member {
            id,
            added_at: SystemTime::now(),
            name,
            pool,
            tags,
            weight,
            frozen: AtomicBool::new(false),
            banned: AtomicBool::new(false),
            banned_until: Mutex::new(None),
            bans: AtomicU64::new(0),
            ban_reason: Mutex::new(None),
            watcher: Mutex::new(watcher),
            role: Mutex::default(),
            retired: AtomicU64::new(0),
            checker: Mutex::new(None),
        }
    }

    /// Freezes (`true`: no new gets) or unfreezes it.
    pub(super) fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Release);
    }

    pub(super) fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Whether a ban was set, without clearing one that ran out (see
    /// [`is_banned`](Self::is_banned)).
    pub(super) fn ban_flag(&self) -> bool {
        self.banned.load(Ordering::Acquire)
    }

    /// How long the ban still runs, if one does.
    pub(super) fn banned_for(&self, now: Instant) -> Option<Duration> {
        self.banned_until
            .lock()
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Bans so far, and why the last one was set.
    pub(super) fn bans(&self) -> (u64, Option<String>) {
        (
            self.bans.load(Ordering::Relaxed),
            self.ban_reason.lock().clone(),
        )
    }

    /// Whether it is banned now; a ban that ran out is cleared.
    pub(super) fn is_banned(&self) -> bool {
        if !self.banned.load(Ordering::Acquire) {
            return false;
        }
        let mut until = self.banned_until.lock();
        match *until {
            Some(t) if t > Instant::now() => true,
            _ => {
                *until = None;
                self.banned.store(false, Ordering::Release);
                false
            }
        }
    }

    pub(super) fn ban(&self, for_: Duration, why: String) {
        *self.ban_reason.lock() = Some(why);
        *self.banned_until.lock() = Some(crate::clock::later(for_));
        self.bans.fetch_add(1, Ordering::Relaxed);
        self.banned.store(true, Ordering::Release);
    }

    pub(super) fn unban(&self) {
        *self.banned_until.lock() = None;
        self.banned.store(false, Ordering::Release);
    }

    /// Not frozen.
    pub(super) fn active(&self) -> bool {
        !self.is_frozen()
    }
}

/// The cluster's pools, in the order they were added, and a summary of
/// their state for `get_any`'s shortcut. Gets read it without writing to
/// memory shared with other threads (an `ArcSwap` load, or for the shortcut
/// this thread's copy), so gets on several cores do not contend on a
/// lock's counter. Changes copy the list, or recompute the summary, under
/// the writers' lock.
pub(super) struct Members<M: Manager> {
    pub(super) list: ArcSwap<List<M>>,
    pub(super) writer: Mutex<()>,
    /// Copies of `list` for `get_any`'s shortcut, one per thread slot
    /// (indexed like a pool's idle shards), each behind a spin lock: one
    /// compare-and-swap to read, where an `ArcSwap` load and its guard's
    /// release make two atomic read-modify-writes. A change empties every copy after it stores the new list,
    /// so no copy outlives the change (nor keeps a removed pool alive).
    pub(super) copies: Box<[ListCopy<M>]>,
}

/// One thread slot's copy of the member list, on cache lines of its own.
#[repr(align(128))]
pub(super) struct ListCopy<M: Manager>(SpinLock<Option<Arc<List<M>>>>);

/// The member list as a thread slot's copy has it, borrowed (its slot
/// locked) while a get picks.
pub(super) struct LocalList<'a, M: Manager>(SpinGuard<'a, Option<Arc<List<M>>>>);

impl<M: Manager> Deref for LocalList<'_, M> {
    type Target = List<M>;

    #[inline]
    fn deref(&self) -> &List<M> {
        self.0.as_ref().expect("filled when locked")
    }
}

/// One version of the member list.
pub(super) struct List<M: Manager> {
    pub(super) members: Vec<Arc<Member<M>>>,
    /// Each member's weight, side by side.
    pub(super) weights: Vec<u64>,
    /// Each member's id, side by side.
    pub(super) ids: Vec<u64>,
    /// Where each member's share of the weights ends, counting every
    /// member, and the sum of all weights: for weighted picks while no
    /// member is frozen.
    pub(super) upto: Vec<u64>,
    pub(super) total_weight: u64,
    /// The `active` mask when no member is frozen.
    pub(super) all: u64,
    /// Bit `i`: member `i` is not frozen. Only for the first 64 members.
    pub(super) active: AtomicU64,
    /// Bit `i`: member `i` has a ban set (maybe expired, until a full get
    /// looks). Only for the first 64 members.
    pub(super) banned: AtomicU64,
}

impl<M: Manager> List<M> {
    pub(super) fn new(members: Vec<Arc<Member<M>>>) -> Self {
        let weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight)).collect();
        let upto: Vec<u64> = weights
            .iter()
            .scan(0, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        let n = members.len().min(64);
        let list = List {
            total_weight: upto.last().copied().unwrap_or(0),
            upto,
            weights,
            all: if n == 64 { u64::MAX } else { (1 << n) - 1 },
            ids: members.iter().map(|m| m.id).collect(),
            members,
            active: AtomicU64::new(0),
            banned: AtomicU64::new(0),
        };
        list.summarize();
        list
    }

    /// Recomputes the summary from the members' flags. Called with the
    /// writers' lock held, after the flags changed.
    pub(super) fn summarize(&self) {
        let (active, banned) = self.flags();
        self.active.store(active, Ordering::Release);
        self.banned.store(banned, Ordering::Release);
    }

    pub(super) fn flags(&self) -> (u64, u64) {
        let (mut active, mut banned) = (0u64, 0u64);
        for (i, m) in self.members.iter().take(64).enumerate() {
            active |= u64::from(m.active()) << i;
            banned |= u64::from(m.banned.load(Ordering::Acquire)) << i;
        }
        (active, banned)
    }
}

impl<M: Manager> List<M> {
    /// Where a weighted draw falls among the `eligible` positions (at least
    /// one); `draw(total)` picks a number below `total`.
    pub(super) fn weighted(
        &self,
        mut eligible: impl Iterator<Item = usize> + Clone,
        draw: impl FnOnce(u64) -> u64,
    ) -> usize {
        let total = eligible.clone().map(|i| self.weights[i]).sum();
        if total == 0 {
            // Only pools of weight 0 can serve: the first of them.
            return eligible.next().expect("one is eligible");
        }
        let mut r = draw(total);
        eligible
            .find(|&i| match r.checked_sub(self.weights[i]) {
                Some(rest) => {
                    r = rest;
                    false
                }
                None => true,
            })
            .expect("the draw is below the total")
    }
}

impl<M: Manager> Deref for List<M> {
    type Target = [Arc<Member<M>>];

    fn deref(&self) -> &[Arc<Member<M>>] {
        &self.members
    }
}

impl<M: Manager> Default for Members<M> {
    fn default() -> Self {
        Self {
            list: ArcSwap::from_pointee(List::new(Vec::new())),
            writer: Mutex::new(()),
            copies: (0..thread::shard_count())
                .map(|_| ListCopy(SpinLock::new(None)))
                .collect(),
        }
    }
}

impl<M: Manager> Members<M> {
    /// The current list, borrowed briefly.
    #[inline]
    pub(super) fn read(&self) -> arc_swap::Guard<Arc<List<M>>> {
        self.list.load()
    }

    /// The current list, kept (for a get that awaits while it uses it).
    pub(super) fn read_full(&self) -> Arc<List<M>> {
        self.list.load_full()
    }

    /// The current list from this thread's copy, borrowed for a pick (keep
    /// it short: the copy's slot stays locked).
    #[inline]
    pub(super) fn read_local(&self) -> LocalList<'_, M> {
        let slot = &self.copies[thread::home() & (self.copies.len() - 1)];
        let mut copy = slot.0.lock();
        if copy.is_none() {
            *copy = Some(self.list.load_full());
        }
        LocalList(copy)
    }

    /// Exclusive access for a change, published when the guard drops.
    pub(super) fn write(&self) -> MembersWriter<'_, M> {
        let lock = self.writer.lock();
        let list = self.list.load().members.clone();
        MembersWriter {
            members: self,
            list,
            _lock: lock,
        }
    }

    /// Brings the summary up to date after members' flags changed.
    pub(super) fn flags_changed(&self) {
        let _lock = self.writer.lock();
        self.list.load().summarize();
    }
}

/// A copy of the member list being changed; stored back on drop.
pub(super) struct MembersWriter<'a, M: Manager> {
    pub(super) members: &'a Members<M>,
    pub(super) list: Vec<Arc<Member<M>>>,
    pub(super) _lock: parking_lot::MutexGuard<'a, ()>,
}

impl<M: Manager> MembersWriter<'_, M> {
    pub(super) fn get(&self) -> &[Arc<Member<M>>] {
        &self.list
    }

    pub(super) fn push(&mut self, m: Arc<Member<M>>) {
        self.list.push(m);
    }

    pub(super) fn retain(mut self, keep: impl FnMut(&Arc<Member<M>>) -> bool) {
        self.list.retain(keep);
    }
}

impl<M: Manager> Drop for MembersWriter<'_, M> {
    fn drop(&mut self) {
        let list = List::new(std::mem::take(&mut self.list));
        self.members.list.store(Arc::new(list));
        // A get that locks a copy after this sees it empty and loads the
        // list just stored. The old copies are dropped outside the slots'
        // locks: the last reference to a removed pool may go with them.
        for slot in self.members.copies.iter() {
            let old = slot.0.lock().take();
            drop(old);
        }
    }
}

/// Whether `name` can name a pool: not empty, no pattern characters, no
/// spaces or control characters.
pub(super) fn check_name<E: std::error::Error>(name: &str) -> Result<(), ClusterError<E>> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains(['*', '?', '[', ']', '{', '}']) {
        "it must not contain pattern characters (* ? [ ] { })"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it must not contain spaces or control characters"
    } else {
        return Ok(());
    };
    Err(ClusterError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}
