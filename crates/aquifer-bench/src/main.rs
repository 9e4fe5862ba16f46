//! Throughput of aquifer and its peer pools, side by side in one process.
//!
//! Every pool holds `u64`s made by a manager that does nothing, so what is
//! measured is the pool itself: one operation is a checkout and its return.
//! With `--hold` the task also yields to the scheduler while it holds the
//! object, as a task holding a connection across a query would, so that
//! tasks really contend for objects when there are more tasks than objects.
//! Async pools run on one 2-worker multi-thread Tokio runtime; r2d2, being
//! synchronous, runs on as many OS threads as there are tasks. Every async
//! pool is filled (`size` checkouts held at once) before it is timed. Pools
//! alternate within each round, and each cell reports the median over the
//! rounds.
//!
//! Next to throughput each cell gets Jain's fairness index over the tasks'
//! operation counts: 1 when every task did the same share, `1/tasks` when one
//! task did everything. A pool that never yields lets a few tasks monopolise
//! the workers; its throughput is then that of a few uncontended tasks.
//!
//! `--pools …,baseline` adds a column with no pool at all: the same tasks
//! bump one shared counter. Its worst round against its median is how much
//! the machine alone varies, the yardstick for the pools' worst rounds.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod managers;

const POOLS: &[&str] = &[
    "aquifer",
    "deadpool",
    "bb8",
    "qp",
    "qp-unchecked",
    "mobc",
    "r2d2",
];

/// Measured only when named in `--pools`.
const OPT_IN: &[&str] = &["baseline"];

struct Opts {
    sizes: Vec<usize>,
    tasks: Vec<usize>,
    rounds: usize,
    window: Duration,
    pools: Vec<String>,
    json: bool,
    hold: bool,
    /// Pools start empty, as an application's do, instead of filled.
    cold: bool,
}

fn usage() -> &'static str {
    "usage: aquifer-bench [--json] [--hold] [--cold] [--rounds N] [--millis MS] [--sizes 8,32] [--tasks 1,16,64,256] [--pools aquifer,deadpool,...]"
}

fn list(v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("not a number: {x}")))
        .collect()
}

fn parse(args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts {
        sizes: vec![8, 32],
        tasks: vec![1, 16, 64, 256],
        rounds: 5,
        window: Duration::from_millis(300),
        pools: POOLS.iter().map(|s| s.to_string()).collect(),
        json: false,
        hold: false,
        cold: false,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--hold" => o.hold = true,
            "--cold" => o.cold = true,
            "--rounds" => o.rounds = val()?.parse().map_err(|_| "bad --rounds")?,
            "--millis" => {
                o.window = Duration::from_millis(val()?.parse().map_err(|_| "bad --millis")?)
            }
            "--sizes" => o.sizes = list(&val()?)?,
            "--tasks" => o.tasks = list(&val()?)?,
            "--pools" => {
                o.pools = val()?.split(',').map(str::to_owned).collect();
                let known = |p: &str| POOLS.contains(&p) || OPT_IN.contains(&p);
                if let Some(p) = o.pools.iter().find(|p| !known(p)) {
                    return Err(format!(
                        "unknown pool {p}; known: {},{}",
                        POOLS.join(","),
                        OPT_IN.join(",")
                    ));
                }
            }
            "-h" | "--help" => return Err(usage().into()),
            _ => return Err(format!("unknown argument {a}\n{}", usage())),
        }
    }
    if o.rounds == 0 || o.sizes.contains(&0) || o.tasks.contains(&0) {
        return Err("rounds, sizes and tasks must be at least 1".into());
    }
    Ok(o)
}

/// One cell's result: operations per second and fairness.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    ops: f64,
    fairness: f64,
}

/// Jain's fairness index of per-task counts.
pub(crate) fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (counts.len() as f64 * squares)
}

