//! The clock the pool reads on every checkout and return.
//!
//! A checkout and a return each need the time: for the usage and wait
//! histograms, for the lifetime check and for validate-if-idle. A precise
//! monotonic reading costs 20–30 ns on a virtual machine, as much as the
//! rest of the checkout. Every decision the pool takes from these readings is
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
    /// true)]`), else [`Clock::Coarse`]. Checking costs about 20 µs, once,
    /// when the pool is built.
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

/// A pool's clock: readings on Tokio's timeline.
#[derive(Debug)]
pub(crate) struct PoolClock {
    /// Tokio's clock at the pool's start.
    base: Instant,
    /// `None`: read Tokio's clock.
    coarse: Option<Coarse>,
}

/// How a coarse reading lands on Tokio's timeline.
#[derive(Debug)]
struct Coarse {
    /// The coarse clock at the pool's start (at `base`).
    base: Duration,
    /// Added to every reading, packed as seconds (high half) and
    /// nanoseconds (low half) so that it compares like the duration and
    /// unpacks without a division. It only grows: every precise reading the
    /// pool takes anyway (background work) moves it up if the coarse
    /// timeline fell behind, as it does when Tokio's clock is paused and
    /// advanced, so readings never go back.
    ahead: AtomicU64,
}

fn pack(d: Duration) -> u64 {
    (u64::from(u32::try_from(d.as_secs()).unwrap_or(u32::MAX)) << 32) | u64::from(d.subsec_nanos())
}

fn unpack(v: u64) -> Duration {
    Duration::new(v >> 32, (v & 0xffff_ffff) as u32)
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

    /// Now, on Tokio's timeline.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        if let Some(coarse) = &self.coarse {
            if let Some(c) = coarse_now() {
                let since = c.saturating_sub(coarse.base);
                let ahead = coarse.ahead.load(Ordering::Relaxed);
                return if ahead == 0 {
                    self.base + since
                } else {
                    self.base + since + unpack(ahead)
                };
            }
        }
        Instant::now()
    }

    /// Tokio's clock, read precisely; the coarse timeline catches up with
    /// it if it fell behind.
    pub(crate) fn precise(&self) -> Instant {
        let now = Instant::now();
        if let (Some(coarse), Some(c)) = (&self.coarse, coarse_now()) {
            let since = now.saturating_duration_since(self.base);
            let coarse_since = c.saturating_sub(coarse.base);
            // Only when Tokio's clock is ahead by more than a tick or two,
            // as it is after paused time was advanced: in real time the
            // coarse clock is never far behind.
            if since > coarse_since + Duration::from_millis(10) {
                let wanted = pack(since - coarse_since);
                // Read before writing, so that cores do not fight over it.
                if wanted > coarse.ahead.load(Ordering::Relaxed) {
                    coarse.ahead.fetch_max(wanted, Ordering::Relaxed);
                }
            }
        }
        now
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
fn coarse_now() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // Monotonic time is never negative and nanoseconds stay below 10^9.
    Some(Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    ))
}

#[cfg(not(all(target_os = "linux", not(aquifer_loom))))]
#[inline]
fn coarse_now() -> Option<Duration> {
    None
}

#[cfg(all(test, target_os = "linux", not(aquifer_loom)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn coarse_readings_stay_within_a_few_ticks_of_tokio_and_move_forward() {
        let clock = PoolClock::new(Clock::Coarse);
        assert!(clock.coarse.is_some());
        let mut last = clock.now();
        for _ in 0..50 {
            let (coarse, precise) = (clock.now(), Instant::now());
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
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(30));
        let moved = clock.now() - start;
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
        let (t0, c0) = (tokio.now(), coarse.now());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(tokio.now() - t0, Duration::from_secs(60));
        assert!(coarse.now() - c0 < Duration::from_secs(1));
        // A precise reading brings the coarse timeline up to Tokio's.
        assert_eq!(coarse.precise() - c0, Duration::from_secs(60));
        let caught_up = coarse.now() - c0;
        assert!(
            caught_up >= Duration::from_secs(60) && caught_up < Duration::from_secs(61),
            "{caught_up:?}"
        );
    }
}
