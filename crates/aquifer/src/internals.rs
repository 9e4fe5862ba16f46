//! The pool's state behind its lock. Every method is synchronous and takes
//! `&mut self`: the caller locks, calls, unlocks, and only then wakes
//! waiters, spawns work or awaits anything.

use std::collections::VecDeque;
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Tick;

use crate::config::{Order, PoolConfig};
use crate::error::CreateError;
use crate::events::Reason;
use crate::metrics::Counters;
use crate::object::Item;
use crate::shards::Shards;
use crate::sync::{Arc, Mutex, MutexGuard};
use crate::waiters::{Slot, Waiters};

/// What a waiter receives: an object and the instant it was handed over
/// (which the waiter takes as its checkout time, saving a clock read), or
/// why it gets none.
pub(crate) type Handoff<T, E> = Result<(Item<T>, Tick), WaitError<E>>;

/// Why a waiter was woken without an object.
pub(crate) enum WaitError<E: std::error::Error + 'static> {
    Create(CreateError<E>),
    Closed,
    /// The deadline passed; carries the newest create failure seen while
    /// waiting, if any.
    Timeout(Option<CreateError<E>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    Draining,
    Closed,
}

/// How often a pool that keeps callers queuing at `max` reports it.
pub(crate) const MAX_REACHED_EVERY: Duration = Duration::from_secs(1);

/// How often, at most, a return hands its object straight to the caller
/// that has waited longest, on average (each interval is drawn between
/// half and one and a half times this, as parking_lot's eventual fairness
/// does). In between, a return puts the object in the idle shards and
/// wakes one waiter to come and take it, and a new checkout may take it
/// first: the objects stay with tasks that are running instead of waiting
/// in the slots of tasks that are not, so a queue formed under a burst
/// drains. A waiter is passed over for at most a few of these intervals
/// per caller ahead of it.
const FAIR_EVERY: Duration = Duration::from_micros(500);

/// The next time a return must be fair, from `now`.
fn next_fair(now: Tick) -> Tick {
    let half = FAIR_EVERY.as_nanos() as u64 / 2;
    now.after(Duration::from_nanos(half + fastrand::u64(..=2 * half)))
}

pub(crate) enum Acquire<T, E: std::error::Error + 'static> {
    Got(Item<T>),
    Wait {
        slot: Arc<Slot<Handoff<T, E>>>,
        /// An earlier waiter that was handed an object found in a shard:
        /// wake it once the lock is released.
        wake: Option<Waker>,
        /// The caller reserved a create and must start it.
        create: bool,
        /// Every slot up to `max` is taken and no `MaxReached` was
        /// reported in the last [`MAX_REACHED_EVERY`]: report one, with
        /// the current `max` and this many callers waiting.
        max_reached: Option<(usize, usize)>,
        /// This caller's deadline is the earliest: the deadline task must
        /// re-arm.
        rearm: bool,
    },
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    QueueFull(usize),
    Draining,
    Closed,
}

/// Where a returned or new object went.
pub(crate) enum Placed<T> {
    /// To a waiter: wake it once the lock is released.
    Handed(Option<Waker>),
    /// To the idle shards, with a waiter to wake once the lock is released
    /// so that it comes and looks.
    Nudged(Option<Waker>),
    Idle,
    /// Not wanted any more (closed, or above `max`): destroy it. Its slot is
    /// already freed.
    Destroy(Item<T>),
}

pub(crate) struct State<T, E: std::error::Error + 'static> {
    /// The idle objects. Checkouts and returns reach them without this
    /// lock while nobody waits; see the `shards` module.
    pub(crate) idle: Arc<Shards<T>>,
    pub(crate) waiters: Waiters<Handoff<T, E>>,
    /// Idle + borrowed + creating.
    pub(crate) size: usize,
    pub(crate) creating: usize,
    pub(crate) max: usize,
    pub(crate) min: usize,
    max_waiting: usize,
    create_concurrency: usize,
    pub(crate) phase: Phase,
    /// Consecutive create failures.
    pub(crate) failures: u32,
    /// Create failures ever; waiters remember it to count what they saw.
    pub(crate) failure_seq: u64,
    pub(crate) last_error: Option<CreateError<E>>,
    pub(crate) retry_at: Option<Instant>,
    /// What the deadline task sleeps until: at or before every waiter's
    /// deadline (it may be stale-early, never late). `None` when no waiter
    /// needs it.
    pub(crate) next_deadline: Option<Tick>,
    /// When a caller last reported that the pool is at `max`.
    max_reported: Option<Tick>,
    /// When the next return with waiters hands its object straight to the
    /// longest waiter (see [`FAIR_EVERY`]).
    fair_at: Tick,
    next_id: u64,
    pub(crate) m: Counters,
}

