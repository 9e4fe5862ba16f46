//! The pool as a whole: draining, resizing, closing, and the idle objects
//! that maintenance and the operator's calls take out.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::Stamp;
use crate::config::PoolConfig;
use crate::error::BuildError;
use crate::events::Reason;
use crate::object::Item;
use crate::thread;

use super::{After, Phase, State, Tally, WaitError};

impl<T, E: std::error::Error + 'static> State<T, E> {
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
        self.idle.restore(thread::home(), keep);
        self.size -= out.len();
        out
    }

    /// Takes idle objects, the one returned longest ago first, while
    /// `size` is above `max` (after a resize).
    fn take_excess(&mut self) -> Vec<Item<T>> {
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
        self.idle.restore(thread::home(), all);
        out
    }

    /// The idle objects, the one returned longest ago first, for `f` to
    /// look at without taking them.
    pub(crate) fn inspect_idle<R>(&self, f: impl FnOnce(&VecDeque<Item<T>>) -> R) -> R {
        let all = self.idle.drain();
        let r = f(&all);
        self.idle.restore(thread::home(), all);
        r
    }

    /// Maintenance: evicts idle objects that expired, idled too long or
    /// are broken, examining at most `budget`, oldest first.
    pub(crate) fn evict_idle(
        &mut self,
        now: Stamp,
        cfg: &PoolConfig,
        mut is_broken: impl FnMut(&T) -> bool,
        after: &mut After<T>,
    ) {
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
        self.idle.restore(thread::home(), keep);
        self.size -= out.len();
        for (_, r) in &out {
            self.count(Tally::Evicted(*r));
        }
        after.work.evicted.extend(out);
    }

    /// Keepalive: takes idle objects whose last check is older than `every`.
    /// They count as borrowed until the check ends.
    pub(crate) fn due_for_keepalive(&mut self, now: Stamp, every: Duration) -> Vec<Item<T>> {
        let mut due = Vec::new();
        let mut keep = VecDeque::new();
        for e in self.idle.drain() {
            if now.at_least(e.checked_at, every) {
                due.push(e);
            } else {
                keep.push_back(e);
            }
        }
        self.idle.restore(thread::home(), keep);
        due
    }

    /// Stops new checkouts; waiters already queued are still served.
    pub(crate) fn drain(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::Draining;
        }
    }

    /// A new `max`: idle objects above it are destroyed, borrowed ones
    /// when they come back, and creates start if it grew and callers wait.
    /// A closed pool keeps the `max` it closed with.
    pub(crate) fn set_max(&mut self, max: usize, after: &mut After<T>) -> Result<(), BuildError> {
        if max == 0 {
            return Err(BuildError::MaxZero);
        }
        if self.phase == Phase::Closed {
            return Ok(());
        }
        if self.min > max {
            return Err(BuildError::MinAboveMax { min: self.min, max });
        }
        self.max = max;
        // Returns above the new max must come through the lock from now
        // on: publish before looking at the shards.
        self.publish();
        let excess = self.take_excess();
        after
            .work
            .destroy
            .extend(excess.into_iter().map(|e| (e, Reason::Resized)));
        self.refill(after);
        Ok(())
    }

    /// Closes: fails every waiter and takes every idle object (slots freed).
    pub(crate) fn close(&mut self, after: &mut After<T>) -> Vec<Item<T>> {
        self.phase = Phase::Closed;
        self.waiters
            .fail_where(|_| true, |_| Err(WaitError::Closed), &mut after.wake);
        self.publish();
        self.take_idle(|_| true)
    }

    /// Nothing is out: no borrowed object, no create, no waiter.
    pub(crate) fn settled(&self) -> bool {
        self.waiters.len() == 0 && self.idle.len_locked() == self.size
    }
}
