//! The cluster's handle and the operator's controls: adding and removing
//! pools, freezing, banning, shutting down.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::manager::Manager;
use crate::pool::Pool;
use crate::selector::Selector;

use super::balance::Mode;
use super::error::ClusterError;
use super::members::{check_name, ClusterPool, Member, Retired};
use super::shared::ClusterShared;
use super::watcher::Watcher;

/// Named pools over several servers, with operator controls.
///
/// ```
/// # use std::convert::Infallible;
/// # struct Server(&'static str);
/// # impl aquifer::Manager for Server {
/// #     type Type = &'static str;
/// #     type Error = Infallible;
/// #     async fn create(&self) -> Result<&'static str, Infallible> { Ok(self.0) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use aquifer::{Cluster, ClusterPool, Pool};
///
/// let cluster = Cluster::builder().build();
/// for name in ["asia_1", "asia_2", "africa_1"] {
///     cluster.add(ClusterPool::new(name, Pool::builder(Server(name)).build()?))?;
/// }
/// let conn = cluster.get("asia_*").await?; // round-robin over asia_1, asia_2
/// assert!(conn.pool_name().starts_with("asia_"));
/// cluster.freeze("asia_1")?;                // no new gets there
/// assert_eq!(cluster.active(), ["asia_2", "africa_1"]);
/// # Ok(())
/// # }
/// ```
pub struct Cluster<M: Manager> {
    pub(super) inner: Arc<ClusterShared<M>>,
}

