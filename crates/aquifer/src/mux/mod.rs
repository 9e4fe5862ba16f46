//! The multiplexer: many requests share each connection at once, over a
//! set of connections that grows under load and shrinks when it falls.
//!
//! Connections come from an inner [`Pool`], which opens them (with its
//! create timeout, backoff, permanent-error check and events); the
//! multiplexer keeps them checked out and hands each to many requests.

pub(crate) mod builder;
mod config;
mod error;
mod multiplexed;
mod state;
mod status;

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::error::{CreateError, PoolError};
use crate::events::{EventStream, Reason};
use crate::metrics::Metrics;
use crate::pool::{Pool, Pooled};

pub use config::{MuxConfig, Spread};
pub use error::MuxError;
pub use multiplexed::Multiplexed;
pub use status::{Closes, MuxMetrics, MuxStatus};

use state::{Asked, Closed, Handed, Handoffs, MuxState, Taken};

/// Many requests over a set of shared connections. See the
/// [crate docs](crate) for when to use it rather than a [`Pool`].
///
/// A request takes a slot with [`lease`](Multiplexer::lease) (or runs a
/// closure with [`run`](Multiplexer::run)) on the connection with the
/// fewest requests in flight. Below `max` connections, a request that
/// would queue behind another opens a connection instead; at `max`,
/// requests pipeline up to `max_in_flight` per connection, then queue in
/// arrival order. A connection unused for `scale_down_after` closes while
/// more than `min` are open; one past `max_lifetime` retires and is
/// replaced.
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