impl<T, E: std::error::Error + 'static> State<T, E> {
    pub(crate) fn new(cfg: &PoolConfig, shards: usize) -> Self {
        Self {
            idle: Arc::new(Shards::new(shards, cfg.order == Order::Lifo)),
            waiters: Waiters::new(cfg.priority_levels),
            size: 0,
            creating: 0,
            max: cfg.max,
            min: cfg.min,
            max_waiting: cfg.max_waiting.unwrap_or(usize::MAX),
            create_concurrency: cfg.create_concurrency,
            phase: Phase::Open,
            failures: 0,
            failure_seq: 0,
            last_error: None,
            retry_at: None,
            next_deadline: None,
            max_reported: None,
            fair_at: Tick::default(),
            next_id: 1,
            m: Counters::default(),
        }
    }

    /// Idle objects and objects out (alive, not being created, not idle),
    /// from one reading of the shards taken at one instant.
    pub(crate) fn idle_and_borrowed(&self) -> (usize, usize) {
        let idle = self.idle.len_snapshot();
        (idle, (self.size - self.creating).saturating_sub(idle))
    }

    /// Publishes to the shards what a lock-free return must respect. Every
    /// unlock does it; a change that must not race a return (a new waiter,
    /// a closing, draining or shrinking pool) does it before it looks at
    /// the shards.
    #[inline]
    pub(crate) fn publish(&self) {
        self.idle.publish(
            self.waiters.len(),
            self.phase != Phase::Open || self.size > self.max,
            self.size - self.creating,
        );
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A checkout. `first` is false when the caller retries after throwing
    /// away a bad object, so the attempt is not counted twice. A caller that
    /// has to wait is failed by the deadline task at `deadline`.
    #[inline]
    pub(crate) fn acquire(
        &mut self,
        priority: usize,
        now: Tick,
        deadline: Tick,
        first: bool,
        home: usize,
    ) -> Acquire<T, E> {
        match self.phase {
            Phase::Open => {}
            Phase::Draining => return Acquire::Refused(Refusal::Draining),
            Phase::Closed => return Acquire::Refused(Refusal::Closed),
        }
        if first {
            self.m.gets += 1;
        }
        // An idle object goes to whoever asks, waiters or not (see
        // `FAIR_EVERY` for what keeps that fair enough).
        if let Some(entry) = self.idle.pop_where(home, |_| true) {
            if first {
                self.m.immediate += 1;
            }
            return Acquire::Got(entry);
        }
        // Callers a create will serve (in flight, or still allowed under
        // `max`) are not queued for a return: only the rest count.
        let served_by_creates = self.creating + self.max.saturating_sub(self.size);
        if self.waiters.len() >= served_by_creates.saturating_add(self.max_waiting) {
            self.m.queue_full += 1;
            return Acquire::Refused(Refusal::QueueFull(self.max_waiting));
        }
        let slot = Slot::new(
            self.waiters.clamp(priority),
            self.failure_seq,
            now,
            deadline,
        );
        let first_waiter = self.waiters.len() == 0;
        self.waiters.push(Arc::clone(&slot));
        let wake = None;
        // A return that read a count of zero may have put an object in a
        // shard since the look above: publish, then look again. Behind
        // other waiters there is nothing to look for: the count every
        // return has read since the first of them published is above zero,
        // and that first one looked after publishing it.
        if first_waiter {
            self.publish();
            if let Some(entry) = self.idle.pop_where(home, |_| true) {
                self.waiters.remove(&slot);
                if first {
                    self.m.immediate += 1;
                }
                return Acquire::Got(entry);
            }
        }
        let rearm = self.next_deadline.is_none_or(|at| deadline < at);
        if rearm {
            self.next_deadline = Some(deadline);
        }
        if first {
            self.m.gets_waited += 1;
        }
        let create = self.reserve_create();
        Acquire::Wait {
            slot,
            wake,
            create,
            max_reached: self.max_reached(now),
            rearm,
        }
    }

    /// Whether a caller that just queued should report that the pool is
    /// at `max`: at most once per [`MAX_REACHED_EVERY`], so that a pool
    /// that stays saturated does not report every caller that queues.
    fn max_reached(&mut self, now: Tick) -> Option<(usize, usize)> {
        let at_max = self.size >= self.max && self.creating == 0;
        let due = self
            .max_reported
            .is_none_or(|last| now.at_least(last, MAX_REACHED_EVERY));
        (at_max && due).then(|| {
            self.max_reported = Some(now);
            (self.max, self.waiters.len())
        })
    }

    /// The deadline task's step: fails the waiters whose deadline passed
    /// and re-arms for the earliest one left.
    pub(crate) fn expire(&mut self, now: Tick, wake: &mut Vec<Waker>) -> usize {
        let (seq, last, failing) = (self.failure_seq, &self.last_error, self.failures > 0);
        let n = self.waiters.fail_where(
            |slot| slot.deadline <= now,
            |slot| {
                let seen = (seq > slot.failures_base || failing)
                    .then(|| last.clone())
                    .flatten();
                Err(WaitError::Timeout(seen))
            },
            wake,
        );
        self.m.timeouts += n as u64;
        self.next_deadline = self.waiters.earliest_deadline();
        n
    }

    /// A checkout that never queues. The next idle object is taken only if
    /// `ready` accepts it; else it stays where it is. With `count_miss`
    /// false, a miss is not counted as a get: the caller goes on to a full
    /// get, which is.
    #[inline]
    pub(crate) fn try_acquire(
        &mut self,
        count_miss: bool,
        ready: impl Fn(&Item<T>) -> bool,
        home: usize,
    ) -> Result<Option<Item<T>>, Refusal> {
        match self.phase {
            Phase::Open => {}
            Phase::Draining => return Err(Refusal::Draining),
            Phase::Closed => return Err(Refusal::Closed),
        }
        let entry = self.idle.pop_where(home, ready);
        if entry.is_some() {
            self.m.gets += 1;
            self.m.immediate += 1;
        } else if count_miss {
            self.m.gets += 1;
        }
        Ok(entry)
    }

    /// Puts a counted object back: to the first waiter, else to the home
    /// shard.
    #[inline]
    pub(crate) fn place(&mut self, entry: Item<T>, now: Tick, home: usize) -> Placed<T> {
        if self.phase == Phase::Closed || self.size > self.max {
            self.size -= 1;
            return Placed::Destroy(entry);
        }
        if self.waiters.len() == 0 {
            self.idle.push(home, entry);
            return Placed::Idle;
        }
        if now < self.fair_at {
            self.idle.push(home, entry);
            return Placed::Nudged(self.waiters.nudge_next());
        }
        self.fair_at = next_fair(now);
        match self.waiters.hand(Ok((entry, now))) {
            // The caller records how long it waited, outside this lock.
            Ok(waker) => Placed::Handed(waker),
            Err(Ok((entry, _))) => {
                self.idle.push(home, entry);
                Placed::Idle
            }
            Err(Err(_)) => unreachable!(),
        }
    }

    /// A nudged waiter looks again: what was handed to it in the meantime,
    /// else an idle object (it then leaves the queue), else nothing (it
    /// stays queued, at its place).
    pub(crate) fn retry(
        &mut self,
        slot: &Arc<Slot<Handoff<T, E>>>,
        now: Tick,
        home: usize,
    ) -> Option<Handoff<T, E>> {
        if let Some(v) = slot.take_ready() {
            return Some(v);
        }
        let entry = self.idle.pop_where(home, |_| true)?;
        let removed = self.waiters.remove(slot);
        debug_assert!(removed, "a waiting slot must be queued");
        Some(Ok((entry, now)))
    }

    /// A waiter gives up (dropped or timed out). Returns what was handed to
    /// it in the meantime, which the caller must take or put back.
    pub(crate) fn cancel(
        &mut self,
        slot: &Arc<Slot<Handoff<T, E>>>,
        timed_out: bool,
    ) -> Option<Handoff<T, E>> {
        if let Some(v) = slot.take_ready() {
            return Some(v);
        }
        let removed = self.waiters.remove(slot);
        debug_assert!(removed, "a waiting slot must be queued");
        if timed_out {
            self.m.timeouts += 1;
        } else {
            self.m.cancelled += 1;
        }
        None
    }

    /// How many creates would be useful now: one per waiter, and enough to
    /// bring the live objects up to `min`.
    fn wanted_creates(&self) -> usize {
        let live = self.size - self.creating;
        let for_min = if self.phase == Phase::Open {
            self.min.saturating_sub(live)
        } else {
            0
        };
        self.waiters.len().max(for_min)
    }

    /// Reserves a slot for a new create if one is useful and allowed.
    pub(crate) fn reserve_create(&mut self) -> bool {
        if self.phase == Phase::Closed
            || self.size >= self.max
            || self.creating >= self.create_concurrency
            || self.creating >= self.wanted_creates()
        {
            return false;
        }
        self.size += 1;
        self.creating += 1;
        true
    }

    /// Whether a create job holding a reservation should go on trying.
    pub(crate) fn keep_creating(&self) -> bool {
        self.phase != Phase::Closed
            && self.size <= self.max
            && self.creating <= self.wanted_creates()
    }

    /// Gives a create reservation back.
    pub(crate) fn unreserve(&mut self) {
        self.creating -= 1;
        self.size -= 1;
    }

    /// A create succeeded.
    pub(crate) fn created(
        &mut self,
        entry: Item<T>,
        now: Tick,
        took: Duration,
        home: usize,
    ) -> Placed<T> {
        self.creating -= 1;
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
        self.m.creates += 1;
        self.m.create.record(took);
        // A new object was made for a waiter: it goes straight to one (a
        // nudge would leave the waiter queued, and the create job would
        // make another for it).
        self.fair_at = Tick::default();
        self.place(entry, now, home)
    }

    /// A create failed. Waiters wait on, to their own deadline, while the
    /// job retries after `retry_at`; an error that retrying cannot fix
    /// (`permanent`) fails every waiter now and stops the job. Returns
    /// whether the job should go on (if not, its reservation is given back).
    pub(crate) fn create_failed(
        &mut self,
        err: CreateError<E>,
        retry_at: Instant,
        permanent: bool,
        wake: &mut Vec<Waker>,
    ) -> bool {
        self.failed(err.clone(), retry_at);
        if permanent {
            // The next checkout tries again at once, and fails as fast.
            self.retry_at = None;
            self.waiters
                .fail_where(|_| true, |_| Err(WaitError::Create(err.clone())), wake);
            self.next_deadline = None;
        }
        let keep = !permanent && self.keep_creating();
        if !keep {
            self.unreserve();
        }
        keep
    }

    /// A create, or a new object before its first use, failed: the next
    /// create backs off until `retry_at`, and waiters that time out carry
    /// `err` as the cause.
    pub(crate) fn failed(&mut self, err: CreateError<E>, retry_at: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.failure_seq += 1;
        self.m.create_failures += 1;
        self.retry_at = Some(retry_at);
        self.last_error = Some(err);
    }

    /// An object leaves for good (destroyed or detached): free its slot.
    /// Returns whether a replacement create was reserved.
    pub(crate) fn discard(&mut self) -> bool {
        self.size -= 1;
        self.reserve_create()
    }

    /// Takes idle objects matching `pred` out of the pool (their slots freed).
    pub(crate) fn take_idle(&mut self, mut pred: impl FnMut(&Item<T>) -> bool) -> Vec<Item<T>> {
        let all = self.idle.drain();
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(all.len());
        for e in all {
            if pred(&e) {
                out.push(e);
            } else {
                keep.push_back(e);
            }
        }
        self.idle.restore(crate::shards::home(), keep);
        self.size -= out.len();
        out
    }

    /// Takes idle objects, the one returned longest ago first, while
    /// `size` is above `max` (after a resize).
    pub(crate) fn take_excess(&mut self) -> Vec<Item<T>> {
        let mut all = self.idle.drain();
        let mut out = Vec::new();
        while self.size > self.max {
            match all.pop_front() {
                Some(e) => {
                    self.size -= 1;
                    out.push(e);
                }
                None => break,
            }
        }
        self.idle.restore(crate::shards::home(), all);
        out
    }

    /// The idle objects, the one returned longest ago first, for `f` to
    /// look at without taking them.
    pub(crate) fn inspect_idle<R>(&self, f: impl FnOnce(&VecDeque<Item<T>>) -> R) -> R {
        let all = self.idle.drain();
        let r = f(&all);
        self.idle.restore(crate::shards::home(), all);
        r
    }

    /// Maintenance: evicts idle objects that expired, idled too long or
    /// are broken, examining at most `budget`, oldest first.
    pub(crate) fn evict(
        &mut self,
        now: Tick,
        cfg: &PoolConfig,
        mut is_broken: impl FnMut(&T) -> bool,
    ) -> Vec<(Item<T>, Reason)> {
        let mut budget = cfg.tests_per_eviction_run.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut idle = self.idle.drain();
        let mut keep = VecDeque::with_capacity(idle.len());
        // The front was returned longest ago.
        while let Some(e) = idle.pop_front() {
            if budget == 0 {
                keep.push_back(e);
                continue;
            }
            budget -= 1;
            let idle_for = now.since(e.meta.last_used);
            let above_min = self.size - out.len() > self.min;
            let idle_above_min = idle.len() + keep.len() + 1 > self.min;
            let reason = if e.expired(now) {
                Some(Reason::Lifetime)
            } else if is_broken(&e.obj) {
                Some(Reason::Broken)
            } else if (cfg.idle_timeout.is_some_and(|t| idle_for >= t) && above_min)
                || (cfg.soft_idle_timeout.is_some_and(|t| idle_for >= t)
                    && idle_above_min
                    && above_min)
            {
                Some(Reason::Idle)
            } else {
                None
            };
            match reason {
                Some(r) => out.push((e, r)),
                None => keep.push_back(e),
            }
        }
        self.idle.restore(crate::shards::home(), keep);
        self.size -= out.len();
        for (_, r) in &out {
            match r {
                Reason::Idle => self.m.evicted_idle += 1,
                Reason::Lifetime => self.m.evicted_lifetime += 1,
                _ => self.m.evicted_broken += 1,
            }
        }
        out
    }

    /// Keepalive: takes idle objects whose last check is older than `every`.
    /// They count as borrowed until the check ends.
    pub(crate) fn due_for_keepalive(&mut self, now: Tick, every: Duration) -> Vec<Item<T>> {
        let mut due = Vec::new();
        let mut keep = VecDeque::new();
        for e in self.idle.drain() {
            if now.at_least(e.checked_at, every) {
                due.push(e);
            } else {
                keep.push_back(e);
            }
        }
        self.idle.restore(crate::shards::home(), keep);
        due
    }

    /// Closes: fails every waiter and takes every idle object (slots freed).
    pub(crate) fn close(&mut self, wake: &mut Vec<Waker>) -> Vec<Item<T>> {
        self.phase = Phase::Closed;
        self.waiters
            .fail_where(|_| true, |_| Err(WaitError::Closed), wake);
        self.publish();
        self.take_idle(|_| true)
    }

    /// The newest create failure, if it happened while `slot` waited or
    /// creates have been failing since (no create succeeded after it).
    pub(crate) fn error_seen_by(&self, slot: &Slot<Handoff<T, E>>) -> Option<CreateError<E>> {
        if self.failure_seq > slot.failures_base || self.failures > 0 {
            self.last_error.clone()
        } else {
            None
        }
    }

    /// Nothing is out: no borrowed object, no create, no waiter.
    pub(crate) fn settled(&self) -> bool {
        self.waiters.len() == 0 && self.idle.len_locked() == self.size
    }
}