impl<M: Manager> Clone for Cluster<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: Manager> fmt::Debug for Cluster<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("pools", &self.names())
            .field("frozen", &self.frozen())
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Cluster<M> {
    /// Adds a pool. Inside a Tokio runtime its trouble events (failed
    /// creates and closes, full queues, timeouts, failed queries) become
    /// [`warnings`](Cluster::warnings).
    ///
    /// # Errors
    /// [`ClusterError::Duplicate`], [`ClusterError::InvalidName`],
    /// [`ClusterError::ShutDown`].
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.add(ClusterPool::new("ap_1", Pool::builder(Server("ap_1")).build()?).tag("asia"))?;
    /// assert_eq!(cluster.select(aquifer::Selector::tag("asia"))?, ["ap_1"]);
    /// // A second pool by one name is refused.
    /// assert!(cluster.add(ClusterPool::new("ap_1", Pool::builder(Server("ap_1")).build()?)).is_err());
    /// # Ok(()) }
    /// ```
    pub fn add(&self, p: ClusterPool<M>) -> Result<(), ClusterError<M::Error>> {
        check_name(&p.name)?;
        if self.inner.is_shut() {
            return Err(ClusterError::ShutDown);
        }
        let mut members = self.inner.members.write();
        if members.get().iter().any(|m| *m.name == *p.name) {
            return Err(ClusterError::Duplicate(p.name));
        }
        let watcher = Watcher::start(&p.pool, self.inner.event_recorder(p.name.clone()));
        let id = self.inner.next_member_id();
        let name: Arc<str> = p.name.into();
        // The first cluster name sticks; in another cluster the pool's
        // connections keep a reference to their member instead.
        p.pool.set_cluster_name(&name);
        let member = Arc::new(Member::new(id, name, (p.pool, p.tags, p.weight), watcher));
        if let Some(board) = &self.inner.roles {
            board.watch(Arc::downgrade(&self.inner), &member);
        }
        members.push(member);
        Ok(())
    }

    /// The pools' names, in the order they were added.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert_eq!(cluster.names(), ["eu_1", "eu_2", "us_1"]);
    /// # Ok(()) }
    /// ```
    pub fn names(&self) -> Vec<String> {
        self.inner
            .members
            .read()
            .iter()
            .map(|m| m.name.to_string())
            .collect()
    }

    pub(super) fn matching(
        &self,
        sel: &Selector,
    ) -> Result<Vec<Arc<Member<M>>>, ClusterError<M::Error>> {
        if sel.is_empty() {
            return Err(ClusterError::EmptySelector);
        }
        let found: Vec<_> = self
            .inner
            .members
            .read()
            .iter()
            .filter(|m| sel.matches(&m.name, &m.tags))
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(ClusterError::NoMatch(sel.to_string()));
        }
        Ok(found)
    }

    /// Whether `m` is banned now. A ban that ran out is cleared, and the
    /// summary `get_any` reads follows.
    pub(super) fn banned(&self, m: &Member<M>) -> bool {
        let was = m.ban_flag();
        let now = m.is_banned();
        if was && !now {
            self.inner.members.flags_changed();
        }
        now
    }

    /// Stops new gets on the matching pools; connections already out keep
    /// working. Returns how many pools matched.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`], [`ClusterError::EmptySelector`].
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert_eq!(cluster.freeze("eu_*")?, 2); // no new gets from either
    /// assert!(cluster.get("eu_*").await.is_err());
    /// assert_eq!(cluster.get_any().await?.pool_name(), "us_1");
    /// # Ok(()) }
    /// ```
    pub fn freeze(&self, sel: impl Into<Selector>) -> Result<usize, ClusterError<M::Error>> {
        self.set_frozen(sel.into(), true)
    }

    /// Lets the matching pools take gets again. Returns how many matched.
    ///
    /// # Errors
    /// As [`freeze`](Cluster::freeze).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.freeze("eu_1")?;
    /// assert_eq!(cluster.unfreeze("eu_1")?, 1);
    /// assert!(!cluster.has_frozen("eu_1"));
    /// # Ok(()) }
    /// ```
    pub fn unfreeze(&self, sel: impl Into<Selector>) -> Result<usize, ClusterError<M::Error>> {
        self.set_frozen(sel.into(), false)
    }

    fn set_frozen(&self, sel: Selector, frozen: bool) -> Result<usize, ClusterError<M::Error>> {
        let found = self.matching(&sel)?;
        for m in &found {
            m.set_frozen(frozen);
        }
        self.inner.members.flags_changed();
        tracing::info!(target: "aquifer::cluster", selector = %sel, pools = found.len(), frozen, "freeze changed");
        Ok(found.len())
    }

    fn list(&self, frozen: bool) -> Vec<String> {
        self.inner
            .members
            .read()
            .iter()
            .filter(|m| m.is_frozen() == frozen)
            .map(|m| m.name.to_string())
            .collect()
    }

    /// The names of the pools `sel` matches, whatever their state, in the
    /// order they were added.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`], [`ClusterError::EmptySelector`].
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert_eq!(cluster.select("eu_*")?, ["eu_1", "eu_2"]);
    /// assert!(cluster.select("asia_*").is_err()); // matches nothing
    /// # Ok(()) }
    /// ```
    pub fn select(&self, sel: impl Into<Selector>) -> Result<Vec<String>, ClusterError<M::Error>> {
        Ok(self
            .matching(&sel.into())?
            .iter()
            .map(|m| m.name.to_string())
            .collect())
    }

    /// The pool with this exact name, whatever its state (frozen, banned);
    /// `None` when no pool has that name.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// let pool = cluster.pool_named("eu_2").expect("added above");
    /// assert_eq!(pool.status().borrowed, 0);
    /// assert!(cluster.pool_named("eu").is_none()); // exact names only
    /// # Ok(()) }
    /// ```
    pub fn pool_named(&self, name: &str) -> Option<Pool<M>> {
        self.inner
            .members
            .read()
            .iter()
            .find(|m| &*m.name == name)
            .map(|m| m.pool.clone())
    }

    /// The frozen pools' names.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.freeze("us_1")?;
    /// assert_eq!(cluster.frozen(), ["us_1"]);
    /// # Ok(()) }
    /// ```
    pub fn frozen(&self) -> Vec<String> {
        self.list(true)
    }

    /// The active (not frozen) pools' names.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.freeze("us_1")?;
    /// assert_eq!(cluster.active(), ["eu_1", "eu_2"]);
    /// # Ok(()) }
    /// ```
    pub fn active(&self) -> Vec<String> {
        self.list(false)
    }

    /// Whether any pool matching `sel` is frozen.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.freeze("eu_2")?;
    /// assert!(cluster.has_frozen("eu_*"));
    /// assert!(!cluster.has_frozen("us_1"));
    /// # Ok(()) }
    /// ```
    pub fn has_frozen(&self, sel: impl Into<Selector>) -> bool {
        self.matching(&sel.into())
            .is_ok_and(|v| v.iter().any(|m| m.is_frozen()))
    }

    /// Whether any pool matching `sel` is active.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.freeze("eu_*")?;
    /// assert!(!cluster.has_active("eu_*"));
    /// assert!(cluster.has_active("*"));
    /// # Ok(()) }
    /// ```
    pub fn has_active(&self, sel: impl Into<Selector>) -> bool {
        self.matching(&sel.into())
            .is_ok_and(|v| v.iter().any(|m| m.active()))
    }

    /// Whether the pool is banned now (its gets failed with connection errors).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// use std::time::Duration;
    ///
    /// cluster.ban("eu_1", Some(Duration::from_secs(30)))?;
    /// assert!(cluster.is_banned("eu_1"));
    /// assert!(!cluster.is_banned("eu_2"));
    /// # Ok(()) }
    /// ```
    pub fn is_banned(&self, name: &str) -> bool {
        self.inner
            .members
            .read()
            .iter()
            .any(|m| &*m.name == name && self.banned(m))
    }

    /// Bans the matching pools for `for_` (the cluster's `ban_time` when
    /// `None`), as a failed get would: gets go elsewhere until it runs out
    /// or [`unban`](Cluster::unban). Returns how many pools matched.
    ///
    /// # Errors
    /// As [`freeze`](Cluster::freeze).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// use std::time::Duration;
    ///
    /// assert_eq!(cluster.ban("eu_*", Some(Duration::from_secs(30)))?, 2);
    /// assert_eq!(cluster.get_any().await?.pool_name(), "us_1"); // the others are banned
    /// # Ok(()) }
    /// ```
    pub fn ban(
        &self,
        sel: impl Into<Selector>,
        for_: Option<Duration>,
    ) -> Result<usize, ClusterError<M::Error>> {
        let sel = sel.into();
        let found = self.matching(&sel)?;
        let for_ = for_.unwrap_or(self.inner.ban_time());
        for m in &found {
            m.ban(for_, "by an operator".to_owned());
            self.inner.warn(
                Some(&m.name),
                format!(
                    "banned for {} by an operator",
                    crate::error::human_duration(for_)
                ),
            );
        }
        self.inner.members.flags_changed();
        Ok(found.len())
    }

    /// Lifts the ban on the matching pools. Returns how many matched.
    ///
    /// # Errors
    /// As [`freeze`](Cluster::freeze).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// cluster.ban("us_1", None)?;
    /// assert_eq!(cluster.unban("us_1")?, 1);
    /// assert!(!cluster.is_banned("us_1"));
    /// # Ok(()) }
    /// ```
    pub fn unban(&self, sel: impl Into<Selector>) -> Result<usize, ClusterError<M::Error>> {
        let found = self.matching(&sel.into())?;
        for m in &found {
            m.unban();
        }
        self.inner.members.flags_changed();
        Ok(found.len())
    }

    /// Removes the matching pools gracefully: they take no new gets at once,
    /// connections already out are waited for (up to `wait`), then the
    /// pools close. Connections that fail to close stay in
    /// [`pending`](Cluster::pending). Returns how many pools were removed.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`] (nothing to remove),
    /// [`ClusterError::EmptySelector`].
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// use std::time::Duration;
    ///
    /// assert_eq!(cluster.remove("us_1", Duration::from_secs(1)).await?, 1);
    /// assert_eq!(cluster.names(), ["eu_1", "eu_2"]);
    /// # Ok(()) }
    /// ```
    pub async fn remove(
        &self,
        sel: impl Into<Selector>,
        wait: Duration,
    ) -> Result<usize, ClusterError<M::Error>> {
        let sel = sel.into();
        let found = self.matching(&sel)?;
        self.inner
            .members
            .write()
            .retain(|m| !found.iter().any(|f| Arc::ptr_eq(f, m)));
        for m in &found {
            if let Some(task) = m.checker.lock().take() {
                task.abort();
            }
        }
        self.inner.decide_primary();
        for m in &found {
            if tokio::time::timeout(wait, m.pool.drain()).await.is_err() {
                self.inner.warn(
                    Some(&m.name),
                    format!(
                        "removed with connections still out after {}; they close on return",
                        crate::error::human_duration(wait)
                    ),
                );
            }
            m.pool.close().await;
            // The close's failures become warnings before `remove` returns.
            // A pool left with pending connections stays watched, so that
            // `close_pending` retries that fail warn too.
            let watcher = m.watcher.lock().take();
            if !m.pool.pending().is_empty() {
                if let Some(w) = &watcher {
                    w.flush().await;
                }
                self.inner.keep_retired(Retired {
                    name: m.name.to_string(),
                    pool: m.pool.clone(),
                    watcher,
                });
            } else if let Some(w) = watcher {
                w.finish().await;
            }
            tracing::info!(target: "aquifer::cluster", pool = %m.name, "removed");
        }
        Ok(found.len())
    }

    /// The current mode.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert_eq!(cluster.mode(), aquifer::Mode::RoundRobin);
    /// # Ok(()) }
    /// ```
    pub fn mode(&self) -> Mode {
        self.inner.mode()
    }

    /// Changes the mode for the gets that follow.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// use aquifer::Mode;
    ///
    /// cluster.set_mode(Mode::Failover); // the first pool that works, in order
    /// assert_eq!(cluster.get_any().await?.pool_name(), "eu_1");
    /// # Ok(()) }
    /// ```
    pub fn set_mode(&self, mode: Mode) {
        self.inner.set_mode(mode);
    }

    pub(super) fn all_pools(&self) -> Vec<(String, Pool<M>)> {
        let mut all: Vec<_> = self
            .inner
            .members
            .read()
            .iter()
            .map(|m| (m.name.to_string(), m.pool.clone()))
            .collect();
        all.extend(
            self.inner
                .with_retired(|r| (r.name.clone(), r.pool.clone())),
        );
        all
    }

    /// Tries to close the pending connections again; with `force`, drops
    /// them ignoring errors. Returns how many are still pending.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// assert_eq!(cluster.close_pending(false).await, 0); // nothing failed to close
    /// # Ok(()) }
    /// ```
    pub async fn close_pending(&self, force: bool) -> usize {
        let mut left = 0;
        for (_, pool) in self.all_pools() {
            left += pool.close_pending(force).await;
        }
        // Retired pools whose connections all closed are let go; every
        // other pool's failed retries are warnings before this returns.
        let closed = self.inner.release_retired();
        for r in closed {
            if let Some(w) = r.watcher {
                w.finish().await;
            }
        }
        let mut flushes: Vec<_> = self
            .inner
            .members
            .read()
            .iter()
            .filter_map(|m| m.watcher.lock().as_ref().map(Watcher::flush))
            .collect();
        flushes.extend(
            self.inner
                .with_retired(|r| r.watcher.as_ref().map(Watcher::flush))
                .into_iter()
                .flatten(),
        );
        for flushed in flushes {
            flushed.await;
        }
        left
    }

    /// Removes every pool gracefully (waiting up to `wait` for connections
    /// out), then closes pending connections (`force` drops those that
    /// still fail). Later gets fail with [`ClusterError::ShutDown`].
    /// Returns how many connections are still pending.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// use std::time::Duration;
    ///
    /// let left = cluster.shutdown(Duration::from_secs(1), false).await;
    /// assert_eq!(left, 0);
    /// assert!(cluster.get_any().await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self, wait: Duration, force: bool) -> usize {
        self.inner.shut_down();
        let _ = self.remove(Selector::Any, wait).await;
        self.close_pending(force).await
    }
}
