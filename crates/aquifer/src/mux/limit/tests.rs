//! The limiter on synthetic servers, in paused time.

use super::*;

/// A server that ends `curve(n)` requests a second on `n` connections,
/// asked by `callers` closed-loop callers (each asks again as soon as
/// its request ends), so that a request's latency is
/// `callers / throughput` (Little's law).
struct Load<'a> {
    curve: &'a dyn Fn(usize) -> f64,
    callers: usize,
    /// Below this many connections requests queue past the horizon,
    /// and the state raises the limit.
    queue_below: usize,
}

/// Runs `load` for `secs` of paused time in steps of a millisecond;
/// returns the limit after each step.
async fn run(l: &mut Limiter, load: &Load<'_>, secs: f64) -> Vec<usize> {
    let step = Duration::from_millis(1);
    let mut carry = 0.0;
    let mut limits = Vec::new();
    for _ in 0..(secs * 1000.0) as usize {
        tokio::time::advance(step).await;
        let now = Instant::now();
        let used = l.limit().min(load.callers).max(1);
        let throughput = (load.curve)(used);
        let latency = Duration::from_secs_f64(load.callers as f64 / throughput);
        carry += throughput / 1000.0;
        while carry >= 1.0 {
            carry -= 1.0;
            l.record(now, latency);
        }
        if l.due(now) {
            let seen = InUse {
                used,
                open_time: Duration::from_millis(2),
            };
            l.evaluate(now, seen);
        }
        if l.limit() < load.queue_below {
            l.raise(load.queue_below, now, Duration::from_millis(2));
        }
        assert!((l.min..=l.max).contains(&l.limit()), "{}", l.limit());
        limits.push(l.limit());
    }
    limits
}

/// The limit most of the last `secs` of `limits` were at, and the share
/// of that time.
fn mostly(limits: &[usize], secs: f64) -> (usize, f64) {
    let last = &limits[limits.len() - (secs * 1000.0) as usize..];
    let mut counts = std::collections::BTreeMap::new();
    for &n in last {
        *counts.entry(n).or_insert(0usize) += 1;
    }
    let (n, c) = counts.into_iter().max_by_key(|&(_, c)| c).unwrap();
    (n, c as f64 / last.len() as f64)
}

/// The distinct limits over the last `secs` of `limits`.
fn tail(limits: &[usize], secs: f64) -> Vec<usize> {
    let mut t: Vec<usize> = limits[limits.len() - (secs * 1000.0) as usize..].to_vec();
    t.sort_unstable();
    t.dedup();
    t
}

/// Two cores: the most at two connections, less with each one more
/// (the baseline measured at 16 tasks, in thousands a second).
fn busy_server(n: usize) -> f64 {
    let k = [74.0, 99.0, 90.0, 80.0, 76.0, 72.0, 68.0, 64.0, 61.0];
    1000.0 * k.get(n - 1).copied().unwrap_or(61.0 - n as f64)
}

/// Statements that wait: each connection adds the same throughput.
fn waiting_server(n: usize) -> f64 {
    1000.0 * n as f64
}

