//! Counters and latency summaries. They live inside the pool's state, and
//! the checkouts and returns that skip the pool lock count in their idle
//! shard: either way they are bumped while a lock is already held, so
//! counting adds no atomic operation to the checkout path.

use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// A log-linear histogram of nanoseconds: exact below 8 ns, then eight
/// buckets per power of two (at most 12.5% off).
#[derive(Clone)]
pub(crate) struct Histogram {
    buckets: Box<[u64; BUCKETS]>,
    count: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    SUB + (exp - SUB_BITS) as usize * SUB + sub
}

fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let exp = ((i - SUB) / SUB) as u32 + SUB_BITS;
    let sub = ((i - SUB) % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB as u64 + sub) << (exp - SUB_BITS)).saturating_add(width - 1)
}

impl Histogram {
    pub(crate) fn record(&mut self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    #[inline]
    pub(crate) fn record_nanos(&mut self, ns: u64) {
        self.buckets[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum += u128::from(ns);
        self.max = self.max.max(ns);
    }

    /// Adds another histogram's values to this one.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(bucket_high(i).min(self.max));
            }
        }
        Duration::from_nanos(self.max)
    }

    /// Samples at or below each of [`Summary::BOUNDS`]: a sample counts
    /// under a bound when its whole bucket lies below it, so a count may
    /// miss samples up to 12.5% below its bound.
    fn cumulative(&self) -> [u64; Summary::BOUNDS.len()] {
        let mut out = [0; Summary::BOUNDS.len()];
        let mut seen = 0;
        let mut i = 0;
        for (b, bound) in Summary::BOUNDS.iter().enumerate() {
            let limit = (bound * 1e9) as u64;
            while i < BUCKETS && bucket_high(i) <= limit {
                seen += self.buckets[i];
                i += 1;
            }
            out[b] = seen;
        }
        out
    }

    pub(crate) fn summary(&self) -> Summary {
        self.summary_with_zeros(0)
    }

    /// The summary as if `zeros` more samples of 0 had been recorded.
    pub(crate) fn summary_with_zeros(&self, zeros: u64) -> Summary {
        if zeros > 0 {
            let mut h = self.clone();
            h.buckets[0] += zeros;
            h.count += zeros;
            return h.summary();
        }
        Summary {
            count: self.count,
            mean: if self.count == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos((self.sum / u128::from(self.count)) as u64)
            },
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            max: Duration::from_nanos(self.max),
            total: Duration::from_nanos(u64::try_from(self.sum).unwrap_or(u64::MAX)),
            buckets: self.cumulative(),
        }
    }
}

/// A latency distribution: quantiles are upper bounds, at most 12.5% high.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
    pub mean: Duration,
    /// Median.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
    pub p50: Duration,
    /// 99th percentile.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
    pub p99: Duration,
    /// Largest sample.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
    pub max: Duration,
    /// Sum of all samples.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::secs"))]
    pub total: Duration,
    /// Cumulative counts at [`Summary::BOUNDS`], for a Prometheus
    /// histogram: `buckets[i]` samples took at most `BOUNDS[i]` seconds.
    pub buckets: [u64; Summary::BOUNDS.len()],
}

impl Summary {
    /// The bucket bounds of [`buckets`](Summary::buckets), in seconds: from
    /// 100 µs (a warm checkout) to 10 s (an outage).
    pub const BOUNDS: [f64; 16] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ];
}

