//! Checkouts and returns under the lock: who gets an idle or returned
//! object, who waits, and how waiters leave the queue.
//!
//! # A return while three callers wait
//!
//! Nobody waiting, a return goes straight into its thread's idle shard
//! without the pool lock (`Shards::put`). With callers waiting the shards
//! refuse it (the waiting count is published there), and it comes through
//! the door to [`State::place`]:
//!
//! 1. A **fair** return (every [`FAIR_EVERY`] on average, or when the
//!    longest waiter has waited [`STARVING_AFTER`]) hands the entry to the
//!    longest waiter of the most urgent priority: it is filled, woken after
//!    the unlock, and takes the entry when it next runs. Until it has, the
//!    next returns are not handed to a sleeping caller again.
//! 2. Any other return puts the entry in its idle shard and **nudges** the
//!    longest waiter not yet nudged. The nudged caller runs, and through
//!    [`Queued::poll_handoff`] takes an idle entry and leaves the queue
//!    (`State::retry`), or finds the entry taken by a get that was running
//!    anyway and waits on at its place. Objects stay with running tasks;
//!    the two waiters behind keep their places.
//! 3. A waiter that gives up (its deadline, or its future dropped) leaves
//!    the queue through the door; an entry handed to it meanwhile is placed
//!    again, and a nudge it did not answer passes to the next waiter.
//!
//! The closed pool, or one above `max`, destroys the entry instead.

use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::Stamp;
use crate::error::CreateError;
use crate::events::Reason;
use crate::object::Item;
use crate::sync::Arc;
use crate::waiters::{Waiter, WakeList};

use super::{Acquire, After, Door, Handoff, Phase, Placed, Refusal, State, WaitError};

/// How often a pool that keeps callers queuing at `max` reports it.
pub(crate) const MAX_REACHED_EVERY: Duration = Duration::from_secs(1);

/// How often, at most, a return hands its object straight to the caller
/// that has waited longest, on average (each interval is drawn between
/// half and one and a half times this, as parking_lot's eventual fairness
/// does). In between, a return puts the object in the idle shards and
/// wakes one waiter to come and take it, and a new checkout may take it
/// first: the objects stay with tasks that are running instead of waiting
/// in the queued of tasks that are not, so a queue formed under a burst
/// drains. A waiter is passed over for at most a few of these intervals
/// per caller ahead of it.
pub(crate) const FAIR_EVERY: Duration = Duration::from_micros(500);

/// A return hands its object to the longest waiter, whatever `FAIR_EVERY`
/// says, once that waiter has waited this long (one object at a time, see
/// `fair_due`): under steady overload callers are then served in order (a
/// waiter waits about this long plus its turn), where one fair return per
/// interval would let a waiter far back wait an interval per caller ahead
/// of it, and the coarse clock,
/// which moves in steps of a scheduler tick (1–4 ms), stretches each
/// interval to a tick. A queue formed under a burst and drained within
/// this time never triggers it.
pub(crate) const STARVING_AFTER: Duration = Duration::from_millis(20);

/// The next time a return must be fair, from `now`.
fn next_fair(now: Stamp) -> Stamp {
    let half = FAIR_EVERY.as_nanos() as u64 / 2;
    now.after(Duration::from_nanos(half + fastrand::u64(..=2 * half)))
}

