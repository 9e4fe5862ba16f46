//! Reads from the replicas of a replica set: each standby's lag from its
//! checks, whether it is in the read rotation and why not, and `read()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::human_duration;
use crate::manager::Manager;
use crate::roles::{Fallback, Role, RoleCheck, RoleManager, Roles};
use crate::token::{gtids_cover, Repr, WriteToken};

use super::balance::Bits;
use super::error::ClusterError;
use super::get::ClusterConn;
use super::handle::Cluster;
use super::members::Member;
use super::write::WriteConn;

/// The set's side of reads: the primary's newest position, and counts.
#[derive(Debug, Default)]
pub(super) struct Board {
    /// The primary's write-ahead log position at its last check (0: not
    /// known).
    pub(super) primary_wal: AtomicU64,
    /// Reads served by a replica.
    replica_reads: AtomicU64,
    /// Reads that went to the primary because no replica could serve.
    fallbacks: AtomicU64,
    /// Token reads served by a replica already known to have the write.
    token_known: AtomicU64,
    /// Token reads that waited on a replica, and for how long in all.
    token_waits: AtomicU64,
    token_wait_micros: AtomicU64,
}

/// How far behind one member is, as its last check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct MemberLag {
    /// Its own position at its last check.
    pub(super) position: Option<u64>,
    /// How far behind its server said it is.
    reported: Option<Duration>,
    /// When it was last seen with nothing to replay.
    caught_up_at: Option<Instant>,
    pub(super) bytes: Option<u64>,
    pub(super) time: Option<Duration>,
    pub(super) replicating: Option<bool>,
    /// Why reads do not go there (`None`: in the rotation).
    pub(super) out: Option<String>,
}

impl Board {
    /// Folds a member's check into its lag: a primary's position is what
    /// the standbys are measured against; a standby leaves the rotation
    /// when over a bound and comes back below half of it.
    pub(super) fn record(&self, settings: &Roles, lag: &mut MemberLag, check: &RoleCheck) {
        match check.role {
            Role::Primary => {
                if let Some(p) = check.wal_position {
                    self.primary_wal.store(p, Ordering::Release);
                }
                *lag = MemberLag {
                    out: Some("the primary".into()),
                    ..MemberLag::default()
                };
            }
            Role::Standby => {
                lag.position = check.wal_position;
                lag.reported = check.behind;
                lag.replicating = check.replicating;
                self.measure(settings, lag);
            }
            Role::ReadOnly | Role::Unknown => {
                *lag = MemberLag {
                    out: Some(format!("{}: not a standby", check.role)),
                    ..MemberLag::default()
                };
            }
        }
    }
}

impl Board {
    /// A standby's lag in bytes against the primary's newest position, and
    /// whether that keeps it in the rotation. Run on the standby's check
    /// and again on the primary's, so that whichever of the two is checked
    /// last in a tick, the lag compares the standby with the primary's
    /// newer position (erring towards more lag, never less).
    pub(super) fn measure(&self, settings: &Roles, lag: &mut MemberLag) {
        let primary = self.primary_wal.load(Ordering::Acquire);
        lag.bytes = lag
            .position
            .filter(|_| primary > 0)
            .map(|me| primary.saturating_sub(me));
        let now = Instant::now();
        let caught_up = match lag.bytes {
            Some(b) => b == 0,
            None => lag.reported == Some(Duration::ZERO),
        };
        if caught_up {
            lag.caught_up_at = Some(now);
        }
        lag.time = match lag.bytes {
            Some(0) => Some(Duration::ZERO),
            // Behind the primary, and the server gives no time (PostgreSQL
            // has none before a standby's first replayed transaction) or
            // says zero (it replayed all it received, but has not received
            // all): the time since it was last caught up, no less than how
            // stale its data is.
            Some(_) => lag
                .reported
                .filter(|t| !t.is_zero())
                .or_else(|| lag.caught_up_at.map(|t| now.saturating_duration_since(t))),
            None => lag.reported,
        };
        lag.out = judge(settings, lag, lag.out.is_none());
    }
}

/// Why a standby is out of the read rotation, or `None`. One in the
/// rotation leaves it over a bound; one out of it comes back below half
/// of each bound, so that a replica near the bound does not flap.
fn judge(s: &Roles, lag: &MemberLag, in_now: bool) -> Option<String> {
    if lag.replicating == Some(false) {
        return Some("not replicating".into());
    }
    let limit = |max: u64| if in_now { max } else { max / 2 };
    if let (Some(max), Some(b)) = (s.max_lag_bytes, lag.bytes) {
        if b > limit(max) {
            return Some(format!(
                "{b} bytes behind (max_lag_bytes {max}{})",
                if in_now { "" } else { "; back below half" }
            ));
        }
    }
    if let (Some(max), Some(t)) = (s.max_lag, lag.time) {
        let bound = if in_now { max } else { max / 2 };
        if t > bound {
            return Some(format!(
                "{} behind (max_lag {}{})",
                human_duration(t),
                human_duration(max),
                if in_now { "" } else { "; back below half" }
            ));
        }
    }
    None
}

