//! Pool settings: one plain struct that a builder fills in or serde reads.

use std::time::Duration;

pub use crate::clock::Clock;
use crate::error::BuildError;

/// Which idle object a checkout takes.
///
/// The idle objects are kept in per-thread shards (so that threads checking
/// out at once do not contend), and a checkout looks in its own thread's
/// shard first: the order holds among the objects returned on one thread,
/// and a thread reuses what it returned before it takes another thread's.
/// On a one-thread runtime it holds exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Order {
    /// The object idle longest goes first: use spreads over all objects.
    #[default]
    Fifo,
    /// The object returned last goes first: the rest idles and can be evicted.
    Lifo,
}

/// Exponential backoff between failed create attempts.
///
/// After the n-th consecutive failure the pool waits
/// `min * factor^(n-1)`, capped at `max`, shortened by a random fraction of
/// up to `jitter`. A success resets it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Backoff {
    /// First delay. Default 100 ms.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub min: Duration,
    /// Largest delay. Default 5 s: a recovered database is used again at most
    /// this long after it comes back.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub max: Duration,
    /// Growth per failure, at least 1. Default 2.
    pub factor: f64,
    /// Random fraction in `[0, 1]` taken off each delay so that many pools do
    /// not retry in step. Default 0.2.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let raw = self.min.as_secs_f64() * self.factor.powi(exp);
        let capped = raw.min(self.max.as_secs_f64());
        let cut = if self.jitter > 0.0 {
            1.0 - self.jitter * fastrand::f64()
        } else {
            1.0
        };
        Duration::from_secs_f64(capped * cut)
    }
}

