//! Load for fault tests: tasks that keep using a pool while a server is
//! killed and restarted, and a watcher of the server's connection count.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server a fault test can crash and start again.
pub trait Restartable: Send + 'static {
    /// Kills it, like a crash.
    ///
    /// # Errors
    /// When it cannot be signalled.
    fn kill(&mut self) -> Result<(), crate::TestkitError>;
    /// Starts it again on the same data and port.
    ///
    /// # Errors
    /// When it does not come up.
    fn start(&mut self) -> Result<(), crate::TestkitError>;
}

impl Restartable for crate::PgServer {
    fn kill(&mut self) -> Result<(), crate::TestkitError> {
        crate::PgServer::kill(self)
    }
    fn start(&mut self) -> Result<(), crate::TestkitError> {
        crate::PgServer::start(self)
    }
}

impl Restartable for crate::MariaDbServer {
    fn kill(&mut self) -> Result<(), crate::TestkitError> {
        crate::MariaDbServer::kill(self)
    }
    fn start(&mut self) -> Result<(), crate::TestkitError> {
        crate::MariaDbServer::start(self)
    }
}

/// What one iteration of a load task did.
#[derive(Debug)]
pub enum Step {
    /// It got a connection and its query worked.
    Served,
    /// It got a connection but the query failed (the server died under it).
    QueryFailed,
    /// It could not get a connection. `typed`: the error is one the test
    /// accepts (a timeout or a create failure carrying its cause);
    /// `message` is kept when it is not.
    GetFailed {
        /// Whether the error is of an accepted kind.
        typed: bool,
        /// The error's message.
        message: String,
    },
}

impl Step {
    /// A failed checkout: accepted when it is a timeout, or a create
    /// failure that carries its cause.
    pub fn get_failed<E: std::error::Error + 'static>(e: &aquifer::PoolError<E>) -> Step {
        let typed = match e {
            aquifer::PoolError::Timeout { .. } => true,
            aquifer::PoolError::Create(_) => e.create_error().is_some(),
            _ => false,
        };
        Step::GetFailed {
            typed,
            message: e.to_string(),
        }
    }
}

/// What the load saw, once stopped.
#[derive(Debug)]
pub struct LoadReport {
    /// Iterations that were served.
    pub served: usize,
    /// How long each failed checkout took, for those that took longer than
    /// the limit given to [`Load::start`].
    pub slow_failures: Vec<Duration>,
    /// The messages of failed checkouts of an unaccepted kind.
    pub untyped_failures: Vec<String>,
}

impl LoadReport {
    /// The checks every crash-and-restart test makes, after printing what
    /// happened: failures were prompt and typed, the load was served again
    /// within `backoff_max` (plus 500 ms of slack) of the restart, and the
    /// server never saw more than `max` connections from the pool (`most`,
    /// from a [`MaxWatcher`]).
    ///
    /// # Panics
    /// When any of them does not hold.
    pub fn assert_survived_crash(
        &self,
        recovered: Duration,
        backoff_max: Duration,
        most: usize,
        max: usize,
    ) {
        eprintln!(
            "server killed under load: served {}, recovered {recovered:?} after the restart (backoff max {backoff_max:?}), at most {most} connections (max {max})",
            self.served
        );
        self.assert_prompt_and_typed();
        assert!(
            recovered <= backoff_max + Duration::from_millis(500),
            "recovered only after {recovered:?}"
        );
        assert!(most <= max, "{most} connections at once, max {max}");
    }

    /// Asserts that no failed checkout was slow or of an unaccepted kind.
    ///
    /// # Panics
    /// Listing the slow ones or the unaccepted messages.
    pub fn assert_prompt_and_typed(&self) {
        assert!(
            self.slow_failures.is_empty(),
            "failed checkouts slower than the limit: {:?}",
            self.slow_failures
        );
        assert!(
            self.untyped_failures.is_empty(),
            "failed checkouts of an unexpected kind: {:?}",
            self.untyped_failures
        );
    }
}

