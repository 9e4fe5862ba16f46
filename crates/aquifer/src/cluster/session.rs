//! Monotonic reads: a session that never reads from a replica behind one
//! it already read from.

use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::manager::Manager;
use crate::roles::{Role, RoleManager};
use crate::token::WriteToken;

use super::get::ClusterConn;
use super::{Cluster, ClusterError};

/// Reads that never go back in time: each is served by a standby whose
/// last check showed it at or past every position this session has read
/// at (or written at, through [`observe`](ReadSession::observe)), else by
/// the primary. From [`Cluster::read_session`]; hold one per request or
/// user session. Positions are those the set's checks saw, so within one
/// check interval a replica a little behind another's newest replay can
/// still serve; what the session already read is never undone by a
/// replica the checks showed behind it.
pub struct ReadSession<M: Manager> {
    cluster: Cluster<M>,
    /// The newest position read at so far.
    floor: Mutex<Option<WriteToken>>,
}

impl<M: Manager> std::fmt::Debug for ReadSession<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSession")
            .field("floor", &*self.floor.lock())
            .finish_non_exhaustive()
    }
}

impl<M: RoleManager> Cluster<M> {
    /// A session of monotonic reads over this replica set.
    pub fn read_session(&self) -> ReadSession<M> {
        ReadSession {
            cluster: self.clone(),
            floor: Mutex::new(None),
        }
    }
}

impl<M: RoleManager> ReadSession<M> {
    /// A connection for reading, never from a standby behind what this
    /// session read before.
    ///
    /// # Errors
    /// As [`Cluster::read`].
    pub async fn read(&self) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let floor = self.floor.lock().clone();
        let conn = match &floor {
            None => self.cluster.read().await?,
            Some(t) => self.cluster.read_past(t, None).await?,
        };
        self.raise(conn.pool_name());
        Ok(conn)
    }

    /// Makes later reads see at least `token` (a write of this session's).
    pub fn observe(&self, token: &WriteToken) {
        let mut floor = self.floor.lock();
        if floor.as_ref().is_none_or(|f| newer(token, f)) {
            *floor = Some(token.clone());
        }
    }

    /// The newest position this session has read or written at.
    pub fn floor(&self) -> Option<WriteToken> {
        self.floor.lock().clone()
    }

    /// Raises the floor to where the member that served a read was at its
    /// last check (the primary: the newest position known).
    fn raise(&self, pool: &str) {
        let Some(board) = self.cluster.inner.roles.as_ref() else {
            return;
        };
        let seen = self
            .cluster
            .inner
            .members
            .read()
            .iter()
            .find(|m| &*m.name == pool)
            .and_then(|m| {
                let r = m.role.lock();
                let position = match r.role {
                    Role::Primary => {
                        Some(board.lag.primary_wal.load(Ordering::Acquire)).filter(|&p| p > 0)
                    }
                    _ => r.lag.position,
                };
                Some(WriteToken::wal(r.system?, r.timeline?, position?))
            });
        if let Some(t) = seen {
            self.observe(&t);
        }
    }
}

/// Whether `a` is past `b`: a later timeline, or further on the same.
fn newer(a: &WriteToken, b: &WriteToken) -> bool {
    (a.timeline, a.lsn) > (b.timeline, b.lsn)
}
