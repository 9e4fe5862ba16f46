//! One SQLite connection on a thread of its own.
//!
//! rusqlite's `Connection` is `Send` but not `Sync`, and every call into it
//! blocks (on disk, on another connection's lock for up to `busy_timeout`).
//! Running it on a tokio worker would stall every task on that worker, so
//! each pooled connection owns a dedicated OS thread that opens the
//! database and then runs the closures sent to it, in order, one at a
//! time. A call costs two cross-thread wake-ups and no allocation beyond
//! the boxed closure; unlike `spawn_blocking` it never waits behind other
//! connections' work in a shared queue.
//!
//! Those wake-ups cost far more than a point query on a cached page, so
//! the connection also sits behind a mutex that
//! the holder of a checkout can [`lock`](SqliteConnection::lock) to run
//! short statements on its own thread, as a synchronous pool would.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use parking_lot::{Condvar, MappedMutexGuard, Mutex, MutexGuard};
use rusqlite::{Connection, ErrorCode, OpenFlags, MAIN_DB};
use tokio::sync::oneshot;

use crate::anchor::Signal;
use crate::config::{SqliteConfig, Target};
use crate::manager::{AfterConnect, SqliteError};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// How many times a connection's thread yields, looking for the next call,
/// before it sleeps. Pipelined pool calls often arrive within that window;
/// catching them saves the wake-up of a sleeping thread, for a few
/// microseconds of yielding after the last call.
const SPINS: usize = 20;

/// What the handle and its thread share.
#[derive(Default)]
struct Shared {
    /// The connection; `None` once the thread has closed it. The thread
    /// holds the lock while it runs a closure.
    conn: Mutex<Option<Connection>>,
    /// Closures sent and not yet finished (a cancelled call still counts
    /// until its closure has run).
    in_flight: AtomicUsize,
    /// Of those, the ones sent through a checkout's `interact`, which may
    /// leave state (an open transaction) for the pool to clean up. The
    /// rest are the pool's own pipelined calls, which clean up after
    /// themselves.
    unsealed: AtomicUsize,
    /// The connection was inside a transaction after its last closure.
    in_tx: AtomicBool,
    /// Signalled (under `conn`'s lock) each time a closure finishes, for
    /// [`SqliteConnection::lock`] waiting on the calls queued before it.
    finished: Condvar,
}

/// A SQLite connection running on its own thread. Work goes to it through
/// [`interact`](SqliteConnection::interact).
pub struct SqliteConnection {
    jobs: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    interrupt: rusqlite::InterruptHandle,
    exited: oneshot::Receiver<Result<(), rusqlite::Error>>,
    closed: bool,
    thread: thread::JoinHandle<()>,
    /// Tells the manager's read anchor that the pool is busy.
    anchor: Option<Arc<Signal>>,
}

