//! The clock the pool reads on every checkout and return.
//!
//! A checkout and a return each need the time: for the usage and wait
//! histograms, for the lifetime check and for validate-if-idle. A precise
//! monotonic reading can cost as much as the rest of the checkout on a
//! virtual machine. Every decision the pool takes from these readings is
//! about hundreds of milliseconds or more, so by default it reads Linux's
//! coarse monotonic clock instead (`CLOCK_MONOTONIC_COARSE`: the time of the
//! last scheduler tick, 1–4 ms behind, a few nanoseconds to read), placed on
//! Tokio's timeline. Background work (eviction, keepalive, backoff) reads
//! Tokio's clock, and each such reading moves the coarse timeline up if it
//! fell behind. A pool built under a paused Tokio clock, one given
//! [`Clock::Tokio`], and any pool off Linux read Tokio's clock, which follows
//! `tokio::time::pause` and `advance` in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Which clock a pool reads on its checkout and return paths (where a
/// waiting caller's deadline is set, too).
///
/// Background work (eviction, keepalive, backoff, and failing waiters whose
/// deadline passed) always runs on Tokio's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Clock {
    /// [`Clock::Tokio`] when the pool is built inside a runtime whose clock
    /// is paused (`tokio::time::pause`, `#[tokio::test(start_paused =
    /// true)]`), else [`Clock::Coarse`]. Checked once, when the pool is
    /// built.
    #[default]
    Auto,
    /// The operating system's coarse monotonic clock where there is one
    /// (Linux): a few nanoseconds per reading, up to one scheduler tick
    /// (1–4 ms) off. Checkout-time decisions (lifetime, validate if idle
    /// for), wait deadlines and recorded durations are then exact to within
    /// that tick. It does not follow paused time: a pool built before
    /// `tokio::time::pause` is called should be given [`Clock::Tokio`].
    Coarse,
    /// Tokio's clock (`tokio::time::Instant::now`): precise, and it follows
    /// paused and advanced time in tests.
    Tokio,
}

