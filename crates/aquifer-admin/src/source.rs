//! What the router needs of a cluster or a pool, without its manager type.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use aquifer::{
    ClusterError, ClusterInfo, EventStream, Health, Manager, Metrics, PendingInfo, Pool, Selector,
    Status, Warning,
};
use serde::Serialize;

/// A boxed future, so that [`Source`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether a pool takes gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolState {
    /// Takes gets.
    Active,
    /// Frozen by an operator: no new gets.
    Frozen,
    /// Banned after failures (or by an operator) until `banned_until`.
    Banned,
    /// Closed: it hands out nothing any more.
    Closed,
}

/// One pool, as the API and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolReport {
    /// The name the cluster or single pool was registered under.
    pub cluster: String,
    /// The pool's name.
    pub name: String,
    /// Active, frozen, banned or closed (frozen wins over banned).
    pub state: PoolState,
    /// The manager's driver (`postgres`, `sqlite`…).
    pub driver: &'static str,
    /// Where it connects, without credentials (`host:port/db`, a path).
    pub server: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its weight in the cluster's weighted mode.
    pub weight: u32,
    /// Whether it is frozen.
    pub frozen: bool,
    /// How many times it was banned.
    pub bans: u64,
    /// How much longer it is banned.
    #[serde(serialize_with = "aquifer::report::opt_secs")]
    pub banned_for: Option<Duration>,
    /// Until when it is banned.
    #[serde(serialize_with = "aquifer::report::opt_time")]
    pub banned_until: Option<SystemTime>,
    /// Connection counts.
    pub status: Status,
    /// Counters and latency summaries.
    pub metrics: Metrics,
    /// Connections that failed to close.
    pub pending: Vec<PendingInfo>,
    /// Its role, evidence and last change, in a cluster that watches roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<aquifer::RoleInfo>,
    /// For a multiplexer: its connections and the requests each carries
    /// (`status` then counts requests as borrowed and queued requests as
    /// waiting, and `size` the open connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplexer: Option<aquifer::MuxStatus>,
}

/// A connection that failed to close.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PendingReport {
    /// The cluster or single pool's registered name.
    pub cluster: String,
    /// The pool's name.
    pub pool: String,
    /// The connection and its error.
    #[serde(flatten)]
    pub info: PendingInfo,
}

/// One pool's readiness, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// The cluster or single pool's registered name.
    pub cluster: String,
    /// The pool's name.
    pub pool: String,
    /// Its state; only active pools are checked.
    pub state: PoolState,
    /// The check, when one ran.
    pub health: Option<Health>,
    /// Why it is not ready, when it is not: `frozen`, `banned for 12 s
    /// more: …` (the ban's cause), `closed`, or `unhealthy: …` (the
    /// check's error).
    pub reason: Option<String>,
    /// Its role, in a cluster that watches roles (checked once at least,
    /// unless the check's timeout ran out first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<aquifer::RoleInfo>,
}

impl Readiness {
    /// A pool's readiness: its check when one ran, and why it is not ready
    /// (the check's error, or its state) when it is not.
    pub(crate) fn new(
        cluster: String,
        pool: String,
        state: PoolState,
        health: Option<Health>,
    ) -> Self {
        let reason = match &health {
            Some(h) if h.healthy => None,
            Some(h) => Some(format!(
                "unhealthy: {}",
                h.error.as_deref().unwrap_or("the check failed")
            )),
            None => Some(
                match state {
                    PoolState::Frozen => "frozen",
                    PoolState::Banned => "banned",
                    PoolState::Closed => "closed",
                    PoolState::Active => "not checked",
                }
                .to_owned(),
            ),
        };
        Self {
            cluster,
            pool,
            state,
            health,
            reason,
            role: None,
        }
    }

    /// Whether the pool answered its check.
    pub fn is_ready(&self) -> bool {
        self.health.as_ref().is_some_and(|h| h.healthy)
    }
}

