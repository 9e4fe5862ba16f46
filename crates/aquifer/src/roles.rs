//! What a server says it is: primary or standby. The types a driver
//! implements and reports through; the cluster's replica-set logic that
//! uses them is in `cluster::primary`.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::manager::Manager;
use crate::token::WriteToken;

/// A member's role, as its server tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Role {
    /// Takes writes.
    Primary,
    /// Follows a primary (a hot standby, a replica) and refuses writes.
    Standby,
    /// Follows no primary but refuses writes (PostgreSQL's
    /// `default_transaction_read_only`, MySQL's `read_only` on a server
    /// that does not replicate).
    ReadOnly,
    /// Not known: not checked yet, or unreachable.
    Unknown,
}

impl Role {
    /// `primary`, `standby`, `read_only` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::ReadOnly => "read_only",
            Role::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one role check found: the role and, where the server has one, its
/// timeline (PostgreSQL's, which a promotion raises); for a standby, how far
/// behind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleCheck {
    /// The role.
    pub role: Role,
    /// The server's timeline, when it has one.
    pub timeline: Option<u64>,
    /// What the role rests on, for operators (`pg_is_in_recovery() = f`,
    /// `@@read_only = 1, replicating`).
    pub detail: String,
    /// Where the server is in the primary's write-ahead log, in bytes
    /// (PostgreSQL: written on a primary, replayed on a standby), for lag
    /// in bytes.
    pub wal_position: Option<u64>,
    /// How far a standby's data is behind its primary's, in time; zero
    /// when it has applied all it received (an idle primary is no lag).
    pub behind: Option<Duration>,
    /// For a standby, whether it is replicating now (`false`: a stopped
    /// receiver or applier, which no lag figure makes good).
    pub replicating: Option<bool>,
    /// Which database system the server belongs to (PostgreSQL's
    /// `system_identifier`), for trusting a [`WriteToken`] to it.
    pub system: Option<u64>,
    /// The GTIDs the server has applied (MariaDB's `gtid_current_pos`),
    /// for GTID tokens.
    pub gtid: Option<String>,
}

impl RoleCheck {
    /// A check that found `role`; `detail` says what it rests on.
    pub fn new(role: Role, detail: impl Into<String>) -> Self {
        Self {
            role,
            timeline: None,
            detail: detail.into(),
            wal_position: None,
            behind: None,
            replicating: None,
            system: None,
            gtid: None,
        }
    }

    /// With the GTID position the server has applied.
    #[must_use]
    pub fn gtid(mut self, position: impl Into<String>) -> Self {
        self.gtid = Some(position.into());
        self
    }

    /// With the database system's identifier.
    #[must_use]
    pub fn system(mut self, id: u64) -> Self {
        self.system = Some(id);
        self
    }

    /// With the server's position in the write-ahead log, in bytes.
    #[must_use]
    pub fn wal_position(mut self, bytes: u64) -> Self {
        self.wal_position = Some(bytes);
        self
    }

    /// With how far behind its primary a standby is, in time.
    #[must_use]
    pub fn behind(mut self, behind: Duration) -> Self {
        self.behind = Some(behind);
        self
    }

    /// Whether a standby is replicating now.
    #[must_use]
    pub fn replicating(mut self, on: bool) -> Self {
        self.replicating = Some(on);
        self
    }

    /// With the server's timeline.
    #[must_use]
    pub fn timeline(mut self, timeline: u64) -> Self {
        self.timeline = Some(timeline);
        self
    }
}

/// A [`Manager`] whose servers can say whether they take writes: what a
/// cluster built with [`ClusterBuilder::roles`](crate::ClusterBuilder::roles)
/// needs to find its primary.
pub trait RoleManager: Manager {
    /// Asks the server behind `obj` what it is now (one round trip).
    fn check_role(
        &self,
        obj: &mut Self::Type,
    ) -> impl Future<Output = Result<RoleCheck, Self::Error>> + Send;

    /// The role the server announced when `obj` connected, if it does
    /// (PostgreSQL 14+ reports `in_hot_standby`). Default `None`.
    fn reported_role(&self, obj: &Self::Type) -> Option<Role> {
        let _ = obj;
        None
    }

    /// The signal this manager's objects raise when they see that their
    /// server's role may have changed (a statement refused as read-only,
    /// the server shutting down, a pushed `in_hot_standby`): the cluster
    /// checks that server again at once. Default `None`: checks run on the
    /// interval only.
    fn role_signal(&self) -> Option<&RoleSignal> {
        None
    }

    /// A token for what `obj`'s session has committed, read after the
    /// commit; `None` when the driver has no tokens (the default).
    fn write_token(
        &self,
        obj: &mut Self::Type,
    ) -> impl Future<Output = Result<Option<WriteToken>, Self::Error>> + Send {
        let _ = obj;
        async { Ok(None) }
    }

