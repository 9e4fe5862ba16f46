//! How many connections the multiplexer wants: how deep each may
//! pipeline, the limit (`max`, or the adaptive one), the opens to start,
//! and feeding the adaptive limit (and raising it when requests queue).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Pooled;

use super::super::limit::{InUse, Limiter};
use super::super::multiplexed::Multiplexed;
use super::{Closed, MuxState};

impl<M: Multiplexed> MuxState<M> {
    /// Most connections open now: `max`, or the adaptive limit.
    pub(super) fn limit(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(self.limits.max, Limiter::limit)
    }

    /// How many requests a connection may carry now. Below the limit,
    /// a request behind another on the same connection waits for it (the
    /// server runs one statement per connection at a time), so the demand
    /// is spread over as many connections as the limit allows and only the
    /// rest is pipelined, up to `max_in_flight`. While opens fail, only the
    /// connections already usable count.
    pub(super) fn per_connection(&self, extra: usize) -> usize {
        let demand = self.in_flight + self.queue.len() + extra;
        let usable = self.usable();
        let reach = if self.opens_failing {
            usable
        } else {
            // Draining connections still count against `max`.
            let open = self.limits.max.saturating_sub(self.open() - usable);
            self.limit().min(open)
        };
        let reach = reach.max(1);
        demand.div_ceil(reach).clamp(1, self.limits.max_in_flight)
    }

    /// How many requests a connection may carry now: `per_connection`,
    /// and no more than the horizon allows. A request does not queue
    /// behind more work than the horizon (requests ahead times the time one
    /// keeps a connection busy), nor, while connections are being opened,
    /// behind more than an open takes: long statements then wait for the
    /// first slot that frees or a fresh connection, short ones pipeline
    /// deep. Until one request has been timed, none queues behind another
    /// (unless the horizon is unbounded).
    pub(super) fn depth(&self, extra: usize) -> usize {
        let mut horizon = self.limits.horizon_ns;
        if self.opening > 0 && !self.opens_failing {
            horizon = horizon.min(self.open_ns);
        }
        self.per_connection(extra).min(self.within(horizon))
    }

    /// Most requests a connection may carry within `horizon`: one more
    /// than the requests it may queue behind.
    fn within(&self, horizon: u64) -> usize {
        let behind = match horizon.checked_div(self.service_ns) {
            // `pipeline_horizon: None`.
            _ if horizon == u64::MAX => usize::MAX,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => 0,
        };
        behind.saturating_add(1)
    }

    /// Raises an adaptive limit when a request has queued in the
    /// multiplexer past the pipeline horizon (100 ms without one) and no
    /// open is under way: statements that wait rather than work (like
    /// `pg_sleep`) need connections, not measurements. It rises to the
    /// connections that carry the demand within the horizon, and by one at
    /// least. Returns whether it rose.
    pub(in crate::mux) fn raise_if_queued(&mut self, now: Instant) -> bool {
        let horizon = self.limits.horizon_ns.min(100_000_000);
        let Some(front) = self.queue.front() else {
            return false;
        };
        let waited = now.saturating_duration_since(front.since);
        if self.opening > 0 || waited < Duration::from_nanos(horizon) {
            return false;
        }
        let deepest = self
            .within(self.limits.horizon_ns)
            .min(self.limits.max_in_flight);
        let needed = (self.in_flight + self.queue.len()).div_ceil(deepest);
        let open_time = Duration::from_nanos(self.open_ns);
        let limit = self.limit();
        self.limiter
            .as_mut()
            .is_some_and(|l| l.raise(needed.max(limit + 1), now, open_time))
    }

    /// Reserves the opens that are useful and allowed now: enough
    /// connections for the demand at the current per-connection load, and
    /// `min`; never past the limit, nor `max` (draining connections count,
    /// as they are still open on the server), nor `open_concurrency` at
    /// once.
    pub(in crate::mux) fn reserve_opens(&mut self) -> usize {
        if self.closed {
            return 0;
        }
        let demand = self.in_flight + self.queue.len();
        let needed = if self.limiter.is_some() {
            // Every connection the limit allows gets work while there is
            // demand for it: the count measured is the count allowed.
            demand
        } else {
            demand.div_ceil(self.depth(0))
        };
        let needed = needed.max(self.limits.min).min(self.limit());
        let have = self.usable() + self.opening;
        let room = self.limits.max.saturating_sub(self.open() + self.opening);
        let n = needed
            .saturating_sub(have)
            .min(room)
            .min(self.limits.open_concurrency.saturating_sub(self.opening));
        self.opening += n;
        n
    }

    /// Feeds a request that ended at `now`, `latency` after it was asked
    /// for, to the adaptive limit; at the end of a window, lets it decide.
    /// Returns whether the limit changed; connections above a lower limit
    /// drain, and those with nothing in flight go to `closes`.
    pub(in crate::mux) fn adapt(
        &mut self,
        now: Instant,
        latency: Duration,
        closes: &mut Vec<(Arc<Pooled<M>>, Closed)>,
    ) -> bool {
        let Some(l) = &mut self.limiter else {
            return false;
        };
        l.record(now, latency);
        if !l.due(now) {
            return self.raise_if_queued(now);
        }
        if self.opening > 0 {
            // The window saw connections arrive: it measured no one count.
            l.restart_window(now);
            return false;
        }
        let since = l.window_start();
        let used = self
            .conns
            .iter()
            .filter(|s| s.draining.is_none() && (s.in_flight > 0 || s.idle_since >= since))
            .count();
        let seen = InUse {
            used,
            open_time: Duration::from_nanos(self.open_ns),
        };
        let Some(l) = &mut self.limiter else {
            return false;
        };
        if l.evaluate(now, seen).is_none() {
            return false;
        }
        closes.extend(self.shrink());
        true
    }

    /// Drains usable connections above the limit, newest first; returns
    /// those with nothing in flight, to close now.
    pub(in crate::mux) fn shrink(&mut self) -> Vec<(Arc<Pooled<M>>, Closed)> {
        if self.limiter.is_none() {
            // `max` is never passed: nothing to drain.
            return Vec::new();
        }
        let limit = self.limit();
        let mut usable = self.usable();
        if usable <= limit {
            return Vec::new();
        }
        for s in self.conns.iter_mut().rev() {
            if usable <= limit {
                break;
            }
            if s.draining.is_none() {
                s.draining = Some(Closed::Limited);
                usable -= 1;
            }
        }
        self.take_idle_draining()
    }
}
