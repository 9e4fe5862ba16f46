//! What the multiplexer's lock protects: its connections with the
//! requests each carries, the queue, and the counters. Private fields and
//! synchronous methods only; the handle in `mod.rs` reaches them through
//! its door (`MuxShared::locked`) and acts on what they return once the lock
//! is gone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::CreateError;
use crate::metrics::Histogram;
use crate::pool::Pooled;

use super::config::{Limits, Spread};
use super::error::MuxError;
use super::limit::Limiter;
use super::multiplexed::Multiplexed;
use super::status::{Closes, MuxMetrics, MuxStatus};

mod sizing;

/// One open connection and what it carries.
pub(super) struct OpenConn<M: Multiplexed> {
    pub(super) conn: Arc<Pooled<M>>,
    pub(super) in_flight: usize,
    /// When `in_flight` last fell to 0 (or the connection opened).
    idle_since: Instant,
    /// Takes no new requests; closes when its last one ends.
    draining: Option<Closed>,
    /// A session check is under way: the connection stays open until it
    /// ends, but carries no request for it.
    checking: bool,
}

/// Why a connection closes, as counted in [`Closes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// Went unused for `scale_down_after` above `min`.
    ScaledDown,
    /// `Manager::is_broken` said so.
    Broken,
    /// Outlived the pool's `max_lifetime`.
    Lifetime,
    /// The multiplexer was closed.
    Shutdown,
    /// `Multiplexed::session_changed` said so.
    Session,
    /// The adaptive limit came down.
    Limited,
}

/// A request waiting for a slot.
pub(super) struct QueuedRequest<M: Multiplexed> {
    id: u64,
    since: Instant,
    tx: oneshot::Sender<Handed<M>>,
}

/// A slot given to a request: its connection, and how many requests
/// the connection carried with it (itself included) when it was given.
pub(super) struct Taken<M: Multiplexed> {
    pub(super) conn: Arc<Pooled<M>>,
    pub(super) depth: usize,
}

/// What a request got when it asked.
pub(super) enum Asked<M: Multiplexed> {
    /// A slot at once.
    Taken(Taken<M>),
    /// A place in the queue, under this id.
    Queued(u64, oneshot::Receiver<Handed<M>>),
}

/// What a queued request is sent: a slot and when it was handed over,
/// or why it gets none.
pub(super) type Handed<M> =
    Result<(Taken<M>, Instant), MuxError<<M as crate::manager::Manager>::Error>>;

/// Slots for waiters (and errors for others), sent once the lock is gone.
pub(super) type Handoffs<M> = Vec<(
    oneshot::Sender<Handed<M>>,
    Result<Taken<M>, MuxError<<M as crate::manager::Manager>::Error>>,
)>;

pub(super) struct MuxState<M: Multiplexed> {
    limits: Limits,
    /// Oldest first: ties in load go to the oldest connection, so that
    /// the newest ones fall idle when load drops and can be closed.
    conns: Vec<OpenConn<M>>,
    /// Opens in flight.
    opening: usize,
    queue: VecDeque<QueuedRequest<M>>,
    next_waiter: u64,
    in_flight: usize,
    /// Round-robin position, for [`Spread::RoundRobin`].
    cursor: usize,
    closed: bool,
    /// Frozen by an operator: new requests are refused, queued ones wait on.
    frozen: bool,
    /// The last open failed: do not count on connections still to come.
    opens_failing: bool,
    last_error: Option<CreateError<M::Error>>,
    /// The last open failed with an error waiting cannot fix.
    failed_for_good: bool,
    /// How long one request keeps a connection busy (its run time over
    /// the requests it was queued with), and how long an open takes:
    /// moving averages, 0 until measured.
    service_ns: u64,
    open_ns: u64,
    /// The adaptive limit, when `adaptive` is on and `min < max`.
    limiter: Option<Limiter>,
    m: MuxCounters,
}

/// A moving average that weighs the newest sample by 1/8.
fn average(old: u64, sample: Duration) -> u64 {
    let sample = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
    if old == 0 {
        sample
    } else {
        old - old / 8 + sample / 8
    }
}

#[derive(Default)]
struct MuxCounters {
    requests: u64,
    immediate: u64,
    waited: u64,
    timeouts: u64,
    queue_full: u64,
    cancelled: u64,
    opened: u64,
    open_failures: u64,
    closes: Closes,
    wait: Histogram,
    run: Histogram,
}

