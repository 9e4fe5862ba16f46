//! Reads from the replicas of a replica set: `read()`, bounded reads and
//! reads at a write's token. Each standby's lag is kept in `lag`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::human_duration;
use crate::manager::Manager;
use crate::roles::{Fallback, Role, RoleManager};
use crate::token::{gtids_cover, Repr, WriteToken};

use super::balance::Bits;
use super::error::ClusterError;
use super::get::ClusterConn;
use super::handle::Cluster;
use super::lag::ReadStats;
use super::members::Member;
use super::write::WriteConn;

impl<M: Manager> Cluster<M> {
    /// A connection for reading: from a standby in the read rotation
    /// (replicating, within `max_lag_bytes` and `max_lag` of
    /// [`Roles`](crate::Roles)), picked by the cluster's mode; when none can serve, from
    /// the primary, or an error if [`Roles::fallback`](crate::Roles::fallback) says so.
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
                    board.lag.count_replica_read();
                    return Ok(conn);
                }
                Err((m, e)) => why_not.push(format!("{} failed: {}", m.name, e)),
            }
        }
        match board.settings.fallback {
            Fallback::Primary => {
                board.lag.count_fallback();
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
            .map_or_else(ReadStats::default, |b| b.lag.stats())
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
                board.lag.count_token_known();
                board.lag.count_replica_read();
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
                board.lag.count_token_wait(took);
                if matches!(applied, Ok(true)) {
                    board.lag.count_replica_read();
                    return Ok(conn);
                }
            }
        }
        board.lag.count_fallback();
        self.write().await.map(WriteConn::into_cluster_conn)
    }
}
