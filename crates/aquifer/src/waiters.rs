//! The wait queue: one FIFO per priority, each waiter a cell that the pool
//! fills while it holds its lock, or nudges (wakes to come and look for an
//! idle object) when a return is not due to be fair (see
//! `internals::checkout::FAIR_EVERY`).
//!
//! Lock order: pool state, then waiter. A waiter is filled only by whoever pops
//! it from the queue (under the pool lock), and a caller that gives up
//! removes its waiter under the pool lock too, taking back anything handed to
//! it in the meantime. So a value is always in exactly one place: the idle
//! list, a waiter, or a caller's hands.

use std::collections::VecDeque;
use std::mem;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::sync::{Arc, Mutex};

enum WaiterState<V> {
    /// Queued; `nudged` when a return put an object in the idle shards and
    /// woke this caller to come and look (see [`Waiters::nudge_next`]).
    Waiting {
        waker: Option<Waker>,
        nudged: bool,
    },
    Ready(V),
    Taken,
}

/// One waiting caller.
pub(crate) struct Waiter<V> {
    state: Mutex<WaiterState<V>>,
    priority: usize,
    /// The pool's create-failure count when this caller started to wait.
    pub(crate) failures_base: u64,
    /// When it started to wait.
    pub(crate) since: crate::clock::Stamp,
    /// When the pool's deadline task fails it with a timeout.
    pub(crate) deadline: crate::clock::Stamp,
}

impl<V> Waiter<V> {
    pub(crate) fn new(
        priority: usize,
        failures_base: u64,
        since: crate::clock::Stamp,
        deadline: crate::clock::Stamp,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(WaiterState::Waiting {
                waker: None,
                nudged: false,
            }),
            priority,
            failures_base,
            since,
            deadline,
        })
    }

    /// Takes the value once the pool handed one over (`Some`), or says that
    /// a return nudged this caller to look for an idle object (`None`; it
    /// stays queued).
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Option<V>> {
        let mut state = self.state.lock();
        match &mut *state {
            WaiterState::Waiting { waker, nudged } => {
                if mem::take(nudged) {
                    return Poll::Ready(None);
                }
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            WaiterState::Ready(_) => match mem::replace(&mut *state, WaiterState::Taken) {
                WaiterState::Ready(v) => Poll::Ready(Some(v)),
                _ => unreachable!(),
            },
            WaiterState::Taken => panic!("a pool waiter was polled after it completed"),
        }
    }

    /// Takes a value that was handed over but not yet polled. Call with the
    /// pool lock held, so that nothing is handed over concurrently.
    pub(crate) fn take_ready(&self) -> Option<V> {
        let mut state = self.state.lock();
        match mem::replace(&mut *state, WaiterState::Taken) {
            WaiterState::Ready(v) => Some(v),
            other => {
                *state = other;
                None
            }
        }
    }

    /// The waker of a caller still waiting, to nudge it.
    fn waker(&self) -> Option<Waker> {
        match &*self.state.lock() {
            WaiterState::Waiting { waker, .. } => waker.clone(),
            _ => None,
        }
    }

    /// Whether a value was handed over and the caller has not taken it yet.
    fn is_ready(&self) -> bool {
        matches!(&*self.state.lock(), WaiterState::Ready(_))
    }

    /// Whether the caller was nudged and has not looked yet.
    pub(crate) fn is_nudged(&self) -> bool {
        matches!(
            &*self.state.lock(),
            WaiterState::Waiting { nudged: true, .. }
        )
    }

    /// Marks the caller nudged unless it already is; returns whether it
    /// was newly marked, and its waker.
    fn nudge(&self) -> Option<Option<Waker>> {
        match &mut *self.state.lock() {
            WaiterState::Waiting { waker, nudged } if !*nudged => {
                *nudged = true;
                Some(waker.clone())
            }
            _ => None,
        }
    }

    /// Hands a value over; the returned waker must be woken after the pool
    /// lock is released. Also says whether the caller had been nudged and
    /// not looked yet: it will not look now, so the nudge must go on to
    /// another caller.
    fn fill(&self, v: V) -> (Option<Waker>, bool) {
        let mut state = self.state.lock();
        match mem::replace(&mut *state, WaiterState::Ready(v)) {
            WaiterState::Waiting { waker, nudged } => (waker, nudged),
            _ => unreachable!("a pool waiter was filled twice"),
        }
    }
}

/// Waiting callers, most urgent priority first, FIFO within a priority.
pub(crate) struct Waiters<V> {
    queues: Box<[VecDeque<Arc<Waiter<V>>>]>,
    len: usize,
    /// The caller last handed a value with `track`, and when, until it
    /// takes it.
    in_transit: Option<(Arc<Waiter<V>>, crate::clock::Stamp)>,
}

