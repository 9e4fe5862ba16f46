//! The driver task of a connection, and the returning borrower's help:
//! polling tokio-postgres's `Connection` while telling the [`WireWatch`] when
//! a poll begins and ends and when the task is woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::WireWatch;

/// How many times a returning borrower polls the connection at most.
const HELP_POLLS: usize = 3;

/// The connection's I/O future, boxed.
pub(crate) type Io = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// The connection's I/O future and what polling it needs, shared by the
/// driver task and a returning borrower that helps it along.
#[derive(Default)]
pub(super) struct IoState {
    /// `None` before the driver starts and once the connection has ended.
    io: Option<Io>,
    /// The driver task's waker, and ours that notes each wake-up.
    waker: Option<(Waker, Waker)>,
    /// How the connection ended, when a helper saw it end.
    ended: Option<Result<(), tokio_postgres::Error>>,
}

impl WireWatch {
    /// Polls the connection once: writes what the client queued, reads
    /// what arrived. Returns the outcome if the connection ended.
    fn poll_io(&self, drive: &mut IoState) -> Poll<Result<(), tokio_postgres::Error>> {
        let (Some(io), Some((_, noting))) = (drive.io.as_mut(), drive.waker.as_ref()) else {
            return Poll::Pending;
        };
        self.begin_poll();
        let polled = io.as_mut().poll(&mut Context::from_waker(noting));
        self.end_poll();
        if polled.is_ready() {
            // The I/O future holds the socket, which holds this status:
            // dropping it here breaks that cycle.
            drive.io = None;
        }
        polled
    }

    /// Called on return: if requests are still queued in the client, and
    /// nobody is driving the connection right now, writes them from this
    /// thread instead of waiting for the driver task, so that a connection
    /// whose last requests run nothing (a dropped statement's Close) goes
    /// back at once. Never waits: while the driver task is in a poll, the
    /// connection is left to a reset task, which waits for it.
    pub(crate) fn help_write(&self) {
        // A wake-up for the socket (an answer arriving) looks like one for
        // a queued request: poll again while that is all it is.
        for _ in 0..HELP_POLLS {
            if self.written() {
                return;
            }
            let Some(mut drive) = self.0.drive.try_lock() else {
                return;
            };
            if self.written() {
                return;
            }
            if let Poll::Ready(outcome) = self.poll_io(&mut drive) {
                drive.ended = Some(outcome);
                if let Some((task, _)) = &drive.waker {
                    task.wake_by_ref();
                }
                return;
            }
        }
    }
}

/// The driver task: polls a tokio-postgres connection until it ends and
/// tells its [`WireWatch`] when a poll begins and ends and when the task is
/// woken. A request queued by the client wakes the task, so a poll that
/// began after the last wake-up and ended flushed has written every
/// request queued before it.
pub(crate) struct Driver {
    status: WireWatch,
}

impl Driver {
    pub(crate) fn new(io: Io, status: WireWatch) -> Self {
        status.0.drive.lock().io = Some(io);
        // The startup flushed the socket, but nothing has polled the
        // connection's queue yet: until the first poll, a request queued
        // there wakes nobody, and the connection is not known written.
        status.woken();
        Self { status }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A runtime shutting down drops the task unfinished; the I/O future
        // must go with it (see `poll_io`).
        self.status.0.drive.lock().io = None;
    }
}

/// The task's waker, noting each wake-up in the status first.
struct NoteWake {
    status: WireWatch,
    task: Waker,
}

impl Wake for NoteWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.status.woken();
        self.task.wake_by_ref();
    }
}

impl Future for Driver {
    type Output = Result<(), tokio_postgres::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let status = &self.status;
        let mut drive = status.0.drive.lock();
        if let Some(ended) = drive.ended.take() {
            return Poll::Ready(ended);
        }
        let task = cx.waker();
        if !drive
            .waker
            .as_ref()
            .is_some_and(|(seen, _)| seen.will_wake(task))
        {
            let noting = Waker::from(Arc::new(NoteWake {
                status: status.clone(),
                task: task.clone(),
            }));
            drive.waker = Some((task.clone(), noting));
        }
        if drive.io.is_none() {
            return Poll::Ready(Ok(()));
        }
        status.poll_io(&mut drive)
    }
}
