//! The operator's calls on a pool: start, drain, clear, close, resize,
//! retain and free idle objects, the objects that failed to close, and a
//! health check.

use std::pin::pin;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{BuildError, CreateError, PoolError};
use crate::events::Reason;
use crate::internals::{Door, Phase};
use crate::manager::Manager;
use crate::object::Metadata;

use super::Pool;

/// An object whose `destroy` failed or timed out, as
/// [`Pool::pending`] reports it.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PendingInfo {
    /// The object's id.
    pub id: u64,
    /// The last destroy error's message.
    pub error: String,
    /// When it first failed to close (serialized as `pending_for`, the
    /// seconds since then).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "pending_for", serialize_with = "crate::report::age")
    )]
    pub since: std::time::Instant,
    /// Destroy attempts so far.
    pub attempts: u32,
}

impl<M: Manager> Pool<M> {
    /// Starts background maintenance (if not yet running) and creates
    /// objects until `min` are alive. Checks nothing out: the metrics
    /// count no get for it.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] with the last create error as its source
    /// when `min` objects could not be made within `acquire_timeout`;
    /// [`PoolError::Create`] at once when a create failed with an error
    /// the manager calls permanent; [`PoolError::Closed`].
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let pool = aquifer::Pool::builder(Connector).min(2).eager(false).build()?;
    /// pool.start().await?; // two connections open before the first request
    /// assert_eq!(pool.status().idle, 2);
    /// # Ok(()) }
    /// ```
    pub async fn start(&self) -> Result<(), PoolError<M::Error>> {
        let shared = &self.handle.shared;
        shared.ensure_started();
        let started = Instant::now();
        let deadline = crate::clock::later(shared.cfg.acquire_timeout);
        let failures_before = shared.read(|st| st.failure_seq());
        loop {
            let created = shared.created.notified();
            let mut created = pin!(created);
            created.as_mut().enable();
            let (phase, has_min, failed) = shared.read(|st| {
                let failed = (st.failure_seq() > failures_before)
                    .then(|| st.last_error())
                    .flatten();
                (st.phase(), st.has_min(), failed)
            });
            if phase == Phase::Closed {
                return Err(PoolError::Closed);
            }
            if has_min {
                return Ok(());
            }
            if let Some(CreateError::Backend(e)) = &failed {
                if shared.manager.is_permanent(e) {
                    return Err(PoolError::Create(Box::new(CreateError::Backend(
                        std::sync::Arc::clone(e),
                    ))));
                }
            }
            shared.refill();
            if tokio::time::timeout_at(deadline, created).await.is_err() {
                let last = shared.read(|st| st.last_error());
                return Err(PoolError::timeout(started.elapsed(), last));
            }
        }
    }

