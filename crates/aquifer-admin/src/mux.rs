//! A multiplexer as a [`Source`]: one row, its connections and the
//! requests each carries; it can be frozen, checked and closed.

use std::time::Duration;

use aquifer::{
    ClusterInfo, EventStream, Metrics, Multiplexed, Multiplexer, PendingInfo, Selector, Status,
    Warning,
};

use crate::source::{
    select_one, state, BoxFuture, Control, ControlError, PoolReport, PoolState, Readiness, Source,
};

/// A multiplexer under a name, as a [`Source`]. Its row counts
/// connections as a pool counts objects (a connection with requests on it
/// is active, one without is idle, queued requests are waiting); the
/// `multiplexer` field has the requests on each.
pub struct NamedMux<M: Multiplexed> {
    name: String,
    mux: Multiplexer<M>,
}

impl<M: Multiplexed> NamedMux<M> {
    /// `mux`, shown as `name`.
    pub fn new(name: impl Into<String>, mux: Multiplexer<M>) -> Self {
        Self {
            name: name.into(),
            mux,
        }
    }

    fn selected(&self, sel: &Selector) -> Result<(), ControlError> {
        select_one(&self.name, sel)
    }

    fn state(&self) -> PoolState {
        state(self.mux.is_frozen(), false, self.mux.is_closed())
    }
}

impl<M: Multiplexed> Source for NamedMux<M> {
    fn cluster_info(&self) -> Option<ClusterInfo> {
        None
    }

    fn pools(&self, source: &str) -> Vec<PoolReport> {
        let s = self.mux.status();
        let m = self.mux.metrics();
        let busy = s.per_connection.iter().filter(|&&n| n > 0).count();
        let mut status = Status::default();
        status.size = s.per_connection.len() + s.opening;
        status.borrowed = busy;
        status.idle = s.per_connection.len() - busy;
        status.creating = s.opening;
        status.waiting = s.queued;
        status.max = s.max;
        status.min = s.min;
        let mut metrics = Metrics::default();
        metrics.gets = m.requests;
        metrics.gets_waited = m.waited;
        metrics.timeouts = m.timeouts;
        metrics.cancelled = m.cancelled;
        metrics.queue_full = m.queue_full;
        metrics.creates = m.opened;
        metrics.create_failures = m.open_failures;
        let c = m.closes;
        metrics.destroys =
            c.scaled_down + c.broken + c.lifetime + c.shutdown + c.session_changed + c.limited;
        metrics.wait_time = m.wait_time;
        metrics.usage_time = m.run_time;
        let frozen = self.mux.is_frozen();
        let mut report = PoolReport {
            cluster: source.to_owned(),
            name: self.name.clone(),
            state: self.state(),
            driver: self.mux.manager().driver_name(),
            server: self.mux.manager().server(),
            tags: vec!["multiplexer".to_owned()],
            weight: 1,
            frozen,
            bans: 0,
            banned_for: None,
            banned_until: None,
            status,
            metrics,
            pending: Vec::new(),
            role: None,
            multiplexer: None,
        };
        report.multiplexer = Some(s);
        vec![report]
    }

    fn control(&self, sel: &Selector, control: Control) -> Result<Vec<String>, ControlError> {
        self.selected(sel)?;
        match control {
            Control::Freeze => self.mux.freeze(),
            Control::Unfreeze => self.mux.unfreeze(),
            _ => {
                return Err(ControlError::Unsupported(format!(
                    "{} is a multiplexer: it can be frozen, unfrozen and closed (DELETE), not banned or resized",
                    self.name
                )))
            }
        }
        Ok(vec![self.name.clone()])
    }

    fn clear<'a>(
        &'a self,
        sel: &'a Selector,
    ) -> BoxFuture<'a, Result<(Vec<String>, usize), ControlError>> {
        Box::pin(async move {
            self.selected(sel)?;
            Err(ControlError::Unsupported(format!(
                "{} is a multiplexer: its connections are shared by running requests, so they are not cleared; close it (DELETE) instead",
                self.name
            )))
        })
    }

    fn remove<'a>(
        &'a self,
        sel: &'a Selector,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, ControlError>> {
        Box::pin(async move {
            self.selected(sel)?;
            // Requests running past `wait` end with their connection.
            let _ = tokio::time::timeout(wait, self.mux.close()).await;
            Ok(vec![self.name.clone()])
        })
    }

    fn pending(&self) -> Vec<(String, PendingInfo)> {
        Vec::new()
    }

    fn close_pending(&self, _force: bool) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }

    fn warnings(&self) -> Vec<Warning> {
        Vec::new()
    }

    fn events(&self) -> Vec<(String, EventStream)> {
        vec![(self.name.clone(), self.mux.events())]
    }

    fn check(&self, source: &str, timeout: Duration) -> BoxFuture<'_, Vec<Readiness>> {
        let source = source.to_owned();
        Box::pin(async move {
            let state = self.state();
            let health = match state {
                PoolState::Active => Some(self.mux.check(timeout).await),
                _ => None,
            };
            vec![Readiness::new(source, self.name.clone(), state, health)]
        })
    }
}