/// Counts of a replica set's reads, from [`Cluster::read_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ReadStats {
    /// Reads served by a replica.
    pub replica_reads: u64,
    /// Reads that went to the primary because no replica could serve.
    pub fallbacks: u64,
    /// Token reads served by a replica already known to have the write,
    /// with no round trip to ask.
    pub token_known: u64,
    /// Token reads that waited on a replica for the write.
    pub token_waits: u64,
    /// The time those waits took, in all.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
    pub token_wait_time: Duration,
}

impl<M: Manager> Cluster<M> {
    /// A connection for reading: from a standby in the read rotation
    /// (replicating, within `max_lag_bytes` and `max_lag` of
    /// [`Roles`]), picked by the cluster's mode; when none can serve, from
    /// the primary, or an error if [`Roles::fallback`] says so.
    ///
    /// # Errors
    /// [`ClusterError::NoReplica`] (with `Fallback::Error`), else as
    /// [`write`](Cluster::write).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let conn = set.read().await?;
    /// assert_eq!(conn.pool_name(), "copy"); // the standby
    /// # Ok(()) }
    /// ```
    pub async fn read(&self) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        self.read_within(None).await
    }

    /// As [`read`](Cluster::read), from a standby at most `max_lag` behind
    /// as well (a standby whose lag in time is not known does not serve).
    ///
    /// # Errors
    /// As [`read`](Cluster::read).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// use std::time::Duration;
    ///
    /// // A standby whose lag in time is unknown cannot promise a bound: the
    /// // read falls back to the primary.
    /// let conn = set.read_within(Some(Duration::from_millis(1))).await?;
    /// assert_eq!(conn.pool_name(), "main");
    /// # Ok(()) }
    /// ```
    pub async fn read_within(
        &self,
        max_lag: Option<Duration>,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let board = self.inner.roles.as_ref().ok_or(ClusterError::NoRoles)?;
        let list = self.inner.members.read_full();
        let mut left = Bits::new(list.len());
        let mut why_not = Vec::new();
        for (i, m) in list.iter().enumerate() {
            match self.readable(m, max_lag) {
                Ok(()) => left.set(i),
                Err(why) => why_not.push(format!("{} {why}", m.name)),
            }
        }
        let started = Instant::now();
        let budget = self.budget_of(&list);
        let mode = self.mode();
        let mut first = true;
        while left.count() > 0 {
            let time_left = budget.saturating_sub(started.elapsed());
            if time_left.is_zero() {
                break;
            }
            let share = time_left / u32::try_from(left.count()).unwrap_or(u32::MAX);
            // The first pick takes a round-robin turn; the others go on
            // from there.
            let i = self
                .inner
                .pick(mode, &list, &left, std::mem::take(&mut first));
            left.remove(i);
            match self.try_one(Arc::clone(&list[i]), share).await {
                Ok(conn) => {
                    board.lag.replica_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
                Err((m, e)) => why_not.push(format!("{} failed: {}", m.name, e)),
            }
        }
        match board.settings.fallback {
            Fallback::Primary => {
                board.lag.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.write().await.map(WriteConn::into_cluster_conn)
            }
            Fallback::Error => Err(ClusterError::NoReplica {
                why: if why_not.is_empty() {
                    "the cluster has no pools".into()
                } else {
                    why_not.join("; ")
                },
            }),
        }
    }

    /// Whether reads may go to `m` now, or why not.
    fn readable(&self, m: &Member<M>, max_lag: Option<Duration>) -> Result<(), String> {
        if !m.active() {
            return Err("is frozen".into());
        }
        if self.banned(m) {
            return Err("is banned".into());
        }
        let r = m.role.lock();
        if r.role != Role::Standby {
            return Err(format!("is {}", r.role));
        }
        if r.suspect {
            return Err("is in doubt until its next check".into());
        }
        if let Some(why) = &r.lag.out {
            return Err(format!("is out of the rotation: {why}"));
        }
        if let Some(max) = max_lag {
            match r.lag.time {
                Some(t) if t <= max => {}
                Some(t) => {
                    return Err(format!(
                        "is {} behind, over this read's bound of {}",
                        human_duration(t),
                        human_duration(max)
                    ))
                }
                None => return Err("has no known lag in time".into()),
            }
        }
        Ok(())
    }

    /// Reads served by replicas and fallbacks to the primary so far.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// drop(set.read().await?);
    /// assert_eq!(set.read_stats().replica_reads, 1);
    /// # Ok(()) }
    /// ```
    pub fn read_stats(&self) -> ReadStats {
        self.inner
            .roles
            .as_ref()
            .map_or_else(ReadStats::default, |b| ReadStats {
                replica_reads: b.lag.replica_reads.load(Ordering::Relaxed),
                fallbacks: b.lag.fallbacks.load(Ordering::Relaxed),
                token_known: b.lag.token_known.load(Ordering::Relaxed),
                token_waits: b.lag.token_waits.load(Ordering::Relaxed),
                token_wait_time: Duration::from_micros(
                    b.lag.token_wait_micros.load(Ordering::Relaxed),
                ),
            })
    }
}

