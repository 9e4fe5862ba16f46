//! The adaptive limit on a multiplexer's connections, from what it
//! measures rather than from how much is asked.
//!
//! Over windows of requests the limiter measures the throughput and the
//! mean latency (asked to given back) at the count of connections in
//! use, and searches the counts between `min` and `max` for the one with
//! the most throughput per unit of latency: Kleinrock's power, which is
//! the most throughput for a fixed number of callers and the least latency
//! for a fixed rate of requests. The search is a pattern search: it tries
//! the count a step below (and, unless that one does as well, the one a
//! step above), moves to the better (until the step first halves, with a
//! step half the count it moved to: from 16 it tries 8, 4, 2), and halves
//! the step when the count it stands on is best; at step 0 it has settled,
//! and it re-probes one connection either side, after [`FIRST_REPROBE`]
//! and then ever less often, up to every [`REPROBE`]. When the requests in
//! the system double or halve, the load has changed and the search starts
//! again. Fewer connections win a tie (within [`TOLERANCE`]).
//!
//! Each count is judged by the better of its last two windows: whatever
//! else runs on the machine only slows a window down, so the better one is
//! nearer what the count can do. Only windows among the last [`FRESH`]
//! count, so that a window that happened to run fast does not stand for
//! its count for long, and the count the search stands on is measured
//! again before the probes are compared with it; once settled, a count
//! whose next two windows fall short of what it was kept on by
//! [`DECISIVE`] is searched from again at once.
//!
//! Two rules need no search: the limit rises at once when a request has
//! queued in the multiplexer past the pipeline horizon (statements that
//! wait rather than work, like `pg_sleep`, need connections; the state
//! sees that and calls [`Limiter::raise`], and a probe that caused it is
//! remembered as no good), and it falls to the connections a window used
//! when fewer carried the load.

use std::time::Duration;

use tokio::time::Instant;

use super::status::{LimitReason, LimitSample, MuxLimit};

/// The shortest window; a window also lasts at least
/// [`WINDOW_LATENCIES`] mean latencies and [`MIN_REQUESTS`] requests.
const WINDOW: Duration = Duration::from_millis(50);
const WINDOW_LATENCIES: u32 = 16;
const MIN_REQUESTS: u64 = 32;
/// The shortest window once the search looks one connection either side
/// (and while settled): neighbours differ by a few percent, less than
/// short windows vary.
const FINE_WINDOW: Duration = Duration::from_millis(200);
/// How much better, in power, a count with more connections must measure
/// to be chosen over one with fewer.
const TOLERANCE: f64 = 0.03;
/// A probe's first window decides alone, for it, when its power beats
/// the count the search stands on by this factor; a closer one takes a
/// second window.
const DECISIVE: f64 = 1.5;
/// A probe's first window decides alone, against it, when its power is
/// below this share of the count the search stands on.
const REJECT: f64 = 0.9;
/// How long a settled limit holds before it tries its neighbours again:
/// [`FIRST_REPROBE`] after the search settles, twice as long each time a
/// re-probe confirms the count, up to [`REPROBE`]. The early re-probes
/// catch a count chosen on a window something else slowed down.
const FIRST_REPROBE: Duration = Duration::from_secs(2);
pub(super) const REPROBE: Duration = Duration::from_secs(10);
/// How many of the latest windows a count's measurement may come from.
const FRESH: u64 = 6;
/// The factor by which the requests in the system must change for the
/// load to count as changed.
const LOAD_CHANGE: f64 = 2.0;
/// The shortest time after a change before the next window starts, so
/// that connections that drain or open do not blur it.
const SETTLE: Duration = Duration::from_millis(5);

/// What one window measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sample {
    /// Requests ended per second.
    throughput: f64,
    /// Their mean latency, in seconds.
    latency: f64,
}

impl Sample {
    fn power(self) -> f64 {
        self.throughput / self.latency
    }

    /// The mean number of requests in the system (Little's law).
    fn demand(self) -> f64 {
        self.throughput * self.latency
    }
}

/// A count's last two windows, newest first, each with its number.
type LastTwo = [Option<(u64, Sample)>; 2];

/// The window being measured: requests that ended since `from`.
struct Window {
    from: Instant,
    requests: u64,
    latency_ns: u128,
}

impl Window {
    fn after(now: Instant, settle: Duration) -> Self {
        Window {
            from: now + settle,
            requests: 0,
            latency_ns: 0,
        }
    }
}