/// The lock around [`State`]. Every unlock publishes what the shards'
/// lock-free returns must respect, and the counts a cluster compares pools
/// by without taking any of their locks.
pub(crate) struct StateLock<T, E: std::error::Error + 'static> {
    state: Mutex<State<T, E>>,
}

impl<T, E: std::error::Error + 'static> StateLock<T, E> {
    pub(crate) fn new(state: State<T, E>) -> Self {
        Self {
            state: Mutex::new(state),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> StateGuard<'_, T, E> {
        StateGuard {
            guard: self.state.lock(),
        }
    }
}

/// A locked [`State`]; publishes when it unlocks.
pub(crate) struct StateGuard<'a, T, E: std::error::Error + 'static> {
    guard: MutexGuard<'a, State<T, E>>,
}

impl<T, E: std::error::Error + 'static> std::ops::Deref for StateGuard<'_, T, E> {
    type Target = State<T, E>;

    #[inline]
    fn deref(&self) -> &State<T, E> {
        &self.guard
    }
}

impl<T, E: std::error::Error + 'static> std::ops::DerefMut for StateGuard<'_, T, E> {
    #[inline]
    fn deref_mut(&mut self) -> &mut State<T, E> {
        &mut self.guard
    }
}

impl<T, E: std::error::Error + 'static> Drop for StateGuard<'_, T, E> {
    #[inline]
    fn drop(&mut self) {
        self.guard.publish();
    }
}