/// Everything that shapes a pool. Every field has a documented default, so a
/// config file only names what it changes:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// let cfg: aquifer::PoolConfig = serde_json::from_str(
///     r#"{ "max": 32, "acquire_timeout": "2s", "idle_timeout": "90s", "order": "lifo" }"#,
/// ).unwrap();
/// assert_eq!(cfg.max, 32);
/// assert_eq!(cfg.min, 0);
/// # }
/// ```
///
/// Durations are strings with a unit (`"250ms"`, `"2s"`, `"5m"`, `"1h"`;
/// see [`parse_duration`]); a bare number is refused. Optional ones also
/// take `"off"`, `false` or `null`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct PoolConfig {
    /// Most objects alive at once (idle, borrowed and being created). Default 10.
    pub max: usize,
    /// Objects kept alive even when idle; refilled in the background. Default 0.
    pub min: usize,
    /// Most callers allowed to wait for an object to come back. A caller
    /// that a create (in flight or still allowed under `max`) will serve
    /// does not count; beyond the bound, `get` fails at once with
    /// [`PoolError::QueueFull`](crate::PoolError::QueueFull). `Some(0)`:
    /// grow to `max`, then refuse instead of queueing (generic-pool's
    /// `maxWaitingClients: 0`). Default `None` (unbounded).
    pub max_waiting: Option<usize>,
    /// Longest a `get` waits for an object, creation and validation included. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub acquire_timeout: Duration,
    /// Longest one `Manager::create` may take. Default 10 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub create_timeout: Duration,
    /// Longest one `Manager::destroy` may take before the object is kept as
    /// pending. Default 5 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub destroy_timeout: Duration,
    /// Longest one `Manager::validate` may take (also capped by what is left
    /// of the acquire timeout). Default 5 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub validate_timeout: Duration,
    /// Longest one `Manager::reset` may take before the object is destroyed. Default 5 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub reset_timeout: Duration,
    /// Validate objects when they are checked out. Default `true`.
    pub validate_on_borrow: bool,
    /// Skip the borrow check for objects used less than this long ago
    /// (HikariCP uses 500 ms). Default 500 ms.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub validate_if_idle_for: Duration,
    /// Which idle object a checkout takes. Default FIFO.
    pub order: Order,
    /// The clock read on checkout and return. Default [`Clock::Auto`]: the
    /// coarse clock (a few nanoseconds per reading, to within one scheduler
    /// tick), or Tokio's when the pool is built under paused time.
    pub clock: Clock,
    /// Number of priority levels; 0 is served first. Default 1.
    pub priority_levels: usize,
    /// Start filling to `min` and the background maintenance as soon as the
    /// pool is built inside a Tokio runtime, rather than at the first `get`.
    /// Default `true`.
    pub eager: bool,
    /// Destroy objects idle this long, never going below `min`. Default 10 min.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::opt_duration"))]
    pub idle_timeout: Option<Duration>,
    /// Destroy objects idle this long while more than `min` are idle. Default `None`.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::opt_duration"))]
    pub soft_idle_timeout: Option<Duration>,
    /// How often maintenance (eviction, lifetime, keepalive, leak checks,
    /// refill to `min`) runs. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
    pub eviction_interval: Duration,
    /// Idle objects examined per maintenance run, oldest first. Default `None` (all).
    pub tests_per_eviction_run: Option<usize>,
    /// Destroy objects older than this, at their next return or maintenance
    /// run. Default 30 min.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::opt_duration"))]
    pub max_lifetime: Option<Duration>,
    /// Each object's lifetime is shortened by a random fraction of up to this,
    /// so that objects made together do not expire together. Default 0.025 (HikariCP's 2.5%).
    pub lifetime_jitter: f64,
    /// Validate idle objects this often in the background. Default `None`.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::opt_duration"))]
    pub keepalive_interval: Option<Duration>,
    /// Report an object held longer than this as a suspected leak. Default `None`.
    #[cfg_attr(feature = "serde", serde(with = "crate::config::opt_duration"))]
    pub leak_detection_threshold: Option<Duration>,
    /// Delay between failed create attempts. A waiting `get` sits through
    /// failed creates until its own deadline, then fails with
    /// [`PoolError::Timeout`](crate::PoolError::Timeout) whose source is the
    /// last create error; only an error the manager calls permanent
    /// ([`Manager::is_permanent`](crate::Manager::is_permanent)) fails it
    /// at once.
    pub backoff: Backoff,
    /// Most creates in flight at once. A small number keeps a spike of
    /// callers from opening a connection each (waiters take whichever object
    /// frees first) while still opening several when many are wanted: past
    /// a few at once a database server opens them no faster. Default 4.
    pub create_concurrency: usize,
    /// Events buffered for each listener before the oldest are dropped. Default 1024.
    pub event_capacity: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max: 10,
            min: 0,
            max_waiting: None,
            acquire_timeout: Duration::from_secs(30),
            create_timeout: Duration::from_secs(10),
            destroy_timeout: Duration::from_secs(5),
            validate_timeout: Duration::from_secs(5),
            reset_timeout: Duration::from_secs(5),
            validate_on_borrow: true,
            validate_if_idle_for: Duration::from_millis(500),
            order: Order::Fifo,
            clock: Clock::Auto,
            priority_levels: 1,
            eager: true,
            idle_timeout: Some(Duration::from_secs(600)),
            soft_idle_timeout: None,
            eviction_interval: Duration::from_secs(30),
            tests_per_eviction_run: None,
            max_lifetime: Some(Duration::from_secs(1800)),
            lifetime_jitter: 0.025,
            keepalive_interval: None,
            leak_detection_threshold: None,
            backoff: Backoff::default(),
            create_concurrency: 4,
            event_capacity: 1024,
        }
    }
}

