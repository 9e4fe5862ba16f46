//! Many named pools over many servers, picked by name, glob, regex or tag.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::eventlog::EventLog;
use crate::selector::RegexError;
use crate::sync::{SpinGuard, SpinLock};
use crate::{Manager, PendingInfo, Pool, PoolError, PoolEvent, Pooled, Selector};

/// How a [`Cluster`] picks among the pools a selector matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Mode {
    /// Each in turn, in the order they were added. The default.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The one with the fewest borrowed connections and waiting callers.
    LeastBusy,
    /// At random, in proportion to each pool's weight.
    Weighted,
    /// The first in order that works, and it stays the choice until it
    /// fails.
    Failover,
}

/// A pool and how the cluster knows it, for [`Cluster::add`].
pub struct ClusterPool<M: Manager> {
    name: String,
    pool: Pool<M>,
    tags: Vec<String>,
    weight: u32,
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

    /// Adds a tag (`primary`, `replica`, a region…) that [`Selector::Tag`] finds.
    #[must_use]
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_owned());
        self
    }

    /// The share of gets in [`Mode::Weighted`]. Default 1. `0` gives the
    /// pool no share: weighted gets go to it only when no pool with a
    /// weight can serve, and gets that name it are served as usual (for
    /// draining a server gradually).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// Something that went wrong in a cluster, kept for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Warning {
    /// When it happened.
    pub at: SystemTime,
    /// The pool concerned, if one is.
    pub pool: Option<String>,
    /// What happened.
    pub message: String,
}

/// A connection that failed to close, in a pool of the cluster or in one
/// removed from it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterPending {
    /// The pool's name.
    pub pool: String,
    /// The object and its error.
    pub info: PendingInfo,
}

/// A cluster at a glance, from [`Cluster::info`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClusterInfo {
    /// How gets pick a pool.
    pub mode: Mode,
    /// Pools in the cluster.
    pub pools: usize,
    /// Pools taking gets.
    pub active: usize,
    /// Frozen pools.
    pub frozen: usize,
    /// Pools banned now.
    pub banned: usize,
    /// Warnings in memory.
    pub warnings: usize,
    /// Connections that failed to close.
    pub pending: usize,
    /// Connections open in all pools.
    pub size: usize,
    /// Idle connections in all pools.
    pub idle: usize,
    /// Borrowed connections in all pools.
    pub borrowed: usize,
    /// Callers waiting in all pools.
    pub waiting: usize,
}

/// One pool of a cluster, from [`Cluster::info_about`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolInfo {
    /// Unique within the cluster, in the order pools were added.
    pub id: u64,
    /// The pool's name.
    pub name: String,
    /// When it was added.
    pub created_at: SystemTime,
    /// The manager's [`driver_name`](Manager::driver_name).
    pub driver: &'static str,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its weight in [`Mode::Weighted`].
    pub weight: u32,
    /// Whether it is frozen.
    pub frozen: bool,
    /// How much longer it is banned, if it is.
    pub banned_for: Option<Duration>,
    /// Connection counts.
    pub status: crate::Status,
    /// Counters and latencies.
    pub metrics: crate::Metrics,
}

