//! What every handle of one cluster shares, and the warnings it keeps.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

use crate::eventlog::EventLog;
use crate::events::PoolEvent;
use crate::manager::Manager;
use crate::roles::Roles;
use crate::thread;
use crate::warning::Warning;

use super::balance::{mode_code, mode_of, Mode, Seed};
use super::lag::LagBoard;
use super::members::{Member, Members, Retired};
use super::role::Primary;
use super::watcher::warning_of;

/// What every handle of one cluster shares.
pub(super) struct ClusterShared<M: Manager> {
    /// The pools; changed through its own writer.
    pub(super) members: Members<M>,
    mode: AtomicU8,
    /// The picker's (`pick.rs`): the round-robin turn.
    pub(super) cursor: AtomicUsize,
    /// The picker's: the random pick's generator states, one per thread
    /// slot (indexed like a pool's idle shards), so that gets on several
    /// cores do not all write one cache line.
    pub(super) seeds: Box<[Seed]>,
    /// The picker's: the member id failover sticks to (0: none yet).
    pub(super) sticky: AtomicU64,
    warnings: Mutex<VecDeque<Warning>>,
    /// Warnings of one kind about one pool within the last minute: the
    /// first is recorded, the rest counted and summed up.
    repeats: Mutex<HashMap<(Option<String>, String), Repeat>>,
    /// Removed pools that still hold connections that failed to close,
    /// watched until they are closed, so that later failures warn too.
    retired: Mutex<Vec<Retired<M>>>,
    ban_time: Duration,
    max_warnings: usize,
    acquire_timeout: Option<Duration>,
    shut: AtomicBool,
    log: Option<EventLog>,
    next_id: AtomicU64,
    /// Role watching, when the cluster is a replica set.
    pub(super) roles: Option<RoleBoard<M>>,
}

/// A new cluster's settings, as its builder checked them.
pub(super) struct Settings<M: Manager> {
    pub(super) mode: Mode,
    pub(super) ban_time: Duration,
    pub(super) max_warnings: usize,
    pub(super) acquire_timeout: Option<Duration>,
    pub(super) log: Option<EventLog>,
    pub(super) roles: Option<RoleBoard<M>>,
}

impl<M: Manager> ClusterShared<M> {
    pub(super) fn new(s: Settings<M>) -> Self {
        ClusterShared {
            members: Members::default(),
            mode: AtomicU8::new(mode_code(s.mode)),
            cursor: AtomicUsize::new(0),
            seeds: (0..thread::shard_count())
                .map(|_| Seed(AtomicU64::new(fastrand::u64(..))))
                .collect(),
            sticky: AtomicU64::new(0),
            warnings: Mutex::new(VecDeque::new()),
            repeats: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            ban_time: s.ban_time,
            max_warnings: s.max_warnings,
            acquire_timeout: s.acquire_timeout,
            shut: AtomicBool::new(false),
            log: s.log,
            next_id: AtomicU64::new(1),
            roles: s.roles,
        }
    }

    pub(super) fn mode(&self) -> Mode {
        mode_of(self.mode.load(Ordering::Relaxed))
    }

    pub(super) fn set_mode(&self, mode: Mode) {
        self.mode.store(mode_code(mode), Ordering::Relaxed);
    }

    /// Refuses new pools and gets from now on.
    pub(super) fn shut_down(&self) {
        self.shut.store(true, Ordering::Release);
    }

    pub(super) fn is_shut(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// An id for a new member, unique within the cluster.
    pub(super) fn next_member_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How long a ban lasts unless the operator says otherwise.
    pub(super) fn ban_time(&self) -> Duration {
        self.ban_time
    }

    /// The cluster's own acquire timeout, if it was given one.
    pub(super) fn acquire_timeout(&self) -> Option<Duration> {
        self.acquire_timeout
    }

    /// The persistent event log, if there is one.
    pub(super) fn log(&self) -> Option<&EventLog> {
        self.log.as_ref()
    }

    /// The warnings kept, oldest first.
    pub(super) fn warnings(&self) -> Vec<Warning> {
        self.warnings.lock().iter().cloned().collect()
    }

    pub(super) fn warning_count(&self) -> usize {
        self.warnings.lock().len()
    }

    pub(super) fn clear_warnings(&self) {
        self.warnings.lock().clear();
    }

    /// Keeps watching a removed pool whose connections failed to close.
    pub(super) fn keep_retired(&self, r: Retired<M>) {
        self.retired.lock().push(r);
    }

    /// `f` of each removed pool still watched.
    pub(super) fn with_retired<R>(&self, f: impl FnMut(&Retired<M>) -> R) -> Vec<R> {
        self.retired.lock().iter().map(f).collect()
    }

    /// Lets go of the removed pools whose connections have all closed,
    /// and returns them.
    pub(super) fn release_retired(&self) -> Vec<Retired<M>> {
        let mut retired = self.retired.lock();
        let (closed, kept) = std::mem::take(&mut *retired)
            .into_iter()
            .partition(|r| r.pool.pending().is_empty());
        *retired = kept;
        closed
    }
}

impl<M: Manager> ClusterShared<M> {
    /// Bans `m` for `ban_time` (with a warning saying why) unless it is
    /// banned already: a failed get and the pool's own report of the same
    /// failed create warn once.
    pub(super) fn ban(&self, m: &Member<M>, why: impl fmt::Display) {
        if m.is_banned() {
            return;
        }
        m.ban(self.ban_time, why.to_string());
        self.members.flags_changed();
        let ban_time = crate::error::human_duration(self.ban_time);
        // The failure behind it was logged by the pool: the log says only
        // what the cluster does about it; the warning keeps the cause.
        tracing::warn!(
            target: "aquifer::cluster", pool = %m.name,
            "banned for {ban_time}; gets go to the other pools until then"
        );
        self.warn_repeating(
            Some(&m.name),
            format!("banned for {ban_time}: {why}"),
            false,
        );
    }