/// What the state tells the limiter at the end of a window.
#[derive(Debug, Clone, Copy)]
pub(super) struct InUse {
    /// Usable connections that carried a request during the window.
    pub(super) used: usize,
    /// How long an open takes (moving average).
    pub(super) open_time: Duration,
}

pub(super) struct Limiter {
    min: usize,
    max: usize,
    limit: usize,
    reason: LimitReason,
    changed_at: Instant,
    changes: u64,
    /// The count the search stands on; the limit differs while a probe runs.
    base: usize,
    /// How far the search looks either side; 0 once settled.
    step: usize,
    /// The step has not been halved since the search started: a move
    /// sets it to half the count moved to.
    coarse: bool,
    /// When a settled search looks again.
    reprobe_at: Option<Instant>,
    /// How long the next settled count holds.
    hold: Duration,
    /// The count a re-probe under way started from.
    reprobing: Option<usize>,
    /// When the search last settled: the window then, and the power of
    /// the count it settled on.
    kept: Option<(u64, f64)>,
    /// What each count measured since the load last changed: its last
    /// two windows, newest first, each with its number.
    seen: Vec<(usize, LastTwo)>,
    /// Windows judged so far.
    windows: u64,
    /// The requests in the system when the load last changed.
    demand: Option<f64>,
    last: Option<Sample>,
    window: Window,
}

