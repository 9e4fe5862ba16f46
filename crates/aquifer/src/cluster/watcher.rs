//! The task that turns a member pool's trouble events into the cluster's
//! warnings and bans.

use std::task::Poll;

use crate::events::{EventStream, PoolEvent};
use crate::manager::Manager;
use crate::pool::Pool;

/// The task that turns a member pool's trouble events into the cluster's
/// warnings, until it is stopped or the pool or the cluster is gone (or
/// the watcher is dropped, which aborts it).
pub(super) struct Watcher {
    orders: tokio::sync::mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`Watcher`] is asked to do besides watching.
pub(super) enum Command {
    /// Record every event the pool has sent so far, then say so.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Record every event the pool has sent so far, then end.
    Stop,
}

impl Watcher {
    /// Starts watching `pool` (if there is a runtime to watch on): every
    /// event goes to `record`, which returns `false` once the cluster is
    /// gone (the watcher then ends).
    pub(super) fn start<M: Manager>(
        pool: &Pool<M>,
        record: impl Fn(&PoolEvent) -> bool + Send + Sync + 'static,
    ) -> Option<Self> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let mut events = pool.lifecycle_events();
        let (orders, mut ordered) = tokio::sync::mpsc::unbounded_channel();
        let task = rt.spawn(async move {
            // Records what is buffered now without waiting; `false` once
            // the cluster is gone.
            let catch_up = |events: &mut EventStream| {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                while let Poll::Ready(Some(e)) = std::pin::Pin::new(&mut *events).poll_next(&mut cx)
                {
                    if !record(&e) {
                        return false;
                    }
                }
                true
            };
            loop {
                // An order first, else the next event (`None`: the pool is
                // gone).
                let next = std::future::poll_fn(|cx| {
                    if let Poll::Ready(order) = ordered.poll_recv(cx) {
                        return Poll::Ready(Err(order));
                    }
                    std::pin::Pin::new(&mut events).poll_next(cx).map(Ok)
                })
                .await;
                match next {
                    Ok(Some(e)) => {
                        if !record(&e) {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(Some(Command::Flush(done))) => {
                        let alive = catch_up(&mut events);
                        let _ = done.send(());
                        if !alive {
                            return;
                        }
                    }
                    // Stopped, or every handle gone: what the pool sent
                    // before that still counts.
                    Err(Some(Command::Stop) | None) => {
                        catch_up(&mut events);
                        return;
                    }
                }
            }
        });
        Some(Watcher { orders, task })
    }

    /// Completes once every event the pool has sent so far is recorded.
    /// (It borrows nothing, so it can be awaited after a lock is let go.)
    pub(super) fn flush(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let orders = self.orders.clone();
        async move {
            let (done, flushed) = tokio::sync::oneshot::channel();
            if orders.send(Command::Flush(done)).is_ok() {
                // An error means the task ended: nothing left to wait for.
                let _ = flushed.await;
            }
        }
    }

    /// Records what the pool sent so far, then ends.
    pub(super) async fn finish(mut self) {
        let _ = self.orders.send(Command::Stop);
        // An error means the runtime is shutting down: nothing to wait for.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The warning a pool event is worth, if any. A pool that
/// reaches `max` and queues callers is doing its job: only a caller that
/// gave up or was refused is worth an operator's look.
pub(super) fn warning_of(e: &PoolEvent) -> Option<String> {
    Some(match e {
        PoolEvent::CreateFailed {
            error,
            failures,
            retry_in,
        } => format!(
            "create failed ({failures} in a row, next try in {}): {error}",
            crate::error::human_duration(*retry_in)
        ),
        PoolEvent::DestroyFailed { id, error } => {
            format!("connection {id} failed to close (kept as pending): {error}")
        }
        PoolEvent::QueueTimeout { waited } => format!(
            "a caller gave up after waiting {}",
            crate::error::human_duration(*waited)
        ),
        PoolEvent::QueueFull { max_waiting } => {
            format!("wait queue full ({max_waiting}); a caller was refused")
        }
        PoolEvent::OperationFailed { op, error } => format!("{} failed: {error}", op.as_str()),
        _ => return None,
    })
}