    /// Stops new checkouts (they fail with [`PoolError::Draining`]), serves
    /// the callers already waiting, and returns once every object is back.
    /// Follow it with [`close`](Pool::close) or [`clear`](Pool::clear).
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolError;
    ///
    /// let conn = pool.get().await?;
    /// let drained = tokio::spawn({
    ///     let pool = pool.clone();
    ///     async move { pool.drain().await }
    /// });
    /// tokio::task::yield_now().await;
    /// assert!(matches!(pool.get().await, Err(PoolError::Draining)));
    /// drop(conn); // the last one back: the drain completes
    /// drained.await?;
    /// pool.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn drain(&self) {
        self.handle.shared.locked(|st, _| st.drain());
        // Wakes create jobs waiting out a backoff, so that they stop.
        self.handle.shared.settled.notify_waiters();
        self.handle.shared.wait_settled().await;
    }

    /// Destroys every idle object (waiting for the destroys), then lets the
    /// pool refill to `min`. Returns how many were destroyed.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// drop(pool.get().await?);
    /// assert_eq!(pool.clear().await, 1); // the idle connection, closed
    /// assert_eq!(pool.status().idle, 0);
    /// # Ok(()) }
    /// ```
    pub async fn clear(&self) -> usize {
        let taken = self.handle.shared.locked(|st, _| st.take_idle(|_| true));
        let n = taken.len();
        self.handle.shared.destroy_all(taken, Reason::Cleared).await;
        self.handle.shared.refill();
        n
    }

    /// Closes the pool: new and waiting checkouts fail with
    /// [`PoolError::Closed`], idle objects are destroyed (this waits for
    /// that), and objects still out are destroyed when they come back.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use aquifer::PoolError;
    ///
    /// pool.close().await;
    /// assert!(pool.is_closed());
    /// assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        let taken = self.handle.shared.close_state();
        self.handle.shared.destroy_all(taken, Reason::Closed).await;
    }

    /// Whether the pool was closed.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// assert!(!pool.is_closed());
    /// pool.close().await;
    /// assert!(pool.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.handle.shared.read(|st| st.phase()) == Phase::Closed
    }

    /// Changes `max`. When it shrinks, idle objects above it are destroyed at
    /// once and borrowed ones when they come back. A closed pool ignores
    /// it (as deadpool does): its status keeps the `max` it closed with.
    ///
    /// # Errors
    /// [`BuildError`] when `max` is 0 or below `min`.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// pool.resize(16)?;
    /// assert_eq!(pool.status().max, 16);
    /// assert!(pool.resize(0).is_err()); // a pool of nothing is refused
    /// # Ok(()) }
    /// ```
    pub fn resize(&self, max: usize) -> Result<(), BuildError> {
        self.handle
            .shared
            .locked(|st, after| st.set_max(max, after))
    }

    /// Destroys the idle objects for which `keep` returns `false`; returns how many.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let (a, b) = (pool.get().await?, pool.get().await?);
    /// let keep = a.id();
    /// drop((a, b));
    /// assert_eq!(pool.retain(|_conn, meta| meta.id() == keep).await, 1);
    /// # Ok(()) }
    /// ```
    pub async fn retain(&self, mut keep: impl FnMut(&M::Type, &Metadata) -> bool) -> usize {
        let taken = self
            .handle
            .shared
            .locked(|st, _| st.take_idle(|e| !keep(&e.obj.value, &e.meta)));
        let n = taken.len();
        self.handle.shared.destroy_all(taken, Reason::Cleared).await;
        self.handle.shared.refill();
        n
    }

    /// Keeps at most `keep` healthy idle objects: broken ones and the
    /// surplus (those idle longest) are destroyed. Returns how many.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// let (a, b, c) = (pool.get().await?, pool.get().await?, pool.get().await?);
    /// drop((a, b, c));
    /// assert_eq!(pool.free(1).await, 2); // one idle connection left
    /// assert_eq!(pool.status().idle, 1);
    /// # Ok(()) }
    /// ```
    pub async fn free(&self, keep: usize) -> usize {
        let shared = &self.handle.shared;
        let taken = shared.locked(|st, _| {
            let healthy = st
                .inspect_idle(|idle| idle.iter().filter(|e| !shared.broken(&e.obj.value)).count());
            let mut surplus = healthy.saturating_sub(keep);
            st.take_idle(|e| {
                if shared.broken(&e.obj.value) {
                    true
                } else if surplus > 0 {
                    surplus -= 1;
                    true
                } else {
                    false
                }
            })
        });
        let n = taken.len();
        shared.destroy_all(taken, Reason::Cleared).await;
        n
    }

    /// Objects whose `destroy` failed or timed out, with their errors.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// // Nothing failed to close.
    /// assert!(pool.pending().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn pending(&self) -> Vec<PendingInfo> {
        self.handle
            .shared
            .pending
            .lock()
            .iter()
            .map(|p| PendingInfo {
                id: p.entry.meta.id,
                error: crate::error::error_chain(&p.error),
                since: p.since.into_std(),
                attempts: p.attempts,
            })
            .collect()
    }

    /// Tries to close the pending objects again. With `force`, drops them
    /// without calling `destroy`. Returns how many are still pending.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// // Retries every failed close; with `true`, drops them instead.
    /// assert_eq!(pool.close_pending(false).await, 0);
    /// # Ok(()) }
    /// ```
    pub async fn close_pending(&self, force: bool) -> usize {
        let all = std::mem::take(&mut *self.handle.shared.pending.lock());
        if force {
            let n = all.len();
            for p in &all {
                tracing::debug!(target: "aquifer::pool", id = p.entry.meta.id, "pending object dropped by force");
            }
            drop(all);
            tracing::info!(target: "aquifer::pool", dropped = n, "pending objects dropped");
            return 0;
        }
        for p in all {
            self.handle
                .shared
                .destroy_now(p.entry, Reason::Closed, p.attempts)
                .await;
        }
        self.handle.shared.pending.lock().len()
    }

    /// A health check: one checkout and one round trip on it
    /// ([`Manager::validate`]), within `timeout` in all. A connection that
    /// fails the round trip is closed, as a failed validation is.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use std::time::Duration;
    ///
    /// let health = pool.check(Duration::from_secs(1)).await;
    /// assert!(health.healthy, "{:?}", health.error);
    /// # Ok(()) }
    /// ```
    pub async fn check(&self, timeout: Duration) -> crate::status::Health {
        let start = Instant::now();
        // The checkout's own timeout carries the last create error.
        let error = match self.get_timeout(timeout).await {
            Err(e) => Some(crate::error::error_chain(&e)),
            Ok(mut obj) => {
                let left = timeout.saturating_sub(start.elapsed());
                let answer =
                    tokio::time::timeout(left, self.handle.shared.manager.validate(&mut obj));
                match answer.await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => {
                        obj.destroy_for(Reason::ValidationFailed);
                        Some(crate::error::error_chain(&e))
                    }
                    Err(_) => {
                        obj.destroy_for(Reason::ValidationFailed);
                        Some(format!(
                            "no answer within {}: the server is slow or unreachable",
                            crate::error::human_duration(timeout)
                        ))
                    }
                }
            }
        };
        crate::status::Health {
            healthy: error.is_none(),
            latency: start.elapsed(),
            error,
        }
    }
}