struct MuxShared<M: Multiplexed> {
    pool: Pool<M>,
    cfg: MuxConfig,
    state: Mutex<MuxState<M>>,
    /// Usable and open connections, and whether closed: what `ready` and
    /// `close` wait on.
    counts: watch::Sender<Counts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counts {
    usable: usize,
    open: usize,
    closed: bool,
    /// Opens that failed, so that a waiter on `ready` hears of each.
    open_failures: u64,
}

impl<M: Multiplexed> MuxState<M> {
    fn counts(&self) -> Counts {
        Counts {
            usable: self.usable(),
            open: self.open(),
            closed: self.is_closed(),
            open_failures: self.open_failures(),
        }
    }
}

/// What to do once the lock is gone.
struct MuxWork<M: Multiplexed> {
    handoffs: Handoffs<M>,
    closes: Vec<(Arc<Pooled<M>>, Closed)>,
    opens: usize,
    counts: Option<Counts>,
}

impl<M: Multiplexed> Default for MuxWork<M> {
    fn default() -> Self {
        Self {
            handoffs: Vec::new(),
            closes: Vec::new(),
            opens: 0,
            counts: None,
        }
    }
}

impl<M: Multiplexed> Multiplexer<M> {
    fn start(pool: Pool<M>, cfg: MuxConfig) -> Self {
        let state = MuxState::new(cfg.limits());
        let inner = Arc::new(MuxShared {
            pool,
            state: Mutex::new(state),
            counts: watch::Sender::new(Counts::default()),
            cfg,
        });
        inner.locked(|st, after| after.opens = st.reserve_opens());
        tokio::spawn(maintain(
            Arc::downgrade(&inner),
            inner.cfg.maintenance_interval,
        ));
        Multiplexer { inner }
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
        self.inner.read(|st| st.status())
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

impl<M: Multiplexed> MuxShared<M> {
    fn broken(&self) -> impl Fn(&M::Type) -> bool + '_ {
        |obj| self.pool.manager().is_broken(obj)
    }

    /// The door into the state: runs `f` under the lock, then does what
    /// it left in `after` (see [`finish`](Self::finish)).
    fn locked<R>(self: &Arc<Self>, f: impl FnOnce(&mut MuxState<M>, &mut MuxWork<M>) -> R) -> R {
        let mut after = MuxWork::default();
        let r = f(&mut self.state.lock(), &mut after);
        self.finish(after);
        r
    }

    /// Runs `f` on the locked state, which it only reads.
    fn read<R>(&self, f: impl FnOnce(&MuxState<M>) -> R) -> R {
        f(&self.state.lock())
    }

    async fn lease(self: &Arc<Self>, timeout: Duration) -> Result<Lease<M>, MuxError<M::Error>> {
        let now = Instant::now();
        let asked = self.locked(|st, after| {
            let asked = st.ask(now, &self.broken());
            if let Ok(Asked::Queued(..)) = asked {
                // The demand just rose: a connection may take more now.
                st.dispatch(now, &self.broken(), &mut after.handoffs);
                after.opens = st.reserve_opens();
            }
            asked
        });
        let mut queued = match asked? {
            Asked::Taken(taken) => return Ok(Lease::new(taken, self, now)),
            Asked::Queued(id, rx) => Queued {
                mux: self,
                id,
                rx,
                armed: true,
            },
        };
        let got = tokio::time::timeout(timeout, &mut queued.rx).await;
        match got {
            Ok(Ok(got)) => {
                queued.armed = false;
                got.map(|(taken, since)| Lease::new(taken, self, since))
            }
            // The sender went without a word: the multiplexer is gone.
            Ok(Err(_)) => {
                queued.armed = false;
                Err(MuxError::Closed)
            }
            Err(_) => {
                let last = self.locked(|st, _| {
                    st.leave(queued.id, true);
                    st.last_error()
                });
                queued.armed = false;
                // A slot handed over just as the time ran out: take it.
                if let Some(got) = queued.take_late() {
                    return got.map(|(taken, since)| Lease::new(taken, self, since));
                }
                // An open still under way knows its newest failure.
                let last_open_error = self.pool.last_create_error().or(last);
                Err(MuxError::Timeout {
                    waited: now.elapsed(),
                    last_open_error,
                })
            }
        }
    }

    /// A request's slot comes back.
    fn release(self: &Arc<Self>, conn: Arc<Pooled<M>>, since: Instant, depth: usize) {
        let now = Instant::now();
        let broken = self.pool.manager().is_broken(&conn);
        self.locked(|st, after| {
            if let Some(close) = st.release(&conn, (now - since, depth), broken, now) {
                after.closes.push(close);
            }
            st.dispatch(now, &self.broken(), &mut after.handoffs);
            if broken || !after.closes.is_empty() {
                after.opens = st.reserve_opens();
                after.counts = Some(st.counts());
            }
            // This request's reference goes before the closes look at the
            // connection's count: the one that closes it must hold the last.
            drop(conn);
        });
    }

    /// An open ended.
    fn opened(self: &Arc<Self>, got: Result<Pooled<M>, PoolError<M::Error>>, took: Duration) {
        let now = Instant::now();
        self.locked(|st, after| {
            match got {
                Ok(conn) => {
                    tracing::debug!(target: "aquifer::mux", id = conn.id(), "connection opened");
                    if let Some(refused) = st.opened(conn, took, now) {
                        after.closes.push((refused, Closed::Shutdown));
                    } else {
                        st.dispatch(now, &self.broken(), &mut after.handoffs);
                        after.opens = st.reserve_opens();
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "aquifer::mux", error = %crate::error::error_chain(&e), "open failed");
                    let permanent = matches!(e, PoolError::Create(_));
                    st.open_failed(e.create_error().cloned(), permanent, &mut after.handoffs);
                    // The next open waits for a request or the next tick,
                    // so that a refusal does not become a busy loop.
                }
            }
            after.counts = Some(st.counts());
        });
    }

    /// The maintenance tick: closes surplus and broken connections, opens
    /// up to `min`. Returns `false` once the multiplexer is closed and empty.
    fn maintain(self: &Arc<Self>) -> bool {
        let now = Instant::now();
        self.locked(|st, after| {
            after.closes = st.surplus(now, self.cfg.scale_down_after, &self.broken());
            st.dispatch(now, &self.broken(), &mut after.handoffs);
            after.opens = st.reserve_opens();
            after.counts = Some(st.counts());
            !(st.is_closed() && st.open() == 0)
        })
    }

    /// Does what a locked step decided: hands slots to waiters, closes
    /// connections, starts opens, publishes the counts.
    fn finish(self: &Arc<Self>, after: MuxWork<M>) {
        if !after.handoffs.is_empty() {
            self.hand_over(after.handoffs);
        }
        for (conn, why) in after.closes {
            self.close_conn(conn, why);
        }
        self.spawn_opens(after.opens);
        if let Some(c) = after.counts {
            self.counts
                .send_if_modified(|old| std::mem::replace(old, c) != c);
        }
    }

    /// Sends slots (or errors) to queued requests.
    fn hand_over(self: &Arc<Self>, handoffs: Handoffs<M>) {
        let now = Instant::now();
        for (tx, got) in handoffs {
            // A waiter that left: its slot comes straight back.
            if let Err(Ok((taken, since))) = tx.send(got.map(|taken| (taken, now))) {
                drop(Lease::new(taken, self, since));
            }
        }
    }

    fn close_conn(&self, conn: Arc<Pooled<M>>, why: Closed) {
        let reason = match why {
            Closed::ScaledDown => Reason::Idle,
            Closed::Broken => Reason::Broken,
            Closed::Lifetime => Reason::Lifetime,
            Closed::Shutdown => Reason::Closed,
            Closed::Session => Reason::SessionChanged,
        };
        tracing::debug!(target: "aquifer::mux", reason = reason.as_str(), "connection closing");
        // A connection closes only once no request holds it.
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.destroy_for(reason);
        }
    }