impl std::fmt::Debug for SqliteConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConnection")
            .field("in_flight", &self.shared.in_flight.load(Ordering::Relaxed))
            .field("in_transaction", &self.shared.in_tx.load(Ordering::Relaxed))
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl SqliteConnection {
    /// Starts the thread, which opens the database and sets it up.
    pub(crate) async fn open(
        config: SqliteConfig,
        after_connect: Option<AfterConnect>,
        anchor: Option<Arc<Signal>>,
    ) -> Result<Self, SqliteError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (exit_tx, exit_rx) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("aquifer-sqlite".into())
            .spawn(move || {
                let conn = match open_connection(&config, after_connect.as_ref()) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let interrupt = conn.get_interrupt_handle();
                let shared = Arc::new(Shared {
                    conn: Mutex::new(Some(conn)),
                    ..Shared::default()
                });
                if ready_tx.send(Ok((interrupt, Arc::clone(&shared)))).is_err() {
                    // The create was cancelled: nobody will use it.
                    return;
                }
                let next = |rx: &mpsc::Receiver<Job>| {
                    for _ in 0..SPINS {
                        match rx.try_recv() {
                            Ok(job) => return Some(job),
                            Err(mpsc::TryRecvError::Disconnected) => return None,
                            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
                        }
                    }
                    rx.recv().ok()
                };
                while let Some(job) = next(&jobs_rx) {
                    if let Some(conn) = shared.conn.lock().as_mut() {
                        job(conn);
                    }
                }
                let closed = match shared.conn.lock().take() {
                    Some(conn) => conn.close().map_err(|(_, e)| e),
                    None => Ok(()),
                };
                let _ = exit_tx.send(closed);
            })
            .map_err(SqliteError::Thread)?;
        let (interrupt, shared) = match ready_rx.await {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SqliteError::Closed),
        };
        Ok(SqliteConnection {
            jobs: Some(jobs_tx),
            shared,
            interrupt,
            exited: exit_rx,
            closed: false,
            thread,
            anchor,
        })
    }

    /// Runs `f` with the connection on its thread and returns what it
    /// returns. Calls run in the order they are made.
    ///
    /// A panic in `f` is caught on the connection's thread (which goes on
    /// serving) and resumed here.
    ///
    /// # Errors
    /// [`SqliteError::Closed`] when the connection has been closed.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop `f`: once sent it runs to its end
    /// and its result is discarded. The pool waits for it before the
    /// connection is used again, and rolls back a transaction `f` left
    /// open, so a cancelled or timed-out call never leaves the next user
    /// inside someone else's transaction.
    pub async fn interact<F, R>(&self, f: F) -> Result<R, SqliteError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (rx, _) = self.send(f, false)?;
        match rx.await {
            Ok(done) => done.unwrap(),
            Err(_) => Err(SqliteError::Closed),
        }
    }

    /// Queues `f` on the connection's thread. A sealed call rolls back a
    /// transaction it leaves open right after it runs (and says so in its
    /// [`Done`]), so that the connection can serve others while it is
    /// queued. Returns the receiver of the outcome and how many calls are
    /// queued or running, this one included.
    pub(crate) fn send<F, R>(
        &self,
        f: F,
        sealed: bool,
    ) -> Result<(oneshot::Receiver<Done<R>>, usize), SqliteError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let jobs = self.jobs.as_ref().ok_or(SqliteError::Closed)?;
        self.touch();
        let (tx, rx) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let depth = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if !sealed {
            shared.unsealed.fetch_add(1, Ordering::AcqRel);
        }
        let job: Job = Box::new(move |conn| {
            let result = catch_unwind(AssertUnwindSafe(|| f(conn)));
            let mut rolled_back = None;
            if sealed && !conn.is_autocommit() {
                rolled_back = Some(conn.execute_batch("ROLLBACK"));
            }
            shared.in_tx.store(!conn.is_autocommit(), Ordering::Release);
            if !sealed {
                shared.unsealed.fetch_sub(1, Ordering::AcqRel);
            }
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            shared.finished.notify_all();
            let _ = tx.send(Done {
                result,
                rolled_back,
            });
        });
        if jobs.send(job).is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            if !sealed {
                self.shared.unsealed.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(SqliteError::Closed);
        }
        Ok((rx, depth))
    }

    /// The connection itself, to run statements on the calling thread:
    /// no hand-off to the connection's thread, so a short statement costs
    /// what it costs in a synchronous pool. Everything run under the guard
    /// blocks the calling thread (a tokio worker, in async code) for as
    /// long as it takes, `busy_timeout` waits included: keep it to short
    /// statements on a database no other process holds locks on for long,
    /// and use [`interact`](Self::interact) for the rest.
    ///
    /// Waits (blocking) for every call queued earlier to finish: this
    /// checkout's cancelled `interact` calls, and the pool helpers'
    /// pipelined calls of earlier borrowers (see
    /// [`SqlitePoolExt`](crate::SqlitePoolExt)). None of them can then run
    /// inside a transaction begun under the guard, and none of this
    /// borrower's statements run inside theirs.
    ///
    /// # Errors
    /// [`SqliteError::Closed`] when the connection has been closed.
    pub fn lock(&mut self) -> Result<SqliteGuard<'_>, SqliteError> {
        self.touch();
        let mut conn = self.shared.conn.lock();
        // The thread gives the lock up between two calls: taking it there
        // would run this borrower's statements between queued ones. Only
        // this checkout can queue more, and it is busy here.
        while self.shared.in_flight.load(Ordering::Acquire) > 0 && conn.is_some() {
            let waited = self
                .shared
                .finished
                .wait_for(&mut conn, std::time::Duration::from_millis(100));
            if waited.timed_out() && self.thread.is_finished() {
                return Err(SqliteError::Closed);
            }
        }
        let guard = MutexGuard::try_map(conn, Option::as_mut).map_err(|_| SqliteError::Closed)?;
        Ok(SqliteGuard {
            conn: guard,
            in_tx: &self.shared.in_tx,
        })
    }

    fn touch(&self) {
        if let Some(anchor) = &self.anchor {
            anchor.touch();
        }
    }

    /// Whether the connection was inside a transaction after its last call.
    pub fn in_transaction(&self) -> bool {
        self.shared.in_tx.load(Ordering::Acquire)
    }

    /// Calls sent whose closures have not finished yet (cancelled ones
    /// included).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Interrupts the statement running now, if any: it fails with
    /// `SQLITE_INTERRUPT` and its transaction is rolled back.
    pub fn interrupt(&self) {
        self.interrupt.interrupt();
    }

    /// Whether the pool must wait for, or clean up after, earlier calls:
    /// a checkout's call still running (cancelled), or a transaction left
    /// open. The pool's own pipelined calls need neither.
    pub(crate) fn needs_reset(&self) -> bool {
        self.shared.unsealed.load(Ordering::Acquire) > 0 || self.in_transaction()
    }

    /// Whether the thread is gone or the connection closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed || self.thread.is_finished()
    }

    /// Stops the thread after the calls already sent (interrupting the one
    /// running if it is a checkout's abandoned call; the pool's pipelined
    /// calls belong to callers still waiting, and finish) and closes the
    /// connection.
    ///
    /// # Errors
    /// SQLite's error if it could not close the connection cleanly (a
    /// statement still open). Safe to call again.
    pub(crate) async fn close(&mut self) -> Result<(), SqliteError> {
        if self.closed {
            return Ok(());
        }
        if self.shared.unsealed.load(Ordering::Acquire) > 0 {
            self.interrupt.interrupt();
        }
        self.jobs = None;
        let result = match (&mut self.exited).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SqliteError::Sqlite(e)),
            // The thread ended without reporting: it is gone either way.
            Err(_) => Ok(()),
        };
        self.closed = true;
        result
    }
}

