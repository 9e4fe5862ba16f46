//! Keeping the process's read lock on the WAL index while the pool is busy.
//!
//! Every read transaction on a WAL database takes a shared lock on a slot of
//! the `-shm` file and drops it at the end. SQLite counts these locks per
//! process and only asks the kernel (`fcntl`) when the count goes from 0 to
//! 1 and back; that pair of system calls can cost more than a point query
//! itself, and two threads doing it at once contend for the kernel's lock on the
//! file. A synchronous pool with more threads than cores gets lucky: some
//! thread preempted in the middle of a query holds the lock, and the others
//! only count. Tokio workers run their queries to the end, so they mostly
//! do not.
//!
//! The anchor does on purpose what those threads do by chance: one extra
//! connection of the manager's own keeps a read transaction open while the
//! pool's connections are in use, so theirs only count. It never holds a
//! snapshot for long: it ends its transaction and starts a fresh one every
//! [`HOLD`], so checkpoints are held back by at most that much (a
//! `wal_checkpoint(TRUNCATE)` waits it out within the busy timeout), and
//! after one period without any use it lets go and sleeps until the next
//! use. It reads nothing the application sees and writes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

use crate::config::SqliteConfig;
use crate::connection::open_connection;

/// How long the anchor keeps one read transaction (one snapshot) open.
pub(crate) const HOLD: Duration = Duration::from_millis(5);

/// How long the anchor waits after it failed to open or to start a read
/// transaction (the file is being recovered, say) before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// The longest the anchor waits for a lock.
const LOCK_WAIT: Duration = Duration::from_millis(50);

/// What the connections and the anchor's thread share.
#[derive(Debug)]
pub(crate) struct Signal {
    /// Some connection was used since the anchor last looked.
    used: AtomicBool,
    /// The anchor's thread is asleep, holding nothing.
    asleep: AtomicBool,
    stop: AtomicBool,
    /// The anchor's thread, set as soon as it is spawned (before any
    /// connection can exist to call `touch`).
    thread: OnceLock<thread::Thread>,
}

