//! Pool events: a bounded broadcast that never slows the pool, mirrored to
//! `tracing` under the `aquifer::pool` target.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::error::human_duration;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

/// Why an object left the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Reason {
    /// Idle longer than `idle_timeout` or `soft_idle_timeout`.
    Idle,
    /// Older than `max_lifetime`.
    Lifetime,
    /// `Manager::is_broken` said so.
    Broken,
    /// `Manager::validate` failed or timed out.
    ValidationFailed,
    /// `Manager::reset` failed or timed out on return.
    ResetFailed,
    /// The caller asked: `Pooled::destroy`, or `Pool::with` whose closure failed.
    Caller,
    /// `Pool::clear`, `Pool::retain` or `Pool::free`.
    Cleared,
    /// `Pool::resize` lowered `max` below the number of objects.
    Resized,
    /// The pool was closed.
    Closed,
    /// A multiplexer's shared connection carried a session change
    /// ([`Multiplexed::session_changed`](crate::Multiplexed::session_changed)).
    SessionChanged,
}

impl Reason {
    /// A short lowercase name, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Idle => "idle",
            Reason::Lifetime => "lifetime",
            Reason::Broken => "broken",
            Reason::ValidationFailed => "validation_failed",
            Reason::ResetFailed => "reset_failed",
            Reason::Caller => "caller",
            Reason::Cleared => "cleared",
            Reason::Resized => "resized",
            Reason::Closed => "closed",
            Reason::SessionChanged => "session_changed",
        }
    }
}

/// Work a driver did on a pooled object, for [`PoolEvent::OperationFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Operation {
    /// A query or statement.
    Query,
    /// A `COMMIT`.
    Commit,
    /// A `ROLLBACK`.
    Rollback,
    /// A whole transaction (its body returned an error, panicked, or was
    /// dropped before it finished).
    Transaction,
}

impl Operation {
    /// A short lowercase name, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Query => "query",
            Operation::Commit => "commit",
            Operation::Rollback => "rollback",
            Operation::Transaction => "transaction",
        }
    }
}

/// Something that happened in a pool. Serialized as an object with an
/// `event` field (`"created"`, `"create_failed"`…) next to the variant's
/// fields.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PoolEvent {
    /// An object was created.
    Created {
        /// The object's id.
        id: u64,
        /// How long `create` took.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
        took: Duration,
    },
    /// A create attempt failed; the next one waits `retry_in`.
    CreateFailed {
        /// The error's message.
        error: String,
        /// Consecutive failures so far.
        failures: u32,
        /// Backoff before the next attempt.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
        retry_in: Duration,
    },
    /// An object was closed.
    Destroyed {
        /// The object's id.
        id: u64,
        /// Why it was destroyed.
        reason: Reason,
    },
    /// Closing an object failed; it is kept as pending.
    DestroyFailed {
        /// The object's id.
        id: u64,
        /// The error's message.
        error: String,
    },
    /// A caller checked an object out.
    Acquired {
        /// The object's id.
        id: u64,
        /// How long the caller waited.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
        waited: Duration,
    },
    /// A caller returned an object.
    Released {
        /// The object's id.
        id: u64,
        /// How long the caller held it.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
        held: Duration,
    },
    /// Callers have to queue because every object up to `max` is in use.
    /// Reported by a caller that queues at `max`, at most once a second: a
    /// saturated pool does not report every caller that queues (which
    /// would crowd other events out of a listener's buffer, and flood a
    /// cluster's warnings).
    MaxReached {
        /// The pool's maximum.
        max: usize,
        /// Callers waiting, this one included.
        waiting: usize,
    },
    /// A caller was refused because the queue was full.
    QueueFull {
        /// The configured bound.
        max_waiting: usize,
    },
    /// A queued caller gave up at its acquire timeout.
    QueueTimeout {
        /// How long it waited.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
        waited: Duration,
    },
    /// Validation failed; the object is destroyed.
    ValidationFailed {
        /// The object's id.
        id: u64,
        /// The error's message.
        error: String,
    },
    /// Maintenance (or a checkout/return) evicted an object.
    Evicted {
        /// The object's id.
        id: u64,
        /// Idle, lifetime or broken.
        reason: Reason,
    },
    /// An object has been held longer than `leak_detection_threshold`.
    LeakSuspected {
        /// The object's id.
        id: u64,
        /// How long it has been held.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
        held: Duration,
        /// Where it was checked out (`file:line:column`).
        location: String,
    },
    /// A driver reported that work on a pooled object failed (see
    /// [`Pool::report`](crate::Pool::report)).
    OperationFailed {
        /// What failed.
        op: Operation,
        /// The error's message.
        error: String,
    },
}