impl<M: Multiplexed> MuxState<M> {
    pub(super) fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limiter: limits
                .adaptive
                .then(|| Limiter::new(limits.min, limits.max, now)),
            limits,
            conns: Vec::new(),
            opening: 0,
            queue: VecDeque::new(),
            next_waiter: 0,
            in_flight: 0,
            cursor: 0,
            closed: false,
            opens_failing: false,
            failed_for_good: false,
            frozen: false,
            last_error: None,
            service_ns: 0,
            open_ns: 0,
            m: MuxCounters::default(),
        }
    }

    /// Connections that take new requests.
    pub(super) fn usable(&self) -> usize {
        self.conns.iter().filter(|s| s.draining.is_none()).count()
    }

    /// Connections open on the server, draining ones included.
    pub(super) fn open(&self) -> usize {
        self.conns.len()
    }

    /// The connection a request goes to, if one has room: the fewest
    /// requests in flight, ties to the oldest (or the next in turn, for
    /// round robin). `broken` retires connections found broken on the way.
    fn pick(&mut self, extra: usize, broken: &impl Fn(&M::Type) -> bool) -> Option<usize> {
        loop {
            let cap = self.depth(extra);
            let open = |s: &OpenConn<M>| s.draining.is_none() && s.in_flight < cap;
            let i = match self.limits.spread {
                Spread::LeastLoaded => self
                    .conns
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| open(s))
                    .min_by_key(|(_, s)| s.in_flight)
                    .map(|(i, _)| i)?,
                Spread::RoundRobin => {
                    let n = self.conns.len();
                    let i = (0..n)
                        .map(|k| (self.cursor + k) % n)
                        .find(|&i| open(&self.conns[i]))?;
                    self.cursor = (i + 1) % n;
                    i
                }
            };
            if !broken(&self.conns[i].conn) {
                return Some(i);
            }
            self.conns[i].draining = Some(Closed::Broken);
        }
    }

    fn take(&mut self, i: usize) -> Taken<M> {
        let open = &mut self.conns[i];
        open.in_flight += 1;
        self.in_flight += 1;
        Taken {
            conn: Arc::clone(&open.conn),
            depth: open.in_flight,
        }
    }

    /// A new request: a slot at once, a place in the queue, or an error.
    pub(super) fn ask(
        &mut self,
        now: Instant,
        broken: &impl Fn(&M::Type) -> bool,
    ) -> Result<Asked<M>, MuxError<M::Error>> {
        if self.closed {
            return Err(MuxError::Closed);
        }
        if self.frozen {
            return Err(MuxError::Frozen);
        }
        self.m.requests += 1;
        if self.queue.is_empty() {
            if let Some(i) = self.pick(1, broken) {
                self.m.immediate += 1;
                return Ok(Asked::Taken(self.take(i)));
            }
        }
        if let Some(bound) = self.limits.max_queued {
            if self.queue.len() >= bound {
                self.m.queue_full += 1;
                return Err(MuxError::QueueFull { max_queued: bound });
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.queue.push_back(QueuedRequest { id, since: now, tx });
        self.m.waited += 1;
        Ok(Asked::Queued(id, rx))
    }

    /// A queued request gave up: it timed out (`timed_out`) or its future
    /// was dropped. Nothing to do if a slot was already sent to it.
    pub(super) fn leave(&mut self, id: u64, timed_out: bool) {
        if let Some(at) = self.queue.iter().position(|w| w.id == id) {
            self.queue.remove(at);
            if timed_out {
                self.m.timeouts += 1;
            } else {
                self.m.cancelled += 1;
            }
        }
    }

    /// A request given its slot at `depth` ended on `conn` after running
    /// for `ran`. Returns the connection if it is to close now.
    pub(super) fn release(
        &mut self,
        conn: &Arc<Pooled<M>>,
        (ran, depth): (Duration, usize),
        broken: bool,
        now: Instant,
    ) -> Option<(Arc<Pooled<M>>, Closed)> {
        self.in_flight -= 1;
        self.m.run.record(ran);
        self.service_ns = average(self.service_ns, ran / depth.max(1) as u32);
        let i = self.conns.iter().position(|s| Arc::ptr_eq(&s.conn, conn))?;
        let open = &mut self.conns[i];
        open.in_flight -= 1;
        if broken && open.draining.is_none() {
            open.draining = Some(Closed::Broken);
        }
        if open.in_flight > 0 {
            return None;
        }
        open.idle_since = now;
        self.close_if_done(i)
    }

    /// Removes connection `i` if it drains and nothing runs on it any more.
    fn close_if_done(&mut self, i: usize) -> Option<(Arc<Pooled<M>>, Closed)> {
        let open = &self.conns[i];
        if open.in_flight > 0 || open.checking {
            return None;
        }
        let why = open.draining?;
        let open = self.conns.remove(i);
        self.count_close(why);
        Some((open.conn, why))
    }

    /// The connections to check now: each one that takes requests and is
    /// not being checked already. They stay open until [`checked`].
    ///
    /// [`checked`]: MuxState::checked
    pub(super) fn start_checks(&mut self) -> Vec<Arc<Pooled<M>>> {
        self.conns
            .iter_mut()
            .filter(|s| s.draining.is_none() && !s.checking)
            .map(|s| {
                s.checking = true;
                Arc::clone(&s.conn)
            })
            .collect()
    }

    /// A session check on `conn` ended; a changed session retires the
    /// connection. Returns it if it is to close now. Its idle time
    /// is left alone: a check is not use.
    pub(super) fn checked(
        &mut self,
        conn: &Arc<Pooled<M>>,
        changed: bool,
    ) -> Option<(Arc<Pooled<M>>, Closed)> {
        let i = self.conns.iter().position(|s| Arc::ptr_eq(&s.conn, conn))?;
        let open = &mut self.conns[i];
        open.checking = false;
        if changed && open.draining.is_none() {
            open.draining = Some(Closed::Session);
        }
        self.close_if_done(i)
    }

    /// Hands free conns to queued requests, oldest first.
    pub(super) fn dispatch(
        &mut self,
        now: Instant,
        broken: &impl Fn(&M::Type) -> bool,
        out: &mut Handoffs<M>,
    ) {
        while let Some(w) = self.queue.front() {
            if w.tx.is_closed() {
                self.queue.pop_front();
                self.m.cancelled += 1;
                continue;
            }
            // The waiter at the front is counted in the queue already.
            let Some(i) = self.pick(0, broken) else { break };
            let w = self.queue.pop_front().expect("the front was just seen");
            self.m.wait.record(now.saturating_duration_since(w.since));
            out.push((w.tx, Ok(self.take(i))));
        }
    }

    /// An open finished with a connection after `took`. A closed
    /// multiplexer gives it back, to be closed.
    pub(super) fn opened(
        &mut self,
        conn: Pooled<M>,
        took: Duration,
        now: Instant,
    ) -> Option<Arc<Pooled<M>>> {
        self.opening -= 1;
        if self.closed {
            return Some(Arc::new(conn));
        }
        self.open_ns = average(self.open_ns, took);
        self.opens_failing = false;
        self.failed_for_good = false;
        self.last_error = None;
        self.m.opened += 1;
        self.conns.push(OpenConn {
            conn: Arc::new(conn),
            in_flight: 0,
            idle_since: now,
            draining: None,
            checking: false,
        });
        None
    }

    /// An open failed. A permanent error fails every queued request now.
    pub(super) fn open_failed(
        &mut self,
        err: Option<CreateError<M::Error>>,
        permanent: bool,
        out: &mut Handoffs<M>,
    ) {
        self.opening -= 1;
        self.opens_failing = true;
        self.m.open_failures += 1;
        if err.is_some() {
            self.last_error = err;
        }
        self.failed_for_good = permanent;
        if permanent {
            if let Some(e) = &self.last_error {
                for w in self.queue.drain(..) {
                    out.push((w.tx, Err(MuxError::Connect(e.clone()))));
                }
            }
        }
    }

    /// Freezes (`true`) or unfreezes the multiplexer.
    pub(super) fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    /// Whether [`shut`](Self::shut) ran.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The newest failure to open a connection since the last success.
    pub(super) fn last_error(&self) -> Option<CreateError<M::Error>> {
        self.last_error.clone()
    }

    /// Whether new requests are refused by an operator.
    pub(super) fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// How many opens have failed.
    pub(super) fn open_failures(&self) -> u64 {
        self.m.open_failures
    }

    /// The error of the last open, when it failed for good.
    pub(super) fn permanent_error(&self) -> Option<CreateError<M::Error>> {
        self.last_error.clone().filter(|_| self.failed_for_good)
    }

    /// Picks connections that went unused for `after` while more than
    /// `min` are usable, newest first, and connections found broken.
    pub(super) fn surplus(
        &mut self,
        now: Instant,
        after: Duration,
        broken: &impl Fn(&M::Type) -> bool,
    ) -> Vec<(Arc<Pooled<M>>, Closed)> {
        for s in &mut self.conns {
            if s.draining.is_none() && broken(&s.conn) {
                s.draining = Some(Closed::Broken);
            }
        }
        // Past its lifetime, one connection at a time retires: connections
        // opened together would otherwise all go at once, and with them
        // every open. A replacement opens if `min` or the load needs it.
        let retiring = self
            .conns
            .iter()
            .any(|s| s.draining == Some(Closed::Lifetime));
        if !retiring {
            if let Some(s) = self
                .conns
                .iter_mut()
                .find(|s| s.draining.is_none() && s.conn.expired())
            {
                s.draining = Some(Closed::Lifetime);
            }
        }
        let mut usable = self.usable();
        for s in self.conns.iter_mut().rev() {
            if usable <= self.limits.min {
                break;
            }
            if s.draining.is_none()
                && s.in_flight == 0
                && now.saturating_duration_since(s.idle_since) >= after
            {
                s.draining = Some(Closed::ScaledDown);
                usable -= 1;
            }
        }
        self.take_idle_draining()
    }

    /// Closing: no new requests, queued ones fail, every connection drains.
    pub(super) fn shut(&mut self, out: &mut Handoffs<M>) -> Vec<(Arc<Pooled<M>>, Closed)> {
        self.closed = true;
        for w in self.queue.drain(..) {
            out.push((w.tx, Err(MuxError::Closed)));
        }
        for s in &mut self.conns {
            s.draining.get_or_insert(Closed::Shutdown);
        }
        self.take_idle_draining()
    }

    fn take_idle_draining(&mut self) -> Vec<(Arc<Pooled<M>>, Closed)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.conns.len() {
            match self.conns[i].draining {
                Some(why) if self.conns[i].in_flight == 0 && !self.conns[i].checking => {
                    self.count_close(why);
                    out.push((self.conns.remove(i).conn, why));
                }
                _ => i += 1,
            }
        }
        out
    }

    /// Counts a connection closed.
    fn count_close(&mut self, why: Closed) {
        match why {
            Closed::ScaledDown => self.m.closes.scaled_down += 1,
            Closed::Broken => self.m.closes.broken += 1,
            Closed::Lifetime => self.m.closes.lifetime += 1,
            Closed::Shutdown => self.m.closes.shutdown += 1,
            Closed::Session => self.m.closes.session_changed += 1,
            Closed::Limited => self.m.closes.limited += 1,
        }
    }

    pub(super) fn status(&self, now: Instant) -> MuxStatus {
        MuxStatus {
            connections: self.usable(),
            draining: self.open() - self.usable(),
            opening: self.opening,
            in_flight: self.in_flight,
            per_connection: self.conns.iter().map(|s| s.in_flight).collect(),
            queued: self.queue.len(),
            min: self.limits.min,
            max: self.limits.max,
            max_in_flight: self.limits.max_in_flight,
            service_time: (self.service_ns > 0).then(|| Duration::from_nanos(self.service_ns)),
            open_time: (self.open_ns > 0).then(|| Duration::from_nanos(self.open_ns)),
            limit: self.limiter.as_ref().map(|l| l.status(now)),
        }
    }

    pub(super) fn metrics(&self) -> MuxMetrics {
        let m = &self.m;
        MuxMetrics {
            requests: m.requests,
            waited: m.waited,
            timeouts: m.timeouts,
            queue_full: m.queue_full,
            cancelled: m.cancelled,
            opened: m.opened,
            open_failures: m.open_failures,
            closes: m.closes,
            wait_time: m.wait.summary_with_zeros(m.immediate),
            run_time: m.run.summary(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Counts {
    pub(super) usable: usize,
    pub(super) open: usize,
    pub(super) closed: bool,
    /// Opens that failed, so that a waiter on `ready` hears of each.
    pub(super) open_failures: u64,
}

impl<M: Multiplexed> MuxState<M> {
    /// What `ready` and `close` wait on, now.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            usable: self.usable(),
            open: self.open(),
            closed: self.is_closed(),
            open_failures: self.open_failures(),
        }
    }
}
