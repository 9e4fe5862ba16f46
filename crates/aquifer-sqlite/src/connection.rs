//! One SQLite connection on a thread of its own.
//!
//! rusqlite's `Connection` is `Send` but not `Sync`, and every call into it
//! blocks (on disk, on another connection's lock for up to `busy_timeout`).
//! Running it on a tokio worker would stall every task on that worker, so
//! each pooled connection owns a dedicated OS thread that opens the
//! database and then runs the closures sent to it, in order, one at a
//! time. A call costs two cross-thread wake-ups and no allocation beyond
//! the boxed closure; unlike `spawn_blocking` it never waits behind other
//! connections' work in a shared queue, and the connection never moves
//! between threads.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use rusqlite::{Connection, ErrorCode, OpenFlags, MAIN_DB};
use tokio::sync::oneshot;

use crate::config::{SqliteConfig, Target};
use crate::manager::{AfterConnect, SqliteError};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the handle knows of its thread without asking it.
#[derive(Default)]
struct Shared {
    /// Closures sent and not yet finished (a cancelled call still counts
    /// until its closure has run).
    in_flight: AtomicUsize,
    /// The connection was inside a transaction after its last closure.
    in_tx: AtomicBool,
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
    ) -> Result<Self, SqliteError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (exit_tx, exit_rx) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("aquifer-sqlite".into())
            .spawn(move || {
                let mut conn = match open_connection(&config, after_connect.as_ref()) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if ready_tx.send(Ok(conn.get_interrupt_handle())).is_err() {
                    // The create was cancelled: nobody will use it.
                    return;
                }
                while let Ok(job) = jobs_rx.recv() {
                    job(&mut conn);
                }
                let _ = exit_tx.send(conn.close().map_err(|(_, e)| e));
            })
            .map_err(SqliteError::Thread)?;
        let interrupt = match ready_rx.await {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SqliteError::Closed),
        };
        Ok(SqliteConnection {
            jobs: Some(jobs_tx),
            shared: Arc::default(),
            interrupt,
            exited: exit_rx,
            closed: false,
            thread,
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
        let jobs = self.jobs.as_ref().ok_or(SqliteError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let job: Job = Box::new(move |conn| {
            let result = catch_unwind(AssertUnwindSafe(|| f(conn)));
            shared.in_tx.store(!conn.is_autocommit(), Ordering::Release);
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(result);
        });
        if jobs.send(job).is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(SqliteError::Closed);
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => Err(SqliteError::Closed),
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

    /// Whether the pool must wait for, or clean up after, earlier calls.
    pub(crate) fn needs_reset(&self) -> bool {
        self.in_flight() > 0 || self.in_transaction()
    }

    /// Whether the thread is gone or the connection closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed || self.thread.is_finished()
    }

    /// Stops the thread after the calls already sent (interrupting the one
    /// running, if any) and closes the connection.
    ///
    /// # Errors
    /// SQLite's error if it could not close the connection cleanly (a
    /// statement still open). Safe to call again.
    pub(crate) async fn close(&mut self) -> Result<(), SqliteError> {
        if self.closed {
            return Ok(());
        }
        if self.in_flight() > 0 {
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
    conn.execute_batch(&config.setup_sql())
        .map_err(|e| classify(e, &target))?;
    if !config.read_only && conn.is_readonly(MAIN_DB)? {
        return Err(SqliteError::ReadOnly { target });
    }
    let mut conn = conn;
    if let Some(hook) = after_connect {
        hook(&mut conn).map_err(SqliteError::AfterConnect)?;
    }
    Ok(conn)
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