/// Why a control failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// No pool matched.
    NoMatch(String),
    /// The selector or a value is malformed.
    Invalid(String),
    /// This source cannot do that (a single pool cannot be frozen).
    Unsupported(String),
    /// The cluster was shut down.
    ShutDown,
}

impl<E: std::error::Error> From<ClusterError<E>> for ControlError {
    fn from(e: ClusterError<E>) -> Self {
        match e {
            ClusterError::NoMatch(sel) => ControlError::NoMatch(sel),
            ClusterError::EmptySelector => ControlError::Invalid("the selector is empty".into()),
            ClusterError::ShutDown => ControlError::ShutDown,
            other => ControlError::Invalid(aquifer::error_chain(&other)),
        }
    }
}

/// A control that changes a pool's flags or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop new gets.
    Freeze,
    /// Take gets again.
    Unfreeze,
    /// Ban for this long (the cluster's ban time when `None`).
    Ban(Option<Duration>),
    /// Lift a ban.
    Unban,
    /// Change `max`.
    Resize(usize),
}

/// A cluster or a single pool, as the router sees it. [`aquifer::Cluster`]
/// and [`NamedPool`] implement it for any manager; implement it to serve
/// something else (a multiplexer, a remote process).
pub trait Source: Send + Sync + 'static {
    /// The cluster's summary and mode; `None` for a single pool.
    fn cluster_info(&self) -> Option<ClusterInfo>;
    /// Every pool, in order, under the given source name.
    fn pools(&self, source: &str) -> Vec<PoolReport>;
    /// Applies `control` to the pools `sel` matches; returns their names.
    fn control(&self, sel: &Selector, control: Control) -> Result<Vec<String>, ControlError>;
    /// Closes the idle connections of the matching pools (PgBouncer's
    /// `RECONNECT`); returns the pools and how many connections closed.
    fn clear<'a>(
        &'a self,
        sel: &'a Selector,
    ) -> BoxFuture<'a, Result<(Vec<String>, usize), ControlError>>;
    /// Removes the matching pools gracefully, waiting up to `wait` for
    /// connections out; returns their names.
    fn remove<'a>(
        &'a self,
        sel: &'a Selector,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, ControlError>>;
    /// Connections that failed to close, by pool name.
    fn pending(&self) -> Vec<(String, PendingInfo)>;
    /// Retries closing them (`force`: drops those that fail); returns how
    /// many are left.
    fn close_pending(&self, force: bool) -> BoxFuture<'_, usize>;
    /// Warnings kept in memory, oldest first.
    fn warnings(&self) -> Vec<Warning>;
    /// Each pool's lifecycle events, by name.
    fn events(&self) -> Vec<(String, EventStream)>;
    /// Health-checks each active pool within `timeout`.
    fn check(&self, source: &str, timeout: Duration) -> BoxFuture<'_, Vec<Readiness>>;
}

pub(crate) fn state(frozen: bool, banned: bool, closed: bool) -> PoolState {
    if closed {
        PoolState::Closed
    } else if frozen {
        PoolState::Frozen
    } else if banned {
        PoolState::Banned
    } else {
        PoolState::Active
    }
}

/// Checks the active pools at once; the others are not ready, for the
/// reason given (or their state's name).
async fn checks<M: Manager>(
    source: String,
    pools: Vec<(String, PoolState, Option<String>, Pool<M>)>,
    timeout: Duration,
) -> Vec<Readiness> {
    let runs = pools.into_iter().map(|(name, state, why, pool)| {
        let source = source.clone();
        async move {
            let health = match state {
                PoolState::Active => Some(pool.check(timeout).await),
                _ => None,
            };
            let mut r = Readiness::new(source, name, state, health);
            // A ban's own words say more than its state's name.
            if r.health.is_none() {
                r.reason = why.or(r.reason);
            }
            r
        }
    });
    futures_util::future::join_all(runs).await
}

impl<M: Manager> Source for aquifer::Cluster<M> {
    fn cluster_info(&self) -> Option<ClusterInfo> {
        Some(self.info())
    }