/// `tasks` Tokio tasks that each run `step` in a loop until
/// [`finish`](Load::finish).
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    slow: Arc<Mutex<Vec<Duration>>>,
    untyped: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the tasks. A failed checkout that took longer than `limit`
    /// (e.g. the acquire timeout plus 10%) is recorded as slow; after a
    /// failed checkout a task pauses 5 ms.
    pub fn start<F, Fut>(tasks: usize, limit: Duration, step: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Step> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let slow = Arc::new(Mutex::new(Vec::new()));
        let untyped = Arc::new(Mutex::new(Vec::new()));
        let step = Arc::new(step);
        let workers = (0..tasks)
            .map(|_| {
                let (stop, served) = (stop.clone(), served.clone());
                let (slow, untyped, step) = (slow.clone(), untyped.clone(), step.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let t = Instant::now();
                        match step().await {
                            Step::Served => {
                                served.fetch_add(1, Ordering::SeqCst);
                            }
                            Step::QueryFailed => {}
                            Step::GetFailed { typed, message } => {
                                let took = t.elapsed();
                                if took > limit {
                                    slow.lock().expect("not poisoned").push(took);
                                }
                                if !typed {
                                    untyped.lock().expect("not poisoned").push(message);
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            served,
            slow,
            untyped,
            workers,
        }
    }

    /// Iterations served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Waits until one more iteration is served than now, for at most
    /// `within`; returns how long it took.
    ///
    /// # Panics
    /// When none is served in time.
    pub async fn next_served(&self, within: Duration) -> Duration {
        let start = Instant::now();
        let before = self.served();
        while self.served() == before {
            assert!(start.elapsed() < within, "nothing served within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    /// The crash scenario of the fault tests: lets the load run 300 ms (and
    /// asserts it was served), kills `server`, keeps it down for
    /// `down_for`, runs `while_down` (the test's checks of a get that must
    /// fail), starts the server again and measures how long until the load
    /// is served again (at most `recover_within`), lets it run 300 ms more
    /// and stops it. Returns the server, the load's report and the time to
    /// recover.
    ///
    /// # Panics
    /// When the server cannot be killed or started, nothing was served
    /// before the crash or after the restart in time, or a task hangs.
    pub async fn crash_and_restart<S: Restartable>(
        self,
        mut server: S,
        down_for: Duration,
        recover_within: Duration,
        while_down: impl Future<Output = ()>,
    ) -> (S, LoadReport, Duration) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(self.served() > 0, "the pool served before the crash");
        server.kill().expect("the server is killed");
        tokio::time::sleep(down_for).await;
        while_down.await;
        let server = tokio::task::spawn_blocking(move || {
            server.start().expect("the server starts again");
            server
        })
        .await
        .expect("the restart does not panic");
        let recovered = self.next_served(recover_within).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        (server, self.finish().await, recovered)
    }

    /// Stops the tasks and waits for them.
    ///
    /// # Panics
    /// When a task does not stop within 5 s (it hangs) or panicked.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("no task hangs")
                .expect("no task panics");
        }
        fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
            std::mem::take(&mut *m.lock().expect("not poisoned"))
        }
        LoadReport {
            served: self.served.load(Ordering::SeqCst),
            slow_failures: take(&self.slow),
            untyped_failures: take(&self.untyped),
        }
    }
}

/// A thread that polls a count (say, the server's connections from the
/// pool) every 20 ms and keeps the largest it saw.
pub struct MaxWatcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl MaxWatcher {
    /// Starts polling `probe`; `None` (the server is down) is skipped.
    pub fn start(mut probe: impl FnMut() -> Option<usize> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut most = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Some(n) = probe() {
                        most = most.max(n);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                most
            })
        };
        MaxWatcher { stop, thread }
    }

    /// Stops polling; the largest count seen.
    ///
    /// # Panics
    /// When the probe panicked.
    pub fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the probe does not panic")
    }
}

/// A probe for [`MaxWatcher`]: the sessions on `pg` whose
/// `application_name` is `app`, asked with `psql` from the watcher's
/// thread; `None` while the server does not answer.
pub fn pg_sessions(
    pg: &crate::PgServer,
    app: &str,
) -> impl FnMut() -> Option<usize> + Send + 'static {
    let (port, socket) = (pg.port(), pg.dir().join("sock"));
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}'",
        app.replace('\'', "''")
    );
    move || {
        let out = std::process::Command::new("psql")
            .args(["-X", "-A", "-t", "-U", "postgres", "-d", "postgres", "-p"])
            .arg(port.to_string())
            .arg("-h")
            .arg(&socket)
            .arg("-c")
            .arg(&sql)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}
