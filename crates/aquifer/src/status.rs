//! How many objects a pool has where.

/// A snapshot of how many objects are where.
///
/// `idle + borrowed + creating == size` always holds, and so does
/// `size <= max` except right after [`Pool::resize`](crate::Pool::resize) lowered `max`, until
/// enough borrowed objects came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Status {
    /// Objects alive or being created.
    pub size: usize,
    /// Objects waiting in the pool.
    pub idle: usize,
    /// Objects checked out (or being reset or checked in the background).
    pub borrowed: usize,
    /// Creates in flight.
    pub creating: usize,
    /// Callers waiting for an object.
    pub waiting: usize,
    /// Objects that failed to close and are kept for `close_pending`.
    pub pending: usize,
    /// The configured maximum.
    pub max: usize,
    /// The configured minimum.
    pub min: usize,
    /// Objects that could still be created: `max - size`, or 0 once closed.
    pub spare: usize,
}

/// One health check's result, from [`Pool::check`](crate::Pool::check).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Health {
    /// Whether a connection was handed out and answered.
    pub healthy: bool,
    /// How long the checkout and the round trip took.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
    pub latency: std::time::Duration,
    /// Why not, with every cause (see [`error_chain`](crate::error_chain)).
    pub error: Option<String>,
}
