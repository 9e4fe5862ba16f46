//! The cluster's errors.

use std::path::PathBuf;

use crate::error::{BuildError, PoolError};
use crate::selector::RegexError;

/// Why [`ClusterBuilder::try_build`](super::ClusterBuilder::try_build) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterBuildError {
    /// A setting cannot work.
    #[error("invalid cluster settings")]
    Settings(#[source] BuildError),
    /// The event log file could not be opened.
    #[error("cannot open the event log {}", path.display())]
    EventLog {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
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
    #[error("no pool matching `{selector}` could serve; `{pool}` failed last")]
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
    /// No member was known to be the primary within the acquire timeout.
    #[error("no primary to write to after waiting {}: {why}", crate::error::human_duration(*waited))]
    NoPrimary {
        /// How long the write waited.
        waited: std::time::Duration,
        /// Each member's role and what it rests on.
        why: String,
    },
    /// No replica could serve a read, and the set's fallback is an error.
    #[error("no replica can serve this read: {why}; wait, raise max_lag, or let reads fall back to the primary")]
    NoReplica {
        /// Each member and why it could not serve.
        why: String,
    },
    /// `write()` on a cluster that does not watch roles.
    #[error("this cluster does not know its members' roles: build it with ClusterBuilder::roles to write to its primary")]
    NoRoles,
}
