//! Settings for a cluster.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::BuildError;
use crate::eventlog::EventLog;
use crate::manager::Manager;
use crate::roles::{RoleManager, Roles};

use super::balance::Mode;
use super::checker::start_checker;
use super::error::ClusterBuildError;
use super::handle::Cluster;
use super::shared::{ClusterShared, RoleBoard, Settings};

/// Settings for a [`Cluster`] of pools of `M`.
#[must_use]
pub struct ClusterBuilder<M: Manager> {
    mode: Mode,
    ban_time: Duration,
    max_warnings: usize,
    acquire_timeout: Option<Duration>,
    log: Option<(PathBuf, u64)>,
    roles: Option<RoleBoard<M>>,
    manager: std::marker::PhantomData<fn() -> M>,
}

impl<M: Manager> Cluster<M> {
    /// Settings for a new cluster.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # use aquifer::{Cluster, ClusterPool, Pool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let cluster = cluster()?;
    /// use std::time::Duration;
    /// use aquifer::Mode;
    ///
    /// let cluster: Cluster<Server> = Cluster::builder()
    ///     .mode(Mode::LeastBusy)
    ///     .ban_time(Duration::from_secs(10))
    ///     .build();
    /// assert_eq!(cluster.mode(), Mode::LeastBusy);
    /// # Ok(()) }
    /// ```
    pub fn builder() -> ClusterBuilder<M> {
        ClusterBuilder::default()
    }
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
            roles: None,
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
    /// Zero is refused, as a pool refuses it: [`try_build`] fails, and
    /// [`build`] keeps the default and says so in its first warning.
    ///
    /// [`try_build`]: ClusterBuilder::try_build
    /// [`build`]: ClusterBuilder::build
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

    /// Makes the cluster a replica set: each pool's server is asked what
    /// it is (primary, standby, read-only) on a connection of its own,
    /// every `roles.interval` and at once when the driver sees evidence of
    /// a change, and [`Cluster::write`] goes to the primary. A member is
    /// believed to be the new primary after two checks in a row that say
    /// so, or one that shows a higher timeline than the last primary's (or
    /// at once when no primary was ever known). Checks run in tasks: build
    /// and add pools inside a Tokio runtime.
    pub fn roles(mut self, roles: Roles) -> Self
    where
        M: RoleManager,
    {
        self.roles = Some(RoleBoard::new(roles, start_checker::<M>));
        self
    }

    /// An empty cluster. If the event log cannot be opened, the cluster
    /// works without it, and a setting that cannot work is left at its
    /// default; each says so in a warning. Use
    /// [`try_build`](ClusterBuilder::try_build) to get the error instead.
    pub fn build(mut self) -> Cluster<M> {
        let refused = self.refused_settings();
        self.use_defaults_for_refused();
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
        for (e, instead) in refused {
            cluster.inner.warn(None, format!("{e}; {instead}"));
        }
        if let Some(message) = failure {
            cluster.inner.warn(None, message);
        }
        cluster
    }

    /// An empty cluster.
    ///
    /// # Errors
    /// [`ClusterBuildError::Settings`] for a setting that cannot work (a
    /// zero `acquire_timeout`), [`ClusterBuildError::EventLog`] when the
    /// event log file cannot be opened.
    pub fn try_build(mut self) -> Result<Cluster<M>, ClusterBuildError> {
        if let Some((e, _)) = self.refused_settings().into_iter().next() {
            return Err(ClusterBuildError::Settings(e));
        }
        let log = match self.log.take() {
            Some((path, max)) => Some(
                EventLog::open(&path, max)
                    .map_err(|source| ClusterBuildError::EventLog { path, source })?,
            ),
            None => None,
        };
        Ok(self.assemble(log))
    }

    /// The settings that cannot work, and what `build` does instead of
    /// each.
    fn refused_settings(&self) -> Vec<(BuildError, &'static str)> {
        let mut out = Vec::new();
        let mut zero = |setting, hint, instead| {
            out.push((BuildError::ZeroDuration { setting, hint }, instead));
        };
        if self.acquire_timeout == Some(Duration::ZERO) {
            zero(
                "acquire_timeout",
                ": a zero budget would fail every get; leave it unset to use the pools' own",
                "the pools' own timeouts apply",
            );
        }
        if let Some(roles) = self.roles.as_ref().map(|b| &b.settings) {
            if roles.interval.is_zero() {
                zero(
                    "roles.interval",
                    ": a zero interval would check without pause; leave it at 1 s or set more",
                    "roles are checked every second",
                );
            }
            if roles.check_timeout.is_zero() {
                zero(
                    "roles.check_timeout",
                    ": a zero timeout would fail every check; leave it at 1 s or set more",
                    "role checks may take a second",
                );
            }
        }
        out
    }

    /// Puts every refused setting back to its default.
    fn use_defaults_for_refused(&mut self) {
        if self.acquire_timeout == Some(Duration::ZERO) {
            self.acquire_timeout = None;
        }
        if let Some(b) = &mut self.roles {
            let defaults = Roles::default();
            if b.settings.interval.is_zero() {
                b.settings.interval = defaults.interval;
            }
            if b.settings.check_timeout.is_zero() {
                b.settings.check_timeout = defaults.check_timeout;
            }
        }
    }

    fn assemble(self, log: Option<EventLog>) -> Cluster<M> {
        Cluster {
            inner: Arc::new(ClusterShared::new(Settings {
                mode: self.mode,
                ban_time: self.ban_time,
                max_warnings: self.max_warnings,
                acquire_timeout: self.acquire_timeout,
                log,
                roles: self.roles,
            })),
        }
    }
}