/// Why [`ClusterBuilder::try_build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterBuildError {
    /// A setting cannot work.
    #[error("invalid cluster settings")]
    Settings(#[source] crate::BuildError),
    /// The event log file could not be opened.
    #[error("cannot open the event log {}", path.display())]
    EventLog {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError<E: std::error::Error + 'static> {
    /// A pool of that name is already in the cluster.
    #[error("a pool named `{0}` is already in the cluster; remove it first or pick another name")]
    Duplicate(String),
    /// The name cannot be used.
    #[error("invalid pool name `{name}`: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// A regex selector that does not compile.
    #[error(transparent)]
    Regex(#[from] RegexError),
    /// The selector names nothing.
    #[error("empty selector: give a pool name, a glob such as `asia_*`, a regex or a tag")]
    EmptySelector,
    /// No pool matches the selector.
    #[error("no pool matches `{0}`")]
    NoMatch(String),
    /// Every pool the selector matches is frozen.
    #[error("`{0}` is frozen: it serves connections already out but takes no new gets")]
    Frozen(String),
    /// Every matching pool was tried and none could serve in time; the
    /// source is the last pool's error.
    #[error("no pool matching `{selector}` could serve; `{pool}` failed last")]
    Unavailable {
        /// The selector.
        selector: String,
        /// The last pool tried.
        pool: String,
        /// Its error.
        #[source]
        source: PoolError<E>,
    },
    /// The cluster was shut down.
    #[error("the cluster is shut down")]
    ShutDown,
}

struct Member<M: Manager> {
    id: u64,
    added_at: SystemTime,
    name: Arc<str>,
    pool: Pool<M>,
    tags: Vec<String>,
    weight: u32,
    frozen: AtomicBool,
    /// Set with `banned_until`; lets the hot path skip the clock and the
    /// lock while no ban exists.
    banned: AtomicBool,
    banned_until: Mutex<Option<Instant>>,
    watcher: Mutex<Option<Watcher>>,
}

/// A removed pool that still holds connections that failed to close.
struct Retired<M: Manager> {
    name: String,
    pool: Pool<M>,
    watcher: Option<Watcher>,
}

/// The task that turns a member pool's trouble events into the cluster's
/// warnings, until it is stopped or the pool or the cluster is gone (or
/// the watcher is dropped, which aborts it).
struct Watcher {
    orders: tokio::sync::mpsc::UnboundedSender<Order>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`Watcher`] is asked to do besides watching.
enum Order {
    /// Record every event the pool has sent so far, then say so.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Record every event the pool has sent so far, then end.
    Stop,
}

impl Watcher {
    /// Starts watching `pool` (if there is a runtime to watch on).
    fn start<M: Manager>(pool: &Pool<M>, inner: Weak<Inner<M>>, name: String) -> Option<Self> {
        use std::task::Poll;

        let rt = tokio::runtime::Handle::try_current().ok()?;
        let mut events = pool.lifecycle_events();
        let (orders, mut ordered) = tokio::sync::mpsc::unbounded_channel();
        let record = move |e: &PoolEvent| match inner.upgrade() {
            Some(inner) => {
                if let Some(message) = warning_of(e) {
                    inner.warn(Some(&name), message);
                }
                // A create that fails in the background (refilling to `min`,
                // replacing what keepalive or eviction threw out) is the
                // pool's health check failing: the server is not there.
                if let PoolEvent::CreateFailed { error, .. } = e {
                    let member = inner
                        .members
                        .read()
                        .iter()
                        .find(|m| *m.name == *name)
                        .cloned();
                    if let Some(m) = member {
                        inner.ban(&m, error);
                    }
                }
                true
            }
            None => false,
        };
        let task = rt.spawn(async move {
            // Records what is buffered now without waiting; `false` once
            // the cluster is gone.
            let catch_up = |events: &mut crate::EventStream| {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                while let Poll::Ready(Some(e)) = std::pin::Pin::new(&mut *events).poll_next(&mut cx)
                {
                    if !record(&e) {
                        return false;
                    }
                }
                true
            };
            loop {
                // An order first, else the next event (`None`: the pool is
                // gone).
                let next = std::future::poll_fn(|cx| {
                    if let Poll::Ready(order) = ordered.poll_recv(cx) {
                        return Poll::Ready(Err(order));
                    }
                    std::pin::Pin::new(&mut events).poll_next(cx).map(Ok)
                })
                .await;
                match next {
                    Ok(Some(e)) => {
                        if !record(&e) {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(Some(Order::Flush(done))) => {
                        let alive = catch_up(&mut events);
                        let _ = done.send(());
                        if !alive {
                            return;
                        }
                    }
                    // Stopped, or every handle gone: what the pool sent
                    // before that still counts.
                    Err(Some(Order::Stop) | None) => {
                        catch_up(&mut events);
                        return;
                    }
                }
            }
        });
        Some(Watcher { orders, task })
    }

    /// Completes once every event the pool has sent so far is recorded.
    /// (It borrows nothing, so it can be awaited after a lock is let go.)
    fn flush(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let orders = self.orders.clone();
        async move {
            let (done, flushed) = tokio::sync::oneshot::channel();
            if orders.send(Order::Flush(done)).is_ok() {
                // An error means the task ended: nothing left to wait for.
                let _ = flushed.await;
            }
        }
    }

    /// Records what the pool sent so far, then ends.
    async fn finish(mut self) {
        let _ = self.orders.send(Order::Stop);
        // An error means the runtime is shutting down: nothing to wait for.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<M: Manager> Member<M> {
    fn is_banned(&self) -> bool {
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

    fn ban(&self, for_: Duration) {
        *self.banned_until.lock() = Some(crate::clock::later(for_));
        self.banned.store(true, Ordering::Release);
    }

    fn active(&self) -> bool {
        !self.frozen.load(Ordering::Acquire)
    }
}

/// The cluster's pools, in the order they were added, and a summary of
/// their state for `get_any`'s shortcut. Gets read it without writing to
/// memory shared with other threads (an `ArcSwap` load, or for the shortcut
/// this thread's copy), so gets on several cores do not contend on a
/// lock's counter. Changes copy the list, or recompute the summary, under
/// the writers' lock.
struct Members<M: Manager> {
    list: ArcSwap<List<M>>,
    writer: Mutex<()>,
    /// Copies of `list` for `get_any`'s shortcut, one per thread slot
    /// (indexed like a pool's idle shards), each behind a spin lock: one
    /// compare-and-swap to read, where an `ArcSwap` load and its guard's
    /// release make two atomic read-modify-writes and took a fifth of a
    /// `get_any`. A change empties every copy after it stores the new list,
    /// so no copy outlives the change (nor keeps a removed pool alive).
    copies: Box<[ListCopy<M>]>,
}

/// One thread slot's copy of the member list, on cache lines of its own.
#[repr(align(128))]
struct ListCopy<M: Manager>(SpinLock<Option<Arc<List<M>>>>);

/// The member list as a thread slot's copy has it, borrowed (its slot
/// locked) while a get picks.
struct LocalList<'a, M: Manager>(SpinGuard<'a, Option<Arc<List<M>>>>);

impl<M: Manager> Deref for LocalList<'_, M> {
    type Target = List<M>;

    #[inline]
    fn deref(&self) -> &List<M> {
        self.0.as_ref().expect("filled when locked")
    }
}

/// One version of the member list.
struct List<M: Manager> {
    members: Vec<Arc<Member<M>>>,
    /// Each member's weight, side by side.
    weights: Vec<u64>,
    /// Each member's id, side by side.
    ids: Vec<u64>,
    /// Where each member's share of the weights ends, counting every
    /// member, and the sum of all weights: for weighted picks while no
    /// member is frozen.
    upto: Vec<u64>,
    total_weight: u64,
    /// The `active` mask when no member is frozen.
    all: u64,
    /// Bit `i`: member `i` is not frozen. Only for the first 64 members.
    active: AtomicU64,
    /// Bit `i`: member `i` has a ban set (maybe expired, until a full get
    /// looks). Only for the first 64 members.
    banned: AtomicU64,
}

impl<M: Manager> List<M> {
    fn new(members: Vec<Arc<Member<M>>>) -> Self {
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
    fn summarize(&self) {
        let (active, banned) = self.flags();
        self.active.store(active, Ordering::Release);
        self.banned.store(banned, Ordering::Release);
    }

    fn flags(&self) -> (u64, u64) {
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
    fn weighted(
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
            copies: (0..crate::thread::shard_count())
                .map(|_| ListCopy(SpinLock::new(None)))
                .collect(),
        }
    }
}

impl<M: Manager> Members<M> {
    /// The current list, borrowed briefly.
    #[inline]
    fn read(&self) -> arc_swap::Guard<Arc<List<M>>> {
        self.list.load()
    }

    /// The current list from this thread's copy, borrowed for a pick (keep
    /// it short: the copy's slot stays locked).
    #[inline]
    fn read_local(&self) -> LocalList<'_, M> {
        let slot = &self.copies[crate::thread::home() & (self.copies.len() - 1)];
        let mut copy = slot.0.lock();
        if copy.is_none() {
            *copy = Some(self.list.load_full());
        }
        LocalList(copy)
    }

    /// Exclusive access for a change, published when the guard drops.
    fn write(&self) -> MembersWriter<'_, M> {
        let lock = self.writer.lock();
        let list = self.list.load().members.clone();
        MembersWriter {
            members: self,
            list,
            _lock: lock,
        }
    }

    /// Brings the summary up to date after members' flags changed.
    fn flags_changed(&self) {
        let _lock = self.writer.lock();
        self.list.load().summarize();
    }
}

/// A copy of the member list being changed; stored back on drop.
struct MembersWriter<'a, M: Manager> {
    members: &'a Members<M>,
    list: Vec<Arc<Member<M>>>,
    _lock: parking_lot::MutexGuard<'a, ()>,
}

impl<M: Manager> MembersWriter<'_, M> {
    fn get(&self) -> &[Arc<Member<M>>] {
        &self.list
    }

    fn push(&mut self, m: Member<M>) {
        self.list.push(Arc::new(m));
    }

    fn retain(mut self, keep: impl FnMut(&Arc<Member<M>>) -> bool) {
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

/// One random-pick state on cache lines of its own.
#[repr(align(128))]
struct Seed(AtomicU64);

struct Inner<M: Manager> {
    members: Members<M>,
    mode: std::sync::atomic::AtomicU8,
    cursor: AtomicUsize,
    /// The random pick's generator states, one per thread slot (indexed
    /// like a pool's idle shards), so that gets on several cores do not
    /// all write one cache line.
    seeds: Box<[Seed]>,
    /// The member id failover sticks to (0: none yet).
    sticky: std::sync::atomic::AtomicU64,
    warnings: Mutex<VecDeque<Warning>>,
    /// Removed pools that still hold connections that failed to close,
    /// watched until they are closed, so that later failures warn too.
    retired: Mutex<Vec<Retired<M>>>,
    ban_time: Duration,
    max_warnings: usize,
    acquire_timeout: Option<Duration>,
    shut: AtomicBool,
    log: Option<EventLog>,
    next_id: std::sync::atomic::AtomicU64,
}

impl<M: Manager> Inner<M> {
    /// The next round-robin turn. A plain load and store, not an atomic
    /// increment: gets on several cores may now and then take the same
    /// turn (and so the same pool), which costs balance nothing that
    /// matters, while a locked increment on every get would make the cores
    /// fight over the counter. Gets made one after another go round exactly.
    /// The turn is taken modulo `n` (the number of pools to go round);
    /// the counter is kept below `n`, so that the division only happens
    /// when the number of pools changed.
    #[inline]
    fn turn(&self, n: usize) -> usize {
        let mut turn = self.cursor.load(Ordering::Relaxed);
        if turn >= n {
            turn %= n;
        }
        let next = if turn + 1 == n { 0 } else { turn + 1 };
        self.cursor.store(next, Ordering::Relaxed);
        turn
    }

    /// A random number below `n` (which is at least 1), for random and
    /// weighted picks: a wyrand step on this thread's slot of the
    /// cluster's states, with the same plain load and store as
    /// [`turn`](Inner::turn) (two racing gets on threads that share a slot
    /// may draw the same number). Cheaper than a thread-local generator on
    /// this path, and its bias (below 2^-50 for any `n` a cluster has) is
    /// nothing next to load-balancing noise.
    #[inline]
    fn draw(&self, n: u64) -> u64 {
        let seed = &self.seeds[crate::thread::home() & (self.seeds.len() - 1)].0;
        let state = seed
            .load(Ordering::Relaxed)
            .wrapping_add(0xa076_1d64_78bd_642f);
        seed.store(state, Ordering::Relaxed);
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        let r = ((t >> 64) as u64) ^ (t as u64);
        ((u128::from(r) * u128::from(n)) >> 64) as u64
    }

    /// Makes failover stick to `id`. Written only when it changes, so that
    /// gets on several cores do not fight over the cache line on every get.
    fn stick_to(&self, id: u64) {
        if self.sticky.load(Ordering::Relaxed) != id {
            self.sticky.store(id, Ordering::Relaxed);
        }
    }

    /// Bans `m` for `ban_time` (with a warning saying why) unless it is
    /// banned already: a failed get and the pool's own report of the same
    /// failed create warn once.
    fn ban(&self, m: &Member<M>, why: impl fmt::Display) {
        if m.is_banned() {
            return;
        }
        m.ban(self.ban_time);
        self.members.flags_changed();
        self.warn(
            Some(&m.name),
            format!("banned for {:?}: {why}", self.ban_time),
        );
    }

    fn warn(&self, pool: Option<&str>, message: String) {
        tracing::warn!(target: "aquifer::cluster", pool, %message, "cluster warning");
        let w = Warning {
            at: SystemTime::now(),
            pool: pool.map(str::to_owned),
            message,
        };
        if let Some(log) = &self.log {
            log.append(&w);
        }
        let mut all = self.warnings.lock();
        if all.len() >= self.max_warnings {
            all.pop_front();
        }
        all.push_back(w);
    }
}

/// Settings for a [`Cluster`] of pools of `M`.
#[must_use]
pub struct ClusterBuilder<M: Manager> {
    mode: Mode,
    ban_time: Duration,
    max_warnings: usize,
    acquire_timeout: Option<Duration>,
    log: Option<(PathBuf, u64)>,
    manager: std::marker::PhantomData<fn() -> M>,
}

impl<M: Manager> fmt::Debug for ClusterBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("mode", &self.mode)
            .field("ban_time", &self.ban_time)
            .field("max_warnings", &self.max_warnings)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl<M: Manager> Default for ClusterBuilder<M> {
    fn default() -> Self {
        Self {
            mode: Mode::RoundRobin,
            ban_time: Duration::from_secs(30),
            max_warnings: 1000,
            acquire_timeout: None,
            log: None,
            manager: std::marker::PhantomData,
        }
    }
}

impl<M: Manager> ClusterBuilder<M> {
    /// How gets pick a pool. Default [`Mode::RoundRobin`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How long a pool whose gets fail with connection errors is skipped.
    /// Default 30 s.
    pub fn ban_time(mut self, ban_time: Duration) -> Self {
        self.ban_time = ban_time;
        self
    }

    /// Warnings kept in memory; the oldest go first. Default 1000.
    pub fn max_warnings(mut self, n: usize) -> Self {
        self.max_warnings = n.max(1);
        self
    }

    /// The whole budget of one cluster `get`, retries on other pools
    /// included. Default: the acquire timeout of the first pool tried.
    /// Zero is refused, as a pool refuses it: [`try_build`] fails, and
    /// [`build`] keeps the default and says so in its first warning.
    ///
    /// [`try_build`]: ClusterBuilder::try_build
    /// [`build`]: ClusterBuilder::build
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Appends every warning as a JSON line (`at_ms`, `pool`, `message`) to
    /// `path`, kept across restarts and read back by
    /// [`log_messages`](Cluster::log_messages). Past `max_bytes` the file
    /// moves to `path.1` and a new one starts. A thread of its own writes, so
    /// logging never holds up a get. Default: no file.
    pub fn log_file(mut self, path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        self.log = Some((path.into(), max_bytes.max(1)));
        self
    }

    /// An empty cluster. If the event log cannot be opened, the cluster
    /// works without it, and a setting that cannot work is left at its
    /// default; each says so in a warning. Use
    /// [`try_build`](ClusterBuilder::try_build) to get the error instead.
    pub fn build(mut self) -> Cluster<M> {
        let refused = self.refused_setting();
        if refused.is_some() {
            self.acquire_timeout = None;
        }
        let (log, failure) = match self.log.take() {
            None => (None, None),
            Some((path, max)) => match EventLog::open(&path, max) {
                Ok(log) => (Some(log), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "event log {} unavailable ({e}); warnings stay in memory only",
                        path.display()
                    )),
                ),
            },
        };
        let cluster = self.assemble(log);
        if let Some(e) = refused {
            cluster
                .inner
                .warn(None, format!("{e}; the pools' own timeouts apply"));
        }
        if let Some(message) = failure {
            cluster.inner.warn(None, message);
        }
        cluster
    }

    /// An empty cluster.
    ///
    /// # Errors
    /// [`ClusterBuildError::Settings`] for a setting that cannot work (a
    /// zero `acquire_timeout`), [`ClusterBuildError::EventLog`] when the
    /// event log file cannot be opened.
    pub fn try_build(mut self) -> Result<Cluster<M>, ClusterBuildError> {
        if let Some(e) = self.refused_setting() {
            return Err(ClusterBuildError::Settings(e));
        }
        let log = match self.log.take() {
            Some((path, max)) => Some(
                EventLog::open(&path, max)
                    .map_err(|source| ClusterBuildError::EventLog { path, source })?,
            ),
            None => None,
        };
        Ok(self.assemble(log))
    }

    fn refused_setting(&self) -> Option<crate::BuildError> {
        (self.acquire_timeout == Some(Duration::ZERO)).then_some(crate::BuildError::ZeroDuration {
            setting: "acquire_timeout",
            hint: ": a zero budget would fail every get; leave it unset to use the pools' own",
        })
    }

    fn assemble(self, log: Option<EventLog>) -> Cluster<M> {
        Cluster {
            inner: Arc::new(Inner {
                members: Members::default(),
                mode: std::sync::atomic::AtomicU8::new(mode_code(self.mode)),
                cursor: AtomicUsize::new(0),
                seeds: (0..crate::thread::shard_count())
                    .map(|_| Seed(AtomicU64::new(fastrand::u64(..))))
                    .collect(),
                sticky: std::sync::atomic::AtomicU64::new(0),
                warnings: Mutex::new(VecDeque::new()),
                retired: Mutex::new(Vec::new()),
                ban_time: self.ban_time,
                max_warnings: self.max_warnings,
                acquire_timeout: self.acquire_timeout,
                shut: AtomicBool::new(false),
                log,
                next_id: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }
}

/// Named pools over several servers, with operator controls.
///
/// ```
/// # use std::convert::Infallible;
/// # struct Server(&'static str);
/// # impl aquifer::Manager for Server {
/// #     type Type = &'static str;
/// #     type Error = Infallible;
/// #     async fn create(&self) -> Result<&'static str, Infallible> { Ok(self.0) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use aquifer::{Cluster, ClusterPool, Pool};
///
/// let cluster = Cluster::builder().build();
/// for name in ["asia_1", "asia_2", "africa_1"] {
///     cluster.add(ClusterPool::new(name, Pool::builder(Server(name)).build()?))?;
/// }
/// let conn = cluster.get("asia_*").await?; // round-robin over asia_1, asia_2
/// assert!(conn.pool_name().starts_with("asia_"));
/// cluster.freeze("asia_1")?;                // no new gets there
/// assert_eq!(cluster.active(), ["asia_2", "africa_1"]);
/// # Ok(())
/// # }
/// ```
pub struct Cluster<M: Manager> {
    inner: Arc<Inner<M>>,
}

impl<M: Manager> Clone for Cluster<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: Manager> fmt::Debug for Cluster<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("pools", &self.names())
            .field("frozen", &self.frozen())
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

/// A connection from a cluster: the pooled object and the pool it came from.
pub struct ClusterConn<M: Manager> {
    conn: Pooled<M>,
    /// The member that served it, unless its pool knows it by that name
    /// already (the usual case: a pool in one cluster), which spares the
    /// hot path a reference count.
    from: Option<Arc<Member<M>>>,
}

impl<M: Manager> ClusterConn<M> {
    fn new(conn: Pooled<M>, m: &Arc<Member<M>>) -> Self {
        let known = conn
            .pool()
            .cluster_name
            .get()
            .is_some_and(|n| Arc::ptr_eq(n, &m.name));
        ClusterConn {
            conn,
            from: (!known).then(|| Arc::clone(m)),
        }
    }

    /// The name of the pool that served it.
    pub fn pool_name(&self) -> &str {
        match &self.from {
            Some(m) => &m.name,
            None => self
                .conn
                .pool()
                .cluster_name
                .get()
                .expect("set before the pool served the cluster"),
        }
    }

    /// The pooled object itself.
    pub fn into_pooled(self) -> Pooled<M> {
        self.conn
    }
}

impl<M: Manager> fmt::Debug for ClusterConn<M>
where
    M::Type: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConn")
            .field("pool", &self.pool_name())
            .field("conn", &self.conn)
            .finish()
    }
}

impl<M: Manager> Deref for ClusterConn<M> {
    type Target = M::Type;

    fn deref(&self) -> &M::Type {
        &self.conn
    }
}

impl<M: Manager> DerefMut for ClusterConn<M> {
    fn deref_mut(&mut self) -> &mut M::Type {
        &mut self.conn
    }
}

/// A get's full path, boxed: it waits anyway, and unboxed it would make
/// every `get_any` future (built on each call) over a kilobyte.
type FullGet<'a, M> = Pin<
    Box<
        dyn Future<Output = Result<ClusterConn<M>, ClusterError<<M as Manager>::Error>>>
            + Send
            + 'a,
    >,
>;

/// The future of [`Cluster::get_any`]. As a pool's own get does, its first
/// poll spends the task's share of the cooperative budget and hands out the
/// first choice's idle object in place, straight from the match (returned
/// through a local that an await could see, the connection would be stored
/// in the future and read back, a stall on every get). Anything else goes
/// on to the full path.
struct GetAny<'a, M: Manager> {
    cluster: &'a Cluster<M>,
    /// Handed out from the first poll: polling again is a bug in the
    /// caller, which must not check out a second connection.
    done: bool,
    full: Option<FullGet<'a, M>>,
}

impl<'a, M: Manager> Future for GetAny<'a, M> {
    type Output = Result<ClusterConn<M>, ClusterError<M::Error>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.full.is_none() {
            assert!(
                !this.done,
                "a cluster's get future was polled after it completed"
            );
            std::task::ready!(crate::thread::poll_budget(cx));
            let c: &'a Cluster<M> = this.cluster;
            this.full = Some(match c.quick_any() {
                Quick::Got(conn) => {
                    this.done = true;
                    return Poll::Ready(Ok(conn));
                }
                Quick::Then(first, n) => Box::pin(c.get_from(Selector::Any, first, n)),
                Quick::No => Box::pin(c.get_general(Selector::Any)),
            });
        }
        this.full.as_mut().expect("started above").as_mut().poll(cx)
    }
}

