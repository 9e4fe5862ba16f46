//! Many named pools over many servers, picked by name, glob, regex or tag.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::eventlog::EventLog;
use crate::selector::RegexError;
use crate::{Manager, PendingInfo, Pool, PoolError, PoolEvent, Pooled, Selector};

/// How a [`Cluster`] picks among the pools a selector matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Mode {
    /// Each in turn, in the order they were added. The default.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The one with the fewest borrowed connections and waiting callers.
    LeastBusy,
    /// At random, in proportion to each pool's weight.
    Weighted,
    /// The first in order that works, and it stays the choice until it
    /// fails.
    Failover,
}

/// A pool and how the cluster knows it, for [`Cluster::add`].
pub struct ClusterPool<M: Manager> {
    name: String,
    pool: Pool<M>,
    tags: Vec<String>,
    weight: u32,
}

impl<M: Manager> ClusterPool<M> {
    /// `pool` under `name` (non-empty, without `*`, `?`, brackets or spaces).
    pub fn new(name: impl Into<String>, pool: Pool<M>) -> Self {
        Self {
            name: name.into(),
            pool,
            tags: Vec::new(),
            weight: 1,
        }
    }

    /// Adds a tag (`primary`, `replica`, a region…) that [`Selector::Tag`] finds.
    #[must_use]
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_owned());
        self
    }

    /// The share of gets in [`Mode::Weighted`]. Default 1.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// Something that went wrong in a cluster, kept for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Warning {
    /// When it happened.
    pub at: SystemTime,
    /// The pool concerned, if one is.
    pub pool: Option<String>,
    /// What happened.
    pub message: String,
}

/// A connection that failed to close, in a pool of the cluster or in one
/// removed from it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterPending {
    /// The pool's name.
    pub pool: String,
    /// The object and its error.
    pub info: PendingInfo,
}

/// A cluster at a glance, from [`Cluster::info`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClusterInfo {
    /// How gets pick a pool.
    pub mode: Mode,
    /// Pools in the cluster.
    pub pools: usize,
    /// Pools taking gets.
    pub active: usize,
    /// Frozen pools.
    pub frozen: usize,
    /// Pools banned now.
    pub banned: usize,
    /// Warnings in memory.
    pub warnings: usize,
    /// Connections that failed to close.
    pub pending: usize,
    /// Connections open in all pools.
    pub size: usize,
    /// Idle connections in all pools.
    pub idle: usize,
    /// Borrowed connections in all pools.
    pub borrowed: usize,
    /// Callers waiting in all pools.
    pub waiting: usize,
}

/// One pool of a cluster, from [`Cluster::info_about`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolInfo {
    /// Unique within the cluster, in the order pools were added.
    pub id: u64,
    /// The pool's name.
    pub name: String,
    /// When it was added.
    pub created_at: SystemTime,
    /// The manager's [`driver_name`](Manager::driver_name).
    pub driver: &'static str,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its weight in [`Mode::Weighted`].
    pub weight: u32,
    /// Whether it is frozen.
    pub frozen: bool,
    /// How much longer it is banned, if it is.
    pub banned_for: Option<Duration>,
    /// Connection counts.
    pub status: crate::Status,
    /// Counters and latencies.
    pub metrics: crate::Metrics,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError<E: std::error::Error + 'static> {
    /// A pool of that name is already in the cluster.
    #[error("a pool named `{0}` is already in the cluster; remove it first or pick another name")]
    Duplicate(String),
    /// The name cannot be used.
    #[error("invalid pool name `{name}`: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// A regex selector that does not compile.
    #[error(transparent)]
    Regex(#[from] RegexError),
    /// The selector names nothing.
    #[error("empty selector: give a pool name, a glob such as `asia_*`, a regex or a tag")]
    EmptySelector,
    /// No pool matches the selector.
    #[error("no pool matches `{0}`")]
    NoMatch(String),
    /// Every pool the selector matches is frozen.
    #[error("`{0}` is frozen: it serves connections already out but takes no new gets")]
    Frozen(String),
    /// Every matching pool was tried and none could serve in time; the
    /// source is the last pool's error.
    #[error("no pool matching `{selector}` could serve; `{pool}` failed last: {source}")]
    Unavailable {
        /// The selector.
        selector: String,
        /// The last pool tried.
        pool: String,
        /// Its error.
        #[source]
        source: PoolError<E>,
    },
    /// The cluster was shut down.
    #[error("the cluster is shut down")]
    ShutDown,
}

