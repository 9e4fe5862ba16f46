//! A cluster get: the pool picked first, the shortcut of `get_any`, and
//! the retries on other pools within one budget.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::PoolError;
use crate::manager::Manager;
use crate::pool::{Pool, Pooled};
use crate::selector::Selector;
use crate::thread;

use super::balance::{Bits, Mode};
use super::error::ClusterError;
use super::handle::Cluster;
use super::members::Member;

/// A connection from a cluster: the pooled object and the pool it came from.
pub struct ClusterConn<M: Manager> {
    conn: Pooled<M>,
    /// The member that served it, unless its pool knows it by that name
    /// already (the usual case: a pool in one cluster), which spares the
    /// hot path a reference count.
    from: Option<Arc<Member<M>>>,
}

impl<M: Manager> ClusterConn<M> {
    pub(super) fn new(conn: Pooled<M>, m: &Arc<Member<M>>) -> Self {
        let known = conn.cluster_name().is_some_and(|n| Arc::ptr_eq(n, &m.name));
        ClusterConn {
            conn,
            from: (!known).then(|| Arc::clone(m)),
        }
    }

    /// The name of the pool that served it.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// let conn = cluster.get("eu_2").await?;
    /// assert_eq!(conn.pool_name(), "eu_2");
    /// # Ok(()) }
    /// ```
    pub fn pool_name(&self) -> &str {
        match &self.from {
            Some(m) => &m.name,
            None => self
                .conn
                .cluster_name()
                .expect("set before the pool served the cluster"),
        }
    }

    /// The pooled object itself.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// let conn: aquifer::Pooled<Server> = cluster.get("eu_1").await?.into_pooled();
    /// # drop(conn);
    /// # Ok(()) }
    /// ```
    pub fn into_pooled(self) -> Pooled<M> {
        self.conn
    }
}

impl<M: Manager> fmt::Debug for ClusterConn<M>
where
    M::Type: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConn")
            .field("pool", &self.pool_name())
            .field("conn", &self.conn)
            .finish()
    }
}

impl<M: Manager> Deref for ClusterConn<M> {
    type Target = M::Type;

    fn deref(&self) -> &M::Type {
        &self.conn
    }
}

impl<M: Manager> DerefMut for ClusterConn<M> {
    fn deref_mut(&mut self) -> &mut M::Type {
        &mut self.conn
    }
}

/// A get's full path, boxed: it waits anyway, and unboxed it would make
/// every `get_any` future (built on each call) over a kilobyte.
type FullGet<'a, M> = Pin<
    Box<
        dyn Future<Output = Result<ClusterConn<M>, ClusterError<<M as Manager>::Error>>>
            + Send
            + 'a,
    >,
>;

/// The future of [`Cluster::get_any`]. As a pool's own get does, its first
/// poll spends the task's share of the cooperative budget and hands out the
/// first choice's idle object in place, straight from the match (returned
/// through a local that an await could see, the connection would be stored
/// in the future and read back, a stall on every get). Anything else goes
/// on to the full path.
struct GetAny<'a, M: Manager> {
    cluster: &'a Cluster<M>,
    /// Handed out from the first poll: polling again is a bug in the
    /// caller, which must not check out a second connection.
    done: bool,
    full: Option<FullGet<'a, M>>,
}

impl<'a, M: Manager> Future for GetAny<'a, M> {
    type Output = Result<ClusterConn<M>, ClusterError<M::Error>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.full.is_none() {
            assert!(
                !this.done,
                "a cluster's get future was polled after it completed"
            );
            std::task::ready!(thread::poll_budget(cx));
            let c: &'a Cluster<M> = this.cluster;
            this.full = Some(match c.quick_any() {
                Quick::Got(conn) => {
                    this.done = true;
                    return Poll::Ready(Ok(conn));
                }
                Quick::Then(first, n) => Box::pin(c.get_from(Selector::Any, first, n)),
                Quick::No => Box::pin(c.get_general(Selector::Any)),
            });
        }
        this.full.as_mut().expect("started above").as_mut().poll(cx)
    }
}

/// How `get_any`'s first, synchronous step ended.
enum Quick<M: Manager> {
    /// The first choice had an idle object.
    Got(ClusterConn<M>),
    /// The first choice had no idle object ready: a full get, owning it.
    Then(Arc<Member<M>>, usize),
    /// No quick choice (least busy, a ban, a shutdown, nothing active).
    No,
}

