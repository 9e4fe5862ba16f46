#![doc = include_str!("../README.md")]

mod api;
mod auth;
mod error;
mod events;
mod history;
mod metrics;
mod mux;
mod page;
mod source;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aquifer::{Cluster, Manager, Pool};
use tokio::sync::broadcast;

pub use auth::Token;
pub use error::ApiError;
pub use mux::NamedMux;
pub use source::{
    BoxFuture, Control, ControlError, NamedPool, PendingReport, PoolReport, PoolState, Readiness,
    Source,
};

/// The operator's surface over any number of clusters and pools: build it,
/// then mount [`router`](Admin::router) in an axum application.
///
/// Reads (`GET`) are open to whoever reaches the router; every change
/// (`POST`, `DELETE`) needs `Authorization: Bearer <token>`.
pub struct Admin {
    sources: Vec<(String, Arc<dyn Source>)>,
    token: Token,
    check_timeout: Duration,
    remove_wait: Duration,
    tick: Duration,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field(
                "sources",
                &self.sources.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self::new()
    }
}

impl Admin {
    /// No sources yet, and a token generated from the operating system's
    /// random source (see [`token`](Admin::token)).
    pub fn new() -> Self {
        Self {
            sources: Vec::new(),
            token: Token::generate(),
            check_timeout: Duration::from_secs(2),
            remove_wait: Duration::from_secs(30),
            tick: Duration::from_secs(1),
        }
    }

    /// Serves a cluster under `name`.
    #[must_use]
    pub fn cluster<M: Manager>(self, name: impl Into<String>, cluster: Cluster<M>) -> Self {
        self.source(name, Arc::new(cluster))
    }

    /// Serves a single pool under `name` (shown as one pool of that name).
    #[must_use]
    pub fn pool<M: Manager>(self, name: impl Into<String>, pool: Pool<M>) -> Self {
        let name = name.into();
        self.source(name.clone(), Arc::new(NamedPool::new(name, pool)))
    }

    /// Serves a multiplexer under `name` (shown as one row of that name:
    /// it can be frozen, checked and closed).
    #[must_use]
    pub fn multiplexer<M: aquifer::Multiplexed>(
        self,
        name: impl Into<String>,
        mux: aquifer::Multiplexer<M>,
    ) -> Self {
        let name = name.into();
        self.source(name.clone(), Arc::new(NamedMux::new(name, mux)))
    }

    /// Serves anything implementing [`Source`].
    #[must_use]
    pub fn source(mut self, name: impl Into<String>, source: Arc<dyn Source>) -> Self {
        self.sources.push((name.into(), source));
        self
    }

    /// Uses this bearer token instead of a generated one.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Token::new(token.into());
        self
    }

    /// The token changes need: print it once for the operator, or read
    /// it from your own secret store with [`with_token`](Admin::with_token).
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// How long `/readyz` waits for each pool's check. Default 2 s.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// How long `DELETE /api/pools/{name}` waits for connections out
    /// unless the request says `?wait=`. Default 30 s.
    #[must_use]
    pub fn remove_wait(mut self, wait: Duration) -> Self {
        self.remove_wait = wait;
        self
    }

    /// How often `/api/events` sends a snapshot of every pool. Default 1 s.
    #[must_use]
    pub fn snapshot_every(mut self, every: Duration) -> Self {
        self.tick = every.max(Duration::from_millis(10));
        self
    }

    /// The router: the API under `/api`, `/healthz`, `/readyz`,
    /// `/metrics`, and the dashboard at `/`. Mount it anywhere with
    /// [`Router::nest`](axum::Router::nest).
    pub fn router(self) -> axum::Router {
        let (actions, _) = broadcast::channel(256);
        let state = Arc::new(State {
            sources: self.sources,
            token: self.token,
            check_timeout: self.check_timeout,
            remove_wait: self.remove_wait,
            tick: self.tick,
            actions,
            history: history::History::default(),
        });
        history::History::start(&state);
        api::routes(state)
    }
}

/// A served cluster or pool and the name it is served under.
pub(crate) type Served = (String, Arc<dyn Source>);

/// What every handler shares.
pub(crate) struct State {
    pub(crate) sources: Vec<Served>,
    pub(crate) token: Token,
    pub(crate) check_timeout: Duration,
    pub(crate) remove_wait: Duration,
    pub(crate) tick: Duration,
    /// Changes made through the API, for the event stream.
    pub(crate) actions: broadcast::Sender<serde_json::Value>,
    /// The charts' last five minutes.
    pub(crate) history: history::History,
}

impl State {
    pub(crate) fn reports(&self) -> Vec<PoolReport> {
        self.sources
            .iter()
            .flat_map(|(name, s)| s.pools(name))
            .collect()
    }
}
