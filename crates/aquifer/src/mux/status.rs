//! What a multiplexer reports: where its connections and requests are,
//! and its counters since it was built.

use std::time::Duration;

use crate::metrics::Summary;

/// A snapshot of a multiplexer's connections and requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MuxStatus {
    /// Open connections that take new requests.
    pub connections: usize,
    /// Open connections that take no new requests and close once their
    /// requests end (unused above `min`, broken, past their lifetime, or
    /// closing).
    pub draining: usize,
    /// Connections being opened.
    pub opening: usize,
    /// Requests running.
    pub in_flight: usize,
    /// Requests running on each open connection, oldest connection first
    /// (draining ones included).
    pub per_connection: Vec<usize>,
    /// Requests waiting for room.
    pub queued: usize,
    /// The configured minimum of connections.
    pub min: usize,
    /// The configured maximum of connections.
    pub max: usize,
    /// The configured most requests per connection at once.
    pub max_in_flight: usize,
    /// How long one request keeps a connection busy (its run time over the
    /// requests it shared the connection with), a moving average; `None`
    /// until a request has ended. On a server short of CPU it grows with
    /// the connections; on one that waits (`pg_sleep`, locks) it does not.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "service_time_s", serialize_with = "crate::report::opt_secs")
    )]
    pub service_time: Option<Duration>,
    /// How long opening a connection takes, a moving average; `None`
    /// until one has opened.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "open_time_s", serialize_with = "crate::report::opt_secs")
    )]
    pub open_time: Option<Duration>,
    /// The adaptive limit on connections; `None` when the multiplexer
    /// is not adaptive (`adaptive` off, or `min == max`): its limit is
    /// then `max`.
    pub limit: Option<MuxLimit>,
}

/// Where the adaptive limit on connections stands, why, and what it
/// measured.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MuxLimit {
    /// Most connections the multiplexer opens now, between `min` and `max`.
    pub limit: usize,
    /// Why the limit last changed (or was confirmed).
    pub reason: LimitReason,
    /// How long ago that was.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "changed_s_ago", serialize_with = "crate::report::secs")
    )]
    pub changed: Duration,
    /// How many times the limit changed since the multiplexer was built.
    pub changes: u64,
    /// The search settled on `limit`; it tries one connection either side
    /// again now and then.
    pub settled: bool,
    /// What each count of connections measured (the better of its last
    /// two windows) since the search last started or re-probed, fewest
    /// first.
    pub measured: Vec<LimitSample>,
}

/// What one count of connections measured over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LimitSample {
    /// Connections that carried the requests.
    pub connections: usize,
    /// Requests ended per second.
    pub throughput: u64,
    /// Their mean time from asking to giving the slot back.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "latency_s", serialize_with = "crate::report::secs")
    )]
    pub latency: Duration,
}

/// Why the adaptive limit last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum LimitReason {
    /// Nothing measured yet: the limit is `max`, and connections open
    /// with the demand.
    Start,
    /// Trying this count against the one the search stands on (for one
    /// or two windows), or measuring that one again.
    Probe,
    /// This count measured the most throughput per unit of latency among
    /// its neighbours (fewer connections win a tie).
    Measured,
    /// Fewer connections than the limit carried the load.
    Unused,
    /// Requests would otherwise queue past the pipeline horizon or
    /// `max_in_flight`: statements that take long need connections.
    Queued,
}

impl LimitReason {
    /// A short lowercase name, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitReason::Start => "start",
            LimitReason::Probe => "probe",
            LimitReason::Measured => "measured",
            LimitReason::Unused => "unused",
            LimitReason::Queued => "queued",
        }
    }
}

/// Connections closed, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Closes {
    /// Unused for `scale_down_after` while more than `min` were open.
    pub scaled_down: u64,
    /// Found broken (closed by the server, the network…).
    pub broken: u64,
    /// Outlived `max_lifetime`.
    pub lifetime: u64,
    /// Closed with the multiplexer.
    pub shutdown: u64,
    /// Retired because their session changed.
    pub session_changed: u64,
    /// Closed because the adaptive limit came down.
    pub limited: u64,
}

/// A multiplexer's counters since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MuxMetrics {
    /// Requests asked for (successful or not).
    pub requests: u64,
    /// Requests that had to queue.
    pub waited: u64,
    /// Requests that hit `acquire_timeout` in the queue.
    pub timeouts: u64,
    /// Requests refused because the queue was full.
    pub queue_full: u64,
    /// Queued requests whose future was dropped.
    pub cancelled: u64,
    /// Connections opened.
    pub opened: u64,
    /// Opens that failed (each after the pool's own retries).
    pub open_failures: u64,
    /// Connections closed, by reason.
    pub closes: Closes,
    /// Time from asking to getting a slot, for requests that got one.
    pub wait_time: Summary,
    /// Time requests held their slot.
    pub run_time: Summary,
}