/// How `get_any`'s first, synchronous step ended.
enum Quick<M: Manager> {
    /// The first choice had an idle object.
    Got(ClusterConn<M>),
    /// The first choice had no idle object ready: a full get, owning it.
    Then(Arc<Member<M>>, usize),
    /// No quick choice (least busy, a ban, a shutdown, nothing active).
    No,
}

/// The pool a get tries first, and how many pools are eligible.
type Choice<M> = (Arc<Member<M>>, usize);

/// A set of member positions: a bitmask up to 64 members, so that picking
/// a pool allocates nothing in the common case.
enum Bits {
    Small(u64),
    Large(Vec<bool>),
}

impl Bits {
    fn new(len: usize) -> Self {
        if len <= 64 {
            Bits::Small(0)
        } else {
            Bits::Large(vec![false; len])
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Bits::Small(b) => *b |= 1 << i,
            Bits::Large(v) => v[i] = true,
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Bits::Small(b) => b & (1 << i) != 0,
            Bits::Large(v) => v[i],
        }
    }

    fn count(&self) -> usize {
        match self {
            Bits::Small(b) => b.count_ones() as usize,
            Bits::Large(v) => v.iter().filter(|x| **x).count(),
        }
    }
}

fn mode_code(m: Mode) -> u8 {
    match m {
        Mode::RoundRobin => 0,
        Mode::Random => 1,
        Mode::LeastBusy => 2,
        Mode::Weighted => 3,
        Mode::Failover => 4,
    }
}

