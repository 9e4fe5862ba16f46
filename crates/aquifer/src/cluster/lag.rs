//! How far behind each standby of a replica set is, from its checks;
//! whether it is in the read rotation and why not; and the reads counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::human_duration;
use crate::roles::{Role, RoleCheck, Roles};

/// The set's side of reads: the primary's newest position, and counts.
#[derive(Debug, Default)]
pub(super) struct LagBoard {
    /// The primary's write-ahead log position at its last check (0: not
    /// known).
    primary_wal: AtomicU64,
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

impl LagBoard {
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

impl LagBoard {
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

/// Counts of a replica set's reads, from [`Cluster::read_stats`](super::Cluster::read_stats).
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

impl LagBoard {
    /// The primary's newest write-ahead log position known (0: none).
    pub(super) fn primary_wal(&self) -> u64 {
        self.primary_wal.load(Ordering::Acquire)
    }

    pub(super) fn count_replica_read(&self) {
        self.replica_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_token_known(&self) {
        self.token_known.fetch_add(1, Ordering::Relaxed);
    }

    /// A token read waited `micros` on a replica.
    pub(super) fn count_token_wait(&self, micros: u64) {
        self.token_waits.fetch_add(1, Ordering::Relaxed);
        self.token_wait_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The reads counted so far.
    pub(super) fn stats(&self) -> ReadStats {
        ReadStats {
            replica_reads: self.replica_reads.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            token_known: self.token_known.load(Ordering::Relaxed),
            token_waits: self.token_waits.load(Ordering::Relaxed),
            token_wait_time: Duration::from_micros(self.token_wait_micros.load(Ordering::Relaxed)),
        }
    }
}
