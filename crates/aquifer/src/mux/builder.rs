//! The multiplexer's builder.

use std::time::Duration;

use crate::config::Backoff;
use crate::error::BuildError;
use crate::manager::Manager;
use crate::pool::Pool;

use super::config::{MuxConfig, Spread};
use super::multiplexed::Multiplexed;
use super::Multiplexer;

/// Builds a [`Multiplexer`]; every setter names its default. See
/// [`MuxConfig`] for what each setting does.
#[must_use = "a builder does nothing until `build` is called"]
pub struct MuxBuilder<M: Manager> {
    manager: M,
    config: MuxConfig,
}

impl<M: Manager> std::fmt::Debug for MuxBuilder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<M: Multiplexed> Multiplexer<M> {
    /// A builder with every setting at its default.
    ///
    /// ```
    /// # use aquifer::doc_support::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// # let mux = mux()?;
    /// use std::time::Duration;
    ///
    /// let mux = aquifer::Multiplexer::builder(Echo)
    ///     .min(1)
    ///     .max(8)
    ///     .max_in_flight(32)
    ///     .acquire_timeout(Duration::from_secs(2))
    ///     .build()?;
    /// mux.ready().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(manager: M) -> MuxBuilder<M> {
        MuxBuilder {
            manager,
            config: MuxConfig::default(),
        }
    }
}

impl<M: Multiplexed> MuxBuilder<M> {
    /// Replaces every setting with `config`.
    pub fn config(mut self, config: MuxConfig) -> Self {
        self.config = config;
        self
    }

    /// Connections kept open even without requests. Default 1.
    pub fn min(mut self, min: usize) -> Self {
        self.config.min = min;
        self
    }

    /// Most connections open at once. Default 10.
    pub fn max(mut self, max: usize) -> Self {
        self.config.max = max;
        self
    }

    /// Most requests on one connection at once. Default 100.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// How long a connection above `min` may go unused before it closes.
    /// Default 30 s.
    pub fn scale_down_after(mut self, d: Duration) -> Self {
        self.config.scale_down_after = d;
        self
    }

    /// How often the maintenance runs. Default 1 s.
    pub fn maintenance_interval(mut self, d: Duration) -> Self {
        self.config.maintenance_interval = d;
        self
    }

    /// Most requests queued at once. Default `None` (no bound).
    pub fn max_queued(mut self, n: Option<usize>) -> Self {
        self.config.max_queued = n;
        self
    }

    /// Longest a request waits for a slot. Default 30 s.
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.config.acquire_timeout = d;
        self
    }

    /// Longest one open may take. Default 10 s.
    pub fn create_timeout(mut self, d: Duration) -> Self {
        self.config.pool.create_timeout = d;
        self
    }

    /// Delay between failed opens. Default: the pool's.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.pool.backoff = backoff;
        self
    }

    /// Retire connections older than this (minus the pool's jitter), one
    /// at a time; `None` keeps them. Default: the pool's (30 min).
    pub fn max_lifetime(mut self, d: Option<Duration>) -> Self {
        self.config.pool.max_lifetime = d;
        self
    }

    /// Most opens in flight at once. Default: the pool's.
    pub fn create_concurrency(mut self, n: usize) -> Self {
        self.config.pool.create_concurrency = n;
        self
    }

    /// How a request chooses its connection. Default
    /// [`Spread::LeastLoaded`].
    pub fn spread(mut self, spread: Spread) -> Self {
        self.config.spread = spread;
        self
    }

    /// Most work a request may queue behind on a connection; `None` for
    /// no bound. Default 100 ms.
    pub fn pipeline_horizon(mut self, d: Option<Duration>) -> Self {
        self.config.pipeline_horizon = d;
        self
    }

    /// Whether the number of connections between `min` and `max` follows
    /// what is measured ([`MuxConfig::adaptive`]) rather than the demand
    /// alone. Default on.
    pub fn adaptive(mut self, on: bool) -> Self {
        self.config.adaptive = on;
        self
    }

    /// Builds the multiplexer and starts opening `min` connections.
    ///
    /// # Errors
    /// A [`BuildError`] naming the setting to change, or
    /// [`BuildError::NoRuntime`] outside a Tokio runtime.
    pub fn build(self) -> Result<Multiplexer<M>, BuildError> {
        self.config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let pool = Pool::new(self.manager, self.config.pool_config())?;
        Ok(Multiplexer::start(pool, self.config))
    }
}
