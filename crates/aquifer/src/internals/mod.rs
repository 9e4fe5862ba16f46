//! The pool's state behind its lock. Every method is synchronous and takes
//! `&self` or `&mut self`; the fields are private. There is one door in:
//! [`StateLock::locked`] runs a change under the lock, publishes to the
//! shards what a lock-free return must respect, unlocks, wakes the waiters
//! the change chose, and returns the rest of what it decided ([`Work`]:
//! objects to destroy or report, creates to start) for the pool to act on;
//! [`StateLock::read`] only looks. A method that decides something must
//! happen outside the lock records it in the caller's [`After`], which
//! lives on the caller's stack (not in the shared state, whose cache lines
//! the other core would then fetch back).

use tokio::time::Instant;

use crate::clock::Stamp;

use crate::config::{Order, PoolConfig};
use crate::error::CreateError;
use crate::events::Reason;
use crate::metrics::Counters;
use crate::object::Item;
use crate::shards::Shards;
use crate::status::Status;
use crate::sync::{Arc, Mutex};
use crate::waiters::{Waiter, Waiters, WakeList};

/// What a waiter receives: an object and the instant it was handed over
/// (which the waiter takes as its checkout time, saving a clock read), or
/// why it gets none.
pub(crate) type Handoff<T, E> = Result<(Item<T>, Stamp), WaitError<E>>;

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

pub(crate) enum Acquire<T, E: std::error::Error + 'static> {
    Got(Item<T>),
    Wait {
        waiter: Arc<Waiter<Handoff<T, E>>>,
        /// Every waiter up to `max` is taken and no `MaxReached` was
        /// reported in the last [`MAX_REACHED_EVERY`](checkout::MAX_REACHED_EVERY): report one, with
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
    /// Creates fail with an error retrying cannot fix, and the next try is
    /// not due yet: the last error is the answer.
    FailingForGood,
}

/// Where a returned or new object went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// To a waiter, to be woken once the lock is released.
    Handed,
    /// To the idle shards, with a waiter to wake once the lock is released
    /// so that it comes and looks.
    Nudged,
    Idle,
    /// Not wanted any more (closed, or above `max`): its waiter is freed and
    /// it is to be destroyed once the lock is released.
    Destroyed,
}

/// What must happen once the pool lock is released, gathered while it was
/// held: the door ([`StateLock::locked`]) wakes the waiters itself, after
/// the unlock, and hands the rest to the pool as [`Work`].
#[must_use = "what an unlock leaves to do must be done"]
pub(crate) struct After<T> {
    /// Waiters to wake.
    pub(crate) wake: WakeList,
    /// The rest, for the pool.
    pub(crate) work: Work<T>,
}

impl<T> Default for After<T> {
    fn default() -> Self {
        Self {
            wake: WakeList::default(),
            work: Work::default(),
        }
    }
}

/// What an unlock leaves for the pool to do, once the waiters are woken.
#[must_use = "what an unlock leaves to do must be done"]
pub(crate) struct Work<T> {
    /// Objects whose queued are freed, to destroy.
    pub(crate) destroy: Vec<(Item<T>, Reason)>,
    /// Objects evicted (their queued freed): to report, then destroy.
    pub(crate) evicted: Vec<(Item<T>, Reason)>,
    /// Create reservations made, one job to start for each.
    pub(crate) creates: usize,
    /// The pool is draining or closed and nothing is out any more.
    pub(crate) settled: bool,
}

impl<T> Default for Work<T> {
    fn default() -> Self {
        Self {
            destroy: Vec::new(),
            evicted: Vec::new(),
            creates: 0,
            settled: false,
        }
    }
}

/// A count the pool keeps, for [`State::count`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tally {
    /// A caller gave up at its deadline outside the queue.
    Timeout,
    ValidationFailure,
    ResetFailure,
    /// An object evicted, by reason.
    Evicted(Reason),
    Destroyed,
    DestroyFailed,
    OperationFailed,
    /// Objects held longer than the leak threshold.
    Leaks(usize),
}

