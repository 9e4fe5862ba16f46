//! Create reservations: how many creates are useful and allowed, and
//! what a create's success or failure changes.

use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Stamp;
use crate::error::CreateError;
use crate::object::Item;

use crate::events::Reason;

use super::{After, Phase, Placed, State, Tally, WaitError};

impl<T, E: std::error::Error + 'static> State<T, E> {
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

    /// Whether a checkout that would need a create should fail at once:
    /// the last create failed for good and its backoff has not run out.
    pub(crate) fn failing_for_good(&self) -> bool {
        self.last_failure_permanent && self.retry_at.is_some_and(|at| Instant::now() < at)
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
        now: Stamp,
        took: Duration,
        home: usize,
        after: &mut After<T>,
    ) -> Placed {
        self.creating -= 1;
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
        self.last_failure_permanent = false;
        self.m.creates += 1;
        self.m.create.record(took);
        self.place_as(entry, now, home, true, after)
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
        after: &mut After<T>,
    ) -> bool {
        self.failed(err.clone(), retry_at);
        self.last_failure_permanent = permanent;
        if permanent {
            // Checkouts until `retry_at` fail at once with this error; the
            // first after it tries again.
            self.waiters.fail_where(
                |_| true,
                |_| Err(WaitError::Create(err.clone())),
                &mut after.wake,
            );
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
        self.last_failure_permanent = false;
        self.failures = self.failures.saturating_add(1);
        self.failure_seq += 1;
        self.m.create_failures += 1;
        self.retry_at = Some(retry_at);
        self.last_error = Some(err);
    }

    /// An object leaves for good (destroyed or detached): free its slot,
    /// and reserve a replacement if one is wanted.
    pub(crate) fn free_slot(&mut self, after: &mut After<T>) {
        self.size -= 1;
        if self.reserve_create() {
            after.work.creates += 1;
        }
    }

    /// A counted object is to be closed for `reason`: its slot is freed
    /// and the pool destroys it after the unlock.
    pub(crate) fn destroy(&mut self, entry: Item<T>, reason: Reason, after: &mut After<T>) {
        self.free_slot(after);
        after.work.destroy.push((entry, reason));
    }

    /// A counted object found expired or broken: counted, its slot freed,
    /// and the pool reports and destroys it after the unlock.
    pub(crate) fn evict(&mut self, entry: Item<T>, reason: Reason, after: &mut After<T>) {
        self.count(Tally::Evicted(reason));
        self.free_slot(after);
        after.work.evicted.push((entry, reason));
    }

    /// Reserves every create that is useful and allowed now.
    pub(crate) fn refill(&mut self, after: &mut After<T>) {
        while self.reserve_create() {
            after.work.creates += 1;
        }
    }
}