#[tokio::test(start_paused = true)]
async fn from_max_it_comes_down_to_the_best_count_and_holds_it() {
    let mut l = Limiter::new(1, 16, Instant::now());
    let load = Load {
        curve: &busy_server,
        callers: 64,
        queue_below: 0,
    };
    let limits = run(&mut l, &load, 4.0).await;
    let (n, share) = mostly(&limits, 3.0);
    assert!(n == 2 && share > 0.7, "{n} {share}");
    let s = l.status(Instant::now());
    assert!(s.measured.iter().any(|m| m.connections == 2));
    // Settled within the first second; after that only the re-probes
    // of one connection either side.
    assert_eq!(tail(&limits, 3.0), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn it_grows_while_throughput_rises_and_stops_at_the_knee() {
    let knee = |n: usize| 1000.0 * n.min(5) as f64;
    let mut l = Limiter::new(1, 16, Instant::now());
    // Four callers use four connections at most: the limit falls to
    // what carried them.
    let few = Load {
        curve: &knee,
        callers: 4,
        queue_below: 0,
    };
    run(&mut l, &few, 2.0).await;
    assert!(l.limit() <= 4, "{:?}", l.status(Instant::now()));
    // Then 64: it grows while a connection adds throughput, up to
    // the knee, and no further.
    let many = Load { callers: 64, ..few };
    let limits = run(&mut l, &many, 8.0).await;
    let (n, share) = mostly(&limits, 3.0);
    assert!(n == 5 && share > 0.7, "{n} {share}");
    assert!(tail(&limits, 3.0).iter().all(|n| n.abs_diff(5) <= 1));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_hurts_is_taken_back() {
    // Best at three: four measures worse, and the limit goes back.
    let peak = |n: usize| 1000.0 * [5.0, 8.0, 10.0, 9.0, 8.0, 7.0][(n - 1).min(5)];
    let mut l = Limiter::new(1, 6, Instant::now());
    let load = Load {
        curve: &peak,
        callers: 32,
        queue_below: 0,
    };
    let limits = run(&mut l, &load, 4.0).await;
    let (n, share) = mostly(&limits, 2.0);
    assert!(n == 3 && share > 0.7, "{n} {share}");
    // It tried four, and left it.
    let four = limits.iter().position(|&n| n == 4).expect("probed 4");
    assert!(limits[four..].contains(&3));
    assert!(tail(&limits, 1.0).iter().all(|n| n.abs_diff(3) <= 1));
}

#[tokio::test(start_paused = true)]
async fn settled_it_reprobes_ever_less_often_and_follows_a_server_that_changed() {
    let mut l = Limiter::new(1, 16, Instant::now());
    let load = Load {
        curve: &busy_server,
        callers: 64,
        queue_below: 0,
    };
    let first = run(&mut l, &load, 3.0).await;
    assert_eq!(mostly(&first, 2.0).0, 2);
    // Re-probes one either side, after 2, 4, 8 s, then every 10 s.
    let steady = run(&mut l, &load, 40.0).await;
    assert_eq!(tail(&steady, 40.0), vec![1, 2, 3]);
    // Each re-probe leaves 2 once (to 1, then 3, then back).
    let left: Vec<usize> = steady
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] == 2 && w[1] != 2)
        .map(|(ms, _)| ms)
        .collect();
    let gaps: Vec<usize> = left.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 3, "{left:?}");
    assert!(gaps.windows(2).all(|g| g[1] + 100 >= g[0]), "{gaps:?}");
    let every = REPROBE.as_millis() as usize;
    // A gap is the hold plus the re-probe's windows (under a second).
    assert!(gaps.iter().all(|&g| g <= every + 1000), "{gaps:?}");
    assert!(gaps.last().unwrap() + 500 >= every, "{gaps:?}");
    // The same callers, a server that now does best at six: the next
    // re-probe finds the way there.
    let moved = |n: usize| 1000.0 * (100.0 - 5.0 * (n as f64 - 6.0).abs());
    let load = Load {
        curve: &moved,
        ..load
    };
    let after = run(&mut l, &load, REPROBE.as_secs_f64() + 5.0).await;
    let (n, share) = mostly(&after, 2.0);
    assert!(n == 6 && share > 0.7, "{n} {share}");
    assert!(tail(&after, 1.0).iter().all(|n| n.abs_diff(6) <= 1));
}

