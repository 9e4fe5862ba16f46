//! The multiplexer: many requests share each connection at once, over a
//! set of connections sized by what it measures, within `min` and `max`.
//!
//! Connections come from an inner [`Pool`], which opens them (with its
//! create timeout, backoff, permanent-error check and events); the
//! multiplexer keeps them checked out and hands each to many requests.

pub(crate) mod builder;
mod config;
mod error;
mod limit;
mod multiplexed;
mod shared;
mod state;
mod status;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::CreateError;
use crate::events::EventStream;
use crate::metrics::Metrics;
use crate::pool::Pool;

pub use config::{MuxConfig, Spread};
pub use error::MuxError;
pub use multiplexed::Multiplexed;
pub use status::{Closes, LimitReason, LimitSample, MuxLimit, MuxMetrics, MuxStatus};

pub use shared::Lease;

use shared::MuxShared;

/// Many requests over a set of shared connections. See the
/// [crate docs](crate) for when to use it rather than a [`Pool`].
///
/// A request takes a slot with [`lease`](Multiplexer::lease) (or runs a
/// closure with [`run`](Multiplexer::run)) on the connection with the
/// fewest requests in flight. Below its limit of connections, a request
/// that would queue behind another opens a connection instead; at the
/// limit, requests pipeline up to `max_in_flight` per connection, then
/// queue in arrival order. The limit is the count between `min` and `max`
/// that measured best ([`MuxConfig::adaptive`], on by default): fewer
/// connections, each carrying more, for short statements on a busy server;
/// more for statements that wait. With `adaptive` off it is `max`. A
/// connection unused for `scale_down_after` closes while more than `min`
/// are open; one past `max_lifetime` retires and is replaced.
///
/// ```
/// # use std::convert::Infallible;
/// # struct Echo;
/// # impl aquifer::Manager for Echo {
/// #     type Type = String;
/// #     type Error = Infallible;
/// #     async fn create(&self) -> Result<String, Infallible> { Ok("hello".into()) }
/// # }
/// # impl aquifer::Multiplexed for Echo {}
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), aquifer::MuxError<Infallible>> {
/// let mux = aquifer::Multiplexer::builder(Echo).min(1).max(4).build().unwrap();
/// mux.ready().await?;
/// let len = mux.run(async |conn: &String| conn.len()).await?;
/// assert_eq!(len, 5);
/// # Ok(())
/// # }
/// ```
pub struct Multiplexer<M: Multiplexed> {
    inner: Arc<MuxShared<M>>,
}

impl<M: Multiplexed> Multiplexer<M> {
    fn start(pool: Pool<M>, cfg: MuxConfig) -> Self {
        Multiplexer {
            inner: MuxShared::start(pool, cfg),
        }
    }

    /// Takes a slot on a connection, waiting up to `acquire_timeout`. The
    /// slot is given back when the [`Lease`] is dropped.
    ///
    /// # Errors
    /// [`MuxError::Timeout`] (with the last open error as its source),
    /// [`MuxError::Connect`] when opening failed with an error that waiting
    /// cannot fix, [`MuxError::QueueFull`], [`MuxError::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future leaks nothing: a queued request leaves the
    /// queue, and a slot handed to it in the meantime goes to the next one.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// let lease = mux.lease().await?;
    /// assert_eq!(lease.len(), 5); // derefs to the shared connection
    /// assert_eq!(mux.status().in_flight, 1);
    /// drop(lease); // the slot is given back
    /// # Ok(()) }
    /// ```
    pub async fn lease(&self) -> Result<Lease<M>, MuxError<M::Error>> {
        self.inner.lease(self.inner.cfg.acquire_timeout).await
    }

    /// Runs `f` with a shared connection and gives the slot back when it
    /// ends (or is dropped).
    ///
    /// # Errors
    /// As [`lease`](Multiplexer::lease); `f`'s own result is inside `Ok`.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// let upper = mux.run(async |conn: &String| conn.to_uppercase()).await?;
    /// assert_eq!(upper, "HELLO");
    /// # Ok(()) }
    /// ```
    pub async fn run<R>(
        &self,
        f: impl AsyncFnOnce(&M::Type) -> R,
    ) -> Result<R, MuxError<M::Error>> {
        let lease = self.lease().await?;
        Ok(f(&lease).await)
    }

    /// Resolves once `min` connections are open (at once when `min` is 0),
    /// waiting at most `acquire_timeout`.
    ///
    /// # Errors
    /// [`MuxError::Timeout`] when `min` connections are not open in time,
    /// with the newest failure to open one as its source;
    /// [`MuxError::Connect`] at once when opening failed with an error
    /// that waiting cannot fix (a wrong password, an unknown database);
    /// [`MuxError::Closed`] when the multiplexer closes first.
    ///
    /// # Cancel safety
    /// Dropping the future changes nothing: the connections keep opening.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// mux.ready().await?; // `min` (here 1) connections are open
    /// assert!(mux.status().connections >= 1);
    /// # Ok(()) }
    /// ```
    pub async fn ready(&self) -> Result<(), MuxError<M::Error>> {
        let started = Instant::now();
        let mut rx = self.inner.counts.subscribe();
        let min = self.inner.cfg.min;
        let failures_before = rx.borrow().open_failures;
        let wait = async {
            loop {
                let c = *rx.borrow_and_update();
                if c.closed {
                    return Err(MuxError::Closed);
                }
                if c.usable >= min {
                    return Ok(());
                }
                // Only a failure seen during this wait: one from before
                // may have been fixed since.
                if c.open_failures > failures_before {
                    if let Some(e) = self.inner.read(|st| st.permanent_error()) {
                        return Err(MuxError::Connect(e));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(MuxError::Closed);
                }
            }
        };
        match tokio::time::timeout(self.inner.cfg.acquire_timeout, wait).await {
            Ok(done) => done,
            Err(_) => Err(MuxError::Timeout {
                waited: started.elapsed(),
                last_open_error: self.last_open_error(),
            }),
        }
    }

    /// The newest failure to open a connection since the last success, if
    /// opening is failing now.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// mux.ready().await?;
    /// assert!(mux.last_open_error().is_none());
    /// # Ok(()) }
    /// ```
    pub fn last_open_error(&self) -> Option<CreateError<M::Error>> {
        let last = self.inner.read(|st| st.last_error());
        self.inner.pool.last_create_error().or(last)
    }

    /// Stops taking requests (queued ones fail with
    /// [`MuxError::Closed`]), waits for the requests in flight to end,
    /// closes every connection and the inner pool.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// use aquifer::MuxError;
    ///
    /// mux.close().await;
    /// assert!(mux.is_closed());
    /// assert!(matches!(mux.lease().await, Err(MuxError::Closed)));
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        self.inner.locked(|st, after| {
            after.closes = st.shut(&mut after.handoffs);
            after.counts = Some(st.counts());
        });
        let mut rx = self.inner.counts.subscribe();
        // `Err` only once the sender is gone, which `self` prevents.
        let _ = rx.wait_for(|c| c.open == 0).await;
        self.inner.pool.close().await;
    }

    /// Whether [`close`](Multiplexer::close) was called.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// assert!(!mux.is_closed());
    /// mux.close().await;
    /// assert!(mux.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.read(|st| st.is_closed())
    }

    /// Takes no new requests (they fail with [`MuxError::Frozen`]) until
    /// [`unfreeze`](Multiplexer::unfreeze); queued and running requests go
    /// on, and the connections stay open. An operator's pause, as a
    /// cluster's `freeze` is for a pool.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// use aquifer::MuxError;
    ///
    /// mux.freeze();
    /// assert!(matches!(mux.lease().await, Err(MuxError::Frozen)));
    /// mux.unfreeze();
    /// drop(mux.lease().await?);
    /// # Ok(()) }
    /// ```
    pub fn freeze(&self) {
        self.inner.locked(|st, _| st.set_frozen(true));
    }

    /// Takes requests again.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// mux.freeze();
    /// mux.unfreeze();
    /// assert!(!mux.is_frozen());
    /// # Ok(()) }
    /// ```
    pub fn unfreeze(&self) {
        self.inner.locked(|st, _| st.set_frozen(false));
    }

    /// A health check: a slot on an open connection within `timeout`
    /// (opening one if need be). Unhealthy with the reason when none comes
    /// (the newest failure to open one, for a server that is down), or when
    /// the connection it got is broken.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// use std::time::Duration;
    ///
    /// let health = mux.check(Duration::from_secs(1)).await;
    /// assert!(health.healthy, "{:?}", health.error);
    /// # Ok(()) }
    /// ```
    pub async fn check(&self, timeout: Duration) -> crate::status::Health {
        let started = Instant::now();
        let error = match self.inner.lease(timeout).await {
            Ok(lease) if self.manager().is_broken(&lease) => {
                Some("the connection it got is broken".to_owned())
            }
            Ok(_) => None,
            Err(e) => Some(crate::error::error_chain(&e)),
        };
        crate::status::Health {
            healthy: error.is_none(),
            latency: started.elapsed(),
            error,
        }
    }

    /// Whether [`freeze`](Multiplexer::freeze) holds.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// mux.freeze();
    /// assert!(mux.is_frozen());
    /// # Ok(()) }
    /// ```
    pub fn is_frozen(&self) -> bool {
        self.inner.read(|st| st.is_frozen())
    }

    /// Where the connections and requests are now.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// let lease = mux.lease().await?;
    /// let s = mux.status();
    /// assert_eq!((s.in_flight, s.queued), (1, 0));
    /// # drop(lease);
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> MuxStatus {
        self.inner.read(|st| st.status(Instant::now()))
    }

    /// The multiplexer's counters.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// drop(mux.lease().await?);
    /// assert_eq!(mux.metrics().requests, 1);
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> MuxMetrics {
        self.inner.read(|st| st.metrics())
    }

    /// The inner pool's counters: creates, create failures and times,
    /// destroys.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// mux.ready().await?;
    /// assert!(mux.pool_metrics().creates >= 1); // connections opened
    /// # Ok(()) }
    /// ```
    pub fn pool_metrics(&self) -> Metrics {
        self.inner.pool.metrics()
    }

    /// Connection events (opened, failed to open, closed with a reason),
    /// from the inner pool.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// use aquifer::PoolEvent;
    ///
    /// let mux = aquifer::Multiplexer::builder(Echo).build()?; // min 0: opens on demand
    /// let mut events = mux.events();
    /// drop(mux.lease().await?);
    /// assert!(matches!(events.recv().await, Some(PoolEvent::Created { .. })));
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> EventStream {
        self.inner.pool.events()
    }

    /// The configuration it was built with.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// assert_eq!(mux.config().max, 4);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &MuxConfig {
        &self.inner.cfg
    }

    /// The manager.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// let _echo: &Echo = mux.manager();
    /// # Ok(()) }
    /// ```
    pub fn manager(&self) -> &M {
        self.inner.pool.manager()
    }
}

impl<M: Multiplexed> Clone for Multiplexer<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: Multiplexed> fmt::Debug for Multiplexer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Multiplexer")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
