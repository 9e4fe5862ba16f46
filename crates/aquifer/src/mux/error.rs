//! Why a multiplexed request could not start.

use std::time::Duration;

use crate::error::CreateError;

/// Why a [`Multiplexer`](crate::Multiplexer) could not give a request a
/// connection. The request never reached the server, so it did not run
/// ([`may_have_run`](MuxError::may_have_run) is `false`): retrying it is
/// safe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError<E: std::error::Error + 'static> {
    /// No connection had room within `acquire_timeout`. When opening
    /// connections was failing, the newest failure is the source.
    #[error("timed out after {} waiting for a multiplexed connection{}", crate::error::human_duration(*waited), if last_open_error.is_some() { " while opening connections failed" } else { "" })]
    Timeout {
        /// How long the request waited.
        waited: Duration,
        /// The newest failure to open a connection, if any.
        #[source]
        last_open_error: Option<CreateError<E>>,
    },
    /// Opening a connection failed with an error that waiting cannot fix
    /// (a wrong password, an unknown database); the source says which.
    /// Fix the configuration: the next request tries again.
    #[error("could not open a multiplexed connection")]
    Connect(#[source] CreateError<E>),
    /// `max_queued` requests already wait: the multiplexer is overloaded.
    /// Retry later, or raise `max_queued`, `max` or `max_in_flight`.
    #[error("the multiplexer's queue is full ({max_queued} requests already waiting)")]
    QueueFull {
        /// The configured bound.
        max_queued: usize,
    },
    /// The multiplexer was closed.
    #[error("the multiplexer is closed")]
    Closed,
    /// An operator froze the multiplexer: it takes no new requests until
    /// it is unfrozen ([`Multiplexer::unfreeze`](crate::Multiplexer::unfreeze)).
    #[error("the multiplexer is frozen and takes no new requests; unfreeze it to go on")]
    Frozen,
}

impl<E: std::error::Error + 'static> MuxError<E> {
    /// Whether the request may have run on the server: never, for these
    /// errors; a driver's own errors say more.
    pub fn may_have_run(&self) -> bool {
        false
    }

    /// Whether the error is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, MuxError::Timeout { .. })
    }
}