impl<T, E: std::error::Error + 'static> State<T, E> {
    /// A checkout. `first` is false when the caller retries after throwing
    /// away a bad object, so the attempt is not counted twice. A caller that
    /// has to wait is failed by the deadline task at `deadline`.
    #[inline]
    pub(crate) fn acquire(
        &mut self,
        priority: usize,
        now: Stamp,
        deadline: Stamp,
        first: bool,
        home: usize,
        after: &mut After<T>,
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
        // Nothing idle, and creates fail for good: no new attempt before
        // the backoff runs out, however many callers ask.
        if self.failing_for_good() {
            return Acquire::Refused(Refusal::FailingForGood);
        }
        // Callers a create will serve (in flight, or still allowed under
        // `max`) are not queued for a return: only the rest count.
        let served_by_creates = self.creating + self.max.saturating_sub(self.size);
        if self.waiters.len() >= served_by_creates.saturating_add(self.max_waiting) {
            self.m.queue_full += 1;
            return Acquire::Refused(Refusal::QueueFull(self.max_waiting));
        }
        let waiter = Waiter::new(
            self.waiters.clamp(priority),
            self.failure_seq,
            now,
            deadline,
        );
        let first_waiter = self.waiters.len() == 0;
        self.waiters.push(Arc::clone(&waiter));
        // A return that read a count of zero may have put an object in a
        // shard since the look above: publish, then look again. Behind
        // other waiters there is nothing to look for: the count every
        // return has read since the first of them published is above zero,
        // and that first one looked after publishing it.
        if first_waiter {
            self.publish();
            if let Some(entry) = self.idle.pop_where(home, |_| true) {
                self.waiters.remove(&waiter);
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
        if self.reserve_create() {
            after.work.creates += 1;
        }
        Acquire::Wait {
            waiter,
            max_reached: self.max_reached(now),
            rearm,
        }
    }

    /// Whether a caller that just queued should report that the pool is
    /// at `max`: at most once per [`MAX_REACHED_EVERY`], so that a pool
    /// that stays saturated does not report every caller that queues.
    fn max_reached(&mut self, now: Stamp) -> Option<(usize, usize)> {
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
    pub(crate) fn expire(&mut self, now: Stamp, after: &mut After<T>) -> usize {
        let (seq, last, failing) = (self.failure_seq, &self.last_error, self.failures > 0);
        let n = self.waiters.fail_where(
            |waiter| waiter.deadline <= now,
            |waiter| {
                let seen = (seq > waiter.failures_base || failing)
                    .then(|| last.clone())
                    .flatten();
                Err(WaitError::Timeout(seen))
            },
            &mut after.wake,
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

    /// Puts a counted object back: to the first waiter when a fair return
    /// is due, else to the home shard (nudging a waiter to come for it).
    #[inline]
    pub(crate) fn place(
        &mut self,
        entry: Item<T>,
        now: Stamp,
        home: usize,
        after: &mut After<T>,
    ) -> Placed {
        self.place_as(entry, now, home, false, after)
    }

    /// Whether a return is due to hand its object to the longest waiter:
    /// the fair interval has passed or that waiter is starving, and the
    /// last object handed that way has been taken (or was handed
    /// `STARVING_AFTER` ago). While one is still on its way to a caller
    /// that has not run yet, the next return goes idle for a running
    /// caller: handing every return to sleeping callers would leave running
    /// ones none, and they would queue behind the sleepers (a convoy that a
    /// queue of starving callers never leaves).
    fn fair_due(&mut self, now: Stamp) -> bool {
        let starving = || {
            self.waiters
                .next_since()
                .is_some_and(|since| now.since(since) >= STARVING_AFTER)
        };
        (now >= self.fair_at || starving()) && !self.waiters.in_transit(now, STARVING_AFTER)
    }

    /// [`place`](Self::place), or with `new` the placing of an object just
    /// created for a waiter: that always goes straight to one (a nudge
    /// would leave the waiter queued, and the create job would make
    /// another for it).
    pub(crate) fn place_as(
        &mut self,
        entry: Item<T>,
        now: Stamp,
        home: usize,
        new: bool,
        after: &mut After<T>,
    ) -> Placed {
        if self.phase == Phase::Closed || self.size > self.max {
            self.size -= 1;
            let reason = if self.phase == Phase::Closed {
                Reason::Closed
            } else {
                Reason::Resized
            };
            after.work.destroy.push((entry, reason));
            return Placed::Destroyed;
        }
        if self.waiters.len() == 0 {
            self.idle.push(home, entry);
            return Placed::Idle;
        }
        if !new && !self.fair_due(now) {
            self.idle.push(home, entry);
            after.wake.extend(self.waiters.nudge_next());
            return Placed::Nudged;
        }
        self.fair_at = next_fair(now);
        // Idle objects while callers wait: some nudge went unanswered.
        // The known ways pass their nudge on; this catches any other, at
        // the cost of a wakeup, so that no object stays idle for long.
        let stranded = self.idle.len_relaxed() > 0;
        match self.waiters.hand(Ok((entry, now)), (!new).then_some(now)) {
            // The caller records how long it waited, outside this lock.
            Ok((waker, nudged)) => {
                after.wake.extend(waker);
                // That caller was to take an object left idle: another
                // must, or it stays idle while callers wait.
                if nudged || stranded {
                    after.wake.extend(self.waiters.nudge_next());
                }
                Placed::Handed
            }
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
        waiter: &Arc<Waiter<Handoff<T, E>>>,
        now: Stamp,
        home: usize,
        wake: &mut WakeList,
    ) -> Option<Handoff<T, E>> {
        if let Some(v) = waiter.take_ready() {
            // Handed an object after taking its nudge: the idle one it was
            // nudged about is another caller's to take.
            wake.extend(self.waiters.nudge_next());
            return Some(v);
        }
        let entry = self.idle.pop_where(home, |_| true)?;
        let removed = self.waiters.remove(waiter);
        debug_assert!(removed, "a waiting waiter must be queued");
        Some(Ok((entry, now)))
    }

    /// A waiter gives up (dropped or timed out). Returns what was handed to
    /// it in the meantime, which the caller must take or put back.
    pub(crate) fn cancel(
        &mut self,
        waiter: &Arc<Waiter<Handoff<T, E>>>,
        timed_out: bool,
        wake: &mut WakeList,
    ) -> Option<Handoff<T, E>> {
        if let Some(v) = waiter.take_ready() {
            return Some(v);
        }
        let nudged = waiter.is_nudged();
        let removed = self.waiters.remove(waiter);
        debug_assert!(removed, "a waiting waiter must be queued");
        // It leaves without taking the object it was nudged about.
        if nudged {
            wake.extend(self.waiters.nudge_next());
        }
        if timed_out {
            self.m.timeouts += 1;
        } else {
            self.m.cancelled += 1;
        }
        None
    }

    /// The newest create failure, if it happened while `waiter` waited or
    /// creates have been failing since (no create succeeded after it).
    pub(crate) fn error_seen_by(&self, waiter: &Waiter<Handoff<T, E>>) -> Option<CreateError<E>> {
        if self.failure_seq > waiter.failures_base || self.failures > 0 {
            self.last_error.clone()
        } else {
            None
        }
    }
}

/// A queued caller's claim on its waiter, as a get's future holds it.
/// Polling it waits for a handoff, and answers a nudge by looking for
/// an idle object through the door; dropping it leaves the queue and
/// puts back anything handed over in the meantime. The pool and the loom
/// models both wait through it.
pub(crate) struct Queued<'a, D: Door<T, E>, T, E: std::error::Error + 'static> {
    door: &'a D,
    waiter: Option<Arc<Waiter<Handoff<T, E>>>>,
    home: usize,
}

impl<'a, D: Door<T, E>, T, E: std::error::Error + 'static> Queued<'a, D, T, E> {
    pub(crate) fn new(door: &'a D, waiter: Arc<Waiter<Handoff<T, E>>>, home: usize) -> Self {
        Self {
            door,
            waiter: Some(waiter),
            home,
        }
    }

    fn waiter(&self) -> &Arc<Waiter<Handoff<T, E>>> {
        self.waiter.as_ref().expect("polled after its handoff")
    }

    /// Waits for an object or a failure handed over, or for a nudge that
    /// finds an idle object. Ready at most once.
    pub(crate) fn poll_handoff(&mut self, cx: &mut Context<'_>) -> Poll<Handoff<T, E>> {
        loop {
            let waiter = self.waiter();
            let handed = match waiter.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(handed)) => handed,
                // Nudged: take an idle object if one is still there; else
                // wait on, at the same place (the next poll re-registers).
                Poll::Ready(None) => {
                    let (now, home) = (self.door.now(), self.home);
                    match self
                        .door
                        .locked(|st, after| st.retry(waiter, now, home, &mut after.wake))
                    {
                        Some(handed) => handed,
                        None => continue,
                    }
                }
            };
            self.waiter = None;
            return Poll::Ready(handed);
        }
    }

    /// The caller's deadline passed: it leaves the queue, unless an
    /// object or failure was handed over just now (`Ok`). `Err` carries
    /// the create failure it saw while waiting, if any.
    pub(crate) fn time_out(mut self) -> Result<Handoff<T, E>, Option<CreateError<E>>> {
        let waiter = self.waiter.take().expect("polled after its handoff");
        let (late, seen) = self.door.locked(|st, after| {
            let late = st.cancel(&waiter, true, &mut after.wake);
            (late, st.error_seen_by(&waiter))
        });
        late.ok_or(seen)
    }
}

impl<D: Door<T, E>, T, E: std::error::Error + 'static> Drop for Queued<'_, D, T, E> {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            let (now, home) = (self.door.now(), self.home);
            self.door.locked(|st, after| {
                if let Some(Ok((entry, _))) = st.cancel(&waiter, false, &mut after.wake) {
                    st.place(entry, now, home, after);
                }
            });
        }
    }
}

