//! The pool builder.

use std::time::Duration;

use crate::config::{Backoff, Clock, Order, PoolConfig};
use crate::error::BuildError;
use crate::manager::Manager;

use super::Pool;

/// Builds a [`Pool`]; every setter names its default. See [`PoolConfig`]
/// for what each setting does.
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<M: Manager> {
    manager: M,
    config: PoolConfig,
}

impl<M: Manager> std::fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Pool<M> {
    /// A builder with every setting at its default.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let pool = pool()?;
    /// use std::time::Duration;
    ///
    /// let pool = aquifer::Pool::builder(Connector)
    ///     .min(1)
    ///     .max(16)
    ///     .acquire_timeout(Duration::from_secs(2))
    ///     .build()?;
    /// assert_eq!(pool.status().max, 16);
    /// # Ok(()) }
    /// ```
    pub fn builder(manager: M) -> Builder<M> {
        Builder {
            manager,
            config: PoolConfig::default(),
        }
    }
}

impl<M: Manager> Builder<M> {
    /// Replaces every setting with `config`.
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the pool.
    ///
    /// # Errors
    /// A [`BuildError`] naming the setting to change.
    pub fn build(self) -> Result<Pool<M>, BuildError> {
        Pool::new(self.manager, self.config)
    }

    /// Most objects alive at once. Default 10.
    pub fn max(mut self, max: usize) -> Self {
        self.config.max = max;
        self
    }

    /// Objects kept alive even when idle. Default 0.
    pub fn min(mut self, min: usize) -> Self {
        self.config.min = min;
        self
    }

    /// Longest a `get` waits. Default 30 s.
    pub fn acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.config.acquire_timeout = acquire_timeout;
        self
    }

    /// Longest one create may take. Default 10 s.
    pub fn create_timeout(mut self, create_timeout: Duration) -> Self {
        self.config.create_timeout = create_timeout;
        self
    }

    /// Longest one destroy may take before the object is kept as pending. Default 5 s.
    pub fn destroy_timeout(mut self, destroy_timeout: Duration) -> Self {
        self.config.destroy_timeout = destroy_timeout;
        self
    }

    /// Longest one validation may take. Default 5 s.
    pub fn validate_timeout(mut self, validate_timeout: Duration) -> Self {
        self.config.validate_timeout = validate_timeout;
        self
    }

    /// Longest one reset on return may take. Default 5 s.
    pub fn reset_timeout(mut self, reset_timeout: Duration) -> Self {
        self.config.reset_timeout = reset_timeout;
        self
    }

    /// Validate objects on checkout. Default `true`.
    pub fn validate_on_borrow(mut self, validate_on_borrow: bool) -> Self {
        self.config.validate_on_borrow = validate_on_borrow;
        self
    }

    /// Skip the checkout validation for objects used more recently than this. Default 500 ms.
    pub fn validate_if_idle_for(mut self, validate_if_idle_for: Duration) -> Self {
        self.config.validate_if_idle_for = validate_if_idle_for;
        self
    }

    /// FIFO or LIFO for idle objects. Default FIFO.
    pub fn order(mut self, order: Order) -> Self {
        self.config.order = order;
        self
    }

    /// The clock read on checkout and return. Default [`Clock::Auto`]: the
    /// coarse clock, or Tokio's when the pool is built under paused time.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.config.clock = clock;
        self
    }

    /// Number of priority levels for `get_with_priority`. Default 1.
    pub fn priority_levels(mut self, priority_levels: usize) -> Self {
        self.config.priority_levels = priority_levels;
        self
    }

    /// Start filling to `min` at build (inside a runtime) rather than at the first `get`. Default `true`.
    pub fn eager(mut self, eager: bool) -> Self {
        self.config.eager = eager;
        self
    }

    /// How often maintenance runs. Default 30 s.
    pub fn eviction_interval(mut self, eviction_interval: Duration) -> Self {
        self.config.eviction_interval = eviction_interval;
        self
    }

    /// Random fraction (0..=1) taken off each object's lifetime. Default 0.025.
    pub fn lifetime_jitter(mut self, lifetime_jitter: f64) -> Self {
        self.config.lifetime_jitter = lifetime_jitter;
        self
    }

    /// Delay between failed creates. Default 100 ms doubling up to 5 s, 20% jitter.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Most creates in flight at once. Default 4.
    pub fn create_concurrency(mut self, create_concurrency: usize) -> Self {
        self.config.create_concurrency = create_concurrency;
        self
    }

    /// Events buffered per listener before the oldest are dropped. Default 1024.
    pub fn event_capacity(mut self, event_capacity: usize) -> Self {
        self.config.event_capacity = event_capacity;
        self
    }

    /// Bound the callers waiting for an object to come back (those a create
    /// will serve do not count); beyond it `get` fails at once with
    /// `QueueFull`. `0`: grow to `max`, then refuse. Default unbounded.
    pub fn max_waiting(mut self, max_waiting: impl Into<Option<usize>>) -> Self {
        self.config.max_waiting = max_waiting.into();
        self
    }

    /// Destroy objects idle this long, never below `min`. Default 10 min; `None` turns it off.
    pub fn idle_timeout(mut self, idle_timeout: impl Into<Option<Duration>>) -> Self {
        self.config.idle_timeout = idle_timeout.into();
        self
    }

    /// Destroy objects idle this long while more than `min` are idle. Default off.
    pub fn soft_idle_timeout(mut self, soft_idle_timeout: impl Into<Option<Duration>>) -> Self {
        self.config.soft_idle_timeout = soft_idle_timeout.into();
        self
    }

    /// Idle objects examined per maintenance run. Default all.
    pub fn tests_per_eviction_run(
        mut self,
        tests_per_eviction_run: impl Into<Option<usize>>,
    ) -> Self {
        self.config.tests_per_eviction_run = tests_per_eviction_run.into();
        self
    }

    /// Destroy objects older than this (minus jitter). Default 30 min; `None` turns it off.
    pub fn max_lifetime(mut self, max_lifetime: impl Into<Option<Duration>>) -> Self {
        self.config.max_lifetime = max_lifetime.into();
        self
    }

    /// Validate idle objects this often. Default off.
    pub fn keepalive_interval(mut self, keepalive_interval: impl Into<Option<Duration>>) -> Self {
        self.config.keepalive_interval = keepalive_interval.into();
        self
    }

    /// Report objects held longer than this. Default off.
    pub fn leak_detection_threshold(
        mut self,
        leak_detection_threshold: impl Into<Option<Duration>>,
    ) -> Self {
        self.config.leak_detection_threshold = leak_detection_threshold.into();
        self
    }
}