    fn pools(&self, source: &str) -> Vec<PoolReport> {
        let pending = aquifer::Cluster::pending(self);
        self.names()
            .iter()
            .filter_map(|name| self.info_about(name))
            .map(|i| {
                let closed = self.pool_named(&i.name).is_none_or(|p| p.is_closed());
                PoolReport {
                    cluster: source.to_owned(),
                    state: state(i.frozen, i.banned_for.is_some(), closed),
                    driver: i.driver,
                    server: i.server,
                    tags: i.tags,
                    weight: i.weight,
                    frozen: i.frozen,
                    bans: i.bans,
                    banned_for: i.banned_for,
                    banned_until: i.banned_until,
                    status: i.status,
                    metrics: i.metrics,
                    pending: pending
                        .iter()
                        .filter(|p| p.pool == i.name)
                        .map(|p| p.info.clone())
                        .collect(),
                    role: i.role,
                    name: i.name,
                    multiplexer: None,
                }
            })
            .collect()
    }

    fn control(&self, sel: &Selector, control: Control) -> Result<Vec<String>, ControlError> {
        let names = self.select(sel)?;
        match control {
            Control::Freeze => self.freeze(sel).map(drop)?,
            Control::Unfreeze => self.unfreeze(sel).map(drop)?,
            Control::Ban(for_) => self.ban(sel, for_).map(drop)?,
            Control::Unban => self.unban(sel).map(drop)?,
            Control::Resize(max) => {
                for name in &names {
                    let Some(pool) = self.pool_named(name) else {
                        continue;
                    };
                    pool.resize(max)
                        .map_err(|e| ControlError::Invalid(aquifer::error_chain(&e)))?;
                }
            }
        }
        Ok(names)
    }

    fn clear<'a>(
        &'a self,
        sel: &'a Selector,
    ) -> BoxFuture<'a, Result<(Vec<String>, usize), ControlError>> {
        Box::pin(async move {
            let names = self.select(sel)?;
            let mut closed = 0;
            for name in &names {
                if let Some(pool) = self.pool_named(name) {
                    closed += pool.clear().await;
                }
            }
            Ok((names, closed))
        })
    }

    fn remove<'a>(
        &'a self,
        sel: &'a Selector,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, ControlError>> {
        Box::pin(async move {
            let names = self.select(sel)?;
            aquifer::Cluster::remove(self, sel, wait).await?;
            Ok(names)
        })
    }

    fn pending(&self) -> Vec<(String, PendingInfo)> {
        aquifer::Cluster::pending(self)
            .into_iter()
            .map(|p| (p.pool, p.info))
            .collect()
    }

    fn close_pending(&self, force: bool) -> BoxFuture<'_, usize> {
        Box::pin(aquifer::Cluster::close_pending(self, force))
    }

    fn warnings(&self) -> Vec<Warning> {
        aquifer::Cluster::warnings(self)
    }

    fn events(&self) -> Vec<(String, EventStream)> {
        self.names()
            .into_iter()
            .filter_map(|n| {
                let events = self.pool_named(&n)?.lifecycle_events();
                Some((n, events))
            })
            .collect()
    }

    fn check(&self, source: &str, timeout: Duration) -> BoxFuture<'_, Vec<Readiness>> {
        let frozen = self.frozen();
        let pools = self
            .names()
            .into_iter()
            .filter_map(|n| {
                let pool = self.pool_named(&n)?;
                let s = state(frozen.contains(&n), self.is_banned(&n), pool.is_closed());
                let why = (s == PoolState::Banned)
                    .then(|| self.info_about(&n))
                    .flatten()
                    .and_then(|i| {
                        let left = aquifer::human_duration(i.banned_for?);
                        Some(match i.ban_reason {
                            Some(r) => format!("banned for {left} more: {r}"),
                            None => format!("banned for {left} more"),
                        })
                    });
                Some((n, s, why, pool))
            })
            .collect();
        let source = source.to_owned();
        Box::pin(async move {
            let (mut results, _) = futures_util::future::join(
                checks(source, pools, timeout),
                self.roles_checked(timeout),
            )
            .await;
            for r in &mut results {
                r.role = self.role(&r.pool);
            }
            results
        })
    }
}

