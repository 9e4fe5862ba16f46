//! Monotonic reads: a session that never reads from a replica behind one
//! it already read from.

use parking_lot::Mutex;

use crate::manager::Manager;
use crate::roles::{Role, RoleManager};
use crate::token::{Repr, WriteToken};

use super::error::ClusterError;
use super::get::ClusterConn;
use super::handle::Cluster;

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
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let session = set.read_session();
    /// let conn = session.read().await?;
    /// assert_eq!(conn.pool_name(), "copy");
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let session = set.read_session();
    /// drop(session.read().await?);
    /// assert!(session.floor().is_none()); // the standby's position is not known
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// use aquifer::WriteToken;
    ///
    /// let session = set.read_session();
    /// session.observe(&WriteToken::wal(1, 1, 0x100));
    /// assert_eq!(session.floor(), Some(WriteToken::wal(1, 1, 0x100)));
    /// # Ok(()) }
    /// ```
    pub fn observe(&self, token: &WriteToken) {
        let mut floor = self.floor.lock();
        *floor = Some(match floor.take() {
            Some(f) => later(f, token),
            None => token.clone(),
        });
    }

    /// The newest position this session has read or written at.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let session = set.read_session();
    /// assert!(session.floor().is_none()); // nothing read or written yet
    /// # Ok(()) }
    /// ```
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
                if let Some(g) = &r.gtid {
                    return Some(WriteToken(Repr::Gtid(g.clone())));
                }
                let position = match r.role {
                    Role::Primary => Some(board.lag.primary_wal()).filter(|&p| p > 0),
                    _ => r.lag.position,
                };
                Some(WriteToken::wal(r.system?, r.timeline?, position?))
            });
        if let Some(t) = seen {
            self.observe(&t);
        }
    }
}

/// The later of two positions: on PostgreSQL the later timeline, or the
/// further position on the same; on MariaDB the newer GTID of each domain.
/// A position of another kind, or another system's, replaces the floor.
fn later(floor: WriteToken, seen: &WriteToken) -> WriteToken {
    match (floor.0, &seen.0) {
        (
            Repr::Wal {
                system,
                timeline,
                lsn,
            },
            Repr::Wal {
                system: s,
                timeline: t,
                lsn: l,
            },
        ) if system == *s => {
            if (*t, *l) > (timeline, lsn) {
                seen.clone()
            } else {
                WriteToken::wal(system, timeline, lsn)
            }
        }
        (Repr::Gtid(mut have), Repr::Gtid(more)) => {
            for &(d, s, n) in more {
                match have.iter_mut().find(|g| g.0 == d) {
                    Some(g) if g.2 < n => *g = (d, s, n),
                    Some(_) => {}
                    None => have.push((d, s, n)),
                }
            }
            have.sort_unstable();
            WriteToken(Repr::Gtid(have))
        }
        _ => seen.clone(),
    }
}