    /// Whether the server behind `obj` has applied everything up to
    /// `token`, waiting for it up to `wait`. Default `false`.
    fn wait_for_token(
        &self,
        obj: &mut Self::Type,
        token: &WriteToken,
        wait: Duration,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        let _ = (obj, token, wait);
        async { Ok(false) }
    }
}

/// Raised by a driver's connections when what they see says the server's
/// role may have changed; a cluster that watches roles checks again at
/// once. Clones share one signal.
#[derive(Clone, Default)]
pub struct RoleSignal(Arc<SignalInner>);

#[derive(Default)]
struct SignalInner {
    raised: AtomicU64,
    refusals: AtomicU64,
    why: Mutex<Option<String>>,
    notify: Notify,
}

impl fmt::Debug for RoleSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleSignal")
            .field("raised", &self.raised())
            .finish()
    }
}

impl RoleSignal {
    /// A new signal, never raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Says why the role may have changed (the server's error, say;
    /// without secrets) and wakes the watcher.
    pub fn raise(&self, why: impl Into<String>) {
        *self.0.why.lock() = Some(why.into());
        self.0.raised.fetch_add(1, Ordering::AcqRel);
        self.0.notify.notify_waiters();
    }

    /// A statement failed with the server's read-only or shutdown error,
    /// and the driver evicts its connection: raises the signal and counts
    /// the eviction.
    pub fn refused(&self, why: impl Into<String>) {
        self.0.refusals.fetch_add(1, Ordering::AcqRel);
        self.raise(why);
    }

    /// Connections evicted after a read-only or shutdown error.
    pub fn refusals(&self) -> u64 {
        self.0.refusals.load(Ordering::Acquire)
    }

    /// How many times it was raised.
    pub fn raised(&self) -> u64 {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Why it was raised last.
    pub fn last_reason(&self) -> Option<String> {
        self.0.why.lock().clone()
    }

    /// Waits until it is raised past `seen` (a value of [`raised`](Self::raised)).
    pub(crate) async fn raised_after(&self, seen: u64) {
        loop {
            let notified = self.0.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.raised() > seen {
                return;
            }
            notified.await;
        }
    }
}

/// What to do when two members claim to be the primary at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum SplitBrain {
    /// Write to the one on the higher timeline; when timelines do not tell
    /// (equal, or a server without them), to the one that was primary
    /// already, else to none.
    #[default]
    HigherTimeline,
    /// Write to neither until one of them stops claiming.
    Refuse,
}

/// Where a read goes when no replica can serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Fallback {
    /// To the primary (counted in [`ReadStats::fallbacks`](crate::ReadStats)).
    #[default]
    Primary,
    /// Nowhere: the read fails with
    /// [`ClusterError::NoReplica`](crate::ClusterError::NoReplica).
    Error,
}

/// How a cluster watches its members' roles; see
/// [`ClusterBuilder::roles`](crate::ClusterBuilder::roles).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Roles {
    /// How often each member is checked. Default 1 s. While no primary is
    /// known, four times as often.
    pub interval: Duration,
    /// How long a check (connecting included) may take. Default 1 s.
    pub check_timeout: Duration,
    /// Two members claiming primary at once. Default
    /// [`SplitBrain::HigherTimeline`].
    pub split_brain: SplitBrain,
    /// A standby further behind its primary than this many bytes of
    /// write-ahead log leaves the read rotation, and comes back below half
    /// of it. Default: no bound.
    pub max_lag_bytes: Option<u64>,
    /// The same bound in time. Default: no bound.
    pub max_lag: Option<Duration>,
    /// Where a read goes when no replica can serve. Default
    /// [`Fallback::Primary`].
    pub fallback: Fallback,
}

impl Default for Roles {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(1),
            split_brain: SplitBrain::default(),
            max_lag_bytes: None,
            max_lag: None,
            fallback: Fallback::default(),
        }
    }
}

impl Roles {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How often each member is checked.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long a check may take.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// What to do when two members claim primary.
    #[must_use]
    pub fn split_brain(mut self, rule: SplitBrain) -> Self {
        self.split_brain = rule;
        self
    }

    /// The most write-ahead log, in bytes, a standby may be behind and
    /// still serve reads.
    #[must_use]
    pub fn max_lag_bytes(mut self, bytes: u64) -> Self {
        self.max_lag_bytes = Some(bytes);
        self
    }

    /// The most time a standby may be behind and still serve reads.
    #[must_use]
    pub fn max_lag(mut self, lag: Duration) -> Self {
        self.max_lag = Some(lag);
        self
    }

    /// Where a read goes when no replica can serve.
    #[must_use]
    pub fn fallback(mut self, to: Fallback) -> Self {
        self.fallback = to;
        self
    }
}