impl<V> Waiters<V> {
    pub(crate) fn new(levels: usize) -> Self {
        Self {
            queues: (0..levels.max(1)).map(|_| VecDeque::new()).collect(),
            len: 0,
            in_transit: None,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The priority a request is served at: out of range means lowest.
    pub(crate) fn clamp(&self, priority: usize) -> usize {
        priority.min(self.queues.len() - 1)
    }

    pub(crate) fn push(&mut self, waiter: Arc<Waiter<V>>) {
        self.queues[waiter.priority].push_back(waiter);
        self.len += 1;
    }

    /// Removes a waiter that gave up. Returns whether it was queued.
    pub(crate) fn remove(&mut self, waiter: &Arc<Waiter<V>>) -> bool {
        let queue = &mut self.queues[waiter.priority];
        // A waiter that gives up is usually near the front (it waited
        // longest), so search from there.
        match queue.iter().position(|s| Arc::ptr_eq(s, waiter)) {
            Some(i) => {
                queue.remove(i);
                self.len -= 1;
                true
            }
            None => false,
        }
    }

    /// When the caller [`hand`](Self::hand) would serve next started to wait.
    pub(crate) fn next_since(&self) -> Option<crate::clock::Stamp> {
        self.queues.iter().find_map(|q| q.front()).map(|s| s.since)
    }

    /// Hands `v` to the longest-waiting caller of the most urgent priority,
    /// with its waker and whether it had been nudged (see `Waiter::fill`).
    /// Gives `v` back when nobody waits. With `track` (the time now), that
    /// caller is [`in_transit`](Self::in_transit) until it takes `v`.
    pub(crate) fn hand(
        &mut self,
        v: V,
        track: Option<crate::clock::Stamp>,
    ) -> Result<(Option<Waker>, bool), V> {
        if self.len == 0 {
            return Err(v);
        }
        for queue in self.queues.iter_mut() {
            if let Some(waiter) = queue.pop_front() {
                self.len -= 1;
                let woken = waiter.fill(v);
                if let Some(now) = track {
                    self.in_transit = Some((waiter, now));
                }
                return Ok(woken);
            }
        }
        unreachable!("waiter count out of step with the queues")
    }

    /// Whether the caller last handed a value with `track` has yet to take
    /// it (it has not run since, or has not given up), less than `patience`
    /// ago: a caller whose future is not polled for a while is not waited
    /// on for longer.
    pub(crate) fn in_transit(&mut self, now: crate::clock::Stamp, patience: Duration) -> bool {
        match &self.in_transit {
            Some((waiter, at)) if waiter.is_ready() && now.since(*at) < patience => true,
            Some(_) => {
                self.in_transit = None;
                false
            }
            None => false,
        }
    }

    /// Fills every waiter for which `pred` holds with `make(waiter)`, pushing
    /// the wakers to `wake`. Returns how many were filled.
    pub(crate) fn fail_where(
        &mut self,
        mut pred: impl FnMut(&Waiter<V>) -> bool,
        mut make: impl FnMut(&Waiter<V>) -> V,
        wake: &mut WakeList,
    ) -> usize {
        let before = self.len;
        for queue in self.queues.iter_mut() {
            queue.retain(|waiter| {
                if pred(waiter) {
                    wake.extend(waiter.fill(make(waiter)).0);
                    false
                } else {
                    true
                }
            });
        }
        self.len = self.queues.iter().map(VecDeque::len).sum();
        before - self.len
    }

    /// Nudges the longest-waiting caller of the most urgent priority that
    /// is not nudged yet: an object went idle, and it should come and look.
    /// Returns its waker (`None` when every caller is nudged already, or
    /// this one has not polled yet and will look when it does).
    pub(crate) fn nudge_next(&mut self) -> Option<Waker> {
        self.queues
            .iter()
            .flatten()
            .find_map(|waiter| waiter.nudge())
            .flatten()
    }

    /// Collects the wakers of every waiting caller, so that each polls again.
    pub(crate) fn nudge_all(&self, wake: &mut WakeList) {
        wake.extend(self.queues.iter().flatten().filter_map(|s| s.waker()));
    }

    /// The earliest deadline of any waiter.
    pub(crate) fn earliest_deadline(&self) -> Option<crate::clock::Stamp> {
        self.queues.iter().flatten().map(|s| s.deadline).min()
    }
}

/// Wakers gathered under a lock, to wake once it is released. The first
/// is kept inline: most unlocks wake one waiter at most, and gathering it
/// then allocates nothing.
#[derive(Default)]
pub(crate) struct WakeList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakeList {
    pub(crate) fn push(&mut self, w: Waker) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.rest.push(w);
        }
    }

    pub(crate) fn wake_all(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        for w in self.rest {
            w.wake();
        }
    }
}

impl Extend<Waker> for WakeList {
    fn extend<I: IntoIterator<Item = Waker>>(&mut self, wakers: I) {
        for w in wakers {
            self.push(w);
        }
    }
}