fn mode_of(code: u8) -> Mode {
    match code {
        1 => Mode::Random,
        2 => Mode::LeastBusy,
        3 => Mode::Weighted,
        4 => Mode::Failover,
        _ => Mode::RoundRobin,
    }
}

/// The warning a pool event is worth, if any.
fn warning_of(e: &PoolEvent) -> Option<String> {
    Some(match e {
        PoolEvent::CreateFailed {
            error,
            failures,
            retry_in,
        } => format!("create failed ({failures} in a row, next try in {retry_in:?}): {error}"),
        PoolEvent::DestroyFailed { id, error } => {
            format!("connection {id} failed to close (kept as pending): {error}")
        }
        PoolEvent::MaxReached { max, waiting } => {
            format!("all {max} connections in use; {waiting} caller(s) waiting")
        }
        PoolEvent::QueueTimeout { waited } => format!("a caller gave up after waiting {waited:?}"),
        PoolEvent::QueueFull { max_waiting } => {
            format!("wait queue full ({max_waiting}); a caller was refused")
        }
        PoolEvent::OperationFailed { op, error } => format!("{} failed: {error}", op.as_str()),
        _ => return None,
    })
}

fn check_name<E: std::error::Error>(name: &str) -> Result<(), ClusterError<E>> {
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

impl<M: Manager> Cluster<M> {
    /// Settings for a new cluster.
    pub fn builder() -> ClusterBuilder<M> {
        ClusterBuilder::default()
    }

    /// Adds a pool. Inside a Tokio runtime its trouble events (failed
    /// creates and closes, full queues, timeouts, failed queries) become
    /// [`warnings`](Cluster::warnings).
    ///
    /// # Errors
    /// [`ClusterError::Duplicate`], [`ClusterError::InvalidName`],
    /// [`ClusterError::ShutDown`].
    pub fn add(&self, p: ClusterPool<M>) -> Result<(), ClusterError<M::Error>> {
        check_name(&p.name)?;
        if self.inner.shut.load(Ordering::Acquire) {
            return Err(ClusterError::ShutDown);
        }
        let mut members = self.inner.members.write();
        if members.get().iter().any(|m| *m.name == *p.name) {
            return Err(ClusterError::Duplicate(p.name));
        }
        let watcher = Watcher::start(&p.pool, Arc::downgrade(&self.inner), p.name.clone());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = p.name.into();
        // The first cluster name sticks; in another cluster the pool's
        // connections keep a reference to their member instead.
        let _ = p.pool.shared().cluster_name.set(Arc::clone(&name));
        members.push(Member {
            id,
            added_at: SystemTime::now(),
            name,
            pool: p.pool,
            tags: p.tags,
            weight: p.weight,
            frozen: AtomicBool::new(false),
            banned: AtomicBool::new(false),
            banned_until: Mutex::new(None),
            watcher: Mutex::new(watcher),
        });
        Ok(())
    }

    /// The pools' names, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .members
            .read()
            .iter()
            .map(|m| m.name.to_string())
            .collect()
    }

    fn matching(&self, sel: &Selector) -> Result<Vec<Arc<Member<M>>>, ClusterError<M::Error>> {
        if sel.is_empty() {
            return Err(ClusterError::EmptySelector);
        }
        let found: Vec<_> = self
            .inner
            .members
            .read()
            .iter()
            .filter(|m| sel.matches(&m.name, &m.tags))
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(ClusterError::NoMatch(sel.to_string()));
        }
        Ok(found)
    }

    /// Which pools a get may use: those `sel` matches that are active and
    /// not banned, or, when every active match is banned, those (they are
    /// tried anyway rather than failing blind).
    /// Whether `m` is banned now. A ban that ran out is cleared, and the
    /// summary `get_any` reads follows.
    fn banned(&self, m: &Member<M>) -> bool {
        let was = m.banned.load(Ordering::Acquire);
        let now = m.is_banned();
        if was && !now {
            self.inner.members.flags_changed();
        }
        now
    }

    fn eligible(
        &self,
        members: &[Arc<Member<M>>],
        sel: &Selector,
    ) -> Result<(Bits, usize), ClusterError<M::Error>> {
        if self.inner.shut.load(Ordering::Acquire) {
            return Err(ClusterError::ShutDown);
        }
        if sel.is_empty() {
            return Err(ClusterError::EmptySelector);
        }
        let mut matched = false;
        let mut active = Bits::new(members.len());
        let mut healthy = Bits::new(members.len());
        for (i, m) in members.iter().enumerate() {
            if sel.matches(&m.name, &m.tags) {
                matched = true;
                if m.active() {
                    active.set(i);
                    if !self.banned(m) {
                        healthy.set(i);
                    }
                }
            }
        }
        match (healthy.count(), active.count()) {
            (n, _) if n > 0 => Ok((healthy, n)),
            (_, n) if n > 0 => Ok((active, n)),
            _ if matched => Err(ClusterError::Frozen(sel.to_string())),
            _ => Err(ClusterError::NoMatch(sel.to_string())),
        }
    }

    /// The pool a get tries first, by the cluster's mode, and how many pools
    /// are eligible. Allocates nothing but the eligibility flags.
    fn first_choice(&self, sel: &Selector) -> Result<Choice<M>, ClusterError<M::Error>> {
        let members = self.inner.members.read();
        let (ok, n) = self.eligible(&members, sel)?;
        let nth = |k: usize| {
            (0..members.len())
                .filter(|&i| ok.get(i))
                .nth(k)
                .expect("k is below the eligible count")
        };
        let pick = match self.mode() {
            Mode::RoundRobin => nth(self.inner.turn(n)),
            Mode::Random => nth(self.inner.draw(n as u64) as usize),
            Mode::LeastBusy => {
                // Ties go round robin: scan from a rotating start.
                let len = members.len();
                let start = self.inner.turn(len);
                (0..len)
                    .map(|k| (start + k) % len)
                    .filter(|&i| ok.get(i))
                    .min_by_key(|&i| members[i].pool.busy())
                    .expect("one is eligible")
            }
            Mode::Weighted => members
                .weighted((0..members.len()).filter(|&i| ok.get(i)), |total| {
                    self.inner.draw(total)
                }),
            Mode::Failover => {
                let sticky = self.inner.sticky.load(Ordering::Relaxed);
                (0..members.len())
                    .find(|&i| ok.get(i) && members[i].id == sticky)
                    .unwrap_or_else(|| nth(0))
            }
        };
        Ok((Arc::clone(&members[pick]), n))
    }

    /// The eligible pools but `skip`, in the order the rest of a get tries
    /// them (after its first choice failed).
    fn fallbacks(&self, sel: &Selector, skip: u64) -> Vec<Arc<Member<M>>> {
        let members = self.inner.members.read();
        let Ok((ok, _)) = self.eligible(&members, sel) else {
            return Vec::new();
        };
        let mut list: Vec<_> = members
            .iter()
            .enumerate()
            .filter(|(i, m)| ok.get(*i) && m.id != skip)
            .map(|(_, m)| Arc::clone(m))
            .collect();
        drop(members);
        match self.mode() {
            Mode::Random | Mode::Weighted => fastrand::shuffle(&mut list),
            Mode::LeastBusy => list.sort_by_key(|m| m.pool.busy()),
            Mode::RoundRobin | Mode::Failover => {}
        }
        list
    }

    /// A connection from one of the active pools `sel` matches, picked by
    /// the cluster's mode. A pool whose get fails with a connection error
    /// is banned for `ban_time` and the next one is tried, within one
    /// overall acquire timeout, so a dead server costs latency, not an
    /// error, while another server is alive. Each pool tried gets an equal
    /// share of what is left of that timeout.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`], [`ClusterError::Frozen`] (every match is
    /// frozen), [`ClusterError::Unavailable`] (with the last pool's error),
    /// [`ClusterError::EmptySelector`], [`ClusterError::ShutDown`].
    pub async fn get(
        &self,
        sel: impl Into<Selector>,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let sel = sel.into();
        if matches!(sel, Selector::Any) {
            return self.get_any().await;
        }
        self.get_general(sel).await
    }

    /// A get by selector, without `get_any`'s shortcut.
    async fn get_general(&self, sel: Selector) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let (first, n) = self.first_choice(&sel)?;
        self.get_from(sel, first, n).await
    }

    /// The rest of a get once its first choice is made: that pool, then
    /// the other eligible ones.
    async fn get_from(
        &self,
        sel: Selector,
        first: Arc<Member<M>>,
        n: usize,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let budget = self.budget(&first);
        let share = budget / u32::try_from(n).unwrap_or(u32::MAX);
        match self.try_one(first, share).await {
            Ok(conn) => Ok(conn),
            Err((first, error)) => self.get_after(sel, first, error, n, budget, share).await,
        }
    }

    /// How long a whole get may take.
    fn budget(&self, first: &Member<M>) -> Duration {
        self.inner
            .acquire_timeout
            .unwrap_or_else(|| first.pool.config().acquire_timeout)
    }

    /// The rest of a get after its first pool failed with `error`: the
    /// other eligible pools, each with an equal share of what is left.
    async fn get_after(
        &self,
        sel: Selector,
        first: Arc<Member<M>>,
        error: PoolError<M::Error>,
        n: usize,
        budget: Duration,
        share: Duration,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        if n == 1 {
            return Err(ClusterError::Unavailable {
                selector: sel.to_string(),
                pool: first.name.to_string(),
                source: error,
            });
        }
        // The first try may have used its whole share; count it as such.
        let deadline = crate::clock::later(budget.saturating_sub(share));
        let mut last = (first.name.to_string(), error);
        let rest = self.fallbacks(&sel, first.id);
        let left_to_try = rest.len();
        for (i, m) in rest.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / u32::try_from(left_to_try - i).unwrap_or(u32::MAX);
            match self.try_one(m, share).await {
                Ok(conn) => return Ok(conn),
                Err((m, e)) => last = (m.name.to_string(), e),
            }
        }
        Err(ClusterError::Unavailable {
            selector: sel.to_string(),
            pool: last.0,
            source: last.1,
        })
    }

    /// `get_any`'s first choice while no pool is banned: one pass over the
    /// members, no selector to match, no lock taken, nothing allocated.
    /// `Quick::No` sends the get down the general path.
    // Inlined into `get_any`, its result stays in registers rather than
    // going through memory (measured on one thread: a get_any and its
    // return took 51-58 ns inlined, 53-68 ns not).
    #[inline(always)]
    fn quick_any(&self) -> Quick<M> {
        let mode = self.mode();
        if self.inner.shut.load(Ordering::Acquire) {
            return Quick::No;
        }
        let members = self.inner.members.read_local();
        if members.len() > 64 || members.banned.load(Ordering::Acquire) != 0 {
            return Quick::No;
        }
        let active = members.active.load(Ordering::Acquire);
        let n = active.count_ones() as usize;
        if n == 0 {
            return Quick::No;
        }
        // The active members' positions, in order.
        let positions = || {
            let mut bits = active;
            std::iter::from_fn(move || {
                let i = bits.trailing_zeros() as usize;
                bits &= bits.wrapping_sub(1);
                (i < 64).then_some(i)
            })
        };
        // With every member active (the usual case) the k-th is k itself.
        let all = active == members.all;
        let kth = |k: usize| {
            if all {
                k
            } else {
                positions().nth(k).expect("k is below the count")
            }
        };
        let i = match mode {
            Mode::RoundRobin => kth(self.inner.turn(n)),
            Mode::Random => kth(self.inner.draw(n as u64) as usize),
            Mode::Weighted if all && members.total_weight > 0 => {
                // The number of members whose share ends at or below the
                // draw is the one it falls to: no branch to mispredict.
                let r = self.inner.draw(members.total_weight);
                members.upto.iter().filter(|&&end| end <= r).count()
            }
            Mode::Weighted => members.weighted(positions(), |total| self.inner.draw(total)),
            Mode::Failover => {
                let sticky = self.inner.sticky.load(Ordering::Relaxed);
                positions()
                    .find(|&i| members.ids[i] == sticky)
                    .unwrap_or_else(|| kth(0))
            }
            Mode::LeastBusy => {
                // Each pool's load is read from counts it publishes and its
                // shards' lengths, so this takes no lock. Ties go round robin: scan from a rotating
                // start, and stop at the first pool with nothing out.
                let len = members.len();
                let start = self.inner.turn(len);
                let is_active = |i: usize| active & (1 << i) != 0;
                let mut best = (usize::MAX, 0);
                for i in (start..len).chain(0..start).filter(|&i| is_active(i)) {
                    let busy = members[i].pool.busy();
                    if busy < best.0 {
                        best = (busy, i);
                        if busy == 0 {
                            break;
                        }
                    }
                }
                best.1
            }
        };
        // While the member list is borrowed, an idle object that can go out
        // as it is comes back at once, with no reference taken to the
        // member. Anything else (no idle object, others waiting, a borrow
        // check due) is left to a full get that owns the member.
        let m = &members[i];
        match m.pool.take_ready() {
            Some(conn) => {
                if mode == Mode::Failover {
                    self.inner.stick_to(m.id);
                }
                Quick::Got(ClusterConn::new(conn, m))
            }
            None => Quick::Then(Arc::clone(m), n),
        }
    }

    /// One pool's get; a connection error bans the pool.
    async fn try_one(
        &self,
        m: Arc<Member<M>>,
        timeout: Duration,
    ) -> Result<ClusterConn<M>, (Arc<Member<M>>, PoolError<M::Error>)> {
        match m.pool.get_timeout(timeout).await {
            Ok(conn) => {
                if self.mode() == Mode::Failover {
                    self.inner.stick_to(m.id);
                }
                Ok(ClusterConn::new(conn, &m))
            }
            Err(e) => {
                if e.create_error().is_some() {
                    self.inner.ban(&m, &e);
                }
                Err((m, e))
            }
        }
    }

    /// A connection from any active pool.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_any(
        &self,
    ) -> impl Future<Output = Result<ClusterConn<M>, ClusterError<M::Error>>> + Send + '_ {
        GetAny {
            cluster: self,
            done: false,
            full: None,
        }
    }

    /// The pool a get would try first.
    ///
    /// # Errors
    /// As [`get`](Cluster::get), without `Unavailable`.
    pub fn pool(&self, sel: impl Into<Selector>) -> Result<Pool<M>, ClusterError<M::Error>> {
        let (first, _) = self.first_choice(&sel.into())?;
        Ok(first.pool.clone())
    }

    /// Stops new gets on the matching pools; connections already out keep
    /// working. Returns how many pools matched.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`], [`ClusterError::EmptySelector`].
    pub fn freeze(&self, sel: impl Into<Selector>) -> Result<usize, ClusterError<M::Error>> {
        self.set_frozen(sel.into(), true)
    }

    /// Lets the matching pools take gets again. Returns how many matched.
    ///
    /// # Errors
    /// As [`freeze`](Cluster::freeze).
    pub fn unfreeze(&self, sel: impl Into<Selector>) -> Result<usize, ClusterError<M::Error>> {
        self.set_frozen(sel.into(), false)
    }

    fn set_frozen(&self, sel: Selector, frozen: bool) -> Result<usize, ClusterError<M::Error>> {
        let found = self.matching(&sel)?;
        for m in &found {
            m.frozen.store(frozen, Ordering::Release);
        }
        self.inner.members.flags_changed();
        tracing::info!(target: "aquifer::cluster", selector = %sel, pools = found.len(), frozen, "freeze changed");
        Ok(found.len())
    }

    fn list(&self, frozen: bool) -> Vec<String> {
        self.inner
            .members
            .read()
            .iter()
            .filter(|m| m.frozen.load(Ordering::Acquire) == frozen)
            .map(|m| m.name.to_string())
            .collect()
    }

    /// The frozen pools' names.
    pub fn frozen(&self) -> Vec<String> {
        self.list(true)
    }

    /// The active (not frozen) pools' names.
    pub fn active(&self) -> Vec<String> {
        self.list(false)
    }

    /// Whether any pool matching `sel` is frozen.
    pub fn has_frozen(&self, sel: impl Into<Selector>) -> bool {
        self.matching(&sel.into())
            .is_ok_and(|v| v.iter().any(|m| m.frozen.load(Ordering::Acquire)))
    }

    /// Whether any pool matching `sel` is active.
    pub fn has_active(&self, sel: impl Into<Selector>) -> bool {
        self.matching(&sel.into())
            .is_ok_and(|v| v.iter().any(|m| !m.frozen.load(Ordering::Acquire)))
    }

    /// Whether the pool is banned now (its gets failed with connection errors).
    pub fn is_banned(&self, name: &str) -> bool {
        self.inner
            .members
            .read()
            .iter()
            .any(|m| &*m.name == name && self.banned(m))
    }

    /// Removes the matching pools gracefully: they take no new gets at once,
    /// connections already out are waited for (up to `wait`), then the
    /// pools close. Connections that fail to close stay in
    /// [`pending`](Cluster::pending). Returns how many pools were removed.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`] (nothing to remove),
    /// [`ClusterError::EmptySelector`].
    pub async fn remove(
        &self,
        sel: impl Into<Selector>,
        wait: Duration,
    ) -> Result<usize, ClusterError<M::Error>> {
        let sel = sel.into();
        let found = self.matching(&sel)?;
        self.inner
            .members
            .write()
            .retain(|m| !found.iter().any(|f| Arc::ptr_eq(f, m)));
        for m in &found {
            if tokio::time::timeout(wait, m.pool.drain()).await.is_err() {
                self.inner.warn(
                    Some(&m.name),
                    format!(
                        "removed with connections still out after {wait:?}; they close on return"
                    ),
                );
            }
            m.pool.close().await;
            // The close's failures become warnings before `remove` returns.
            // A pool left with pending connections stays watched, so that
            // `close_pending` retries that fail warn too.
            let watcher = m.watcher.lock().take();
            if !m.pool.pending().is_empty() {
                if let Some(w) = &watcher {
                    w.flush().await;
                }
                self.inner.retired.lock().push(Retired {
                    name: m.name.to_string(),
                    pool: m.pool.clone(),
                    watcher,
                });
            } else if let Some(w) = watcher {
                w.finish().await;
            }
            tracing::info!(target: "aquifer::cluster", pool = %m.name, "removed");
        }
        Ok(found.len())
    }

    /// Counts across the cluster.
    pub fn info(&self) -> ClusterInfo {
        let members = self.inner.members.read().to_vec();
        let mut info = ClusterInfo {
            mode: self.mode(),
            pools: members.len(),
            active: 0,
            frozen: 0,
            banned: 0,
            warnings: self.inner.warnings.lock().len(),
            pending: self.pending().len(),
            size: 0,
            idle: 0,
            borrowed: 0,
            waiting: 0,
        };
        for m in &members {
            if m.frozen.load(Ordering::Acquire) {
                info.frozen += 1;
            } else {
                info.active += 1;
            }
            info.banned += usize::from(self.banned(m));
            let s = m.pool.status();
            info.size += s.size;
            info.idle += s.idle;
            info.borrowed += s.borrowed;
            info.waiting += s.waiting;
        }
        info
    }

    /// One pool in detail, or `None` when no pool has that name.
    pub fn info_about(&self, name: &str) -> Option<PoolInfo> {
        let now = Instant::now();
        let m = self
            .inner
            .members
            .read()
            .iter()
            .find(|m| &*m.name == name)
            .cloned()?;
        let banned_for = m
            .banned_until
            .lock()
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero());
        Some(PoolInfo {
            id: m.id,
            name: m.name.to_string(),
            created_at: m.added_at,
            driver: m.pool.manager().driver_name(),
            tags: m.tags.clone(),
            weight: m.weight,
            frozen: m.frozen.load(Ordering::Acquire),
            banned_for,
            status: m.pool.status(),
            metrics: m.pool.metrics(),
        })
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        mode_of(self.inner.mode.load(Ordering::Relaxed))
    }

    /// Changes the mode for the gets that follow.
    pub fn set_mode(&self, mode: Mode) {
        self.inner.mode.store(mode_code(mode), Ordering::Relaxed);
    }

    /// Warnings, oldest first.
    pub fn warnings(&self) -> Vec<Warning> {
        self.inner.warnings.lock().iter().cloned().collect()
    }

    /// Forgets every warning.
    pub fn clear_warnings(&self) {
        self.inner.warnings.lock().clear();
    }

    /// Records a warning of your own.
    pub fn add_warning(&self, pool: Option<&str>, message: impl Into<String>) {
        self.inner.warn(pool, message.into());
    }

    /// Every warning in the event log file, this run's and earlier runs',
    /// oldest first (empty without a log file).
    ///
    /// # Errors
    /// The I/O error when the file cannot be read.
    pub fn log_messages(&self) -> std::io::Result<Vec<Warning>> {
        match &self.inner.log {
            Some(log) => log.read_back(),
            None => Ok(Vec::new()),
        }
    }

    /// Warnings the event log dropped because its writer fell behind.
    pub fn log_dropped(&self) -> u64 {
        self.inner.log.as_ref().map_or(0, EventLog::dropped)
    }

    fn all_pools(&self) -> Vec<(String, Pool<M>)> {
        let mut all: Vec<_> = self
            .inner
            .members
            .read()
            .iter()
            .map(|m| (m.name.to_string(), m.pool.clone()))
            .collect();
        all.extend(
            self.inner
                .retired
                .lock()
                .iter()
                .map(|r| (r.name.clone(), r.pool.clone())),
        );
        all
    }

    /// Connections that failed to close, in the cluster's pools and in
    /// pools removed from it.
    pub fn pending(&self) -> Vec<ClusterPending> {
        self.all_pools()
            .into_iter()
            .flat_map(|(name, pool)| {
                pool.pending().into_iter().map(move |info| ClusterPending {
                    pool: name.clone(),
                    info,
                })
            })
            .collect()
    }

    /// Whether any connection failed to close.
    pub fn has_pending(&self) -> bool {
        !self.pending().is_empty()
    }

    /// Tries to close the pending connections again; with `force`, drops
    /// them ignoring errors. Returns how many are still pending.
    pub async fn close_pending(&self, force: bool) -> usize {
        let mut left = 0;
        for (_, pool) in self.all_pools() {
            left += pool.close_pending(force).await;
        }
        // Retired pools whose connections all closed are let go; every
        // other pool's failed retries are warnings before this returns.
        let closed: Vec<Retired<M>> = {
            let mut retired = self.inner.retired.lock();
            let (closed, kept) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|r| r.pool.pending().is_empty());
            *retired = kept;
            closed
        };
        for r in closed {
            if let Some(w) = r.watcher {
                w.finish().await;
            }
        }
        let mut flushes: Vec<_> = self
            .inner
            .members
            .read()
            .iter()
            .filter_map(|m| m.watcher.lock().as_ref().map(Watcher::flush))
            .collect();
        flushes.extend(
            self.inner
                .retired
                .lock()
                .iter()
                .filter_map(|r| r.watcher.as_ref().map(Watcher::flush)),
        );
        for flushed in flushes {
            flushed.await;
        }
        left
    }

    /// Removes every pool gracefully (waiting up to `wait` for connections
    /// out), then closes pending connections (`force` drops those that
    /// still fail). Later gets fail with [`ClusterError::ShutDown`].
    /// Returns how many connections are still pending.
    pub async fn shutdown(&self, wait: Duration, force: bool) -> usize {
        self.inner.shut.store(true, Ordering::Release);
        let _ = self.remove(Selector::Any, wait).await;
        self.close_pending(force).await
    }
}