impl Limiter {
    /// Starts at `max`: until something is measured, connections open
    /// with the demand.
    pub(super) fn new(min: usize, max: usize, now: Instant) -> Self {
        Limiter {
            min,
            max,
            limit: max,
            reason: LimitReason::Start,
            changed_at: now,
            changes: 0,
            base: max,
            step: (max / 2).max(1),
            coarse: true,
            reprobe_at: None,
            hold: FIRST_REPROBE,
            reprobing: None,
            kept: None,
            seen: Vec::new(),
            windows: 0,
            demand: None,
            last: None,
            window: Window::after(now, Duration::ZERO),
        }
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// When the window under way started counting.
    pub(super) fn window_start(&self) -> Instant {
        self.window.from
    }

    /// A request ended at `now`, `latency` after it was asked for.
    /// Requests that end while a change settles are not counted.
    pub(super) fn record(&mut self, now: Instant, latency: Duration) {
        if now >= self.window.from {
            self.window.requests += 1;
            self.window.latency_ns += latency.as_nanos();
        }
    }

    /// Whether the window under way is long enough to be judged.
    pub(super) fn due(&self, now: Instant) -> bool {
        let w = &self.window;
        let elapsed = now.saturating_duration_since(w.from);
        // The cheap tests first: this runs as every request ends.
        let shortest = if self.step <= 1 { FINE_WINDOW } else { WINDOW };
        if w.requests < MIN_REQUESTS || elapsed < shortest {
            return false;
        }
        let mean = w.latency_ns / u128::from(w.requests);
        elapsed >= Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX)) * WINDOW_LATENCIES
    }

    /// Ends the window under way and decides. Returns the new limit when
    /// it changed.
    pub(super) fn evaluate(&mut self, now: Instant, seen: InUse) -> Option<usize> {
        let w = &self.window;
        let secs = now.saturating_duration_since(w.from).as_secs_f64();
        if w.requests == 0 || secs <= 0.0 {
            return None;
        }
        let sample = Sample {
            throughput: w.requests as f64 / secs,
            latency: (w.latency_ns as f64 / w.requests as f64 / 1e9).max(1e-9),
        };
        self.last = Some(sample);
        self.windows += 1;
        self.window = Window::after(now, Duration::ZERO);
        let decided = self.decide(now, sample, seen);
        tracing::trace!(
            target: "aquifer::mux",
            limit = self.limit, used = seen.used, demand = sample.demand(),
            throughput = sample.throughput, latency_s = sample.latency,
            decided = ?decided, "connection limit window"
        );
        let (to, why) = decided?;
        let before = self.limit;
        self.set(to, why, now, seen.open_time);
        if to == before {
            return None;
        }
        tracing::debug!(
            target: "aquifer::mux",
            from = before, to, reason = why.as_str(),
            throughput = sample.throughput, latency_s = sample.latency,
            "connection limit changed"
        );
        Some(to)
    }

    /// Drops the window under way, as something other than the limit
    /// changed the connections (an open is under way).
    pub(super) fn restart_window(&mut self, now: Instant) {
        self.window = Window::after(now, Duration::ZERO);
    }

    /// Raises the limit to `to` at once (requests would queue past the
    /// horizon). Returns whether it rose.
    pub(super) fn raise(&mut self, to: usize, now: Instant, open_time: Duration) -> bool {
        let to = to.min(self.max);
        if to <= self.limit {
            return false;
        }
        if self.limit < self.base {
            // A probe below let requests queue: that count is no good.
            let probe = self.limit;
            let queued = Some((
                u64::MAX,
                Sample {
                    throughput: 0.0,
                    latency: 1.0,
                },
            ));
            match self.seen.iter_mut().find(|(k, _)| *k == probe) {
                Some((_, last)) => *last = [queued, queued],
                None => self.seen.push((probe, [queued, queued])),
            }
        }
        self.base = self.base.max(to);
        self.step = self.step.max(1);
        self.coarse = false;
        self.reprobe_at = None;
        self.reprobing = None;
        self.set(to, LimitReason::Queued, now, open_time);
        true
    }

    fn set(&mut self, to: usize, why: LimitReason, now: Instant, open_time: Duration) {
        self.reason = why;
        self.changed_at = now;
        if to != self.limit {
            self.limit = to;
            self.changes += 1;
            let latency = self.last.map_or(Duration::ZERO, |s| {
                Duration::from_secs_f64(s.latency.min(1e3)) * 2
            });
            self.window = Window::after(now, SETTLE.max(open_time + latency));
        }
    }

    fn decide(&mut self, now: Instant, s: Sample, seen: InUse) -> Option<(usize, LimitReason)> {
        let demand = s.demand();
        match self.demand {
            None => self.demand = Some(demand),
            Some(d) if demand <= d * LOAD_CHANGE && demand >= d / LOAD_CHANGE => {}
            Some(_) => {
                // The load changed during this window, which measured
                // some of each: the search starts again from the next.
                self.demand = None;
                self.seen.clear();
                self.kept = None;
                self.base = self.limit;
                self.step = (self.limit / 2).max(1);
                self.coarse = true;
                self.reprobe_at = None;
                self.reprobing = None;
                return None;
            }
        }
        let at = self.limit;
        if seen.used < at {
            // Fewer connections carried the load: that is what was measured,
            // and a probe above them is no better.
            let to = seen.used.max(self.min);
            self.remember(to, s);
            if at > self.base {
                self.remember(at, s);
                self.remember(at, s);
            }
            if to < at {
                self.base = to;
                self.step = self.step.max(1);
                self.reprobe_at = None;
                self.reprobing = None;
                return Some((to, LimitReason::Unused));
            }
        } else {
            self.remember(at, s);
        }
        if self.step == 0 {
            if self.reprobe_at.is_some_and(|t| now >= t) {
                let base = self.base;
                self.seen.retain(|&(n, _)| n == base);
                self.step = 1;
                self.coarse = false;
                self.reprobe_at = None;
                self.reprobing = Some(base);
            } else if self.kept_on_a_fluke(at) {
                // Back on the count it settled on, its first two windows
                // are compared with what it was kept on: a count kept on
                // a window that ran fast by chance is searched from again
                // at once, not at the next re-probe.
                self.step = 1;
                self.reprobe_at = None;
                self.reprobing = None;
            } else {
                return None;
            }
        }
        self.search(now, demand)
    }

    /// Probes the next count not measured yet (for up to two windows),
    /// moves to a better one, or narrows the search.
    fn search(&mut self, now: Instant, demand: f64) -> Option<(usize, LimitReason)> {
        let at = self.limit;
        // Each turn probes, moves to a better count, or halves the step.
        'turn: for _ in 0..64 {
            let base = self.base;
            let down = base.saturating_sub(self.step).max(self.min);
            // A connection gets work only if there are requests for it.
            let up = (base + self.step)
                .min(self.max)
                .min(demand.round() as usize);
            // The count below first: when it does as well, the one above
            // is not tried.
            for n in [(down < base).then_some(down), (up > base).then_some(up)]
                .into_iter()
                .flatten()
            {
                if !self.decided(n, base) {
                    return Some((n, LimitReason::Probe));
                }
                if at != base && self.measured(base).is_none() {
                    // Its windows are too old to compare with the probe's.
                    return Some((base, LimitReason::Probe));
                }
                if self.better(n, base) {
                    self.base = n;
                    // Until it narrows, the search looks as far again as
                    // half the count it moved to.
                    if self.coarse {
                        self.step = (n / 2).max(1);
                    }
                    continue 'turn;
                }
            }
            self.step /= 2;
            self.coarse = false;
            if self.step == 0 {
                self.hold = match self.reprobing.take() {
                    Some(from) if from == base => (self.hold * 2).min(REPROBE),
                    _ => FIRST_REPROBE,
                };
                self.reprobe_at = Some(now + self.hold);
                self.kept = self.measured(base).map(|s| (self.windows, s.power()));
                return Some((base, LimitReason::Measured));
            }
        }
        (at != self.base).then_some((self.base, LimitReason::Measured))
    }

    /// Whether the count the search settled on, `at`, measures in its
    /// first two windows since by [`DECISIVE`] less than what it was kept
    /// on. Asked once per settling.
    fn kept_on_a_fluke(&mut self, at: usize) -> bool {
        let Some((from, kept)) = self.kept else {
            return false;
        };
        let Some(since) = self.samples(at, from) else {
            return false;
        };
        let two = self
            .seen
            .iter()
            .find(|&&(k, _)| k == at)
            .is_some_and(|(_, last)| {
                last.iter().flatten().filter(|&&(i, _)| i > from).count() == 2
            });
        if !two {
            return false;
        }
        self.kept = None;
        since.power() * DECISIVE < kept
    }

    /// Whether count `n` beats `base`: fewer connections within
    /// [`TOLERANCE`] of its power, more by more than that.
    fn better(&self, n: usize, base: usize) -> bool {
        let (Some(probe), Some(here)) = (self.measured(n), self.measured(base)) else {
            return false;
        };
        if n < base {
            probe.power() >= here.power() * (1.0 - TOLERANCE)
        } else {
            probe.power() * (1.0 - TOLERANCE) > here.power()
        }
    }

    /// What count `n` measured: the better of its last two windows among
    /// the [`FRESH`] latest, as whatever else runs on the machine only
    /// ever slows a window down (or its one fresh window).
    fn measured(&self, n: usize) -> Option<Sample> {
        self.samples(n, self.windows.saturating_sub(FRESH))
    }

    /// The better of `n`'s last two windows numbered `from` or later.
    fn samples(&self, n: usize, from: u64) -> Option<Sample> {
        let &(_, last) = self.seen.iter().find(|&&(k, _)| k == n)?;
        last.into_iter()
            .flatten()
            .filter(|&(i, _)| i > from)
            .map(|(_, s)| s)
            .max_by(|a, b| a.power().total_cmp(&b.power()))
    }

    /// Whether count `n` is measured enough to compare with `base`: two
    /// fresh windows, or one that beats `base` by [`DECISIVE`] or loses
    /// to it by more than [`REJECT`] (keeping the count it has is the
    /// safe mistake, so it needs less proof).
    fn decided(&self, n: usize, base: usize) -> bool {
        let Some(&(_, last)) = self.seen.iter().find(|&&(k, _)| k == n) else {
            return false;
        };
        let from = self.windows.saturating_sub(FRESH);
        if last.iter().flatten().filter(|&&(i, _)| i > from).count() == 2 {
            return true;
        }
        let (Some(probe), Some(here)) = (self.measured(n), self.measured(base)) else {
            return false;
        };
        let ratio = probe.power() / here.power();
        !(REJECT..=DECISIVE).contains(&ratio)
    }

    fn remember(&mut self, n: usize, s: Sample) {
        let s = Some((self.windows, s));
        match self.seen.iter_mut().find(|(k, _)| *k == n) {
            Some((_, last)) => *last = [s, last[0]],
            None => self.seen.push((n, [s, None])),
        }
    }

    pub(super) fn status(&self, now: Instant) -> MuxLimit {
        let mut measured: Vec<LimitSample> = self
            .seen
            .iter()
            .filter_map(|&(connections, _)| {
                // Everything it measured, fresh or not.
                let s = self.samples(connections, 0)?;
                Some(LimitSample {
                    connections,
                    throughput: s.throughput.round() as u64,
                    latency: Duration::from_secs_f64(s.latency.min(1e6)),
                })
            })
            .collect();
        measured.sort_by_key(|s| s.connections);
        MuxLimit {
            limit: self.limit,
            reason: self.reason,
            changed: now.saturating_duration_since(self.changed_at),
            changes: self.changes,
            settled: self.step == 0,
            measured,
        }
    }
}

#[cfg(test)]
mod tests;