/// The pool a get tries first, and how many pools are eligible.
type Choice<M> = (Arc<Member<M>>, usize);

impl<M: Manager> Cluster<M> {
    /// Which pools a get may use: those `sel` matches that are active and
    /// not banned, or, when every active match is banned, those (they are
    /// tried anyway rather than failing blind).
    fn eligible(
        &self,
        members: &[Arc<Member<M>>],
        sel: &Selector,
    ) -> Result<(Bits, usize), ClusterError<M::Error>> {
        if self.inner.is_shut() {
            return Err(ClusterError::ShutDown);
        }
        if sel.is_empty() {
            return Err(ClusterError::EmptySelector);
        }
        let mut matched = false;
        let mut active = Bits::new(members.len());
        let mut healthy = Bits::new(members.len());
        for (i, m) in members.iter().enumerate() {
            if sel.matches(&m.name, &m.tags) {
                matched = true;
                if m.active() {
                    active.set(i);
                    if !self.banned(m) {
                        healthy.set(i);
                    }
                }
            }
        }
        match (healthy.count(), active.count()) {
            (n, _) if n > 0 => Ok((healthy, n)),
            (_, n) if n > 0 => Ok((active, n)),
            _ if matched => Err(ClusterError::Frozen(sel.to_string())),
            _ => Err(ClusterError::NoMatch(sel.to_string())),
        }
    }

    /// The pool a get tries first, by the cluster's mode, and how many pools
    /// are eligible. Allocates nothing but the eligibility flags.
    fn first_choice(&self, sel: &Selector) -> Result<Choice<M>, ClusterError<M::Error>> {
        let members = self.inner.members.read();
        let (ok, n) = self.eligible(&members, sel)?;
        let pick = self.inner.pick(self.mode(), &members, &ok, true);
        Ok((Arc::clone(&members[pick]), n))
    }

    /// A connection from one of the active pools `sel` matches, picked by
    /// the cluster's mode. A pool whose get fails with a connection error
    /// is banned for `ban_time` and the next one is tried, within one
    /// overall acquire timeout, so a dead server costs latency, not an
    /// error, while another server is alive. Each pool tried gets an equal
    /// share of what is left of that timeout.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`], [`ClusterError::Frozen`] (every match is
    /// frozen), [`ClusterError::Unavailable`] (with the last pool's error),
    /// [`ClusterError::EmptySelector`], [`ClusterError::ShutDown`].
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// let conn = cluster.get("us_1").await?;
    /// assert_eq!(conn.pool_name(), "us_1");
    /// assert_eq!(*conn, "us_1"); // derefs to the connection
    /// let conn = cluster.get("eu_*").await?; // round-robin over eu_1, eu_2
    /// assert!(conn.pool_name().starts_with("eu_"));
    /// # Ok(()) }
    /// ```
    pub async fn get(
        &self,
        sel: impl Into<Selector>,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let sel = sel.into();
        if matches!(sel, Selector::Any) {
            return self.get_any().await;
        }
        self.get_general(sel).await
    }