#[tokio::test(start_paused = true)]
async fn it_stays_within_min_and_max() {
    // Best at one, but `min` is 3.
    let falling = |n: usize| 100_000.0 / n as f64;
    let mut l = Limiter::new(3, 8, Instant::now());
    let load = Load {
        curve: &falling,
        callers: 64,
        queue_below: 0,
    };
    run(&mut l, &load, 3.0).await;
    assert_eq!(l.limit(), 3);
    // Best past `max`: it stops at `max`.
    let mut l = Limiter::new(1, 8, Instant::now());
    let load = Load {
        curve: &waiting_server,
        callers: 64,
        queue_below: 0,
    };
    run(&mut l, &load, 20.0).await;
    assert_eq!(l.limit(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_change_of_load_starts_the_search_again() {
    // 4 callers do best on one connection, 64 on four.
    let curve = |callers: usize| {
        move |n: usize| {
            let best = if callers <= 4 { 1.0 } else { 4.0 };
            1000.0 * (50.0 - 4.0 * (n as f64 - best).abs())
        }
    };
    let mut l = Limiter::new(1, 16, Instant::now());
    let mut changes = Vec::new();
    for callers in [4, 64, 4] {
        let c = curve(callers);
        let load = Load {
            curve: &c,
            callers,
            queue_below: 0,
        };
        let limits = run(&mut l, &load, 4.0).await;
        let best = if callers <= 4 { 1 } else { 4 };
        let at_best = limits[limits.len() - 2000..]
            .iter()
            .filter(|&&n| n == best)
            .count();
        assert!(
            at_best > 1600,
            "{callers} callers: {at_best} ms of 2000 at {best}"
        );
        // Settled within two seconds of the change: after that only
        // re-probes of one connection either side.
        assert!(
            tail(&limits, 2.0).iter().all(|n| n.abs_diff(best) <= 1),
            "{callers} callers: {:?}",
            tail(&limits, 2.0)
        );
        changes.push(limits.iter().rposition(|&n| n.abs_diff(best) > 1));
    }
    assert!(changes.iter().flatten().all(|&ms| ms < 2000), "{changes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_raise_says_why_and_never_lowers() {
    let mut l = Limiter::new(1, 100, Instant::now());
    let few = Load {
        curve: &waiting_server,
        callers: 4,
        queue_below: 0,
    };
    run(&mut l, &few, 10.0).await;
    assert!(l.limit() <= 4);
    assert!(l.raise(40, Instant::now(), Duration::ZERO));
    let s = l.status(Instant::now());
    assert_eq!((s.limit, s.reason), (40, LimitReason::Queued));
    assert!(
        !l.raise(30, Instant::now(), Duration::ZERO),
        "a raise never lowers"
    );
    assert!(l.raise(400, Instant::now(), Duration::ZERO));
    assert_eq!(l.limit(), 100, "nor passes max");
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_lets_requests_queue_is_not_tried_again_until_the_reprobe() {
    // Statements that wait, 200 callers over at most 100 connections:
    // below 100, requests queue past the horizon and the state raises
    // the limit back at once.
    let mut l = Limiter::new(1, 100, Instant::now());
    let load = Load {
        curve: &waiting_server,
        callers: 200,
        queue_below: 100,
    };
    let limits = run(&mut l, &load, 60.0).await;
    assert_eq!(l.limit(), 100);
    // The counts it tried are remembered as no good, not tried again
    // and again: a handful of probes on the way down the steps, then
    // one at each re-probe.
    let probes = limits.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(
        probes <= 8 + 60 / REPROBE.as_secs() as usize,
        "{probes} probes"
    );
    let below = limits.iter().filter(|&&n| n < 100).count();
    assert!(
        below < limits.len() / 100,
        "{below} ms of {} below 100",
        limits.len()
    );
}

#[tokio::test(start_paused = true)]
async fn on_a_noisy_server_a_settled_limit_moves_by_one_at_most() {
    // The busy server with up to 4% noise on every millisecond.
    let seed = std::cell::Cell::new(7u64);
    let noisy = |n: usize| {
        let x = seed.get().wrapping_mul(6364136223846793005).wrapping_add(1);
        seed.set(x);
        let noise = ((x >> 33) % 81) as f64 / 1000.0 - 0.04;
        busy_server(n) * (1.0 + noise)
    };
    let mut l = Limiter::new(1, 16, Instant::now());
    let load = Load {
        curve: &noisy,
        callers: 64,
        queue_below: 0,
    };
    let first = run(&mut l, &load, 3.0).await;
    let settled = mostly(&first, 1.5).0;
    assert!((1..=3).contains(&settled), "{settled}");
    let later = run(&mut l, &load, 60.0).await;
    let seen = tail(&later, 60.0);
    assert!(
        seen.iter().all(|&n| n.abs_diff(settled) <= 1),
        "{settled}: {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_that_ran_fast_by_chance_does_not_hold_its_count() {
    // The busy server, but the first 60 ms at four connections run at
    // twice the best count's speed (a window something made fast).
    let at_four = std::cell::Cell::new(0);
    let lucky = |n: usize| {
        if n == 4 && at_four.get() < 60 {
            at_four.set(at_four.get() + 1);
            return 200_000.0;
        }
        busy_server(n)
    };
    let mut l = Limiter::new(1, 16, Instant::now());
    let load = Load {
        curve: &lucky,
        callers: 64,
        queue_below: 0,
    };
    let limits = run(&mut l, &load, 4.0).await;
    assert!(at_four.get() > 0, "four was never tried");
    // Four is measured again before it is kept, and the search goes on
    // to the best count within the first two seconds, not at a re-probe.
    let (n, share) = mostly(&limits, 2.0);
    assert!(n == 2 && share > 0.7, "{n} {share}");
    assert!(tail(&limits, 2.0).iter().all(|n| n.abs_diff(2) <= 1));
}