struct Member<M: Manager> {
    id: u64,
    added_at: SystemTime,
    name: String,
    pool: Pool<M>,
    tags: Vec<String>,
    weight: u32,
    frozen: AtomicBool,
    banned_until: Mutex<Option<Instant>>,
    watcher: Option<tokio::task::AbortHandle>,
}

impl<M: Manager> Member<M> {
    fn banned(&self, now: Instant) -> bool {
        self.banned_until.lock().is_some_and(|until| until > now)
    }

    fn load(&self) -> usize {
        let s = self.pool.status();
        s.borrowed + s.waiting
    }
}

impl<M: Manager> Drop for Member<M> {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

struct Inner<M: Manager> {
    members: RwLock<Vec<Arc<Member<M>>>>,
    mode: Mutex<Mode>,
    cursor: AtomicUsize,
    sticky: Mutex<Option<String>>,
    warnings: Mutex<VecDeque<Warning>>,
    /// Removed pools that still hold connections that failed to close.
    retired: Mutex<Vec<(String, Pool<M>)>>,
    ban_time: Duration,
    max_warnings: usize,
    acquire_timeout: Option<Duration>,
    shut: AtomicBool,
    log: Option<EventLog>,
    next_id: std::sync::atomic::AtomicU64,
}

impl<M: Manager> Inner<M> {
    fn warn(&self, pool: Option<&str>, message: String) {
        tracing::warn!(target: "aquifer::cluster", pool, %message, "cluster warning");
        let w = Warning {
            at: SystemTime::now(),
            pool: pool.map(str::to_owned),
            message,
        };
        if let Some(log) = &self.log {
            log.append(&w);
        }
        let mut all = self.warnings.lock();
        if all.len() >= self.max_warnings {
            all.pop_front();
        }
        all.push_back(w);
    }
}

/// Settings for a [`Cluster`] of pools of `M`.
#[must_use]
pub struct ClusterBuilder<M: Manager> {
    mode: Mode,
    ban_time: Duration,
    max_warnings: usize,
    acquire_timeout: Option<Duration>,
    log: Option<(PathBuf, u64)>,
    manager: std::marker::PhantomData<fn() -> M>,
}

impl<M: Manager> fmt::Debug for ClusterBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("mode", &self.mode)
            .field("ban_time", &self.ban_time)
            .field("max_warnings", &self.max_warnings)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl<M: Manager> Default for ClusterBuilder<M> {
    fn default() -> Self {
        Self {
            mode: Mode::RoundRobin,
            ban_time: Duration::from_secs(30),
            max_warnings: 1000,
            acquire_timeout: None,
            log: None,
            manager: std::marker::PhantomData,
        }
    }
}

impl<M: Manager> ClusterBuilder<M> {
    /// How gets pick a pool. Default [`Mode::RoundRobin`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How long a pool whose gets fail with connection errors is skipped.
    /// Default 30 s.
    pub fn ban_time(mut self, ban_time: Duration) -> Self {
        self.ban_time = ban_time;
        self
    }

    /// Warnings kept in memory; the oldest go first. Default 1000.
    pub fn max_warnings(mut self, n: usize) -> Self {
        self.max_warnings = n.max(1);
        self
    }

    /// The whole budget of one cluster `get`, retries on other pools
    /// included. Default: the acquire timeout of the first pool tried.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Appends every warning as a JSON line (`at_ms`, `pool`, `message`) to
    /// `path`, kept across restarts and read back by
    /// [`log_messages`](Cluster::log_messages). Past `max_bytes` the file
    /// moves to `path.1` and a new one starts. A thread of its own writes, so
    /// logging never holds up a get. Default: no file.
    pub fn log_file(mut self, path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        self.log = Some((path.into(), max_bytes.max(1)));
        self
    }