    /// A get by selector, without `get_any`'s shortcut.
    async fn get_general(&self, sel: Selector) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let (first, n) = self.first_choice(&sel)?;
        self.get_from(sel, first, n).await
    }

    /// The rest of a get once its first choice is made: that pool, then
    /// the other eligible ones.
    async fn get_from(
        &self,
        sel: Selector,
        first: Arc<Member<M>>,
        n: usize,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let budget = self.budget(&first);
        let share = budget / u32::try_from(n).unwrap_or(u32::MAX);
        match self.try_one(first, share).await {
            Ok(conn) => Ok(conn),
            Err((first, error)) => self.get_after(sel, first, error, n, budget, share).await,
        }
    }

    /// How long a whole get may take.
    fn budget(&self, first: &Member<M>) -> Duration {
        self.inner
            .acquire_timeout()
            .unwrap_or_else(|| first.pool.config().acquire_timeout)
    }

    /// The rest of a get after its first pool failed with `error`: the
    /// other eligible pools, each with an equal share of what is left.
    async fn get_after(
        &self,
        sel: Selector,
        first: Arc<Member<M>>,
        error: PoolError<M::Error>,
        n: usize,
        budget: Duration,
        share: Duration,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        if n == 1 {
            return Err(ClusterError::Unavailable {
                selector: sel.to_string(),
                pool: first.name.to_string(),
                source: error,
            });
        }
        // The first try may have used its whole share; count it as such.
        let deadline = crate::clock::later(budget.saturating_sub(share));
        let mut last = (first.name.to_string(), error);
        // The other eligible pools, each picked as the first one was.
        let list = self.inner.members.read_full();
        let mut left = match self.eligible(&list, &sel) {
            Ok((ok, _)) => ok,
            Err(_) => Bits::new(0),
        };
        if let Some(i) = list.ids.iter().position(|&id| id == first.id) {
            left.remove(i);
        }
        let mode = self.mode();
        loop {
            let pools_left = left.count();
            let time_left = deadline.saturating_duration_since(Instant::now());
            if pools_left == 0 || time_left.is_zero() {
                break;
            }
            let share = time_left / u32::try_from(pools_left).unwrap_or(u32::MAX);
            let i = self.inner.pick(mode, &list, &left, false);
            left.remove(i);
            match self.try_one(Arc::clone(&list[i]), share).await {
                Ok(conn) => return Ok(conn),
                Err((m, e)) => last = (m.name.to_string(), e),
            }
        }
        Err(ClusterError::Unavailable {
            selector: sel.to_string(),
            pool: last.0,
            source: last.1,
        })
    }

    /// `get_any`'s first choice while no pool is banned: one pass over the
    /// members, no selector to match, no lock taken, nothing allocated.
    /// `Quick::No` sends the get down the general path.
    // Inlined into `get_any`, so that its result stays in registers.
    #[inline(always)]
    fn quick_any(&self) -> Quick<M> {
        let mode = self.mode();
        if self.inner.is_shut() {
            return Quick::No;
        }
        let members = self.inner.members.read_local();
        if members.len() > 64 || members.banned.load(Ordering::Acquire) != 0 {
            return Quick::No;
        }
        let active = members.active.load(Ordering::Acquire);
        if active == 0 {
            return Quick::No;
        }
        let n = active.count_ones() as usize;
        let i = self.inner.pick(mode, &members, &Bits::Small(active), true);
        // While the member list is borrowed, an idle object that can go out
        // as it is comes back at once, with no reference taken to the
        // member. Anything else (no idle object, others waiting, a borrow
        // check due) is left to a full get that owns the member.
        let m = &members[i];
        match m.pool.take_ready() {
            Some(conn) => {
                if mode == Mode::Failover {
                    self.inner.stick_to(m.id);
                }
                Quick::Got(ClusterConn::new(conn, m))
            }
            None => Quick::Then(Arc::clone(m), n),
        }
    }

    /// One pool's get; a connection error bans the pool.
    pub(super) async fn try_one(
        &self,
        m: Arc<Member<M>>,
        timeout: Duration,
    ) -> Result<ClusterConn<M>, (Arc<Member<M>>, PoolError<M::Error>)> {
        match m.pool.get_timeout(timeout).await {
            Ok(conn) => {
                if self.mode() == Mode::Failover {
                    self.inner.stick_to(m.id);
                }
                Ok(ClusterConn::new(conn, &m))
            }
            Err(e) => {
                if e.create_error().is_some() {
                    self.inner.ban(&m, &e);
                }
                Err((m, e))
            }
        }
    }

    /// A connection from any active pool.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// let conn = cluster.get_any().await?;
    /// assert!(cluster.names().contains(&conn.pool_name().to_owned()));
    /// # Ok(()) }
    /// ```
    pub fn get_any(
        &self,
    ) -> impl Future<Output = Result<ClusterConn<M>, ClusterError<M::Error>>> + Send + '_ {
        GetAny {
            cluster: self,
            done: false,
            full: None,
        }
    }

    /// The pool a get would try first.
    ///
    /// # Errors
    /// As [`get`](Cluster::get), without `Unavailable`.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// let pool = cluster.pool("us_*")?; // the pool a get would use first
    /// let conn = pool.get().await?;
    /// assert_eq!(*conn, "us_1");
    /// # Ok(()) }
    /// ```
    pub fn pool(&self, sel: impl Into<Selector>) -> Result<Pool<M>, ClusterError<M::Error>> {
        let (first, _) = self.first_choice(&sel.into())?;
        Ok(first.pool.clone())
    }
}
