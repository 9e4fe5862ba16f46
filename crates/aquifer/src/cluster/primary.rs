//! A cluster as a replica set: each member's role as its checks found it,
//! and the primary believed on stable evidence. The checks run in
//! `checker`; `write()` and its connection are in `write`, reads in
//! `reads` and `session`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::human_duration;
use crate::manager::Manager;
use crate::roles::{Role, RoleCheck, SplitBrain};

use super::members::Member;
use super::shared::ClusterShared;

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