/// How a queued call ended.
pub(crate) struct Done<R> {
    /// What the closure returned, or its panic.
    pub(crate) result: std::thread::Result<R>,
    /// A sealed call's rollback of the transaction it left open.
    pub(crate) rolled_back: Option<rusqlite::Result<()>>,
}

impl<R> Done<R> {
    /// The closure's value; its panic goes on here.
    pub(crate) fn unwrap(self) -> Result<R, SqliteError> {
        match self.result {
            Ok(value) => Ok(value),
            Err(panic) => resume_unwind(panic),
        }
    }
}

/// The connection, locked for use on the calling thread (see
/// [`SqliteConnection::lock`]). Dereferences to rusqlite's `Connection`.
pub struct SqliteGuard<'a> {
    conn: MappedMutexGuard<'a, Connection>,
    in_tx: &'a AtomicBool,
}

impl std::ops::Deref for SqliteGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for SqliteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for SqliteGuard<'_> {
    /// Records a transaction left open, for the pool's reset on return.
    fn drop(&mut self) {
        self.in_tx
            .store(!self.conn.is_autocommit(), Ordering::Release);
    }
}

/// Opens and sets up a connection on the calling thread.
pub(crate) fn open_connection(
    config: &SqliteConfig,
    after_connect: Option<&AfterConnect>,
) -> Result<Connection, SqliteError> {
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if config.read_only {
        flags |= OpenFlags::SQLITE_OPEN_READ_ONLY;
    } else {
        flags |= OpenFlags::SQLITE_OPEN_READ_WRITE;
        if config.create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
    }
    let target = config.target.to_string();
    let conn = match &config.target {
        Target::File(path) => {
            check_file(path, config.create && !config.read_only)?;
            Connection::open_with_flags(path, flags)
        }
        Target::Memory(name) => {
            Connection::open_with_flags(format!("file:/{name}?vfs=memdb"), flags)
        }
    }
    .map_err(|source| SqliteError::Open {
        target: target.clone(),
        source,
    })?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(config.statement_cache_capacity);
    setup(&conn, config).map_err(|e| classify(e, &target))?;
    if !config.read_only && conn.is_readonly(MAIN_DB)? {
        return Err(SqliteError::ReadOnly { target });
    }
    let mut conn = conn;
    if let Some(hook) = after_connect {
        hook(&mut conn).map_err(SqliteError::AfterConnect)?;
    }
    Ok(conn)
}

