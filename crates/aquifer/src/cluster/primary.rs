//! A cluster as a replica set: each member's role as its checks found it,
//! and the primary believed on stable evidence. The checks run in
//! `checker`; `write()` and its connection are in `write`, reads in
//! `reads` and `session`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::error::human_duration;
use crate::manager::Manager;
use crate::roles::{Role, RoleCheck, RoleManager, Roles, SplitBrain};

use super::handle::Cluster;
use super::members::Member;
use super::shared::ClusterShared;

/// One member's role as the cluster knows it, from
/// [`Cluster::role`] and in [`PoolInfo`](super::PoolInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RoleInfo {
    /// What the server said it is at the last check.
    pub role: Role,
    /// Whether writes go to it now.
    pub writes_here: bool,
    /// What the role rests on: the server's answer, or why it could not be
    /// asked.
    pub evidence: String,
    /// What made the last check run before its time, if anything did (a
    /// read-only error, the server shutting down, a pushed role change).
    pub cause: Option<String>,
    /// Its timeline, when its server has them.
    pub timeline: Option<u64>,
    /// When the role last changed.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::opt_time"))]
    pub changed_at: Option<SystemTime>,
    /// When it was last checked.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::opt_time"))]
    pub checked_at: Option<SystemTime>,
    /// Role changes so far.
    pub changes: u64,
    /// Times the driver's evidence made the cluster check it at once: a
    /// read-only or shutdown error, or a role change the server pushed.
    pub signals: u64,
    /// Connections evicted because a statement on them failed with a
    /// read-only or shutdown error.
    pub read_only_evictions: u64,
    /// For a standby: how many bytes of write-ahead log it is behind the
    /// primary's last known position (PostgreSQL).
    pub lag_bytes: Option<u64>,
    /// For a standby: how far behind it is in time (zero when it applied
    /// all it received).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::opt_secs"))]
    pub lag: Option<Duration>,
    /// For a standby: whether it is replicating now.
    pub replicating: Option<bool>,
    /// Whether reads go to it.
    pub in_rotation: bool,
    /// Why reads do not go to it, when they do not.
    pub out_of_rotation: Option<String>,
}

/// A member's role state, kept with the member.
#[derive(Debug)]
pub(super) struct MemberRole {
    pub(super) role: Role,
    pub(super) evidence: String,
    cause: Option<String>,
    pub(super) timeline: Option<u64>,
    changed_at: Option<SystemTime>,
    checked_at: Option<SystemTime>,
    changes: u64,
    /// Evidence says the role may have changed; not believed as primary
    /// until checked again.
    pub(super) suspect: bool,
    /// Consecutive checks that found it primary.
    streak: u32,
    signals: u64,
    /// The driver's count of connections refused, as last seen.
    pub(super) refusals: u64,
    /// How far behind, and whether reads may go there.
    pub(super) lag: super::lag::MemberLag,
    /// The database system it belongs to, when its server says.
    pub(super) system: Option<u64>,
    /// The GTIDs it has applied, when its server says.
    pub(super) gtid: Option<crate::token::Gtids>,
}

impl Default for MemberRole {
    fn default() -> Self {
        Self {
            role: Role::Unknown,
            evidence: "not checked yet".into(),
            cause: None,
            timeline: None,
            changed_at: None,
            checked_at: None,
            changes: 0,
            suspect: false,
            streak: 0,
            signals: 0,
            refusals: 0,
            lag: super::lag::MemberLag::default(),
            system: None,
            gtid: None,
        }
    }
}

/// The cluster's part of role watching.
pub(super) struct Board<M: Manager> {
    pub(super) settings: Roles,
    pub(super) primary: Mutex<Primary>,
    /// Bumped whenever the primary changes (to none included).
    pub(super) epoch: watch::Sender<u64>,
    /// Every checker checks at once (the primary was lost).
    pub(super) check_now: Arc<Notify>,
    /// Bumped after every check, for callers waiting for roles to be known.
    checks: watch::Sender<u64>,
    /// The primary's position, for replicas' lag; reads' counters.
    pub(super) lag: super::lag::LagBoard,
    /// Starts a member's checker; made where `M: RoleManager` is known.
    start: fn(Weak<ClusterShared<M>>, Arc<Member<M>>) -> AbortHandle,
}

#[derive(Default)]
pub(super) struct Primary {
    /// The member writes go to, and its timeline.
    pub(super) current: Option<(Arc<str>, u64, Option<u64>)>,
    /// The last member that was primary, and its timeline.
    last: Option<(u64, Option<u64>)>,
    /// Two claimants warned about, by id.
    split: Option<(u64, u64)>,
    /// When the primary was lost, while none is known.
    lost_at: Option<Instant>,
}

impl<M: RoleManager> Board<M> {
    pub(super) fn new(settings: Roles) -> Self {
        Board {
            settings,
            primary: Mutex::new(Primary::default()),
            epoch: watch::Sender::new(0),
            check_now: Arc::new(Notify::new()),
            checks: watch::Sender::new(0),
            lag: super::lag::LagBoard::default(),
            start: super::checker::start_checker::<M>,
        }
    }
}