    /// A warning that may repeat: the first about a pool in a minute is
    /// recorded, the same again (but for its numbers) is counted and summed
    /// up in one line ("… 57 more like this in the last minute") when the
    /// minute is over. `trace`: logged as well (a pool event's warning is
    /// not: the pool logged the event itself).
    pub(super) fn warn_repeating(&self, pool: Option<&str>, message: String, trace: bool) {
        let now = tokio::time::Instant::now();
        let shape: String = message.chars().filter(|c| !c.is_ascii_digit()).collect();
        let summary = {
            let mut repeats = self.repeats.lock();
            let r = repeats
                .entry((pool.map(str::to_owned), shape))
                .or_insert(Repeat {
                    since: now,
                    more: 0,
                    last: String::new(),
                    trace,
                    fresh: true,
                });
            if !r.fresh && now.saturating_duration_since(r.since) < REPEAT_WINDOW {
                r.more += 1;
                r.last = message;
                return;
            }
            r.fresh = false;
            r.since = now;
            r.take_summary()
        };
        if let Some(s) = summary {
            self.record(pool, s, trace);
        }
        self.record(pool, message, trace);
    }

    /// Sums up the repeats whose minute is over.
    pub(super) fn flush_repeats(&self) {
        let now = tokio::time::Instant::now();
        let mut repeats = self.repeats.lock();
        let due: Vec<(Option<String>, String, bool)> = repeats
            .iter_mut()
            .filter(|(_, r)| now.saturating_duration_since(r.since) >= REPEAT_WINDOW)
            .filter_map(|((pool, _), r)| Some((pool.clone(), r.take_summary()?, r.trace)))
            .collect();
        // Minutes over and summed up: forgotten, so the map stays small.
        repeats.retain(|_, r| now.saturating_duration_since(r.since) < REPEAT_WINDOW);
        drop(repeats);
        for (pool, summary, trace) in due {
            self.record(pool.as_deref(), summary, trace);
        }
    }

    pub(super) fn warn(&self, pool: Option<&str>, message: String) {
        self.record(pool, message, true);
    }

    pub(super) fn record(&self, pool: Option<&str>, message: String, trace: bool) {
        if trace {
            tracing::warn!(target: "aquifer::cluster", pool, %message, "cluster warning");
        }
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

/// How long warnings of one kind about one pool are summed up in one.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The repeats of one kind of warning about one pool.
pub(super) struct Repeat {
    /// When the current window began (its first warning was recorded).
    since: tokio::time::Instant,
    /// Warnings counted, not recorded, since then.
    more: u64,
    /// The newest of them.
    last: String,
    trace: bool,
    /// Nothing recorded yet.
    fresh: bool,
}

impl Repeat {
    fn take_summary(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.more);
        (n > 0).then(|| {
            format!(
                "… {n} more like this in the last minute; the last: {}",
                std::mem::take(&mut self.last)
            )
        })
    }
}

impl<M: Manager> ClusterShared<M> {
    /// What a member's watcher does with its pool's events: a trouble
    /// event becomes a warning, and a create failing in the background
    /// (the pool's own health check) bans the member. Holds the cluster
    /// weakly; `false` once it is gone.
    pub(super) fn event_recorder(
        self: &Arc<Self>,
        name: String,
    ) -> impl Fn(&PoolEvent) -> bool + Send + Sync + 'static {
        let inner = Arc::downgrade(self);
        move |e: &PoolEvent| match inner.upgrade() {
            Some(inner) => {
                if let Some(message) = warning_of(e) {
                    inner.warn_repeating(Some(&name), message, false);
                }
                // A create that fails in the background (refilling to `min`,
                // replacing what keepalive or eviction threw out) is the
                // pool's health check failing: the server is not there.
                if let PoolEvent::CreateFailed { error, .. } = e {
                    let member = inner
                        .members
                        .read()
                        .iter()
                        .find(|m| *m.name == *name)
                        .cloned();
                    if let Some(m) = member {
                        inner.ban(&m, error);
                    }
                }
                true
            }
            None => false,
        }
    }
}

/// The cluster's part of role watching.
pub(super) struct RoleBoard<M: Manager> {
    pub(super) settings: Roles,
    pub(super) primary: Mutex<Primary>,
    /// Bumped whenever the primary changes (to none included).
    pub(super) epoch: watch::Sender<u64>,
    /// Every checker checks at once (the primary was lost).
    pub(super) check_now: Arc<Notify>,
    /// Bumped after every check, for callers waiting for roles to be known.
    pub(super) checks: watch::Sender<u64>,
    /// The primary's position, for replicas' lag; reads' counters.
    pub(super) lag: LagBoard,
    /// Starts a member's checker; made where `M: RoleManager` is known.
    start: fn(Weak<ClusterShared<M>>, Arc<Member<M>>) -> AbortHandle,
}

impl<M: Manager> RoleBoard<M> {
    /// A board for `settings`; `start` starts a member's checker.
    pub(super) fn new(
        settings: Roles,
        start: fn(Weak<ClusterShared<M>>, Arc<Member<M>>) -> AbortHandle,
    ) -> Self {
        RoleBoard {
            settings,
            primary: Mutex::new(Primary::default()),
            epoch: watch::Sender::new(0),
            check_now: Arc::new(Notify::new()),
            checks: watch::Sender::new(0),
            lag: LagBoard::default(),
            start,
        }
    }
}

impl<M: Manager> RoleBoard<M> {
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