/// A single pool under a name, as a [`Source`]: it can be resized,
/// cleared, checked and removed (closed), not frozen or banned, which
/// only a cluster can do.
pub struct NamedPool<M: Manager> {
    name: String,
    pool: Pool<M>,
}

impl<M: Manager> NamedPool<M> {
    /// `pool`, shown as `name`.
    pub fn new(name: impl Into<String>, pool: Pool<M>) -> Self {
        Self {
            name: name.into(),
            pool,
        }
    }

    fn selected(&self, sel: &Selector) -> Result<(), ControlError> {
        select_one(&self.name, sel)
    }
}

/// Whether `sel` names the one thing a source serves as `name`.
pub(crate) fn select_one(name: &str, sel: &Selector) -> Result<(), ControlError> {
    if sel.is_empty() {
        return Err(ControlError::Invalid("the selector is empty".into()));
    }
    if sel.matches(name, &[]) {
        Ok(())
    } else {
        Err(ControlError::NoMatch(sel.to_string()))
    }
}

impl<M: Manager> Source for NamedPool<M> {
    fn cluster_info(&self) -> Option<ClusterInfo> {
        None
    }

    fn pools(&self, source: &str) -> Vec<PoolReport> {
        let closed = self.pool.is_closed();
        vec![PoolReport {
            cluster: source.to_owned(),
            name: self.name.clone(),
            state: state(false, false, closed),
            driver: self.pool.manager().driver_name(),
            server: self.pool.manager().server(),
            tags: Vec::new(),
            weight: 1,
            frozen: false,
            bans: 0,
            banned_for: None,
            banned_until: None,
            status: self.pool.status(),
            metrics: self.pool.metrics(),
            pending: self.pool.pending(),
            role: None,
            multiplexer: None,
        }]
    }

    fn control(&self, sel: &Selector, control: Control) -> Result<Vec<String>, ControlError> {
        self.selected(sel)?;
        match control {
            Control::Resize(max) => self
                .pool
                .resize(max)
                .map_err(|e| ControlError::Invalid(aquifer::error_chain(&e)))?,
            other => {
                return Err(ControlError::Unsupported(format!(
                    "{} is a single pool, not in a cluster: it cannot be {}; add it to an aquifer::Cluster to freeze or ban it",
                    self.name,
                    match other {
                        Control::Freeze | Control::Unfreeze => "frozen or unfrozen",
                        _ => "banned or unbanned",
                    }
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
            Ok((vec![self.name.clone()], self.pool.clear().await))
        })
    }

    fn remove<'a>(
        &'a self,
        sel: &'a Selector,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, ControlError>> {
        Box::pin(async move {
            self.selected(sel)?;
            let _ = tokio::time::timeout(wait, self.pool.drain()).await;
            self.pool.close().await;
            Ok(vec![self.name.clone()])
        })
    }

    fn pending(&self) -> Vec<(String, PendingInfo)> {
        self.pool
            .pending()
            .into_iter()
            .map(|info| (self.name.clone(), info))
            .collect()
    }

    fn close_pending(&self, force: bool) -> BoxFuture<'_, usize> {
        Box::pin(self.pool.close_pending(force))
    }

    fn warnings(&self) -> Vec<Warning> {
        Vec::new()
    }

    fn events(&self) -> Vec<(String, EventStream)> {
        vec![(self.name.clone(), self.pool.lifecycle_events())]
    }

    fn check(&self, source: &str, timeout: Duration) -> BoxFuture<'_, Vec<Readiness>> {
        let s = state(false, false, self.pool.is_closed());
        let pools = vec![(self.name.clone(), s, None, self.pool.clone())];
        Box::pin(checks(source.to_owned(), pools, timeout))
    }
}