/// Runs the configuration's pragmas. Switching a new file to WAL needs a
/// lock that SQLite's busy handler does not wait for when waiting could
/// deadlock, so connections opened at once can get `SQLITE_BUSY` at once:
/// retried here, on the connection's own thread, within `busy_timeout`.
fn setup(conn: &Connection, config: &SqliteConfig) -> rusqlite::Result<()> {
    let sql = config.setup_sql();
    let deadline = std::time::Instant::now() + config.busy_timeout;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match conn.execute_batch(&sql) {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() + pause < deadline =>
            {
                thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

fn check_file(path: &Path, create: bool) -> Result<(), SqliteError> {
    if path.exists() {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(SqliteError::MissingDirectory {
            path: path.to_path_buf(),
        });
    }
    if !create {
        return Err(SqliteError::NotFound {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Turns the errors that mean "this file is not what you think" into their
/// own variants.
fn classify(e: rusqlite::Error, target: &str) -> SqliteError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            SqliteError::NotADatabase {
                target: target.to_owned(),
                source: e,
            }
        }
        Some(ErrorCode::ReadOnly) => SqliteError::ReadOnly {
            target: target.to_owned(),
        },
        _ => SqliteError::Sqlite(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                        WHERE i < 1000000) SELECT count(*) FROM n";

    fn long(c: &mut Connection) -> rusqlite::Result<i64> {
        c.query_row(LONG, [], |r| r.get(0))
    }

    async fn connection() -> SqliteConnection {
        SqliteConnection::open(SqliteConfig::memory(), None, None)
            .await
            .unwrap()
    }

    /// A pipelined call belongs to a caller still waiting for it: closing
    /// the connection lets it finish. A checkout's abandoned call does not:
    /// closing interrupts it.
    #[tokio::test]
    async fn close_lets_pipelined_calls_finish_and_interrupts_abandoned_ones() {
        let mut conn = connection().await;
        let (done, depth) = conn.send(long, true).unwrap();
        assert_eq!(depth, 1);
        // Let the statement start: an interrupt only stops a running one.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        conn.close().await.unwrap();
        assert_eq!(done.await.unwrap().unwrap().unwrap().unwrap(), 1_000_000);

        let mut conn = connection().await;
        let (done, _) = conn.send(long, false).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        conn.close().await.unwrap();
        let err = done.await.unwrap().unwrap().unwrap().unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(ErrorCode::OperationInterrupted)
        );
    }

    #[tokio::test]
    async fn a_pipelined_call_that_leaves_a_transaction_open_is_rolled_back_at_once() {
        let conn = connection().await;
        let (done, _) = conn
            .send(|c| c.execute_batch("BEGIN; CREATE TABLE t (v);"), true)
            .unwrap();
        let done = done.await.unwrap();
        assert!(matches!(done.rolled_back, Some(Ok(()))));
        assert!(!conn.in_transaction());
        assert!(!conn.needs_reset());
    }
}