/// A reading of a pool's clock: nanoseconds since the pool was built, on
/// Tokio's timeline. The checkout and return paths keep their times in
/// this form because comparing and subtracting two of them is one integer
/// operation, where `Instant` arithmetic normalises seconds and nanoseconds
/// each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// Time from `earlier` to `self`; zero if `earlier` is later.
    #[inline]
    pub(crate) fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Nanoseconds from `earlier` to `self`; zero if `earlier` is later.
    #[inline]
    pub(crate) fn nanos_since(self, earlier: Stamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self` plus `d`, saturating far in the future.
    #[inline]
    pub(crate) fn after(self, d: Duration) -> Stamp {
        Stamp(self.0.saturating_add(nanos(d)))
    }

    /// Whether at least `d` passed from `earlier` to `self`.
    #[inline]
    pub(crate) fn at_least(self, earlier: Stamp, d: Duration) -> bool {
        self.0.saturating_sub(earlier.0) >= nanos(d)
    }
}

/// A duration in nanoseconds, saturating (at 584 years).
#[inline]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// A pool's clock: readings on Tokio's timeline.
#[derive(Debug)]
pub(crate) struct PoolClock {
    /// Tokio's clock at the pool's start: `Stamp(0)`.
    base: Instant,
    /// `None`: read Tokio's clock.
    coarse: Option<Coarse>,
}

/// How a coarse reading lands on Tokio's timeline.
#[derive(Debug)]
struct Coarse {
    /// The coarse clock at the pool's start (at `base`), in nanoseconds.
    base: u64,
    /// Nanoseconds added to every reading. It only grows: every precise
    /// reading the pool takes anyway (background work) moves it up if the
    /// coarse timeline fell behind, as it does when Tokio's clock is paused
    /// and advanced, so readings never go back.
    ahead: AtomicU64,
}

impl PoolClock {
    pub(crate) fn new(kind: Clock) -> Self {
        let coarse = match kind {
            Clock::Auto => !tokio_clock_paused(),
            Clock::Coarse => true,
            Clock::Tokio => false,
        };
        let base = Instant::now();
        let coarse = coarse.then(coarse_now).flatten().map(|c| Coarse {
            base: c,
            ahead: AtomicU64::new(0),
        });
        Self { base, coarse }
    }

    /// Now.
    #[inline]
    pub(crate) fn now(&self) -> Stamp {
        if let Some(coarse) = &self.coarse {
            if let Some(c) = coarse_now() {
                let ahead = coarse.ahead.load(Ordering::Relaxed);
                return Stamp(c.saturating_sub(coarse.base) + ahead);
            }
        }
        self.stamp(Instant::now())
    }

    /// Tokio's clock, read precisely; the coarse timeline catches up with
    /// it if it fell behind.
    pub(crate) fn precise(&self) -> Stamp {
        let now = self.stamp(Instant::now());
        if let Some((coarse, c)) = self.coarse.as_ref().and_then(|k| Some((k, coarse_now()?))) {
            let coarse_since = c.saturating_sub(coarse.base);
            // Only when Tokio's clock is ahead by more than a tick or two,
            // as it is after paused time was advanced: in real time the
            // coarse clock is never far behind.
            if now.0 > coarse_since + 10_000_000 {
                let wanted = now.0 - coarse_since;
                // Read before writing, so that cores do not fight over it.
                if wanted > coarse.ahead.load(Ordering::Relaxed) {
                    coarse.ahead.fetch_max(wanted, Ordering::Relaxed);
                }
            }
        }
        now
    }

    /// Where readings start: `Stamp::default()`.
    pub(crate) fn base(&self) -> Instant {
        self.base
    }

    /// A reading as an `Instant`.
    pub(crate) fn instant(&self, t: Stamp) -> Instant {
        self.base + Duration::from_nanos(t.0)
    }

    /// An `Instant` as a reading (the pool's start, if earlier).
    pub(crate) fn stamp(&self, i: Instant) -> Stamp {
        Stamp(nanos(i.saturating_duration_since(self.base)))
    }
}

/// Whether the current runtime's clock is paused: Tokio's clock stands
/// still while real time moves on.
fn tokio_clock_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let (tokio, real) = (Instant::now(), std::time::Instant::now());
    while real.elapsed() < Duration::from_micros(20) {
        std::hint::spin_loop();
    }
    Instant::now() == tokio
}

/// The coarse monotonic clock, where the platform has one.
#[cfg(all(target_os = "linux", not(aquifer_loom)))]
#[inline]
fn coarse_now() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // Monotonic time is never negative.
    let (secs, nanos) = (t.tv_sec as u64, t.tv_nsec as u64);
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(not(all(target_os = "linux", not(aquifer_loom))))]
#[inline]
fn coarse_now() -> Option<u64> {
    None
}

#[cfg(all(test, target_os = "linux", not(aquifer_loom)))]
mod tests {
    use super::*;

    /// A reading as an `Instant`.
    fn now(c: &PoolClock) -> Instant {
        c.instant(c.now())
    }

    #[tokio::test]
    async fn coarse_readings_stay_within_a_few_ticks_of_tokio_and_move_forward() {
        let clock = PoolClock::new(Clock::Coarse);
        assert!(clock.coarse.is_some());
        let mut last = now(&clock);
        for _ in 0..50 {
            let (coarse, precise) = (now(&clock), Instant::now());
            let gap = if coarse > precise {
                coarse - precise
            } else {
                precise - coarse
            };
            assert!(gap < Duration::from_millis(25), "{gap:?}");
            assert!(coarse >= last);
            last = coarse;
            std::thread::sleep(Duration::from_millis(2));
        }
        let start = now(&clock);
        std::thread::sleep(Duration::from_millis(30));
        let moved = now(&clock) - start;
        assert!(moved >= Duration::from_millis(20), "{moved:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn auto_picks_tokio_under_paused_time() {
        assert!(PoolClock::new(Clock::Auto).coarse.is_none());
    }

    #[tokio::test]
    async fn auto_picks_coarse_in_real_time_and_outside_a_runtime() {
        assert!(PoolClock::new(Clock::Auto).coarse.is_some());
        let outside = std::thread::spawn(|| PoolClock::new(Clock::Auto).coarse.is_some());
        assert!(outside.join().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_paused_time_and_the_coarse_one_does_not() {
        let (tokio, coarse) = (PoolClock::new(Clock::Tokio), PoolClock::new(Clock::Coarse));
        let (t0, c0) = (now(&tokio), now(&coarse));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(now(&tokio) - t0, Duration::from_secs(60));
        assert!(now(&coarse) - c0 < Duration::from_secs(1));
        // A precise reading brings the coarse timeline up to Tokio's.
        assert_eq!(
            coarse.instant(coarse.precise()) - c0,
            Duration::from_secs(60)
        );
        let caught_up = now(&coarse) - c0;
        assert!(
            caught_up >= Duration::from_secs(60) && caught_up < Duration::from_secs(61),
            "{caught_up:?}"
        );
    }
}

/// As far ahead as a deadline is ever set: 30 years, as Tokio's own "far
/// future". A duration of `Duration::MAX` means "never" and must not
/// overflow an `Instant`.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `d` from now on Tokio's clock, saturating at [`FAR`] from now.
pub(crate) fn later(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + d.min(FAR)
}

/// `d`, at most [`FAR`]: for a period or timeout that may be
/// `Duration::MAX`.
pub(crate) fn bounded(d: Duration) -> Duration {
    d.min(FAR)
}