#[cfg(all(test, not(aquifer_loom)))]
mod tests {
    use std::time::Duration;

    use crate::clock::Stamp;
    use crate::internals::testing::{entry, state};
    use crate::internals::{Acquire, After, Placed};

    fn at(ms: u64) -> Stamp {
        Stamp::default().after(Duration::from_millis(ms))
    }

    /// Three waiters, each far past `STARVING_AFTER`, and three returns
    /// that nobody polls in between: the first goes to the longest
    /// waiter; while it has not been taken the second goes idle with a
    /// nudge; once it has been on its way for `STARVING_AFTER` (its taker's
    /// future may not be polled for a while) the third is handed on.
    #[test]
    fn one_object_at_a_time_travels_to_a_starving_waiter_for_a_while() {
        let mut st = state(3);
        st.size = 3;
        let mut after = After::default();
        let mut queued = Vec::new();
        for _ in 0..3 {
            match st.acquire(0, at(0), at(60_000), true, 0, &mut after) {
                Acquire::Wait { waiter, .. } => queued.push(waiter),
                _ => panic!("must wait"),
            }
        }
        assert_eq!(st.place(entry(1), at(1000), 0, &mut after), Placed::Handed);
        assert_eq!(st.place(entry(2), at(1010), 0, &mut after), Placed::Nudged);
        assert_eq!(st.place(entry(3), at(1030), 0, &mut after), Placed::Handed);
        assert!(queued[0].take_ready().is_some() && queued[1].take_ready().is_some());
    }
}