    fn spawn_opens(self: &Arc<Self>, n: usize) {
        for _ in 0..n {
            let pool = self.pool.clone();
            let mux = Arc::downgrade(self);
            tokio::spawn(async move {
                let started = Instant::now();
                let got = pool.get().await;
                match mux.upgrade() {
                    Some(mux) => mux.opened(got, started.elapsed()),
                    // Gone: the connection goes back to the pool, which closes.
                    None => drop(got),
                }
            });
        }
    }
}

/// A queued request's place; if its future is dropped, it leaves the
/// queue and gives back a slot handed to it in the meantime.
struct Queued<'a, M: Multiplexed> {
    mux: &'a Arc<MuxShared<M>>,
    id: u64,
    rx: oneshot::Receiver<Handed<M>>,
    armed: bool,
}

impl<M: Multiplexed> Queued<'_, M> {
    /// Closes the channel and takes what was sent before: a send after
    /// this fails, and the sender gives the slot back itself.
    fn take_late(&mut self) -> Option<Handed<M>> {
        self.rx.close();
        self.rx.try_recv().ok()
    }
}

impl<M: Multiplexed> Drop for Queued<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            self.mux.locked(|st, _| st.leave(self.id, false));
            if let Some(Ok((taken, since))) = self.take_late() {
                drop(Lease::new(taken, self.mux, since));
            }
        }
    }
}

async fn maintain<M: Multiplexed>(mux: Weak<MuxShared<M>>, every: Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(mux) = mux.upgrade() else { return };
        if !mux.maintain() {
            return;
        }
        for conn in mux.locked(|st, _| st.start_checks()) {
            tokio::spawn(check_session(Arc::clone(&mux), conn, every));
        }
    }
}

/// One connection's session check. One that has not answered within ten
/// ticks (stuck behind long requests) counts as unchanged, so that the
/// connection can close when it must.
async fn check_session<M: Multiplexed>(
    mux: Arc<MuxShared<M>>,
    conn: Arc<Pooled<M>>,
    every: Duration,
) {
    let changed = tokio::time::timeout(every * 10, mux.pool.manager().session_changed(&conn))
        .await
        .unwrap_or(false);
    if changed {
        tracing::warn!(
            target: "aquifer::mux", id = conn.id(),
            "a statement changed the shared session; the connection is retired and replaced"
        );
    }
    mux.locked(|st, after| {
        if let Some(close) = st.checked(&conn, changed) {
            after.closes.push(close);
        }
        if changed {
            st.dispatch(Instant::now(), &mux.broken(), &mut after.handoffs);
            after.opens = st.reserve_opens();
            after.counts = Some(st.counts());
        }
        // As on a release: the close must hold the last reference.
        drop(conn);
    });
}

/// A slot on a shared connection: it derefs to the connection, and the
/// slot is given back when it is dropped. Other requests use the same
/// connection meanwhile, so it gives only `&` access.
#[must_use = "dropping a Lease gives its slot back at once"]
pub struct Lease<M: Multiplexed> {
    conn: Option<Arc<Pooled<M>>>,
    mux: Arc<MuxShared<M>>,
    since: Instant,
    depth: usize,
}

impl<M: Multiplexed> Lease<M> {
    fn new(taken: Taken<M>, mux: &Arc<MuxShared<M>>, since: Instant) -> Self {
        Lease {
            conn: Some(taken.conn),
            mux: Arc::clone(mux),
            since,
            depth: taken.depth,
        }
    }

    /// The connection's id, unique within the multiplexer.
    pub fn id(&self) -> u64 {
        self.conn.as_ref().expect(LEASED).id()
    }
}

const LEASED: &str = "a Lease holds its connection until dropped";

impl<M: Multiplexed> Deref for Lease<M> {
    type Target = M::Type;

    fn deref(&self) -> &M::Type {
        self.conn.as_ref().expect(LEASED)
    }
}

impl<M: Multiplexed> Drop for Lease<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.mux.release(conn, self.since, self.depth);
        }
    }
}

impl<M: Multiplexed> fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id())
            .finish_non_exhaustive()
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
