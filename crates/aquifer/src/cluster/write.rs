//! `write()`: a connection to the primary, waiting through a failover, and
//! the connection type that closes itself once its server stopped being
//! the primary.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::manager::Manager;

use super::checker::first;
use super::error::ClusterError;
use super::get::ClusterConn;
use super::handle::Cluster;
use super::members::Member;

impl<M: Manager> Cluster<M> {
    /// A connection to the primary: the member whose server says it takes
    /// writes, on stable evidence (see [`ClusterBuilder::roles`]). While
    /// no primary is known (a failover under way) it waits for one, within
    /// the acquire timeout. A connection it hands out is closed on return
    /// if its server stopped being the primary meanwhile.
    ///
    /// # Errors
    /// [`ClusterError::NoRoles`] on a cluster that does not watch roles,
    /// [`ClusterError::NoPrimary`] when none was known in time,
    /// [`ClusterError::Unavailable`] when the primary's pool failed,
    /// [`ClusterError::ShutDown`].
    ///
    /// [`ClusterBuilder::roles`]: super::ClusterBuilder::roles
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let conn = set.write().await?;
    /// assert_eq!(conn.pool_name(), "main");
    /// # Ok(()) }
    /// ```
    pub async fn write(&self) -> Result<WriteConn<M>, ClusterError<M::Error>> {
        let board = self.inner.roles.as_ref().ok_or(ClusterError::NoRoles)?;
        let started = Instant::now();
        let budget = self.budget_of(&self.inner.members.read());
        let deadline = started + budget;
        let mut epochs = board.epoch.subscribe();
        loop {
            if self.inner.is_shut() {
                return Err(ClusterError::ShutDown);
            }
            let epoch = *epochs.borrow_and_update();
            let current = board.primary.lock().current.clone();
            let member = current.and_then(|(_, id, _)| {
                self.inner
                    .members
                    .read()
                    .iter()
                    .find(|m| m.id == id)
                    .cloned()
            });
            if let Some(m) = member {
                let left = deadline.saturating_duration_since(Instant::now());
                let retired = m.retired.load(Ordering::Acquire);
                let got = {
                    let get = pin!(m.pool.get_timeout(left));
                    let mut got = None;
                    first(
                        pin!(epochs.changed()),
                        pin!(async {
                            got = Some(get.await);
                        }),
                    )
                    .await;
                    got
                };
                match got {
                    Some(Ok(conn)) if *board.epoch.borrow() == epoch => {
                        return Ok(WriteConn {
                            conn: Some(ClusterConn::new(conn, &m)),
                            member: m,
                            retired,
                        });
                    }
                    Some(Err(e)) if *board.epoch.borrow() == epoch => {
                        return Err(ClusterError::Unavailable {
                            selector: "the primary".into(),
                            pool: m.name.to_string(),
                            source: e,
                        });
                    }
                    // The primary changed while the get ran: a connection
                    // got goes back, and the new primary is tried.
                    _ => continue,
                }
            }
            let waited = tokio::time::timeout_at(deadline, epochs.changed()).await;
            if waited.is_err() {
                return Err(ClusterError::NoPrimary {
                    waited: started.elapsed(),
                    why: self.no_primary_reason(),
                });
            }
        }
    }

    /// How long a write or read may take: the cluster's acquire timeout,
    /// else its first pool's.
    pub(super) fn budget_of(&self, members: &[Arc<Member<M>>]) -> Duration {
        self.inner.acquire_timeout().unwrap_or_else(|| {
            members
                .first()
                .map_or(Duration::from_secs(30), |m| m.pool.config().acquire_timeout)
        })
    }

    /// Why no member takes writes: each one's role and its evidence.
    fn no_primary_reason(&self) -> String {
        let members = self.inner.members.read();
        if members.is_empty() {
            return "the cluster has no pools".into();
        }
        let each: Vec<String> = members
            .iter()
            .map(|m| {
                let r = m.role.lock();
                format!("{} is {} ({})", m.name, r.role, r.evidence)
            })
            .collect();
        each.join("; ")
    }
}

/// A connection to the primary, from [`Cluster::write`]. It derefs to the
/// pooled object as a [`ClusterConn`] does; if its server stops being the
/// primary while it is out, it is closed when it comes back rather than
/// returned to the pool.
pub struct WriteConn<M: Manager> {
    /// Taken only by `into_cluster_conn` and on drop.
    conn: Option<ClusterConn<M>>,
    member: Arc<Member<M>>,
    /// The member's retirements when it was handed out.
    retired: u64,
}

impl<M: Manager> WriteConn<M> {
    fn inner(&self) -> &ClusterConn<M> {
        self.conn.as_ref().expect("held until drop")
    }

    /// The name of the primary's pool.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// assert_eq!(set.write().await?.pool_name(), "main");
    /// # Ok(()) }
    /// ```
    pub fn pool_name(&self) -> &str {
        &self.member.name
    }

    /// As a plain cluster connection: returned to its pool when dropped,
    /// whatever its server became meanwhile.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let conn: aquifer::ClusterConn<Server> = set.write().await?.into_cluster_conn();
    /// assert_eq!(conn.pool_name(), "main");
    /// # Ok(()) }
    /// ```
    pub fn into_cluster_conn(mut self) -> ClusterConn<M> {
        self.conn.take().expect("held until drop")
    }
}

impl<M: Manager> Drop for WriteConn<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.member.retired.load(Ordering::Acquire) != self.retired {
                conn.into_pooled().destroy();
            }
        }
    }
}

impl<M: crate::roles::RoleManager> WriteConn<M> {
    /// A token for what this connection has committed, to read it back
    /// from a replica with [`Cluster::read_at_least`] (here or in another
    /// process: it is a string too). Take it after the commit. `None` when
    /// the driver has no tokens.
    ///
    /// # Errors
    /// The driver's, when the server cannot be asked.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, Role};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let set = replica_set().await?;
    /// let mut conn = set.write().await?;
    /// // ... the write, committed ...
    /// // `None`: this manager gives no tokens (PostgreSQL's and MariaDB's do).
    /// assert!(conn.token().await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn token(&mut self) -> Result<Option<crate::WriteToken>, M::Error> {
        let member = Arc::clone(&self.member);
        member.pool.manager().write_token(&mut **self).await
    }
}

impl<M: Manager> std::ops::Deref for WriteConn<M> {
    type Target = M::Type;

    fn deref(&self) -> &M::Type {
        self.inner()
    }
}

impl<M: Manager> std::ops::DerefMut for WriteConn<M> {
    fn deref_mut(&mut self) -> &mut M::Type {
        self.conn.as_mut().expect("held until drop")
    }
}

impl<M: Manager> std::fmt::Debug for WriteConn<M>
where
    M::Type: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteConn")
            .field("pool", &self.pool_name())
            .field("conn", &**self)
            .finish()
    }
}
