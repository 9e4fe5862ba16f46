//! Tasks that keep writing numbered keys through a failover, and what
//! became of each write.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One write: its key, the pool it ran on (`None` when none could be
/// had), when it was answered, and its error's text.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The key written.
    pub key: i64,
    /// The pool the write ran on.
    pub pool: Option<String>,
    /// When it was answered.
    pub at: Instant,
    /// `Ok`, or the error's text (its whole chain).
    pub result: Result<(), String>,
}

impl Outcome {
    /// Whether it failed with `text` in its error.
    pub fn failed_with(&self, text: &str) -> bool {
        self.result.as_ref().is_err_and(|e| e.contains(text))
    }
}

/// A write that found no primary to go to, as [`Writers::start`]'s
/// `write` reports it. Panics unless the cluster said there was none
/// (`NoPrimary`) or none answered (`Unavailable`): any other refusal
/// during a failover is a defect the test must show.
pub fn no_primary<E: std::error::Error + 'static>(
    e: &aquifer::ClusterError<E>,
) -> (Option<String>, Result<(), String>) {
    assert!(
        matches!(
            e,
            aquifer::ClusterError::NoPrimary { .. } | aquifer::ClusterError::Unavailable { .. }
        ),
        "{e}"
    );
    (None, Err(aquifer::error_chain(e)))
}

/// Tasks that write keys 1, 2, 3… (each key once, across all tasks) until
/// [`finish`](Writers::finish), recording every outcome.
#[derive(Debug)]
pub struct Writers {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `n` tasks, each calling `write(key)` in a loop; `write` says which
    /// pool the write ran on and how it ended. After a failure a task
    /// waits 5 ms before its next write.
    pub fn start<F, Fut>(n: usize, write: F) -> Self
    where
        F: Fn(i64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = (Option<String>, Result<(), String>)> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let next = Arc::new(AtomicI64::new(1));
        let tasks = (0..n)
            .map(|_| {
                let (write, stop, outcomes, next) =
                    (write.clone(), stop.clone(), outcomes.clone(), next.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let key = next.fetch_add(1, Ordering::Relaxed);
                        let (pool, result) = write(key).await;
                        let failed = result.is_err();
                        outcomes.lock().unwrap().push(Outcome {
                            key,
                            pool,
                            at: Instant::now(),
                            result,
                        });
                        if failed {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            outcomes,
            tasks,
        }
    }

    /// How long after `since` the first write answered Ok on `pool` came,
    /// waiting up to 20 s for one.
    ///
    /// # Panics
    /// When none came in 20 s.
    pub async fn first_ok_on(&self, pool: &str, since: Instant) -> Duration {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .outcomes
                .lock()
                .unwrap()
                .iter()
                .filter(|o| o.at > since && o.result.is_ok() && o.pool.as_deref() == Some(pool))
                .map(|o| o.at)
                .min();
            if let Some(at) = found {
                return at - since;
            }
            assert!(Instant::now() < give_up, "no write reached {pool}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Writes answered so far.
    pub fn count(&self) -> usize {
        self.outcomes.lock().unwrap().len()
    }

    /// Stops the tasks and returns every outcome.
    ///
    /// # Panics
    /// When a task panicked.
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}