/// Runs `tasks` async loops of `op` for `window`; returns the sample, or
/// `None` when some task was still stuck a second after the end (a pool that
/// lost a wakeup). The clock and the watchdog are OS threads, so a pool that
/// starves the runtime cannot stop the measurement.
pub(crate) async fn drive(
    tasks: usize,
    window: Duration,
    spawn: impl Fn(Arc<AtomicBool>, Arc<AtomicU64>) -> tokio::task::JoinHandle<()>,
) -> Option<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..tasks).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let handles: Vec<_> = counters
        .iter()
        .map(|count| spawn(stop.clone(), count.clone()))
        .collect();
    let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
    let finished = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let watchdog = {
        let (stop, finished) = (stop.clone(), finished.clone());
        std::thread::spawn(move || {
            std::thread::sleep(window);
            stop.store(true, Ordering::Relaxed);
            let elapsed = start.elapsed();
            let give_up = Instant::now() + Duration::from_secs(1);
            while !finished.load(Ordering::Relaxed) && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            let hung = !finished.load(Ordering::Relaxed);
            if hung {
                aborts.iter().for_each(|a| a.abort());
            }
            (elapsed, hung)
        })
    };
    for h in handles {
        let _ = h.await;
    }
    finished.store(true, Ordering::Relaxed);
    let (elapsed, hung) = watchdog.join().expect("watchdog");
    let counts: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let total: u64 = counts.iter().sum();
    (!hung).then(|| Sample {
        ops: total as f64 / elapsed.as_secs_f64(),
        fairness: jain(&counts),
    })
}

/// Fills a pool before its window by holding `$size` checkouts at once,
/// then returning them, for every async pool alike (r2d2 fills itself when
/// built). Unfilled, aquifer's tasks would all start by waiting for
/// creates, which run in the background: a fair pool then starts in a
/// convoy, where each return hands the object to the next waiter and each
/// get queues behind the others, so that every operation costs a task
/// switch although there are objects enough for both workers. With no
/// object held across an await the queue never empties, and the convoy lasts
/// the whole window: the cell measured startup, not the pool.
macro_rules! fill {
    ($cold:expr, $size:expr, $get:expr) => {{
        if !$cold {
            let mut held = Vec::with_capacity($size);
            for _ in 0..$size {
                held.push($get.await.expect("fill"));
            }
            drop(held);
        }
    }};
}

/// Spawns one benchmark task: `$pool` is cloned once per task, then `$op`
/// runs with it in a loop until told to stop.
macro_rules! task {
    ($pool:expr, |$p:ident| $op:block) => {{
        let pool = $pool.clone();
        move |stop: ::std::sync::Arc<::std::sync::atomic::AtomicBool>,
              count: ::std::sync::Arc<::std::sync::atomic::AtomicU64>| {
            let $p = pool.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(::std::sync::atomic::Ordering::Relaxed) {
                    $op;
                    n += 1;
                    if n % 64 == 0 {
                        count.store(n, ::std::sync::atomic::Ordering::Relaxed);
                    }
                }
                count.store(n, ::std::sync::atomic::Ordering::Relaxed);
            })
        }
    }};
}

/// `$tasks` tasks on `$pool`, each looping: check out with `$get` (as
/// `$p`), run `$op` on the checkout (as `$c`), return it.
///
/// The pool is filled first, by holding `$size` checkouts at once, so that
/// no pool spends part of its window opening connections (the raw floor
/// connects its clients before it starts, too).
macro_rules! checkout_loop {
    ($pool:expr, $size:expr, $tasks:expr, $window:expr, |$p:ident| $get:expr, |$c:ident| $op:expr) => {{
        {
            let $p = $pool.clone();
            let mut held = Vec::with_capacity($size);
            for _ in 0..$size {
                held.push($get);
            }
        }
        $crate::drive(
            $tasks,
            $window,
            task!($pool, |$p| {
                #[allow(unused_mut)]
                let mut $c = $get;
                $op;
            }),
        )
        .await
    }};
}