/// The raw counters kept under the pool lock (and, for lock-free
/// checkouts and returns, in each shard).
#[derive(Clone, Default)]
pub(crate) struct Counters {
    pub(crate) gets: u64,
    pub(crate) gets_waited: u64,
    /// Checkouts served at once; their zero waits are not recorded one by one.
    pub(crate) immediate: u64,
    pub(crate) timeouts: u64,
    pub(crate) cancelled: u64,
    pub(crate) queue_full: u64,
    pub(crate) creates: u64,
    pub(crate) create_failures: u64,
    pub(crate) destroys: u64,
    pub(crate) destroy_failures: u64,
    pub(crate) validation_failures: u64,
    pub(crate) reset_failures: u64,
    pub(crate) evicted_idle: u64,
    pub(crate) evicted_lifetime: u64,
    pub(crate) evicted_broken: u64,
    pub(crate) leaks: u64,
    pub(crate) operation_failures: u64,
    pub(crate) wait: Histogram,
    pub(crate) create: Histogram,
    pub(crate) usage: Histogram,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Metrics {
        Metrics {
            gets: self.gets,
            gets_waited: self.gets_waited,
            timeouts: self.timeouts,
            cancelled: self.cancelled,
            queue_full: self.queue_full,
            creates: self.creates,
            create_failures: self.create_failures,
            destroys: self.destroys,
            destroy_failures: self.destroy_failures,
            validation_failures: self.validation_failures,
            reset_failures: self.reset_failures,
            evictions: Evictions {
                idle: self.evicted_idle,
                lifetime: self.evicted_lifetime,
                broken: self.evicted_broken,
            },
            leaks_suspected: self.leaks,
            operation_failures: self.operation_failures,
            wait_time: self.wait.summary_with_zeros(self.immediate),
            create_time: self.create.summary(),
            usage_time: self.usage.summary(),
        }
    }
}

/// Objects evicted by the pool, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Evictions {
    /// Idle longer than `idle_timeout` / `soft_idle_timeout`.
    pub idle: u64,
    /// Older than `max_lifetime`.
    pub lifetime: u64,
    /// Reported broken by `Manager::is_broken`.
    pub broken: u64,
}

/// A snapshot of a pool's counters since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Metrics {
    /// Checkouts asked for (successful or not).
    pub gets: u64,
    /// Checkouts that had to queue.
    pub gets_waited: u64,
    /// Checkouts that hit the acquire timeout.
    pub timeouts: u64,
    /// Queued checkouts whose future was dropped.
    pub cancelled: u64,
    /// Checkouts refused because the queue was full.
    pub queue_full: u64,
    /// Objects created.
    pub creates: u64,
    /// Create attempts that failed or timed out.
    pub create_failures: u64,
    /// Objects destroyed cleanly.
    pub destroys: u64,
    /// Destroys that failed or timed out (the object went to *pending*).
    pub destroy_failures: u64,
    /// Validations that failed (on checkout or keepalive).
    pub validation_failures: u64,
    /// Resets on return that failed.
    pub reset_failures: u64,
    /// Evictions by reason.
    pub evictions: Evictions,
    /// Objects held past `leak_detection_threshold`.
    pub leaks_suspected: u64,
    /// Failures drivers reported with [`Pool::report`](crate::Pool::report).
    pub operation_failures: u64,
    /// Time from asking to getting, for successful checkouts.
    pub wait_time: Summary,
    /// Time taken by successful creates.
    pub create_time: Summary,
    /// Time objects were held by callers.
    pub usage_time: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 40) + 12345, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last || v > 5000, "{v}");
            assert!(
                bucket_high(b) >= v,
                "value {v} above bucket {b} high {}",
                bucket_high(b)
            );
            if b > 0 {
                assert!(bucket_high(b - 1) < v, "value {v} fits a lower bucket");
            }
            last = b;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_are_close_upper_bounds() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_millis(100));
        assert!(
            s.p50 >= Duration::from_millis(50) && s.p50 <= Duration::from_micros(56_250),
            "{s:?}"
        );
        assert!(
            s.p99 >= Duration::from_millis(99) && s.p99 <= Duration::from_millis(100),
            "{s:?}"
        );
        assert_eq!(s.mean, Duration::from_micros(50_500));
        assert_eq!(s.total, Duration::from_millis(5050));
        // One sample per ms from 1 to 100: BOUNDS[4] is 2.5 ms, [6] 10 ms,
        // [7] 25 ms, [8] 50 ms, [9] 100 ms.
        assert_eq!(s.buckets[..4], [0; 4]);
        assert!((1..=2).contains(&s.buckets[4]), "{s:?}");
        assert!((8..=10).contains(&s.buckets[6]), "{s:?}");
        assert!((22..=25).contains(&s.buckets[7]), "{s:?}");
        assert!((44..=50).contains(&s.buckets[8]), "{s:?}");
        assert!((89..=100).contains(&s.buckets[9]), "{s:?}");
        assert_eq!(s.buckets[10..], [100; 6]);
        assert_eq!(Histogram::default().summary(), Summary::default());
    }
}