impl<M: Manager> Board<M> {
    /// Starts checking a member just added; outside a Tokio runtime no
    /// check can run, and its evidence says so.
    pub(super) fn watch(&self, inner: Weak<ClusterShared<M>>, m: &Arc<Member<M>>) {
        if tokio::runtime::Handle::try_current().is_ok() {
            *m.checker.lock() = Some((self.start)(inner, Arc::clone(m)));
        } else {
            m.role.lock().evidence = "never checked: added outside a Tokio runtime, \
                where its checks cannot run; add pools inside one"
                .into();
        }
    }

    pub(super) fn current_id(&self) -> Option<u64> {
        self.primary.lock().current.as_ref().map(|c| c.1)
    }

    /// The current primary's timeline, when one is known and has one.
    pub(super) fn primary_timeline(&self) -> Option<u64> {
        self.primary.lock().current.as_ref().and_then(|c| c.2)
    }
}

impl<M: Manager> ClusterShared<M> {
    /// Records a check's result and decides the primary again.
    pub(super) fn record_role(&self, m: &Member<M>, found: RoleCheck) {
        let changed = {
            let mut r = m.role.lock();
            let now = SystemTime::now();
            let was = r.role;
            let changed = r.role != found.role;
            if changed {
                r.changes += u64::from(r.role != Role::Unknown || r.changed_at.is_some());
                r.changed_at = Some(now);
            }
            r.streak = if found.role == Role::Primary {
                r.streak.saturating_add(1)
            } else {
                0
            };
            r.role = found.role;
            r.timeline = found.timeline.or(r.timeline.filter(|_| !changed));
            r.evidence = found.detail.clone();
            r.checked_at = Some(now);
            r.system = found.system.or(r.system);
            r.gtid = found
                .gtid
                .as_deref()
                .and_then(|g| crate::token::parse_gtids(g, ','));
            if let Some(board) = &self.roles {
                board.lag.record(&board.settings, &mut r.lag, &found);
            }
            if !r.suspect {
                r.cause = None;
            }
            r.suspect = false;
            changed.then(|| (was, r.role, r.evidence.clone()))
        };
        if found.role == Role::Primary && found.wal_position.is_some() {
            self.measure_standbys(m);
        }
        if let Some((was, role, evidence)) = changed {
            tracing::info!(target: "aquifer::cluster", pool = %m.name, %role, %evidence, "role changed");
            if was == Role::Primary {
                // It takes no writes now: connections handed out for
                // writes close on return, idle ones now.
                m.retire();
            }
        }
        self.decide_primary();
        if let Some(board) = &self.roles {
            board.checks.send_modify(|n| *n += 1);
        }
    }

    /// The primary's position moved: every standby's lag against it.
    fn measure_standbys(&self, primary: &Member<M>) {
        let Some(board) = &self.roles else {
            return;
        };
        for m in self.members.read().iter() {
            if std::ptr::eq(&**m, primary) {
                continue;
            }
            let mut r = m.role.lock();
            if r.role == Role::Standby {
                board.lag.measure(&board.settings, &mut r.lag);
            }
        }
    }

    /// Evidence says `m`'s role may have changed: it is not written to
    /// until its next check, which its checker runs now.
    pub(super) fn suspect(&self, m: &Member<M>, why: String) {
        {
            let mut r = m.role.lock();
            r.suspect = true;
            r.signals += 1;
            r.cause = Some(why.clone());
        }
        tracing::info!(target: "aquifer::cluster", pool = %m.name, cause = %why, "role in doubt; checking again now");
        self.decide_primary();
    }

