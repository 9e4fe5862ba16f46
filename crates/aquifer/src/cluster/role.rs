//! A replica-set member's role as the cluster knows it: the record kept
//! with each member, and what an operator sees of it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::roles::Role;

use super::lag::MemberLag;

/// One member's role as the cluster knows it, from
/// [`Cluster::role`](crate::Cluster::role) and in [`PoolInfo`](super::PoolInfo).
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
    pub(super) cause: Option<String>,
    pub(super) timeline: Option<u64>,
    pub(super) changed_at: Option<SystemTime>,
    pub(super) checked_at: Option<SystemTime>,
    pub(super) changes: u64,
    /// Evidence says the role may have changed; not believed as primary
    /// until checked again.
    pub(super) suspect: bool,
    /// Consecutive checks that found it primary.
    pub(super) streak: u32,
    pub(super) signals: u64,
    /// The driver's count of connections refused, as last seen.
    pub(super) refusals: u64,
    /// How far behind, and whether reads may go there.
    pub(super) lag: MemberLag,
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
            lag: MemberLag::default(),
            system: None,
            gtid: None,
        }
    }
}

impl MemberRole {
    /// What an operator sees of it; `writes_here`: writes go to it now.
    pub(super) fn info(&self, writes_here: bool) -> RoleInfo {
        let r = self;
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

/// Which member writes go to, and what the cluster remembers of the
/// primaries before it.
#[derive(Default)]
pub(super) struct Primary {
    /// The member writes go to, and its timeline.
    pub(super) current: Option<(Arc<str>, u64, Option<u64>)>,
    /// The last member that was primary, and its timeline.
    pub(super) last: Option<(u64, Option<u64>)>,
    /// Two claimants warned about, by id.
    pub(super) split: Option<(u64, u64)>,
    /// When the primary was lost, while none is known.
    pub(super) lost_at: Option<Instant>,
}