pub(crate) struct State<T, E: std::error::Error + 'static> {
    /// The idle objects. Checkouts and returns reach them without this
    /// lock while nobody waits; see the `shards` module.
    idle: Arc<Shards<T>>,
    waiters: Waiters<Handoff<T, E>>,
    /// Idle + borrowed + creating.
    size: usize,
    creating: usize,
    /// The current maximum (the configuration keeps the one built with).
    max: usize,
    min: usize,
    max_waiting: usize,
    create_concurrency: usize,
    phase: Phase,
    /// Consecutive create failures.
    failures: u32,
    /// Create failures ever; waiters remember it to count what they saw.
    failure_seq: u64,
    last_error: Option<CreateError<E>>,
    retry_at: Option<Instant>,
    /// The last create failed with an error retrying cannot fix: until
    /// `retry_at`, a checkout that would need a create fails at once with
    /// it rather than trying again (one attempt per backoff step, however
    /// many callers ask).
    last_failure_permanent: bool,
    /// What the deadline task sleeps until: at or before every waiter's
    /// deadline (it may be stale-early, never late). `None` when no waiter
    /// needs it.
    next_deadline: Option<Stamp>,
    /// When a caller last reported that the pool is at `max`.
    max_reported: Option<Stamp>,
    /// When the next return with waiters hands its object straight to the
    /// longest waiter (see [`FAIR_EVERY`](checkout::FAIR_EVERY)).
    fair_at: Stamp,
    next_id: u64,
    m: Counters,
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
            last_failure_permanent: false,
            next_deadline: None,
            max_reported: None,
            fair_at: Stamp::default(),
            next_id: 1,
            m: Counters::default(),
        }
    }

    /// The idle objects, which the pool also reaches without the lock.
    pub(crate) fn shards(&self) -> &Arc<Shards<T>> {
        &self.idle
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// How many objects are where, at one instant; `pending` is counted
    /// outside this lock.
    pub(crate) fn status(&self, pending: usize) -> Status {
        let (idle, borrowed) = self.idle_and_borrowed();
        Status {
            size: self.size,
            idle,
            borrowed,
            creating: self.creating,
            waiting: self.waiters.len(),
            pending,
            max: self.max,
            min: self.min,
            // A closed pool creates nothing more.
            spare: if self.phase == Phase::Closed {
                0
            } else {
                self.max.saturating_sub(self.size)
            },
        }
    }

    /// Whether `min` objects are alive (not counting creates in flight).
    pub(crate) fn has_min(&self) -> bool {
        self.size - self.creating >= self.min
    }

    /// Create failures so far, to tell later ones from earlier ones.
    pub(crate) fn failure_seq(&self) -> u64 {
        self.failure_seq
    }

    /// Consecutive create failures.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The newest create failure.
    pub(crate) fn last_error(&self) -> Option<CreateError<E>> {
        self.last_error.clone()
    }

    /// When the next create may start, if creates are backing off.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The earliest waiter's deadline, if any waiter needs the deadline task.
    pub(crate) fn next_deadline(&self) -> Option<Stamp> {
        self.next_deadline
    }

    /// The counters, with what the shards counted added.
    pub(crate) fn counters(&self) -> Counters {
        let mut m = self.m.clone();
        self.idle.merge_into(&mut m);
        m
    }

    /// Counts one event.
    pub(crate) fn count(&mut self, t: Tally) {
        let m = &mut self.m;
        match t {
            Tally::Timeout => m.timeouts += 1,
            Tally::ValidationFailure => m.validation_failures += 1,
            Tally::ResetFailure => m.reset_failures += 1,
            Tally::Evicted(Reason::Idle) => m.evicted_idle += 1,
            Tally::Evicted(Reason::Lifetime) => m.evicted_lifetime += 1,
            Tally::Evicted(_) => m.evicted_broken += 1,
            Tally::Destroyed => m.destroys += 1,
            Tally::DestroyFailed => m.destroy_failures += 1,
            Tally::OperationFailed => m.operation_failures += 1,
            Tally::Leaks(n) => m.leaks += n as u64,
        }
    }

    /// Wakes every waiter, so that each looks at its cell again (the
    /// deadline task is gone and each must arm a timer of its own).
    pub(crate) fn nudge_all(&self, after: &mut After<T>) {
        self.waiters.nudge_all(&mut after.wake);
    }

    /// Whether a draining or closed pool has nothing out any more.
    pub(crate) fn quiesced(&self) -> bool {
        self.phase != Phase::Open && self.settled()
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
            self.max,
        );
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// The lock around [`State`], with its one door: [`locked`](Self::locked)
/// for every change, [`read`](Self::read) for a look.
pub(crate) struct StateLock<T, E: std::error::Error + 'static> {
    state: Mutex<State<T, E>>,
}

impl<T, E: std::error::Error + 'static> StateLock<T, E> {
    pub(crate) fn new(state: State<T, E>) -> Self {
        Self {
            state: Mutex::new(state),
        }
    }

    /// The door: runs `f` on the locked state, publishes to the shards
    /// what a lock-free return must respect, unlocks, wakes the waiters
    /// `f` chose, and returns what else it left to do.
    #[inline]
    pub(crate) fn locked<R>(
        &self,
        f: impl FnOnce(&mut State<T, E>, &mut After<T>) -> R,
    ) -> (R, Work<T>) {
        let mut after = After::default();
        let mut guard = self.state.lock();
        let r = f(&mut guard, &mut after);
        after.work.settled = guard.quiesced();
        guard.publish();
        drop(guard);
        after.wake.wake_all();
        (r, after.work)
    }

    /// Runs `f` on the locked state, which it only reads.
    #[inline]
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State<T, E>) -> R) -> R {
        f(&self.state.lock())
    }
}

/// Whatever owns a [`StateLock`] and acts on the [`Work`] its unlocks
/// leave: the pool, or a loom model. What waits, returns and gives up
/// goes through it, so that both run the same code.
pub(crate) trait Door<T, E: std::error::Error + 'static> {
    /// [`StateLock::locked`], then the work it left.
    fn locked<R>(&self, f: impl FnOnce(&mut State<T, E>, &mut After<T>) -> R) -> R;

    /// The pool's clock, now.
    fn now(&self) -> Stamp;

    /// Puts a counted object back through the lock: to a waiter, or idle.
    fn put_back(&self, entry: Item<T>, home: usize) -> Placed {
        let now = self.now();
        self.locked(|st, after| st.place(entry, now, home, after))
    }
}

pub(crate) mod checkout;
mod creates;
mod idle;

#[cfg(all(test, aquifer_loom))]
mod loom_models;
#[cfg(test)]
mod testing;