    /// An empty cluster. If the event log cannot be opened, the cluster
    /// works without it and says so in its first warning; use
    /// [`try_build`](ClusterBuilder::try_build) to get the error instead.
    pub fn build(mut self) -> Cluster<M> {
        let (log, failure) = match self.log.take() {
            None => (None, None),
            Some((path, max)) => match EventLog::open(&path, max) {
                Ok(log) => (Some(log), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "event log {} unavailable ({e}); warnings stay in memory only",
                        path.display()
                    )),
                ),
            },
        };
        let cluster = self.assemble(log);
        if let Some(message) = failure {
            cluster.inner.warn(None, message);
        }
        cluster
    }

    /// An empty cluster.
    ///
    /// # Errors
    /// The I/O error when the event log file cannot be opened.
    pub fn try_build(mut self) -> std::io::Result<Cluster<M>> {
        let log = match self.log.take() {
            Some((path, max)) => Some(EventLog::open(&path, max)?),
            None => None,
        };
        Ok(self.assemble(log))
    }

    fn assemble(self, log: Option<EventLog>) -> Cluster<M> {
        Cluster {
            inner: Arc::new(Inner {
                members: RwLock::new(Vec::new()),
                mode: Mutex::new(self.mode),
                cursor: AtomicUsize::new(0),
                sticky: Mutex::new(None),
                warnings: Mutex::new(VecDeque::new()),
                retired: Mutex::new(Vec::new()),
                ban_time: self.ban_time,
                max_warnings: self.max_warnings,
                acquire_timeout: self.acquire_timeout,
                shut: AtomicBool::new(false),
                log,
                next_id: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }
}

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
    inner: Arc<Inner<M>>,
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

/// A connection from a cluster: the pooled object and the pool it came from.
pub struct ClusterConn<M: Manager> {
    conn: Pooled<M>,
    pool: String,
}

impl<M: Manager> ClusterConn<M> {
    /// The name of the pool that served it.
    pub fn pool_name(&self) -> &str {
        &self.pool
    }

    /// The pooled object itself.
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
            .field("pool", &self.pool)
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

/// The warning a pool event is worth, if any.
fn warning_of(e: &PoolEvent) -> Option<String> {
    Some(match e {
        PoolEvent::CreateFailed {
            error,
            failures,
            retry_in,
        } => format!("create failed ({failures} in a row, next try in {retry_in:?}): {error}"),
        PoolEvent::DestroyFailed { id, error } => {
            format!("connection {id} failed to close (kept as pending): {error}")
        }
        PoolEvent::MaxReached { max, waiting } => {
            format!("all {max} connections in use; {waiting} caller(s) waiting")
        }
        PoolEvent::QueueTimeout { waited } => format!("a caller gave up after waiting {waited:?}"),
        PoolEvent::QueueFull { max_waiting } => {
            format!("wait queue full ({max_waiting}); a caller was refused")
        }
        PoolEvent::OperationFailed { op, error } => format!("{} failed: {error}", op.as_str()),
        _ => return None,
    })
}

fn check_name<E: std::error::Error>(name: &str) -> Result<(), ClusterError<E>> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains(['*', '?', '[', ']', '{', '}']) {
        "it must not contain pattern characters (* ? [ ] { })"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it must not contain spaces or control characters"
    } else {
        return Ok(());
    };
    Err(ClusterError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

impl<M: Manager> Cluster<M> {
    /// Settings for a new cluster.
    pub fn builder() -> ClusterBuilder<M> {
        ClusterBuilder::default()
    }

    /// Adds a pool. Inside a Tokio runtime its trouble events (failed
    /// creates and closes, full queues, timeouts, failed queries) become
    /// [`warnings`](Cluster::warnings).
    ///
    /// # Errors
    /// [`ClusterError::Duplicate`], [`ClusterError::InvalidName`],
    /// [`ClusterError::ShutDown`].
    pub fn add(&self, p: ClusterPool<M>) -> Result<(), ClusterError<M::Error>> {
        check_name(&p.name)?;
        if self.inner.shut.load(Ordering::Acquire) {
            return Err(ClusterError::ShutDown);
        }
        let mut members = self.inner.members.write();
        if members.iter().any(|m| m.name == p.name) {
            return Err(ClusterError::Duplicate(p.name));
        }
        let watcher = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let mut events = p.pool.events();
            let (inner, name): (Weak<Inner<M>>, String) =
                (Arc::downgrade(&self.inner), p.name.clone());
            rt.spawn(async move {
                while let Some(e) = events.recv().await {
                    let Some(inner) = inner.upgrade() else { return };
                    if let Some(message) = warning_of(&e) {
                        inner.warn(Some(&name), message);
                    }
                }
            })
            .abort_handle()
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        members.push(Arc::new(Member {
            id,
            added_at: SystemTime::now(),
            name: p.name,
            pool: p.pool,
            tags: p.tags,
            weight: p.weight,
            frozen: AtomicBool::new(false),
            banned_until: Mutex::new(None),
            watcher,
        }));
        Ok(())
    }

    /// The pools' names, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .members
            .read()
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    fn matching(&self, sel: &Selector) -> Result<Vec<Arc<Member<M>>>, ClusterError<M::Error>> {
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

    /// The matching, active pools in the order a get tries them.
    fn candidates(&self, sel: &Selector) -> Result<Vec<Arc<Member<M>>>, ClusterError<M::Error>> {
        if self.inner.shut.load(Ordering::Acquire) {
            return Err(ClusterError::ShutDown);
        }
        let all = self.matching(sel)?;
        let active: Vec<_> = all
            .into_iter()
            .filter(|m| !m.frozen.load(Ordering::Acquire))
            .collect();
        if active.is_empty() {
            return Err(ClusterError::Frozen(sel.to_string()));
        }
        let now = Instant::now();
        let (healthy, banned): (Vec<_>, Vec<_>) = active.into_iter().partition(|m| !m.banned(now));
        // When every match is banned, try them anyway rather than fail blind.
        let mut list = if healthy.is_empty() { banned } else { healthy };
        let turn = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        match self.mode() {
            Mode::RoundRobin => {
                let n = list.len();
                list.rotate_left(turn % n);
            }
            Mode::Random => fastrand::shuffle(&mut list),
            Mode::LeastBusy => {
                // Ties go round robin.
                let n = list.len();
                list.rotate_left(turn % n);
                list.sort_by_key(|m| m.load());
            }
            Mode::Weighted => {
                let mut ordered = Vec::with_capacity(list.len());
                while !list.is_empty() {
                    let total: u64 = list.iter().map(|m| u64::from(m.weight.max(1))).sum();
                    let mut pick = fastrand::u64(0..total);
                    let i = list
                        .iter()
                        .position(|m| {
                            let w = u64::from(m.weight.max(1));
                            if pick < w {
                                true
                            } else {
                                pick -= w;
                                false
                            }
                        })
                        .expect("pick is below the total");
                    ordered.push(list.remove(i));
                }
                list = ordered;
            }
            Mode::Failover => {
                if let Some(name) = self.inner.sticky.lock().clone() {
                    if let Some(i) = list.iter().position(|m| m.name == name) {
                        let m = list.remove(i);
                        list.insert(0, m);
                    }
                }
            }
        }
        Ok(list)
    }

    /// A connection from one of the active pools `sel` matches, picked by
    /// the cluster's mode. A pool whose get fails with a connection error
    /// is banned for `ban_time` and the next one is tried, within one
    /// overall acquire timeout, so a dead server costs latency, not an
    /// error, while another server is alive.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`], [`ClusterError::Frozen`] (every match is
    /// frozen), [`ClusterError::Unavailable`] (with the last pool's error),
    /// [`ClusterError::EmptySelector`], [`ClusterError::ShutDown`].
    pub async fn get(
        &self,
        sel: impl Into<Selector>,
    ) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        let sel = sel.into();
        let order = self.candidates(&sel)?;
        let budget = self
            .inner
            .acquire_timeout
            .unwrap_or_else(|| order[0].pool.config().acquire_timeout);
        let deadline = Instant::now() + budget;
        let mut last = None;
        let n = order.len();
        for (i, m) in order.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A dead server must not eat the whole budget while others
            // remain: each pool still to try gets an equal share.
            let share = left / u32::try_from(n - i).unwrap_or(u32::MAX);
            match m.pool.get_timeout(share).await {
                Ok(conn) => {
                    if self.mode() == Mode::Failover {
                        *self.inner.sticky.lock() = Some(m.name.clone());
                    }
                    return Ok(ClusterConn {
                        conn,
                        pool: m.name.clone(),
                    });
                }
                Err(e) => {
                    if e.create_error().is_some() {
                        *m.banned_until.lock() = Some(Instant::now() + self.inner.ban_time);
                        self.inner.warn(
                            Some(&m.name),
                            format!("banned for {:?}: {e}", self.inner.ban_time),
                        );
                    }
                    last = Some((m.name.clone(), e));
                }
            }
        }
        let (pool, source) = last.expect("the first pool always gets a try");
        Err(ClusterError::Unavailable {
            selector: sel.to_string(),
            pool,
            source,
        })
    }

    /// A connection from any active pool.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub async fn get_any(&self) -> Result<ClusterConn<M>, ClusterError<M::Error>> {
        self.get(Selector::Glob("*".into())).await
    }

    /// The pool a get would try first.
    ///
    /// # Errors
    /// As [`get`](Cluster::get), without `Unavailable`.
    pub fn pool(&self, sel: impl Into<Selector>) -> Result<Pool<M>, ClusterError<M::Error>> {
        let order = self.candidates(&sel.into())?;
        Ok(order[0].pool.clone())
    }

    /// Stops new gets on the matching pools; connections already out keep
    /// working. Returns how many pools matched.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`], [`ClusterError::EmptySelector`].
    pub fn freeze(&self, sel: impl Into<Selector>) -> Result<usize, ClusterError<M::Error>> {
        self.set_frozen(sel.into(), true)
    }

    /// Lets the matching pools take gets again. Returns how many matched.
    ///
    /// # Errors
    /// As [`freeze`](Cluster::freeze).
    pub fn unfreeze(&self, sel: impl Into<Selector>) -> Result<usize, ClusterError<M::Error>> {
        self.set_frozen(sel.into(), false)
    }

    fn set_frozen(&self, sel: Selector, frozen: bool) -> Result<usize, ClusterError<M::Error>> {
        let found = self.matching(&sel)?;
        for m in &found {
            m.frozen.store(frozen, Ordering::Release);
        }
        tracing::info!(target: "aquifer::cluster", selector = %sel, pools = found.len(), frozen, "freeze changed");
        Ok(found.len())
    }

    fn list(&self, frozen: bool) -> Vec<String> {
        self.inner
            .members
            .read()
            .iter()
            .filter(|m| m.frozen.load(Ordering::Acquire) == frozen)
            .map(|m| m.name.clone())
            .collect()
    }

    /// The frozen pools' names.
    pub fn frozen(&self) -> Vec<String> {
        self.list(true)
    }

    /// The active (not frozen) pools' names.
    pub fn active(&self) -> Vec<String> {
        self.list(false)
    }

    /// Whether any pool matching `sel` is frozen.
    pub fn has_frozen(&self, sel: impl Into<Selector>) -> bool {
        self.matching(&sel.into())
            .is_ok_and(|v| v.iter().any(|m| m.frozen.load(Ordering::Acquire)))
    }

    /// Whether any pool matching `sel` is active.
    pub fn has_active(&self, sel: impl Into<Selector>) -> bool {
        self.matching(&sel.into())
            .is_ok_and(|v| v.iter().any(|m| !m.frozen.load(Ordering::Acquire)))
    }

    /// Whether the pool is banned now (its gets failed with connection errors).
    pub fn is_banned(&self, name: &str) -> bool {
        let now = Instant::now();
        self.inner
            .members
            .read()
            .iter()
            .any(|m| m.name == name && m.banned(now))
    }

    /// Removes the matching pools gracefully: they take no new gets at once,
    /// connections already out are waited for (up to `wait`), then the
    /// pools close. Connections that fail to close stay in
    /// [`pending`](Cluster::pending). Returns how many pools were removed.
    ///
    /// # Errors
    /// [`ClusterError::NoMatch`] (nothing to remove),
    /// [`ClusterError::EmptySelector`].
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
            if tokio::time::timeout(wait, m.pool.drain()).await.is_err() {
                self.inner.warn(
                    Some(&m.name),
                    format!(
                        "removed with connections still out after {wait:?}; they close on return"
                    ),
                );
            }
            m.pool.close().await;
            if !m.pool.pending().is_empty() {
                self.inner
                    .retired
                    .lock()
                    .push((m.name.clone(), m.pool.clone()));
            }
            tracing::info!(target: "aquifer::cluster", pool = %m.name, "removed");
        }
        Ok(found.len())
    }

    /// Counts across the cluster.
    pub fn info(&self) -> ClusterInfo {
        let now = Instant::now();
        let members = self.inner.members.read().clone();
        let mut info = ClusterInfo {
            mode: self.mode(),
            pools: members.len(),
            active: 0,
            frozen: 0,
            banned: 0,
            warnings: self.inner.warnings.lock().len(),
            pending: self.pending().len(),
            size: 0,
            idle: 0,
            borrowed: 0,
            waiting: 0,
        };
        for m in &members {
            if m.frozen.load(Ordering::Acquire) {
                info.frozen += 1;
            } else {
                info.active += 1;
            }
            info.banned += usize::from(m.banned(now));
            let s = m.pool.status();
            info.size += s.size;
            info.idle += s.idle;
            info.borrowed += s.borrowed;
            info.waiting += s.waiting;
        }
        info
    }

    /// One pool in detail, or `None` when no pool has that name.
    pub fn info_about(&self, name: &str) -> Option<PoolInfo> {
        let now = Instant::now();
        let m = self
            .inner
            .members
            .read()
            .iter()
            .find(|m| m.name == name)
            .cloned()?;
        let banned_for = m
            .banned_until
            .lock()
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero());
        Some(PoolInfo {
            id: m.id,
            name: m.name.clone(),
            created_at: m.added_at,
            driver: m.pool.manager().driver_name(),
            tags: m.tags.clone(),
            weight: m.weight,
            frozen: m.frozen.load(Ordering::Acquire),
            banned_for,
            status: m.pool.status(),
            metrics: m.pool.metrics(),
        })
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.inner.mode.lock()
    }

    /// Changes the mode for the gets that follow.
    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock() = mode;
    }

    /// Warnings, oldest first.
    pub fn warnings(&self) -> Vec<Warning> {
        self.inner.warnings.lock().iter().cloned().collect()
    }

    /// Forgets every warning.
    pub fn clear_warnings(&self) {
        self.inner.warnings.lock().clear();
    }

    /// Records a warning of your own.
    pub fn add_warning(&self, pool: Option<&str>, message: impl Into<String>) {
        self.inner.warn(pool, message.into());
    }

    /// Every warning in the event log file, this run's and earlier runs',
    /// oldest first (empty without a log file).
    ///
    /// # Errors
    /// The I/O error when the file cannot be read.
    pub fn log_messages(&self) -> std::io::Result<Vec<Warning>> {
        match &self.inner.log {
            Some(log) => log.read_back(),
            None => Ok(Vec::new()),
        }
    }

    /// Warnings the event log dropped because its writer fell behind.
    pub fn log_dropped(&self) -> u64 {
        self.inner.log.as_ref().map_or(0, EventLog::dropped)
    }

    fn all_pools(&self) -> Vec<(String, Pool<M>)> {
        let mut all: Vec<_> = self
            .inner
            .members
            .read()
            .iter()
            .map(|m| (m.name.clone(), m.pool.clone()))
            .collect();
        all.extend(self.inner.retired.lock().iter().cloned());
        all
    }

    /// Connections that failed to close, in the cluster's pools and in
    /// pools removed from it.
    pub fn pending(&self) -> Vec<ClusterPending> {
        self.all_pools()
            .into_iter()
            .flat_map(|(name, pool)| {
                pool.pending().into_iter().map(move |info| ClusterPending {
                    pool: name.clone(),
                    info,
                })
            })
            .collect()
    }

    /// Whether any connection failed to close.
    pub fn has_pending(&self) -> bool {
        !self.pending().is_empty()
    }

    /// Tries to close the pending connections again; with `force`, drops
    /// them ignoring errors. Returns how many are still pending.
    pub async fn close_pending(&self, force: bool) -> usize {
        let mut left = 0;
        for (_, pool) in self.all_pools() {
            left += pool.close_pending(force).await;
        }
        self.inner
            .retired
            .lock()
            .retain(|(_, p)| !p.pending().is_empty());
        left
    }

    /// Removes every pool gracefully (waiting up to `wait` for connections
    /// out), then closes pending connections (`force` drops those that
    /// still fail). Later gets fail with [`ClusterError::ShutDown`].
    /// Returns how many connections are still pending.
    pub async fn shutdown(&self, wait: Duration, force: bool) -> usize {
        self.inner.shut.store(true, Ordering::Release);
        let _ = self.remove(Selector::Glob("*".into()), wait).await;
        self.close_pending(force).await
    }
}
