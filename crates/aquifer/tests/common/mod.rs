//! A scripted fake manager and invariant checks shared by the pool tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aquifer::{Manager, Pool, Status};

/// What one call of a manager method does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Ok,
    Err,
    /// Succeeds after sleeping (tokio time).
    Slow(Duration),
    /// Never finishes.
    Never,
    Panic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeError(pub String);

impl std::fmt::Display for FakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FakeError {}

/// A script per method: steps are taken in order, then `default` repeats.
#[derive(Debug)]
pub struct Script {
    steps: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    pub calls: AtomicUsize,
}

impl Script {
    fn new() -> Self {
        Self {
            steps: Mutex::new(VecDeque::new()),
            default: Mutex::new(Step::Ok),
            calls: AtomicUsize::new(0),
        }
    }

    pub fn set(&self, default: Step) {
        *self.default.lock().unwrap() = default;
    }

    pub fn then(&self, steps: &[Step]) {
        self.steps.lock().unwrap().extend(steps.iter().copied());
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn run(&self, what: &str) -> Result<(), FakeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(*self.default.lock().unwrap());
        match step {
            Step::Ok => Ok(()),
            Step::Err => Err(FakeError(format!(
                "{what} failed: password authentication failed"
            ))),
            Step::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Step::Never => std::future::pending().await,
            Step::Panic => panic!("{what} panicked on purpose"),
        }
    }
}

/// The object the fake manager makes.
#[derive(Debug)]
pub struct Obj {
    pub id: u64,
    pub broken: Arc<AtomicBool>,
    pub dirty: bool,
}

#[derive(Debug)]
pub struct Fake {
    pub create: Script,
    pub validate: Script,
    pub reset: Script,
    pub destroy: Script,
    pub made: AtomicU64,
    pub destroyed: AtomicUsize,
    /// Objects alive: created and not yet destroyed or dropped.
    pub alive: Arc<AtomicUsize>,
    /// `is_permanent` says yes to every error.
    pub permanent: AtomicBool,
    /// New objects are broken from the start.
    pub born_broken: AtomicBool,
    /// The object (by `Obj::id`) whose session a multiplexer's check finds
    /// changed; 0 for none.
    pub changed_session: AtomicU64,
    /// Session checks run.
    pub session_checks: AtomicU64,
}

impl Fake {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            create: Script::new(),
            validate: Script::new(),
            reset: Script::new(),
            destroy: Script::new(),
            made: AtomicU64::new(0),
            destroyed: AtomicUsize::new(0),
            alive: Arc::new(AtomicUsize::new(0)),
            permanent: AtomicBool::new(false),
            born_broken: AtomicBool::new(false),
            changed_session: AtomicU64::new(0),
            session_checks: AtomicU64::new(0),
        })
    }
}

/// The manager handed to the pool: a shared handle on the fake.
#[derive(Debug, Clone)]
pub struct FakeManager(pub Arc<Fake>);

/// Counts itself out of `alive` when dropped, so leaks show.
#[derive(Debug)]
pub struct Conn {
    pub obj: Obj,
    alive: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Manager for FakeManager {
    type Type = Conn;
    type Error = FakeError;

    async fn create(&self) -> Result<Conn, FakeError> {
        self.0.create.run("create").await?;
        let id = self.0.made.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.alive.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            obj: Obj {
                id,
                broken: Arc::new(AtomicBool::new(self.0.born_broken.load(Ordering::SeqCst))),
                dirty: false,
            },
            alive: Arc::clone(&self.0.alive),
        })
    }

    async fn validate(&self, _: &mut Conn) -> Result<(), FakeError> {
        self.0.validate.run("validate").await
    }

    fn is_permanent(&self, _: &FakeError) -> bool {
        self.0.permanent.load(Ordering::SeqCst)
    }

    fn is_broken(&self, c: &Conn) -> bool {
        c.obj.broken.load(Ordering::SeqCst)
    }

    fn needs_reset(&self, c: &mut Conn) -> bool {
        c.obj.dirty
    }

    async fn reset(&self, c: &mut Conn) -> Result<(), FakeError> {
        self.0.reset.run("reset").await?;
        c.obj.dirty = false;
        Ok(())
    }

    async fn destroy(&self, _: &mut Conn) -> Result<(), FakeError> {
        self.0.destroy.run("destroy").await?;
        self.0.destroyed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

pub fn fake() -> (Arc<Fake>, FakeManager) {
    let f = Fake::new();
    (Arc::clone(&f), FakeManager(f))
}

/// The invariants that must hold at every moment.
#[track_caller]
pub fn check(s: &Status) {
    assert!(s.size <= s.max, "size above max: {s:?}");
    assert_eq!(
        s.idle + s.borrowed + s.creating,
        s.size,
        "books do not balance: {s:?}"
    );
}

#[track_caller]
pub fn check_pool(p: &Pool<FakeManager>) -> Status {
    let s = p.status();
    check(&s);
    s
}

/// Lets spawned tasks run (paused time: also lets timers due now fire).
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How many times `get` runs in a loop before a task spawned just before the
/// loop gets to run; `None` if it never does within 100,000. Objects being
/// always free, only Tokio's cooperative budget makes such a loop yield: a
/// get spends 1/64 of a unit, so it yields about every 64 x 128 gets (where
/// the counts stood at the start moves that a little).
pub async fn gets_before_another_task_runs<F, Fut>(mut get: F) -> Option<usize>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ran = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let ran = Arc::clone(&ran);
        async move { ran.store(true, Ordering::SeqCst) }
    });
    for i in 0..100_000 {
        get().await;
        if ran.load(Ordering::SeqCst) {
            return Some(i);
        }
    }
    None
}

/// Polls `fut` once, where it must be ready, then once more; returns what
/// the first poll gave and whether the second panicked (a completed future
/// must not hand out again).
pub fn poll_after_ready<F: std::future::Future>(fut: F) -> (F::Output, bool) {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let first = match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the first poll must be ready"),
    };
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = fut.as_mut().poll(&mut cx);
    }));
    (first, again.is_err())
}
