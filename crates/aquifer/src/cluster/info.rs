//! What the cluster reports: counts, one pool in detail, the connections
//! that failed to close, each member's role, and the warnings.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::eventlog::EventLog;
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::pool::control::PendingInfo;
use crate::status::Status;
use crate::warning::Warning;

use super::balance::Mode;
use super::handle::Cluster;
use super::lag::ReadStats;
use super::role::RoleInfo;

/// A connection that failed to close, in a pool of the cluster or in one
/// removed from it.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClusterPending {
    /// The pool's name.
    pub pool: String,
    /// The object and its error.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub info: PendingInfo,
}

/// A cluster at a glance, from [`Cluster::info`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClusterInfo {
    /// How gets pick a pool.
    pub mode: Mode,
    /// Pools in the cluster.
    pub pools: usize,
    /// Pools taking gets.
    pub active: usize,
    /// Frozen pools.
    pub frozen: usize,
    /// Pools banned now.
    pub banned: usize,
    /// Warnings in memory.
    pub warnings: usize,
    /// Connections that failed to close.
    pub pending: usize,
    /// Connections open in all pools.
    pub size: usize,
    /// Idle connections in all pools.
    pub idle: usize,
    /// Borrowed connections in all pools.
    pub borrowed: usize,
    /// Callers waiting in all pools.
    pub waiting: usize,
    /// The pool writes go to, in a cluster that watches roles and knows
    /// its primary.
    pub primary: Option<String>,
    /// Reads served by replicas, fallbacks and token waits, in a cluster
    /// that watches roles.
    pub reads: Option<ReadStats>,
}

/// One pool of a cluster, from [`Cluster::info_about`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolInfo {
    /// Unique within the cluster, in the order pools were added.
    pub id: u64,
    /// The pool's name.
    pub name: String,
    /// When it was added.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::time"))]
    pub created_at: SystemTime,
    /// The manager's [`driver_name`](Manager::driver_name).
    pub driver: &'static str,
    /// The manager's [`server`](Manager::server): where it connects, without
    /// credentials.
    pub server: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its weight in [`Mode::Weighted`].
    pub weight: u32,
    /// Whether it is frozen.
    pub frozen: bool,
    /// How much longer it is banned, if it is.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::opt_secs"))]
    pub banned_for: Option<Duration>,
    /// How many times it was banned.
    pub bans: u64,
    /// Until when it is banned, if it is.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::opt_time"))]
    pub banned_until: Option<SystemTime>,
    /// Why it is banned, if it is: the failure that banned it, or "by an
    /// operator".
    pub ban_reason: Option<String>,
    /// Its role, in a cluster that watches roles.
    pub role: Option<RoleInfo>,
    /// Connection counts.
    pub status: Status,
    /// Counters and latencies.
    pub metrics: Metrics,
}

impl<M: Manager> Cluster<M> {
    /// Counts across the cluster.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.freeze("us_1")?;
    /// let info = cluster.info();
    /// assert_eq!((info.pools, info.active, info.frozen), (3, 2, 1));
    /// # Ok(()) }
    /// ```
    pub fn info(&self) -> ClusterInfo {
        let members = self.inner.members.read().to_vec();
        let mut info = ClusterInfo {
            mode: self.mode(),
            pools: members.len(),
            active: 0,
            frozen: 0,
            banned: 0,
            warnings: self.inner.warning_count(),
            pending: self.pending().len(),
            size: 0,
            idle: 0,
            borrowed: 0,
            waiting: 0,
            primary: self.primary(),
            reads: self.watches_roles().then(|| self.read_stats()),
        };
        for m in &members {
            if m.is_frozen() {
                info.frozen += 1;
            } else {
                info.active += 1;
            }
            info.banned += usize::from(self.banned(m));
            let s = m.pool.status();
            info.size += s.size;
            info.idle += s.idle;
            info.borrowed += s.borrowed;
            info.waiting += s.waiting;
        }
        info
    }

    /// One pool in detail, or `None` when no pool has that name.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// let info = cluster.info_about("eu_1").expect("added above");
    /// assert!(!info.frozen);
    /// # Ok(()) }
    /// ```
    pub fn info_about(&self, name: &str) -> Option<PoolInfo> {
        let now = Instant::now();
        let m = self
            .inner
            .members
            .read()
            .iter()
            .find(|m| &*m.name == name)
            .cloned()?;
        let banned_for = m.banned_for(now);
        let (bans, ban_reason) = m.bans();
        Some(PoolInfo {
            id: m.id,
            name: m.name.to_string(),
            created_at: m.added_at,
            driver: m.pool.manager().driver_name(),
            server: m.pool.manager().server(),
            tags: m.tags.clone(),
            weight: m.weight,
            frozen: m.is_frozen(),
            banned_for,
            bans,
            banned_until: banned_for.map(|d| SystemTime::now() + d),
            ban_reason: banned_for.and(ban_reason),
            role: self.role(name),
            status: m.pool.status(),
            metrics: m.pool.metrics(),
        })
    }