impl Signal {
    /// Records a use of a pooled connection, waking the anchor if it
    /// sleeps. Writes shared memory once per period at most.
    #[inline]
    pub(crate) fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            // SeqCst pairs with `sleep`: either this sees the thread asleep
            // and wakes it, or the thread sees `used` before it parks.
            self.used.store(true, Ordering::SeqCst);
            if self.asleep.load(Ordering::SeqCst) {
                self.unpark();
            }
        }
    }

    /// Parks until a connection is used or the anchor is stopped; false
    /// when stopped.
    fn sleep(&self) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        while !self.used.load(Ordering::SeqCst) && !self.stopped() {
            thread::park();
        }
        self.asleep.store(false, Ordering::SeqCst);
        !self.stopped()
    }

    /// Parks for `d` unless stopped; false when stopped.
    fn wait(&self, d: Duration) -> bool {
        if !self.stopped() {
            thread::park_timeout(d);
        }
        !self.stopped()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The anchor: its thread, stopped and joined on drop, so that the lock is
/// released by the time the manager is gone.
#[derive(Debug)]
pub(crate) struct Anchor {
    signal: Arc<Signal>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Anchor {
    /// Starts the anchor's thread for this database. It opens its
    /// connection at the first use, and ends for good when the database
    /// turns out not to be in WAL mode.
    pub(crate) fn start(config: SqliteConfig) -> std::io::Result<Anchor> {
        let signal = Arc::new(Signal {
            used: AtomicBool::new(false),
            asleep: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let theirs = Arc::clone(&signal);
        let handle = thread::Builder::new()
            .name("aquifer-anchor".into())
            .spawn(move || run(&config, &theirs))?;
        let _ = signal.thread.set(handle.thread().clone());
        Ok(Anchor {
            signal,
            thread: Some(handle),
        })
    }

    /// What connections use to report that they are busy.
    pub(crate) fn signal(&self) -> Arc<Signal> {
        Arc::clone(&self.signal)
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        self.signal.stop.store(true, Ordering::Release);
        self.signal.unpark();
        if let Some(handle) = self.thread.take() {
            // It wakes at once, ends its transaction and closes.
            let _ = handle.join();
        }
    }
}

/// The anchor's thread: asleep while the pool is idle; while it is busy, a
/// read transaction renewed every [`HOLD`].
fn run(config: &SqliteConfig, signal: &Signal) {
    let mut conn: Option<Connection> = None;
    while signal.sleep() {
        let c = match conn.take() {
            Some(c) => c,
            None => match open(config) {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(target: "aquifer::sqlite", error = %e, "the WAL read anchor could not open");
                    signal.used.store(false, Ordering::Relaxed);
                    if signal.wait(RETRY) {
                        continue;
                    }
                    return;
                }
            },
        };
        loop {
            signal.used.store(false, Ordering::Relaxed);
            if let Err(e) = begin(&c) {
                tracing::debug!(target: "aquifer::sqlite", error = %e, "the WAL read anchor could not start a read");
                let _ = c.execute_batch("ROLLBACK");
                if !signal.wait(RETRY) {
                    return;
                }
                break;
            }
            let go_on = signal.wait(HOLD);
            let _ = c.execute_batch("COMMIT");
            if !go_on {
                return;
            }
            if !signal.used.load(Ordering::SeqCst) {
                break;
            }
        }
        conn = Some(c);
    }
}

/// Opens the anchor's connection; `None` when the database is not in WAL
/// mode (then there is no such lock to keep).
fn open(config: &SqliteConfig) -> Result<Option<Connection>, crate::SqliteError> {
    // Never wait long for a lock (during a WAL recovery, say): the anchor
    // tries again later, and a manager being dropped waits for it.
    let mut config = config.clone();
    config.busy_timeout = config.busy_timeout.min(LOCK_WAIT);
    let c = open_connection(&config, None)?;
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    Ok(mode.eq_ignore_ascii_case("wal").then_some(c))
}

/// Starts a read transaction: `BEGIN` alone takes no lock until something
/// is read.
fn begin(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN")?;
    c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JournalMode;
    use std::time::Instant;

    fn database(mode: &str) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("t.db")).unwrap();
        c.execute_batch(&format!(
            "PRAGMA journal_mode = {mode}; CREATE TABLE t (v TEXT);"
        ))
        .unwrap();
        c.busy_timeout(Duration::ZERO).unwrap();
        (dir, c)
    }

    /// Writes a row and checkpoints passively: whether every frame could
    /// be copied (no reader held an older snapshot).
    fn checkpoint_completes(c: &Connection) -> bool {
        c.execute("INSERT INTO t VALUES ('x')", []).unwrap();
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok(r.get::<_, i64>(0)? == 0 && r.get::<_, i64>(1)? == r.get::<_, i64>(2)?)
        })
        .unwrap()
    }

    #[test]
    fn dropping_the_anchor_releases_its_snapshot_at_once() {
        let (dir, outside) = database("WAL");
        let anchor = Anchor::start(SqliteConfig::file(dir.path().join("t.db"))).unwrap();
        let signal = anchor.signal();
        assert!(checkpoint_completes(&outside), "nothing used yet");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            signal.touch();
            if !checkpoint_completes(&outside) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the anchor never took a snapshot"
            );
            thread::sleep(Duration::from_millis(1));
        }
        signal.touch();
        drop(anchor);
        assert!(checkpoint_completes(&outside));
    }

    /// Outside WAL mode a reader's lock blocks writers: the anchor must not
    /// hold one, and ends instead.
    #[test]
    fn without_wal_the_anchor_ends_and_blocks_no_writer() {
        let (dir, outside) = database("DELETE");
        let config = SqliteConfig::file(dir.path().join("t.db")).journal_mode(JournalMode::Delete);
        let anchor = Anchor::start(config).unwrap();
        anchor.signal().touch();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !anchor.thread.as_ref().unwrap().is_finished() {
            assert!(Instant::now() < deadline, "the anchor is still running");
            thread::sleep(Duration::from_millis(1));
        }
        outside.execute("INSERT INTO t VALUES ('y')", []).unwrap();
    }
}