impl PoolEvent {
    /// The kind of a warn-level event (trouble an operator may act on),
    /// for summing repeats up.
    fn trouble(&self) -> Option<&'static str> {
        Some(match self {
            PoolEvent::CreateFailed { .. } => "create_failures",
            PoolEvent::DestroyFailed { .. } => "destroy_failures",
            PoolEvent::QueueFull { .. } => "callers_refused",
            PoolEvent::QueueTimeout { .. } => "callers_timed_out",
            PoolEvent::OperationFailed { .. } => "failed_operations",
            PoolEvent::LeakSuspected { .. } => "suspected_leaks",
            _ => return None,
        })
    }

    /// Writes the event to `tracing` at a level that fits it.
    pub(crate) fn trace(&self) {
        const T: &str = "aquifer::pool";
        match self {
            PoolEvent::Created { id, took } => {
                tracing::debug!(target: T, id, took = %human_duration(*took), "created")
            }
            PoolEvent::CreateFailed {
                error,
                failures,
                retry_in,
            } => tracing::warn!(
                target: T, %error, failures, retry_in = %human_duration(*retry_in), "create failed"
            ),
            PoolEvent::Destroyed { id, reason } => {
                tracing::debug!(target: T, id, reason = reason.as_str(), "destroyed")
            }
            PoolEvent::DestroyFailed { id, error } => {
                tracing::warn!(target: T, id, %error, "destroy failed; kept as pending")
            }
            PoolEvent::Acquired { id, waited } => {
                tracing::trace!(target: T, id, waited = %human_duration(*waited), "acquired")
            }
            PoolEvent::Released { id, held } => {
                tracing::trace!(target: T, id, held = %human_duration(*held), "released")
            }
            PoolEvent::MaxReached { max, waiting } => {
                tracing::debug!(target: T, max, waiting, "max reached; caller queued")
            }
            PoolEvent::QueueFull { max_waiting } => {
                tracing::warn!(target: T, max_waiting, "wait queue full; caller refused")
            }
            PoolEvent::QueueTimeout { waited } => {
                tracing::warn!(target: T, waited = %human_duration(*waited), "caller timed out waiting")
            }
            PoolEvent::ValidationFailed { id, error } => {
                tracing::info!(target: T, id, %error, "validation failed; object destroyed")
            }
            PoolEvent::Evicted { id, reason } => {
                tracing::debug!(target: T, id, reason = reason.as_str(), "evicted")
            }
            PoolEvent::OperationFailed { op, error } => {
                tracing::warn!(target: T, op = op.as_str(), %error, "{} failed", op.as_str())
            }
            PoolEvent::LeakSuspected { id, held, location } => tracing::warn!(
                target: T, id, held = %human_duration(*held), %location,
                "object held past the leak detection threshold; taken at {location}"
            ),
        }
    }
}

/// How long the log lines of one kind of trouble are summed up in one.
const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The warn-level events logged in the current minute, by kind: the first
/// is logged, the rest counted and summed up when the next one comes after
/// the minute, so that a server that stays down does not flood the log.
#[derive(Default)]
struct LogRepeats(parking_lot::Mutex<Vec<(&'static str, tokio::time::Instant, u64)>>);

impl LogRepeats {
    /// Whether to log an event of `kind` now, and how many went unlogged
    /// in the minute before.
    fn admit(&self, kind: &'static str) -> (bool, u64) {
        let now = tokio::time::Instant::now();
        let mut seen = self.0.lock();
        match seen.iter_mut().find(|(k, ..)| *k == kind) {
            Some((_, since, more)) if now.saturating_duration_since(*since) < LOG_WINDOW => {
                *more += 1;
                (false, 0)
            }
            Some((_, since, more)) => {
                *since = now;
                (true, std::mem::take(more))
            }
            None => {
                seen.push((kind, now, 0));
                (true, 0)
            }
        }
    }
}

/// The sending side, owned by the pool.
pub(crate) struct EventBus {
    tx: broadcast::Sender<PoolEvent>,
    repeats: LogRepeats,
    /// Listeners that want every event, per-checkout ones included.
    listeners: Arc<AtomicUsize>,
    /// Listeners that want all but `Acquired` and `Released`.
    lifecycle: Arc<AtomicUsize>,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
            repeats: LogRepeats::default(),
            listeners: Arc::new(AtomicUsize::new(0)),
            lifecycle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether anybody listens; checked before building a hot-path event.
    #[inline]
    pub(crate) fn wanted(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn send(&self, ev: PoolEvent) {
        match ev.trouble() {
            Some(kind) => {
                let (log, before) = self.repeats.admit(kind);
                if before > 0 {
                    tracing::warn!(
                        target: "aquifer::pool",
                        "… {before} more {} in the last minute",
                        kind.replace('_', " ")
                    );
                }
                if log {
                    ev.trace();
                }
            }
            None => ev.trace(),
        }
        if self.wanted() || self.lifecycle.load(Ordering::Relaxed) > 0 {
            // Fails only when every receiver is gone: nothing to do then.
            let _ = self.tx.send(ev);
        }
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        self.counted(&self.listeners)
    }

    /// A listener that does not ask for per-checkout events (it may still
    /// see them while another listener does).
    pub(crate) fn subscribe_lifecycle(&self) -> EventStream {
        self.counted(&self.lifecycle)
    }

    fn counted(&self, counter: &Arc<AtomicUsize>) -> EventStream {
        counter.fetch_add(1, Ordering::Relaxed);
        EventStream {
            inner: BroadcastStream::new(self.tx.subscribe()),
            listeners: Arc::clone(counter),
            lost: 0,
        }
    }
}

/// A stream of [`PoolEvent`]s, from [`Pool::events`](crate::Pool::events).
///
/// It buffers `event_capacity` events; a listener that falls further behind
/// loses the oldest ones (counted by [`lost`](EventStream::lost)) and the pool
/// never waits for it.
pub struct EventStream {
    inner: BroadcastStream<PoolEvent>,
    listeners: Arc<AtomicUsize>,
    lost: u64,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("lost", &self.lost)
            .finish()
    }
}

impl EventStream {
    /// The next event; `None` once the pool is gone.
    pub async fn recv(&mut self) -> Option<PoolEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Events this listener missed because it fell behind.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    pub(crate) fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<PoolEvent>> {
        loop {
            match futures_core::Stream::poll_next(Pin::new(&mut self.inner), cx) {
                Poll::Ready(Some(Ok(ev))) => return Poll::Ready(Some(ev)),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(n)))) => self.lost += n,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl futures_core::Stream for EventStream {
    type Item = PoolEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        EventStream::poll_next(self, cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}