#[cfg(all(test, aquifer_loom))]
mod loom_tests {
    //! Model tests of the handoff protocol, run with
    //! `RUSTFLAGS="--cfg aquifer_loom" cargo test -p aquifer --lib loom`.

    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use loom::thread;

    use super::*;
    use crate::object::Entry;
    use crate::sync::Mutex;

    #[derive(Debug)]
    struct NoError;
    impl std::fmt::Display for NoError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("no error")
        }
    }
    impl std::error::Error for NoError {}

    type S = State<u32, NoError>;

    fn pool(max: usize) -> Arc<Mutex<S>> {
        let cfg = PoolConfig {
            max,
            ..PoolConfig::default()
        };
        Arc::new(Mutex::new(State::new(&cfg, 2)))
    }

    fn entry(id: u64) -> Item<u32> {
        Box::new(Entry::new(
            id as u32,
            id,
            Instant::now(),
            Tick::default(),
            None,
        ))
    }

    fn release(pool: &Mutex<S>, e: Item<u32>) {
        let placed = pool.lock().place(e, Tick::default(), 0);
        if let Placed::Handed(Some(w)) | Placed::Nudged(Some(w)) = placed {
            w.wake();
        }
    }

    /// A waiter's future: polls its slot, and gives up (like a dropped
    /// `get`) after `polls` polls.
    struct Wait {
        pool: Arc<Mutex<S>>,
        slot: Option<Arc<Slot<Handoff<u32, NoError>>>>,
    }

    impl Future for Wait {
        type Output = Option<Item<u32>>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            loop {
                let slot = self.slot.as_ref().unwrap();
                let handed = match slot.poll(cx) {
                    Poll::Ready(Some(v)) => v,
                    // Nudged: take an idle object if one is left, else
                    // poll again (which waits).
                    Poll::Ready(None) => {
                        let retried = self.pool.lock().retry(slot, Tick::default(), 0);
                        match retried {
                            Some(v) => v,
                            None => continue,
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                };
                self.slot = None;
                return Poll::Ready(handed.ok().map(|(e, _)| e));
            }
        }
    }

    impl Drop for Wait {
        fn drop(&mut self) {
            if let Some(slot) = self.slot.take() {
                let mut st = self.pool.lock();
                if let Some(Ok((e, _))) = st.cancel(&slot, false) {
                    let placed = st.place(e, Tick::default(), 0);
                    drop(st);
                    if let Placed::Handed(Some(w)) | Placed::Nudged(Some(w)) = placed {
                        w.wake();
                    }
                }
            }
        }
    }

    fn check(st: &S) {
        assert!(st.size <= st.max);
        let (idle, borrowed) = st.idle_and_borrowed();
        assert_eq!(idle + borrowed + st.creating, st.size);
    }

    /// A waiter that gives up while the only object is returned: the object
    /// ends up idle or with the waiter, never lost, never doubled.
    #[test]
    fn release_races_cancel() {
        loom::model(|| {
            let p = pool(1);
            let e = {
                let mut st = p.lock();
                st.size = 1;
                entry(1)
            };
            let slot = match p.lock().acquire(
                0,
                Tick::default(),
                Tick::default().after(Duration::from_secs(1)),
                true,
                0,
            ) {
                Acquire::Wait { slot, create, .. } => {
                    assert!(!create);
                    slot
                }
                _ => panic!("must wait"),
            };
            let p2 = Arc::clone(&p);
            let releaser = thread::spawn(move || release(&p2, e));
            let w = Wait {
                pool: Arc::clone(&p),
                slot: Some(slot),
            };
            // Either polls once and gives up, or is dropped at once.
            let got = {
                let mut w = Box::pin(w);
                let waker = futures_noop();
                let mut cx = Context::from_waker(&waker);
                match w.as_mut().poll(&mut cx) {
                    Poll::Ready(got) => got,
                    Poll::Pending => None,
                }
            };
            releaser.join().unwrap();
            let st = p.lock();
            check(&st);
            let held = usize::from(got.is_some());
            assert_eq!(
                st.idle.len_locked() + held,
                1,
                "the object is in exactly one place"
            );
            assert_eq!(st.waiters.len(), 0);
        });
    }

    /// Two waiters and two returns in parallel: both are served, FIFO state
    /// stays consistent.
    #[test]
    fn two_waiters_two_releases() {
        loom::model(|| {
            let p = pool(2);
            p.lock().size = 2;
            let mut slots = Vec::new();
            for _ in 0..2 {
                match p.lock().acquire(
                    0,
                    Tick::default(),
                    Tick::default().after(Duration::from_secs(1)),
                    true,
                    0,
                ) {
                    Acquire::Wait { slot, .. } => slots.push(slot),
                    _ => panic!("must wait"),
                }
            }
            let handles: Vec<_> = (1..=2)
                .map(|id| {
                    let p = Arc::clone(&p);
                    thread::spawn(move || release(&p, entry(id)))
                })
                .collect();
            let waiters: Vec<_> = slots
                .into_iter()
                .map(|slot| {
                    let p = Arc::clone(&p);
                    thread::spawn(move || {
                        loom::future::block_on(Wait {
                            pool: p,
                            slot: Some(slot),
                        })
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let mut ids: Vec<u64> = waiters
                .into_iter()
                .map(|h| h.join().unwrap().expect("served").meta.id)
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, vec![1, 2]);
            let st = p.lock();
            assert_eq!(st.idle.len_locked(), 0);
            assert_eq!(st.waiters.len(), 0);
        });
    }

    /// A create that fails while its waiter gives up: the reservation is
    /// always given back, the waiter is either failed or removed.
    #[test]
    fn create_failure_races_cancel() {
        loom::model(|| {
            let p = pool(1);
            let slot = match p.lock().acquire(
                0,
                Tick::default(),
                Tick::default().after(Duration::from_secs(1)),
                true,
                0,
            ) {
                Acquire::Wait { slot, create, .. } => {
                    assert!(create);
                    slot
                }
                _ => panic!("must wait"),
            };
            let p2 = Arc::clone(&p);
            let creator = thread::spawn(move || {
                let mut wake = Vec::new();
                let keep = p2.lock().create_failed(
                    CreateError::Timeout(Duration::from_secs(1)),
                    Instant::now(),
                    true,
                    &mut wake,
                );
                for w in wake {
                    w.wake();
                }
                if keep {
                    // Nobody waits any more once the caller gave up, so a
                    // job that kept going must still find work.
                    let st = p2.lock();
                    assert!(st.waiters.len() > 0 || !st.keep_creating());
                    drop(st);
                    p2.lock().unreserve();
                }
            });
            drop(Wait {
                pool: Arc::clone(&p),
                slot: Some(slot),
            });
            creator.join().unwrap();
            let st = p.lock();
            check(&st);
            assert_eq!(st.size, 0);
            assert_eq!(st.waiters.len(), 0);
        });
    }

    /// The deadline task expires a waiter while an object is returned: the
    /// waiter gets the object or the timeout, the object is never lost.
    #[test]
    fn deadline_races_release() {
        loom::model(|| {
            let p = pool(1);
            p.lock().size = 1;
            let start = Tick::default();
            let slot = match p.lock().acquire(0, start, start, true, 0) {
                Acquire::Wait { slot, rearm, .. } => {
                    assert!(rearm, "the first waiter arms the deadline task");
                    slot
                }
                _ => panic!("must wait"),
            };
            let p2 = Arc::clone(&p);
            let releaser = thread::spawn(move || release(&p2, entry(1)));
            let p3 = Arc::clone(&p);
            let reaper = thread::spawn(move || {
                let mut wake = Vec::new();
                p3.lock().expire(start, &mut wake);
                for w in wake {
                    w.wake();
                }
            });
            let got = loom::future::block_on(Wait {
                pool: Arc::clone(&p),
                slot: Some(slot),
            });
            releaser.join().unwrap();
            reaper.join().unwrap();
            let st = p.lock();
            check(&st);
            assert_eq!(st.idle.len_locked() + usize::from(got.is_some()), 1);
            assert_eq!(st.waiters.len(), 0);
            assert_eq!(st.next_deadline, None);
        });
    }

    /// With the pool's `size` objects out, a thread that returns one (id 1)
    /// the way a checked-out object does: into its shard (home 1) without
    /// the pool lock, or through the lock when the pool says so. Yields
    /// where the object went through the lock (`None`: into the shard).
    fn lock_free_return(p: &Arc<Mutex<S>>, size: usize) -> thread::JoinHandle<Option<Placed<u32>>> {
        let idle = {
            let mut st = p.lock();
            st.size = size;
            st.publish();
            Arc::clone(&st.idle)
        };
        let p = Arc::clone(p);
        thread::spawn(move || {
            #[allow(unsafe_code)]
            // SAFETY: this thread holds `idle` for the whole call.
            let put = unsafe { Shards::put(&*idle, 1, entry(1), 0) };
            match put {
                Ok(()) => None,
                Err(e) => {
                    let mut st = p.lock();
                    let placed = st.place(e, Tick::default(), 1);
                    st.publish();
                    drop(st);
                    if let Placed::Handed(Some(w)) | Placed::Nudged(Some(w)) = &placed {
                        w.wake_by_ref();
                    }
                    Some(placed)
                }
            }
        })
    }

    /// A return that skips the pool lock (into its shard) races a caller
    /// that starts to wait, each on its own shard: the object must end up
    /// with the waiter, never idle in a shard while the waiter waits.
    #[test]
    fn lock_free_return_races_a_new_waiter() {
        loom::model(|| {
            let p = pool(1);
            let returner = lock_free_return(&p, 1);
            let step = {
                let mut st = p.lock();
                let step = st.acquire(
                    0,
                    Tick::default(),
                    Tick::default().after(Duration::from_secs(1)),
                    true,
                    0,
                );
                st.publish();
                step
            };
            returner.join().unwrap();
            let st = p.lock();
            check(&st);
            match step {
                // The object was already idle when the caller looked.
                Acquire::Got(_) => assert_eq!(st.idle.len_locked(), 0),
                Acquire::Wait { slot, .. } => {
                    assert!(
                        slot.take_ready().is_some(),
                        "the waiter must get the object, not a shard"
                    );
                    assert_eq!(st.idle.len_locked(), 0);
                }
                Acquire::Refused(r) => panic!("refused: {r:?}"),
            }
        });
    }

    /// Behind a waiter, a caller that starts to wait does not look in the
    /// shards after publishing. It races the first waiter being served
    /// (after which the count is zero again) and a lock-free return: an
    /// object left idle in a shard while a caller waits must have a waiter
    /// nudged to come and take it, and none is lost.
    #[test]
    fn lock_free_return_races_a_second_waiter() {
        loom::model(|| {
            let p = pool(2);
            let first = {
                let mut st = p.lock();
                st.size = 2;
                let deadline = Tick::default().after(Duration::from_secs(1));
                let first = match st.acquire(0, Tick::default(), deadline, true, 0) {
                    Acquire::Wait { slot, .. } => slot,
                    _ => panic!("both objects are out: must wait"),
                };
                st.publish();
                first
            };
            let returner = lock_free_return(&p, 2);
            let p2 = Arc::clone(&p);
            let server = thread::spawn(move || {
                let mut st = p2.lock();
                let placed = st.place(entry(2), Tick::default(), 0);
                st.publish();
                drop(st);
                assert!(!matches!(placed, Placed::Destroy(_)), "the pool is open");
            });
            let step = {
                let mut st = p.lock();
                let deadline = Tick::default().after(Duration::from_secs(1));
                let step = st.acquire(0, Tick::default(), deadline, true, 0);
                st.publish();
                step
            };
            server.join().unwrap();
            let placed = returner.join().unwrap();
            assert!(
                !matches!(placed, Some(Placed::Destroy(_))),
                "the pool is open"
            );
            let st = p.lock();
            check(&st);
            let first_nudged = first.is_nudged();
            let mut held = usize::from(first.take_ready().is_some());
            match step {
                Acquire::Got(_) => held += 1,
                Acquire::Wait { slot, .. } => match slot.take_ready() {
                    Some(_) => held += 1,
                    None => assert!(
                        st.idle.len_locked() == 0 || first_nudged || slot.is_nudged(),
                        "an object sits in a shard while callers wait, and none was woken to take it"
                    ),
                },
                Acquire::Refused(r) => panic!("refused: {r:?}"),
            }
            assert_eq!(held + st.idle.len_locked(), 2, "no object is lost");
        });
    }

    /// A return that skips the pool lock races `close`: the object must be
    /// taken by the close or come back to be destroyed, never left idle in
    /// a shard of a closed pool.
    #[test]
    fn lock_free_return_races_close() {
        loom::model(|| {
            let p = pool(1);
            let returner = lock_free_return(&p, 1);
            let taken = {
                let mut st = p.lock();
                let mut wake = Vec::new();
                let taken = st.close(&mut wake);
                st.publish();
                taken.len()
            };
            let placed = returner.join().unwrap();
            let destroyed = usize::from(matches!(placed, Some(Placed::Destroy(_))));
            let st = p.lock();
            assert_eq!(st.idle.len_locked(), 0, "nothing idle after close");
            assert_eq!(taken + destroyed, 1, "the object is closed exactly once");
            assert_eq!(st.size, 0);
        });
    }

    fn futures_noop() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