    /// Connections that failed to close, in the cluster's pools and in
    /// pools removed from it.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert!(cluster.pending().is_empty()); // no connection failed to close
    /// # Ok(()) }
    /// ```
    pub fn pending(&self) -> Vec<ClusterPending> {
        self.all_pools()
            .into_iter()
            .flat_map(|(name, pool)| {
                pool.pending().into_iter().map(move |info| ClusterPending {
                    pool: name.clone(),
                    info,
                })
            })
            .collect()
    }

    /// Whether any connection failed to close.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert!(!cluster.has_pending());
    /// # Ok(()) }
    /// ```
    pub fn has_pending(&self) -> bool {
        !self.pending().is_empty()
    }
}

impl<M: Manager> Cluster<M> {
    /// The member writes go to now, if one is known.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// assert_eq!(set.primary().as_deref(), Some("main"));
    /// # Ok(()) }
    /// ```
    pub fn primary(&self) -> Option<String> {
        let board = self.inner.roles.as_ref()?;
        let p = board.primary.lock();
        p.current.as_ref().map(|c| c.0.to_string())
    }

    /// A member's role as the cluster knows it; `None` when no pool has
    /// that name or the cluster does not watch roles.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let info = set.role("copy").expect("watched");
    /// assert_eq!(info.role, Role::Standby);
    /// # Ok(()) }
    /// ```
    pub fn role(&self, name: &str) -> Option<RoleInfo> {
        let board = self.inner.roles.as_ref()?;
        let current = board.current_id();
        self.inner
            .members
            .read()
            .iter()
            .find(|m| &*m.name == name)
            .map(|m| m.role_info(current == Some(m.id)))
    }

    /// Whether the cluster watches its members' roles.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// assert!(set.watches_roles());
    /// assert!(!Cluster::<Server>::builder().build().watches_roles());
    /// # Ok(()) }
    /// ```
    pub fn watches_roles(&self) -> bool {
        self.inner.roles.is_some()
    }

    /// Waits until every member's role was checked at least once (a
    /// cluster just built checks at once), at most `timeout`. Returns
    /// whether they all were; `true` at once when the cluster does not
    /// watch roles.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// use std::time::Duration;
    ///
    /// assert!(set.roles_checked(Duration::from_secs(1)).await);
    /// # Ok(()) }
    /// ```
    pub async fn roles_checked(&self, timeout: Duration) -> bool {
        let Some(board) = self.inner.roles.as_ref() else {
            return true;
        };
        let mut checks = board.checks.subscribe();
        let all = || {
            self.inner
                .members
                .read()
                .iter()
                .all(|m| m.role.lock().checked_at.is_some())
        };
        let waited = tokio::time::timeout(timeout, async {
            while !all() {
                if checks.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        waited.is_ok() && all()
    }
}

impl<M: Manager> Cluster<M> {
    /// Warnings, oldest first.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.add_warning(Some("eu_1"), "disk almost full");
    /// let w = cluster.warnings();
    /// assert_eq!(w[0].message, "disk almost full");
    /// # Ok(()) }
    /// ```
    pub fn warnings(&self) -> Vec<Warning> {
        self.inner.flush_repeats();
        self.inner.warnings()
    }

    /// Forgets every warning.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.add_warning(None, "maintenance at 02:00");
    /// cluster.clear_warnings();
    /// assert!(cluster.warnings().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn clear_warnings(&self) {
        self.inner.clear_warnings();
    }

    /// Records a warning of your own.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.add_warning(Some("us_1"), "failing over to us_2 tonight");
    /// assert_eq!(cluster.warnings()[0].pool.as_deref(), Some("us_1"));
    /// # Ok(()) }
    /// ```
    pub fn add_warning(&self, pool: Option<&str>, message: impl Into<String>) {
        self.inner.warn(pool, message.into());
    }

    /// Every warning in the event log file, this run's and earlier runs',
    /// oldest first (empty without a log file).
    ///
    /// # Errors
    /// The I/O error when the file cannot be read.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// // Without `ClusterBuilder::log_file` there is no log to read.
    /// assert!(cluster.log_messages()?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn log_messages(&self) -> std::io::Result<Vec<Warning>> {
        match self.inner.log() {
            Some(log) => log.read_back(),
            None => Ok(Vec::new()),
        }
    }

    /// Warnings the event log dropped because its writer fell behind.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert_eq!(cluster.log_dropped(), 0);
    /// # Ok(()) }
    /// ```
    pub fn log_dropped(&self) -> u64 {
        self.inner.log().map_or(0, EventLog::dropped)
    }
}