    /// Picks the member writes go to from the members' last checks.
    pub(super) fn decide_primary(&self) {
        let Some(board) = self.roles.as_ref() else {
            return;
        };
        let members = self.members.read_full();
        // The members' roles are read under the board's lock, so that two
        // checkers deciding at once apply their views in order.
        let mut p = board.primary.lock();
        let claims: Vec<Claim<M>> = members
            .iter()
            .filter_map(|m| {
                let r = m.role.lock();
                (r.role == Role::Primary && !r.suspect).then(|| Claim {
                    member: Arc::clone(m),
                    streak: r.streak,
                    timeline: r.timeline,
                })
            })
            .collect();
        let believable: Vec<&Claim<M>> = claims
            .iter()
            .filter(|c| {
                c.streak >= 2
                    || p.current.as_ref().is_some_and(|cur| cur.1 == c.member.id)
                    || match p.last {
                        None => true,
                        Some((id, _)) if id == c.member.id => true,
                        Some((_, Some(old))) => c.timeline.is_some_and(|t| t > old),
                        Some((_, None)) => false,
                    }
            })
            .collect();
        let pick = match believable.as_slice() {
            [] => None,
            [one] => Some(*one),
            [a, b, ..] => {
                let pair = (a.member.id, b.member.id);
                if p.split != Some(pair) {
                    p.split = Some(pair);
                    let names: Vec<&str> = believable.iter().map(|c| &*c.member.name).collect();
                    let rule = match board.settings.split_brain {
                        SplitBrain::Refuse => "writes go to neither until one stops claiming",
                        SplitBrain::HigherTimeline => {
                            "writes go to the higher timeline, or to the primary already known"
                        }
                    };
                    self.warn(
                        None,
                        format!(
                            "split brain: {} all claim to be the primary; {rule}",
                            names.join(", ")
                        ),
                    );
                }
                match board.settings.split_brain {
                    SplitBrain::Refuse => None,
                    SplitBrain::HigherTimeline => {
                        let top = believable.iter().filter_map(|c| c.timeline).max();
                        let on_top: Vec<&&Claim<M>> = believable
                            .iter()
                            .filter(|c| top.is_some() && c.timeline == top)
                            .collect();
                        match on_top.as_slice() {
                            [one] => Some(**one),
                            _ => believable.iter().copied().find(|c| {
                                p.current.as_ref().is_some_and(|cur| cur.1 == c.member.id)
                            }),
                        }
                    }
                }
            }
        };
        if believable.len() < 2 {
            p.split = None;
        }
        let old = p.current.as_ref().map(|c| c.1);
        let new = pick.map(|c| c.member.id);
        if old == new {
            if let (Some(c), Some(cur)) = (pick, p.current.as_mut()) {
                cur.2 = c.timeline;
            }
            return;
        }
        p.current = pick.map(|c| (Arc::clone(&c.member.name), c.member.id, c.timeline));
        if let Some(c) = pick {
            p.last = Some((c.member.id, c.timeline));
        }
        let lost_for = match pick {
            Some(_) => p.lost_at.take().map(|t| t.elapsed()),
            None => {
                p.lost_at.get_or_insert_with(Instant::now);
                None
            }
        };
        drop(p);
        board.epoch.send_modify(|e| *e += 1);
        let old_member = old.and_then(|id| members.iter().find(|m| m.id == id));
        self.announce(pick, old_member, lost_for);
        if pick.is_none() {
            board.check_now.notify_waiters();
        }
    }

    /// Says that the primary changed, and retires the old primary's
    /// connections unless only a doubt took it out of writing.
    fn announce(
        &self,
        pick: Option<&Claim<M>>,
        old: Option<&Arc<Member<M>>>,
        lost_for: Option<Duration>,
    ) {
        let describe = |m: &Member<M>| {
            let r = m.role.lock();
            match &r.cause {
                Some(cause) if r.suspect => {
                    format!("{} ({}; in doubt after: {cause})", r.role, r.evidence)
                }
                _ => format!("{} ({})", r.role, r.evidence),
            }
        };
        if let Some(o) = old {
            let still_claims = {
                let r = o.role.lock();
                r.role == Role::Primary
            };
            if !still_claims || pick.is_some() {
                o.retire();
            }
        }
        let message = match (pick, old) {
            (Some(c), Some(o)) => format!(
                "primary is now {} ({}); {} is {}",
                c.member.name,
                describe(&c.member),
                o.name,
                describe(o)
            ),
            (Some(c), None) => {
                let after = lost_for
                    .map(|d| format!(" after {} without one", human_duration(d)))
                    .unwrap_or_default();
                format!(
                    "primary is now {} ({}){after}",
                    c.member.name,
                    describe(&c.member)
                )
            }
            (None, Some(o)) => format!(
                "no primary: {} is {}; writes wait for a new one",
                o.name,
                describe(o)
            ),
            (None, None) => return,
        };
        let pool = pick.map(|c| &*c.member.name).or(old.map(|o| &*o.name));
        self.warn(pool, message);
    }
}

struct Claim<M: Manager> {
    member: Arc<Member<M>>,
    streak: u32,
    timeline: Option<u64>,
}

impl<M: Manager> Member<M> {
    /// Its server stopped being the primary: the connections `write()`
    /// handed out close when they come back, and its idle ones close now.
    pub(super) fn retire(&self) {
        self.retired.fetch_add(1, Ordering::AcqRel);
        let pool = self.pool.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(async move {
                pool.clear().await;
            });
        }
    }

    pub(super) fn role_info(&self, writes_here: bool) -> RoleInfo {
        let r = self.role.lock();
        RoleInfo {
            role: r.role,
            writes_here,
            evidence: r.evidence.clone(),
            cause: r.cause.clone(),
            timeline: r.timeline,
            changed_at: r.changed_at,
            checked_at: r.checked_at,
            changes: r.changes,
            signals: r.signals,
            read_only_evictions: r.refusals,
            lag_bytes: r.lag.bytes,
            lag: r.lag.time,
            replicating: r.lag.replicating,
            in_rotation: r.role == Role::Standby && r.lag.out.is_none(),
            out_of_rotation: if r.role == Role::Standby {
                r.lag.out.clone()
            } else {
                Some(format!("{}: not a standby", r.role))
            },
        }
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