impl PoolConfig {
    /// Checks that the settings can work together.
    ///
    /// # Errors
    /// A [`BuildError`] naming the first setting to change.
    pub fn validate(&self) -> Result<(), BuildError> {
        fn nonzero(
            setting: &'static str,
            d: Duration,
            hint: &'static str,
        ) -> Result<(), BuildError> {
            if d.is_zero() {
                Err(BuildError::ZeroDuration { setting, hint })
            } else {
                Ok(())
            }
        }
        fn fraction(setting: &'static str, v: f64) -> Result<(), BuildError> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(BuildError::OutOfRange {
                    setting,
                    value: v.to_string(),
                    expected: "between 0 and 1",
                })
            }
        }
        if self.max == 0 {
            return Err(BuildError::MaxZero);
        }
        if self.min > self.max {
            return Err(BuildError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if self.priority_levels == 0 {
            return Err(BuildError::OutOfRange {
                setting: "priority_levels",
                value: "0".into(),
                expected: "at least 1 (1 means no priorities)",
            });
        }
        if self.create_concurrency == 0 {
            return Err(BuildError::OutOfRange {
                setting: "create_concurrency",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        if self.event_capacity == 0 {
            return Err(BuildError::OutOfRange {
                setting: "event_capacity",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let never =
            ": a zero timeout would fail every call; use `try_get` for a checkout that never waits";
        nonzero("acquire_timeout", self.acquire_timeout, never)?;
        nonzero("create_timeout", self.create_timeout, never)?;
        nonzero("destroy_timeout", self.destroy_timeout, never)?;
        nonzero("validate_timeout", self.validate_timeout, never)?;
        nonzero("reset_timeout", self.reset_timeout, never)?;
        nonzero("eviction_interval", self.eviction_interval, "")?;
        for (name, d) in [
            ("idle_timeout", self.idle_timeout),
            ("soft_idle_timeout", self.soft_idle_timeout),
            ("max_lifetime", self.max_lifetime),
            ("keepalive_interval", self.keepalive_interval),
            ("leak_detection_threshold", self.leak_detection_threshold),
        ] {
            if let Some(d) = d {
                nonzero(
                    name,
                    d,
                    ": to turn it off, pass `None` (in a config file, \"off\" or false)",
                )?;
            }
        }
        if self.tests_per_eviction_run == Some(0) {
            return Err(BuildError::OutOfRange {
                setting: "tests_per_eviction_run",
                value: "0".into(),
                expected: "at least 1, or unset to examine every idle object",
            });
        }
        fraction("lifetime_jitter", self.lifetime_jitter)?;
        fraction("backoff.jitter", self.backoff.jitter)?;
        nonzero("backoff.min", self.backoff.min, "")?;
        if self.backoff.max < self.backoff.min {
            return Err(BuildError::OutOfRange {
                setting: "backoff.max",
                value: format!("{:?}", self.backoff.max),
                expected: "at least backoff.min",
            });
        }
        if !(self.backoff.factor >= 1.0 && self.backoff.factor.is_finite()) {
            return Err(BuildError::OutOfRange {
                setting: "backoff.factor",
                value: self.backoff.factor.to_string(),
                expected: "a finite number of at least 1",
            });
        }
        Ok(())
    }

    /// How often the maintenance task wakes: the eviction interval, or more
    /// often when leak detection or keepalive need it.
    pub(crate) fn maintenance_interval(&self) -> Duration {
        let mut tick = self.eviction_interval;
        for d in [self.leak_detection_threshold, self.keepalive_interval]
            .into_iter()
            .flatten()
        {
            tick = tick.min((d / 2).max(Duration::from_millis(1)));
        }
        tick
    }
}

/// Parses a duration as aquifer writes it everywhere (configuration files,
/// the environment, the admin API, command-line flags): a number and a unit,
/// `"250ms"`, `"2s"`, `"1.5s"`, `"5m"`, `"1h"` (also `"us"`, `"min"`).
/// A bare number has no unit and is refused: it reads as milliseconds in
/// some tools and seconds in others.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(aquifer::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// let err = aquifer::parse_duration("250").unwrap_err();
/// assert_eq!(err.to_string(), r#"`250` has no unit: write "250s" or "250ms""#);
/// assert!(aquifer::parse_duration("soon").is_err());
/// ```
///
/// # Errors
/// [`DurationError`] saying what to write instead.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = || DurationError {
        text: text.to_owned(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (num, unit) = trimmed.split_at(split);
    let num: f64 = num.parse().map_err(|_| fail())?;
    if !num.is_finite() || num < 0.0 {
        return Err(fail());
    }
    let secs = match unit.trim() {
        "ms" => num / 1000.0,
        "us" | "µs" => num / 1_000_000.0,
        "s" => num,
        "m" | "min" => num * 60.0,
        "h" => num * 3600.0,
        _ => return Err(fail()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| fail())
}

/// A duration that cannot be read: no unit, an unknown unit, a negative
/// or malformed number. The message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    text: String,
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.text.trim();
        if !t.is_empty() && t.parse::<f64>().is_ok_and(|n| n.is_finite() && n >= 0.0) {
            write!(f, "`{t}` has no unit: write \"{t}s\" or \"{t}ms\"")
        } else {
            write!(
                f,
                "`{t}` is not a duration: write a number and a unit, such as \"500ms\", \"2s\", \"5m\" or \"1h\""
            )
        }
    }
}

impl std::error::Error for DurationError {}

#[cfg(feature = "serde")]
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{de, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Visitor)
    }

    pub(crate) struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration with a unit, such as \"500ms\", \"2s\", \"5m\"")
        }

        // A bare number has no unit: refused, with the two readings to
        // choose from.
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(super::DurationError {
                text: v.to_string(),
            }))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(super::DurationError {
                text: v.to_string(),
            }))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(super::DurationError {
                text: v.to_string(),
            }))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            super::parse_duration(v).map_err(E::custom)
        }
    }
}

