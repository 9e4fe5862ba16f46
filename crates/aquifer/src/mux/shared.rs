//! What a multiplexer's handles and leases share: the state behind its
//! lock and the one door into it, the way a request takes and gives back
//! a slot, opens and closes, and the maintenance task.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::error::PoolError;
use crate::events::Reason;
use crate::pool::{Pool, Pooled};

use super::config::MuxConfig;
use super::error::MuxError;
use super::multiplexed::Multiplexed;
use super::state::{Asked, Closed, Counts, Handed, Handoffs, MuxState, Taken};

/// What every handle and lease of one multiplexer shares.
pub(super) struct MuxShared<M: Multiplexed> {
    pub(super) pool: Pool<M>,
    pub(super) cfg: MuxConfig,
    /// Reached only through [`locked`](Self::locked) and [`read`](Self::read).
    state: Mutex<MuxState<M>>,
    /// Usable and open connections, and whether closed: what `ready` and
    /// `close` wait on.
    pub(super) counts: watch::Sender<Counts>,
}

/// What to do once the lock is gone.
pub(super) struct MuxWork<M: Multiplexed> {
    pub(super) handoffs: Handoffs<M>,
    pub(super) closes: Vec<(Arc<Pooled<M>>, Closed)>,
    pub(super) opens: usize,
    pub(super) counts: Option<Counts>,
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

impl<M: Multiplexed> MuxShared<M> {
    /// A multiplexer's shared part over `pool`: opens up to `min` and
    /// starts maintenance.
    pub(super) fn start(pool: Pool<M>, cfg: MuxConfig) -> Arc<Self> {
        let state = MuxState::new(cfg.limits(), Instant::now());
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
        inner
    }

    pub(super) fn broken(&self) -> impl Fn(&M::Type) -> bool + '_ {
        |obj| self.pool.manager().is_broken(obj)
    }

    /// The door into the state: runs `f` under the lock, then does what
    /// it left in `after` (see [`finish`](Self::finish)).
    pub(super) fn locked<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut MuxState<M>, &mut MuxWork<M>) -> R,
    ) -> R {
        let mut after = MuxWork::default();
        let r = f(&mut self.state.lock(), &mut after);
        self.finish(after);
        r
    }

    /// Runs `f` on the locked state, which it only reads.
    pub(super) fn read<R>(&self, f: impl FnOnce(&MuxState<M>) -> R) -> R {
        f(&self.state.lock())
    }

    pub(super) async fn lease(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<Lease<M>, MuxError<M::Error>> {
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
            Asked::Taken(taken) => return Ok(Lease::new(taken, self, now, Some(now))),
            Asked::Queued(id, rx) => RequestClaim {
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
                got.map(|(taken, since)| Lease::new(taken, self, since, Some(now)))
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
                    return got.map(|(taken, since)| Lease::new(taken, self, since, Some(now)));
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
    fn release(self: &Arc<Self>, conn: Arc<Pooled<M>>, lease: &Lease<M>) {
        let now = Instant::now();
        let broken = self.pool.manager().is_broken(&conn);
        self.locked(|st, after| {
            if let Some(close) = st.release(&conn, (now - lease.since, lease.depth), broken, now) {
                after.closes.push(close);
            }
            // A slot given back unused (its request had left) is no measurement.
            let changed = lease
                .asked
                .is_some_and(|asked| st.adapt(now, now - asked, &mut after.closes));
            st.dispatch(now, &self.broken(), &mut after.handoffs);
            if broken || changed || !after.closes.is_empty() {
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
                        // An open that landed after the limit came down.
                        after.closes = st.shrink();
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
            st.raise_if_queued(now);
            st.dispatch(now, &self.broken(), &mut after.handoffs);
            after.opens = st.reserve_opens();
            after.counts = Some(st.counts());
            !(st.is_closed() && st.open() == 0)
        })
    }

    /// Does what a locked step decided: hands slots to waiters, closes
    /// connections, starts opens, publishes the counts.
    pub(super) fn finish(self: &Arc<Self>, after: MuxWork<M>) {
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
                drop(Lease::new(taken, self, since, None));
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
            Closed::Limited => Reason::Resized,
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
struct RequestClaim<'a, M: Multiplexed> {
    mux: &'a Arc<MuxShared<M>>,
    id: u64,
    rx: oneshot::Receiver<Handed<M>>,
    armed: bool,
}

impl<M: Multiplexed> RequestClaim<'_, M> {
    /// Closes the channel and takes what was sent before: a send after
    /// this fails, and the sender gives the slot back itself.
    fn take_late(&mut self) -> Option<Handed<M>> {
        self.rx.close();
        self.rx.try_recv().ok()
    }
}

impl<M: Multiplexed> Drop for RequestClaim<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            self.mux.locked(|st, _| st.leave(self.id, false));
            if let Some(Ok((taken, since))) = self.take_late() {
                drop(Lease::new(taken, self.mux, since, None));
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
        // Spread over the tick, so that the checks do not all reach the
        // server at once and stall every connection together.
        let checks = mux.locked(|st, _| st.start_checks());
        let spread = every / u32::try_from(checks.len()).unwrap_or(u32::MAX).max(1);
        for (k, conn) in checks.into_iter().enumerate() {
            let after = spread * u32::try_from(k).unwrap_or(u32::MAX);
            tokio::spawn(check_session(Arc::clone(&mux), conn, every, after));
        }
    }
}

/// One connection's session check, `after` into the tick. One that has
/// not answered within ten ticks (stuck behind long requests) counts as
/// unchanged, so that the connection can close when it must.
async fn check_session<M: Multiplexed>(
    mux: Arc<MuxShared<M>>,
    conn: Arc<Pooled<M>>,
    every: Duration,
    after: Duration,
) {
    tokio::time::sleep(after).await;
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
    /// When its request asked; `None` for a slot given back unused.
    asked: Option<Instant>,
    depth: usize,
}

impl<M: Multiplexed> Lease<M> {
    fn new(
        taken: Taken<M>,
        mux: &Arc<MuxShared<M>>,
        since: Instant,
        asked: Option<Instant>,
    ) -> Self {
        Lease {
            conn: Some(taken.conn),
            mux: Arc::clone(mux),
            since,
            asked,
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
            self.mux.release(conn, self);
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