impl<M: RoleManager> Cluster<M> {
    /// A connection for reading that sees the write `token` stands for:
    /// from a standby already known (from its last check) to have replayed
    /// past it, with no round trip to ask; else from one standby that is
    /// asked to wait for it up to `wait`; else from the primary. A token is
    /// trusted only to a standby of the same database system on the current
    /// primary's timeline (the token's, or a newer one after a failover):
    /// until replicas show the new timeline such reads go to the primary.
    ///
    /// # Errors
    /// As [`write`](Cluster::write), when the read falls to the primary.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// use std::time::Duration;
    /// use aquifer::WriteToken;
    ///
    /// // A token the standby's checks do not show it past, and a driver that
    /// // cannot wait for one: the read goes to the primary.
    /// let token = WriteToken::wal(1, 1, 0x16b3a28);
    /// let conn = set.read_at_least(&token, Duration::from_millis(10)).await?;
    /// assert_eq!(conn.pool_name(), "main");
    /// # Ok(()) }
    /// ```
    pub async fn read_at_least(
        &self,
        token: &WriteToken,
        wait: Duration,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        self.read_past(token, Some(wait)).await
    }

    /// `read_at_least`; with `wait` `None`, a standby not known to have
    /// the token is not asked: the read goes to the primary.
    pub(super) async fn read_past(
        &self,
        token: &WriteToken,
        wait: Option<Duration>,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let board = self.inner.roles.as_ref().ok_or(ClusterError::NoRoles)?;
        let primary_timeline = board.primary_timeline();
        let list = self.inner.members.read_full();
        let mut known = Bits::new(list.len());
        let mut trusted = Bits::new(list.len());
        for (i, m) in list.iter().enumerate() {
            if self.readable(m, None).is_err() {
                continue;
            }
            let r = m.role.lock();
            let (trust, has) = match &token.0 {
                Repr::Wal {
                    system,
                    timeline,
                    lsn,
                } => {
                    // The standby follows the current primary's timeline
                    // (once a failover made a new one, a standby still on
                    // the old one may hold writes the new primary lost),
                    // and the token is from it or from before it.
                    let trust = r.system == Some(*system)
                        && r.timeline.is_some_and(|t| match primary_timeline {
                            Some(now) => t == now && *timeline <= t,
                            None => t == *timeline,
                        });
                    (trust, r.lag.position.is_some_and(|p| p >= *lsn))
                }
                // GTIDs name no system: any standby may be asked.
                Repr::Gtid(want) => (true, r.gtid.as_ref().is_some_and(|h| gtids_cover(h, want))),
            };
            if trust {
                trusted.set(i);
                if has {
                    known.set(i);
                }
            }
        }
        let budget = self.budget_of(&list);
        let mode = self.mode();
        if known.count() > 0 {
            let i = self.inner.pick(mode, &list, &known, true);
            if let Ok(conn) = self.try_one(Arc::clone(&list[i]), budget).await {
                board.lag.token_known.fetch_add(1, Ordering::Relaxed);
                board.lag.replica_reads.fetch_add(1, Ordering::Relaxed);
                return Ok(conn);
            }
        } else if let (true, Some(wait)) = (trusted.count() > 0, wait) {
            let i = self.inner.pick(mode, &list, &trusted, true);
            let m = Arc::clone(&list[i]);
            if let Ok(mut conn) = self.try_one(Arc::clone(&m), budget).await {
                let started = Instant::now();
                let applied = m
                    .pool
                    .manager()
                    .wait_for_token(&mut conn, token, wait)
                    .await;
                let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                board.lag.token_waits.fetch_add(1, Ordering::Relaxed);
                board
                    .lag
                    .token_wait_micros
                    .fetch_add(took, Ordering::Relaxed);
                if matches!(applied, Ok(true)) {
                    board.lag.replica_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
            }
        }
        board.lag.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.write().await.map(WriteConn::into_cluster_conn)
    }
}
