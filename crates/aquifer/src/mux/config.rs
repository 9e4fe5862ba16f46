//! The multiplexer's settings, and the limits its state reads from them.

use std::time::Duration;

use crate::config::PoolConfig;
use crate::error::BuildError;

/// How a request chooses among the connections that have room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Spread {
    /// The connection with the fewest requests in flight; ties go to the
    /// oldest connection, so that the newest fall idle (and close) when
    /// load drops. A request queued on a pipelined connection waits for
    /// every request ahead of it, so this keeps requests away from a
    /// connection held up by a slow one.
    #[default]
    LeastLoaded,
    /// The next connection in turn (as the node.js balancer this design
    /// comes from): one step per request, blind to a slow request ahead.
    RoundRobin,
}

/// A multiplexer's settings. The builder's setters name each default.
/// With the `serde` feature it reads from a file like [`PoolConfig`] does
/// (durations as `"100ms"`, `"30s"`, or milliseconds).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct MuxConfig {
    /// Connections kept open even without requests. Default 1.
    pub min: usize,
    /// Most connections open at once. Default 10.
    pub max: usize,
    /// Most requests on one connection at once. Default 100.
    pub max_in_flight: usize,
    /// A connection unused this long closes while more than `min` are
    /// open. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub scale_down_after: Duration,
    /// How often surplus and broken connections are looked for, and
    /// `min` restored. Default 1 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub maintenance_interval: Duration,
    /// Most requests queued at once; `None` (the default) for no bound.
    pub max_queued: Option<usize>,
    /// Longest a request waits for a slot. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub acquire_timeout: Duration,
    /// How a request chooses its connection. Default
    /// [`Spread::LeastLoaded`].
    pub spread: Spread,
    /// Most work a request may queue behind on a connection: the
    /// requests ahead of it times the measured time one keeps a
    /// connection busy. Short statements pipeline up to `max_in_flight`;
    /// past the horizon a request waits in the queue instead and takes the
    /// first slot that frees, so that it is not stuck behind slow ones
    /// while another connection frees sooner. Until one request has been
    /// timed, none queues behind another. `None` (`"off"` in a file)
    /// pipelines up to `max_in_flight` whatever the statements take.
    /// Default 100 ms.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::opt_duration"))]
    pub pipeline_horizon: Option<Duration>,
    /// Whether the multiplexer finds its number of connections between
    /// `min` and `max` from what it measures: it tries counts near the
    /// one it has, keeps the one with the most throughput per unit of
    /// latency, and tries again now and then or when the load changes.
    /// Statements that would queue past `pipeline_horizon` or
    /// `max_in_flight` get connections at once, measured or not. Off (or
    /// `min == max`), connections open with the demand up to `max`.
    /// [`MuxStatus::limit`](crate::MuxStatus::limit) shows the limit, why
    /// it last changed and the measurements. Default on.
    pub adaptive: bool,
    /// How connections are opened and closed: `create_timeout`,
    /// `backoff`, `create_concurrency` (how many open at once),
    /// `destroy_timeout`, `validate_on_borrow`, `event_capacity`, and
    /// `max_lifetime` with `lifetime_jitter`: a connection past its
    /// lifetime takes no new requests, closes once its last one ends, and
    /// is replaced when `min` or the load needs it, one connection at a
    /// time, at the maintenance tick. Its `min`, `max` and
    /// `acquire_timeout` are the multiplexer's.
    pub pool: PoolConfig,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            min: 1,
            max: 10,
            max_in_flight: 100,
            scale_down_after: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(1),
            max_queued: None,
            acquire_timeout: Duration::from_secs(30),
            spread: Spread::default(),
            pipeline_horizon: Some(Duration::from_millis(100)),
            adaptive: true,
            pool: PoolConfig::default(),
        }
    }
}

impl MuxConfig {
    /// Checks that the settings can work together.
    ///
    /// # Errors
    /// A [`BuildError`] naming the first setting to change.
    pub fn validate(&self) -> Result<(), BuildError> {
        self.pool_config().validate()?;
        if self.max_in_flight == 0 {
            return Err(BuildError::OutOfRange {
                setting: "max_in_flight",
                value: "0".into(),
                expected: "at least 1 (1 means no pipelining: use a Pool)",
            });
        }
        for (setting, d) in [
            ("scale_down_after", self.scale_down_after),
            ("maintenance_interval", self.maintenance_interval),
        ] {
            if d.is_zero() {
                return Err(BuildError::ZeroDuration { setting, hint: "" });
            }
        }
        if self.max_queued == Some(0) {
            return Err(BuildError::OutOfRange {
                setting: "max_queued",
                value: "0".into(),
                expected: "at least 1, or None for no bound",
            });
        }
        Ok(())
    }

    /// The inner pool's settings.
    pub(super) fn pool_config(&self) -> PoolConfig {
        let mut cfg = self.pool.clone();
        cfg.min = self.min;
        cfg.max = self.max;
        cfg.acquire_timeout = self.acquire_timeout;
        cfg.eager = true;
        cfg
    }

    pub(super) fn limits(&self) -> Limits {
        Limits {
            min: self.min,
            max: self.max,
            max_in_flight: self.max_in_flight,
            max_queued: self.max_queued,
            open_concurrency: self.pool.create_concurrency,
            spread: self.spread,
            adaptive: self.adaptive && self.min < self.max,
            horizon_ns: self.pipeline_horizon.map_or(u64::MAX, |d| {
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
            }),
        }
    }
}

/// Settings the state reads, copied from the configuration.
pub(super) struct Limits {
    pub(super) min: usize,
    pub(super) max: usize,
    pub(super) max_in_flight: usize,
    pub(super) max_queued: Option<usize>,
    pub(super) open_concurrency: usize,
    pub(super) spread: Spread,
    /// `adaptive`, and room between `min` and `max` to adapt in.
    pub(super) adaptive: bool,
    pub(super) horizon_ns: u64,
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    #[test]
    fn a_config_reads_from_a_file_and_refuses_unknown_fields() {
        let cfg: MuxConfig = serde_json::from_str(
            r#"{"min": 2, "max": 16, "scale_down_after": "10s", "pipeline_horizon": "off",
                "spread": "round_robin", "adaptive": false, "pool": {"create_concurrency": 8}}"#,
        )
        .unwrap();
        assert_eq!((cfg.min, cfg.max, cfg.max_in_flight), (2, 16, 100));
        assert_eq!(cfg.scale_down_after, Duration::from_secs(10));
        assert_eq!(cfg.pipeline_horizon, None);
        assert_eq!(cfg.spread, Spread::RoundRobin);
        assert!(!cfg.adaptive);
        assert!(MuxConfig::default().adaptive);
        assert_eq!(cfg.pool.create_concurrency, 8);
        let back: MuxConfig = serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
        assert_eq!(back.pipeline_horizon, None);
        assert_eq!(back.scale_down_after, cfg.scale_down_after);
        let err = serde_json::from_str::<MuxConfig>(r#"{"max_query_count": 100}"#).unwrap_err();
        assert!(err.to_string().contains("max_query_count"), "{err}");
    }
}
