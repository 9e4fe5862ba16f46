//! `GET /api/events`: server-sent events. Every tick a `snapshot` of every
//! pool (what the dashboard draws) and of each replica set's reads, each pool's lifecycle events as
//! `pool`, new cluster warnings as `warning`, and changes made through the
//! API as `action`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aquifer::EventStream;
use axum::extract::State as With;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::State;

pub(crate) async fn stream(
    With(state): With<Arc<State>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(feed(state, tx));
    Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default())
}

fn event(kind: &str, data: &impl serde::Serialize) -> Option<Event> {
    Event::default().event(kind).json_data(data).ok()
}

/// Feeds one listener until it goes away.
async fn feed(state: Arc<State>, tx: mpsc::Sender<Event>) {
    let mut actions = state.actions.subscribe();
    let mut watched: HashSet<(String, String)> = HashSet::new();
    let mut last_warning: HashMap<String, SystemTime> = state
        .sources
        .iter()
        .map(|(n, s)| {
            let last = s.warnings().last().map_or(SystemTime::UNIX_EPOCH, |w| w.at);
            (n.clone(), last)
        })
        .collect();
    // An EventSource reconnects after this long when the server goes away.
    let hello = Event::default()
        .retry(Duration::from_secs(2))
        .event("hello")
        .data("{}");
    if tx.send(hello).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(state.tick);
    loop {
        let next = tokio::select! {
            _ = tick.tick() => None,
            action = actions.recv() => match action {
                Ok(v) => event("action", &v),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tx.closed() => return,
        };
        if let Some(ev) = next {
            if tx.send(ev).await.is_err() {
                return;
            }
            continue;
        }
        let pools = state.reports();
        // Each replica set's reads: by replicas, fallbacks, token waits.
        let reads: Vec<_> = state
            .sources
            .iter()
            .filter_map(|(n, s)| Some(json!({ "cluster": n, "reads": s.cluster_info()?.reads? })))
            .collect();
        let snapshot = json!({
            "at": aquifer::report::rfc3339(SystemTime::now()),
            "pools": pools,
            "reads": reads,
        });
        let mut out: Vec<Event> = event("snapshot", &snapshot).into_iter().collect();

        // Follow pools added since the last tick; forget removed ones, so
        // that a pool added again under the same name is followed again.
        let now: HashSet<(String, String)> = pools
            .iter()
            .map(|p| (p.cluster.clone(), p.name.clone()))
            .collect();
        watched.retain(|k| now.contains(k));
        if now.iter().any(|k| !watched.contains(k)) {
            for (src, s) in &state.sources {
                for (pool, events) in s.events() {
                    if watched.insert((src.clone(), pool.clone())) {
                        tokio::spawn(forward(src.clone(), pool, events, tx.clone()));
                    }
                }
            }
        }

        for (src, s) in &state.sources {
            let last = last_warning
                .entry(src.clone())
                .or_insert(SystemTime::UNIX_EPOCH);
            let since = *last;
            for w in s.warnings().into_iter().filter(|w| w.at > since) {
                *last = w.at;
                out.extend(event("warning", &json!({ "cluster": src, "warning": w })));
            }
        }
        for ev in out {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// One pool's lifecycle events, until the pool or the listener goes away.
async fn forward(cluster: String, pool: String, mut events: EventStream, tx: mpsc::Sender<Event>) {
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            () = tx.closed() => return,
        };
        let Some(ev) = ev else { return };
        let at = aquifer::report::rfc3339(SystemTime::now());
        let data = json!({ "cluster": cluster, "pool": pool, "at": at, "event": ev });
        if let Some(sse) = event("pool", &data) {
            if tx.send(sse).await.is_err() {
                return;
            }
        }
    }
}