/// The no-pool floor: `$conns` shared by `$tasks` tasks with no pool, each
/// task always using connection `k % len` behind a Tokio mutex, running
/// `$op` with `$c: &mut` that connection in a loop.
macro_rules! exclusive_loop {
    ($conns:expr, $tasks:expr, $window:expr, |$c:ident| $op:block) => {{
        let conns: ::std::sync::Arc<Vec<::tokio::sync::Mutex<_>>> =
            ::std::sync::Arc::new($conns.into_iter().map(::tokio::sync::Mutex::new).collect());
        let next = ::std::sync::Arc::new(::std::sync::atomic::AtomicUsize::new(0));
        $crate::drive($tasks, $window, move |stop, count| {
            let conns = ::std::sync::Arc::clone(&conns);
            let mine = next.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed) % conns.len();
            ::tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(::std::sync::atomic::Ordering::Relaxed) {
                    let mut guard = conns[mine].lock().await;
                    let $c = &mut *guard;
                    $op;
                    drop(guard);
                    n += 1;
                    count.store(n, ::std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .await
    }};
}

// After `task!`, so that they can use it.
mod cluster;
mod compare;
mod mysql;
mod noop;
mod pg;
mod pgmux;
mod settle;
mod sqlite;

/// Runs `op` in a loop on `tasks` OS threads for `window` (for the
/// synchronous pools).
pub(crate) fn drive_threads(
    tasks: usize,
    window: Duration,
    op: impl Fn() + Send + Sync + Clone + 'static,
) -> Option<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..tasks)
        .map(|_| {
            let (op, stop) = (op.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let counts: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().expect("bench thread panicked"))
        .collect();
    Some(Sample {
        ops: counts.iter().sum::<u64>() as f64 / elapsed.as_secs_f64(),
        fairness: jain(&counts),
    })
}

/// The median, or NaN when any round hung.
pub(crate) fn median(v: &[Option<Sample>], field: fn(&Sample) -> f64) -> f64 {
    if v.iter().any(Option::is_none) {
        return f64::NAN;
    }
    let mut v: Vec<f64> = v.iter().flatten().map(field).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn human(ops: f64) -> String {
    if ops.is_nan() {
        "hang".into()
    } else if ops >= 1e6 {
        format!("{:.2}M", ops / 1e6)
    } else {
        format!("{:.0}k", ops / 1e3)
    }
}

fn run(o: Opts) -> ExitCode {
    let rt = compare::runtime();
    let cells: Vec<(usize, usize)> = o
        .sizes
        .iter()
        .flat_map(|&s| o.tasks.iter().map(move |&t| (s, t)))
        .collect();
    // samples[cell][pool] = one number per round
    let mut samples = vec![vec![Vec::with_capacity(o.rounds); o.pools.len()]; cells.len()];
    for round in 0..o.rounds {
        for (ci, &(size, tasks)) in cells.iter().enumerate() {
            for (pi, pool) in o.pools.iter().enumerate() {
                samples[ci][pi].push(noop::measure(
                    &rt, pool, size, tasks, o.window, o.hold, o.cold,
                ));
            }
        }
        if !o.json {
            eprintln!("round {}/{} done", round + 1, o.rounds);
        }
    }
    let ops: Vec<Vec<f64>> = samples
        .iter()
        .map(|c| c.iter().map(|s| median(s, |x| x.ops)).collect())
        .collect();
    let fair: Vec<Vec<f64>> = samples
        .iter()
        .map(|c| c.iter().map(|s| median(s, |x| x.fairness)).collect())
        .collect();
    // The worst round next to the median: a pool that is fast in most
    // rounds and stuck in a convoy in some shows it here.
    let worst: Vec<Vec<f64>> = samples
        .iter()
        .map(|c| {
            c.iter()
                .map(|s| {
                    s.iter()
                        .map(|x| x.map_or(f64::NAN, |x| x.ops))
                        .fold(f64::INFINITY, f64::min)
                })
                .collect()
        })
        .collect();
    if o.json {
        for (ci, &(size, tasks)) in cells.iter().enumerate() {
            for (pi, pool) in o.pools.iter().enumerate() {
                let known = |v: f64| (!v.is_nan()).then_some(v);
                println!(
                    "{}",
                    serde_json::json!({
                        "pool": pool, "size": size, "tasks": tasks, "hold": o.hold, "cold": o.cold,
                        "ops_per_sec": known(ops[ci][pi]).map(f64::round),
                        "worst_ops_per_sec": known(worst[ci][pi]).map(f64::round),
                        "fairness": known(fair[ci][pi]).map(|f| (f * 1000.0).round() / 1000.0),
                        "rounds": o.rounds,
                    })
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "{}{}, ops/s (Jain fairness across tasks) and the worst round, median of {} rounds of {:?}, 2 worker threads",
        if o.hold {
            "acquire + yield while holding + release"
        } else {
            "acquire + release"
        },
        if o.cold {
            ", pools built empty"
        } else {
            ""
        },
        o.rounds,
        o.window
    );
    let mut header = format!("| {:>4} | {:>5} |", "size", "tasks");
    for p in &o.pools {
        header += &format!(" {p:>15} |");
    }
    let has_peer = o
        .pools
        .iter()
        .any(|p| p != "aquifer" && !OPT_IN.contains(&p.as_str()));
    let aq = o
        .pools
        .iter()
        .position(|p| p == "aquifer")
        .filter(|_| has_peer);
    let dp = o.pools.iter().position(|p| p == "deadpool");
    let mut columns = 2 + o.pools.len();
    if aq.is_some() {
        header += " aquifer / best peer |";
        columns += 1;
        if dp.is_some() {
            header += " aquifer / deadpool |";
            columns += 1;
        }
    }
    println!("{header}");
    println!("|{}", "---|".repeat(columns));
    for (ci, &(size, tasks)) in cells.iter().enumerate() {
        let mut line = format!("| {size:>4} | {tasks:>5} |");
        for ((v, f), w) in ops[ci].iter().zip(&fair[ci]).zip(&worst[ci]) {
            let cell = if v.is_nan() {
                human(*v)
            } else {
                format!("{} ({:.2}) min {}", human(*v), f, human(*w))
            };
            line += &format!(" {cell:>15} |");
        }
        if let Some(a) = aq {
            let best = ops[ci]
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != a && !OPT_IN.contains(&o.pools[*i].as_str()))
                .map(|(_, v)| *v)
                .filter(|v| !v.is_nan())
                .fold(0.0, f64::max);
            if best > 0.0 {
                line += &format!(" {:>18.2}x |", ops[ci][a] / best);
            }
            if let Some(d) = dp {
                line += &format!(" {:>17.2}x |", ops[ci][a] / ops[ci][d]);
            }
        }
        println!("{line}");
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // `RUST_LOG=aquifer::mux=trace` shows, for one, each window the
    // multiplexer's adaptive limit judged.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut args = std::env::args().skip(1).peekable();
    let parsed = if args.peek().map(String::as_str) == Some("pg") {
        args.next();
        compare::parse("pg", (pg::POOLS, &[]), (16, 64), args).map(pg::run)
    } else if args.peek().map(String::as_str) == Some("pg-mux") {
        args.next();
        pgmux::parse_select(args).map(pgmux::run_select)
    } else if args.peek().map(String::as_str) == Some("pg-mux-settle") {
        args.next();
        settle::parse(args).map(settle::run)
    } else if args.peek().map(String::as_str) == Some("pg-sleep") {
        args.next();
        pgmux::parse_sleep(args).map(pgmux::run_sleep)
    } else if args.peek().map(String::as_str) == Some("mysql") {
        args.next();
        compare::parse("mysql", (mysql::POOLS, &[]), (16, 64), args).map(mysql::run)
    } else if args.peek().map(String::as_str) == Some("sqlite") {
        args.next();
        compare::parse("sqlite", (sqlite::POOLS, &[]), (4, 16), args).map(sqlite::run)
    } else if args.peek().map(String::as_str) == Some("cluster") {
        args.next();
        parse(args).map(|o| cluster::run(o.rounds, o.window))
    } else {
        parse(args).map(run)
    };
    parsed.unwrap_or_else(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_is_one_when_even_and_one_over_n_when_one_task_does_all() {
        assert!((jain(&[5, 5, 5, 5]) - 1.0).abs() < 1e-12);
        assert!((jain(&[8, 0, 0, 0]) - 0.25).abs() < 1e-12);
        let partial = jain(&[3, 1, 0, 0]);
        assert!(partial > 0.25 && partial < 1.0);
        assert_eq!(jain(&[0, 0]), 0.0);
    }

    #[test]
    fn median_of_rounds_and_a_hang_poisons_the_cell() {
        let s = |ops| Some(Sample { ops, fairness: 1.0 });
        assert_eq!(median(&[s(3.0), s(1.0), s(2.0)], |x| x.ops), 2.0);
        assert_eq!(median(&[s(4.0), s(1.0), s(2.0), s(3.0)], |x| x.ops), 2.5);
        assert!(median(&[s(1.0), None], |x| x.ops).is_nan());
    }

    #[test]
    fn the_median_interval_takes_the_binomial_ranks() {
        let v = |n: usize| (1..=n).map(|i| i as f64).rev().collect::<Vec<_>>();
        // Below six values no pair of ranks covers the median at 95%.
        assert_eq!(compare::median_interval(&v(5)), None);
        assert_eq!(compare::median_interval(&v(6)), Some((1.0, 6.0)));
        // The published ranks: 2 and 8 of 9, 10 and 22 of 31.
        assert_eq!(compare::median_interval(&v(9)), Some((2.0, 8.0)));
        assert_eq!(compare::median_interval(&v(31)), Some((10.0, 22.0)));
    }

    #[test]
    fn pg_arguments_parse_and_bad_ones_are_refused() {
        let args = |v: &[&str]| {
            compare::parse(
                "pg",
                (pg::POOLS, &[]),
                (16, 64),
                v.iter().map(|s| s.to_string()),
            )
        };
        let o = args(&["--size", "8", "--pools", "aquifer,raw-exclusive"]).unwrap();
        assert_eq!((o.size, o.tasks), (8, 64));
        assert_eq!(o.pools, vec!["aquifer", "raw-exclusive"]);
        assert!(args(&["--pools", "sqlx"]).is_err());
        assert!(args(&["--size", "0"]).is_err());
    }

    #[test]
    fn pg_mux_runs_its_sizing_rows_only_when_named() {
        let args = |v: &[&str]| {
            compare::parse(
                "pg-mux",
                (pgmux::MUX_ROWS, pgmux::MUX_SIZING_ROWS),
                (16, 256),
                v.iter().map(|s| s.to_string()),
            )
        };
        let all = args(&[]).unwrap();
        assert!(!all.pools.iter().any(|p| p == "aquifer-mux-scale"));
        let o = args(&["--pools", "aquifer-mux-1,aquifer-mux-scale"]).unwrap();
        assert_eq!(o.pools, vec!["aquifer-mux-1", "aquifer-mux-scale"]);
        match args(&["--pools", "aquifer-mux-3"]) {
            Err(err) => assert!(err.contains("aquifer-mux-scale"), "{err}"),
            Ok(_) => panic!("an unknown row must be refused"),
        }
    }

    #[test]
    fn pg_mux_refuses_a_warm_up_or_a_mix_that_no_row_would_use() {
        let args = |v: &[&str]| pgmux::parse_select(v.iter().map(|s| s.to_string()));
        let (_, m) = args(&[
            "--warmup-ms",
            "500",
            "--pools",
            "aquifer-mux-2,aquifer-mux-scale",
        ])
        .unwrap();
        assert_eq!(m.warmup, std::time::Duration::from_millis(500));
        let err = args(&["--warmup-ms", "500"]).err().unwrap();
        assert!(err.contains("aquifer-mux-scale"), "{err}");
        let err = args(&["--mixed", "--pools", "aquifer,aquifer-mux-2"])
            .err()
            .unwrap();
        assert!(err.contains("aquifer"), "{err}");
        assert!(args(&["--warmup-ms", "soon"]).is_err());
    }

    #[test]
    fn pg_sleep_arguments_parse_and_bad_ones_are_refused() {
        let args = |v: &[&str]| pgmux::parse_sleep(v.iter().map(|s| s.to_string()));
        let o = args(&[
            "--queries",
            "10000",
            "--sleep-ms",
            "1000",
            "--pools",
            "aquifer-mux",
        ])
        .unwrap();
        assert_eq!(
            (o.queries, o.sleep, o.min, o.max),
            (10000, Duration::from_secs(1), 10, 100)
        );
        assert_eq!(o.rows, vec!["aquifer-mux"]);
        assert!(args(&["--min", "11", "--max", "10"]).is_err());
        assert!(args(&["--pools", "sqlx"]).is_err());
        assert!(args(&["--queries"]).is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        let args = |v: &[&str]| parse(v.iter().map(|s| s.to_string()));
        assert!(args(&["--pools", "nope"]).is_err());
        let o = args(&["--pools", "aquifer,baseline"]).unwrap();
        assert_eq!(o.pools, vec!["aquifer", "baseline"]);
        assert!(parse(std::iter::empty())
            .unwrap()
            .pools
            .iter()
            .all(|p| p != "baseline"));
        assert!(args(&["--tasks", "0"]).is_err());
        assert!(args(&["--rounds"]).is_err());
        let o = args(&["--hold", "--sizes", "4,16", "--pools", "aquifer,bb8"]).unwrap();
        assert!(o.hold);
        assert_eq!(o.sizes, vec![4, 16]);
        assert_eq!(o.pools, vec!["aquifer", "bb8"]);
    }
}