#[cfg(feature = "serde")]
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{de, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            // TOML has no null: "off" reads back as none in every format.
            None => s.serialize_str("off"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        struct Opt;
        impl<'de> de::Visitor<'de> for Opt {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null or a duration")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(OffOr)
            }
        }

        /// A duration, or `"off"` / `false` for none.
        struct OffOr;
        impl de::Visitor<'_> for OffOr {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"off\", false, or a duration such as \"500ms\", \"2s\", \"5m\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                if v {
                    Err(E::invalid_value(de::Unexpected::Bool(true), &self))
                } else {
                    Ok(None)
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                de::Visitor::visit_u64(super::duration::Visitor, v).map(Some)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                de::Visitor::visit_i64(super::duration::Visitor, v).map(Some)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                de::Visitor::visit_f64(super::duration::Visitor, v).map(Some)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v.eq_ignore_ascii_case("off") {
                    return Ok(None);
                }
                de::Visitor::visit_str(super::duration::Visitor, v).map(Some)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
        }
        d.deserialize_option(Opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        let no_unit = parse_duration("40").unwrap_err().to_string();
        assert_eq!(no_unit, r#"`40` has no unit: write "40s" or "40ms""#);
        for bad in ["2 weeks", "-1s", "", "s", "1e3s"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(
                e.contains("is not a duration") && e.contains("\"2s\""),
                "{e}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(30), Duration::from_secs(5));
        let j = Backoff::default();
        for _ in 0..100 {
            let d = j.delay(3);
            assert!(
                d <= Duration::from_millis(400) && d >= Duration::from_millis(320),
                "{d:?}"
            );
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_fields() {
        let cfg: PoolConfig = serde_json::from_str(
            r#"{"max": 4, "idle_timeout": null, "max_lifetime": "1m", "backoff": {"max": "2s"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.max, 4);
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(cfg.max_lifetime, Some(Duration::from_secs(60)));
        assert_eq!(cfg.backoff.max, Duration::from_secs(2));
        assert_eq!(cfg.backoff.min, Duration::from_millis(100));
        assert_eq!(cfg.clock, Clock::Auto);
        let tokio: PoolConfig = serde_json::from_str(r#"{"clock": "tokio"}"#).unwrap();
        assert_eq!(tokio.clock, Clock::Tokio);
        assert!(serde_json::from_str::<PoolConfig>(r#"{"clock": "sundial"}"#).is_err());
        assert!(serde_json::from_str::<PoolConfig>(r#"{"maxx": 4}"#).is_err());
        assert!(serde_json::from_str::<PoolConfig>(r#"{"acquire_timeout": "soon"}"#).is_err());
        // A number has no unit: one rule everywhere, never two meanings.
        for bare in [r#"{"acquire_timeout": 2}"#, r#"{"idle_timeout": 1.5}"#] {
            let e = serde_json::from_str::<PoolConfig>(bare)
                .unwrap_err()
                .to_string();
            assert!(e.contains("has no unit") && e.contains("ms\""), "{e}");
        }
        let round: PoolConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(round, cfg);
        // A file turns a default-on timeout off with "off" or false.
        let off: PoolConfig =
            serde_json::from_str(r#"{"idle_timeout": "off", "max_lifetime": false}"#).unwrap();
        assert_eq!((off.idle_timeout, off.max_lifetime), (None, None));
        assert!(serde_json::from_str::<PoolConfig>(r#"{"max_lifetime": true}"#).is_err());
        let zero = PoolConfig {
            idle_timeout: Some(Duration::ZERO),
            ..PoolConfig::default()
        };
        let err = zero.validate().unwrap_err().to_string();
        assert!(
            err.contains("pass `None`") && err.contains("\"off\""),
            "{err}"
        );
    }
}
