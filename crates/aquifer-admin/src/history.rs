//! `GET /api/history`: the charts' numbers over the last five minutes,
//! sampled every tick by a task of the router's own, so that a dashboard
//! opened now draws what happened before it opened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use axum::extract::State as With;
use axum::Json;
use parking_lot::Mutex;
use serde::Serialize;

use crate::State;

/// Samples kept: five minutes at one a second.
const KEEP: usize = 300;

/// Every pool's numbers added up, at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sample {
    /// When, as an RFC 3339 time.
    #[serde(serialize_with = "aquifer::report::time")]
    at: SystemTime,
    /// Connections borrowed.
    active: usize,
    /// Callers waiting.
    waiting: usize,
    /// Waits so far, and their total in seconds: the mean wait between two
    /// samples is the difference of totals over the difference of counts.
    wait_count: u64,
    wait_total: f64,
}

/// The ring of samples and whether its task runs.
#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
    running: AtomicBool,
}

impl History {
    /// Starts sampling, once, if there is a runtime to sample on (the
    /// router may be built outside one; then the first request starts it).
    pub(crate) fn start(state: &Arc<State>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if state.history.running.swap(true, Ordering::AcqRel) {
            return;
        }
        rt.spawn(sample(Arc::downgrade(state)));
    }
}

/// Samples every tick until the router is gone.
async fn sample(state: Weak<State>) {
    let every = match state.upgrade() {
        Some(s) => s.tick,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let pools = state.reports();
        let s = Sample {
            at: SystemTime::now(),
            active: pools.iter().map(|p| p.status.borrowed).sum(),
            waiting: pools.iter().map(|p| p.status.waiting).sum(),
            wait_count: pools.iter().map(|p| p.metrics.wait_time.count).sum(),
            wait_total: pools
                .iter()
                .map(|p| p.metrics.wait_time.total.as_secs_f64())
                .sum(),
        };
        let mut samples = state.history.samples.lock();
        if samples.len() >= KEEP {
            samples.pop_front();
        }
        samples.push_back(s);
    }
}

pub(crate) async fn history(With(state): With<Arc<State>>) -> Json<Vec<Sample>> {
    History::start(&state);
    let samples = state.history.samples.lock().iter().copied().collect();
    Json(samples)
}
