//! Throughput of aquifer and its peer pools, side by side in one process.
//!
//! Every pool holds `u64`s made by a manager that does nothing, so what is
//! measured is the pool itself: one operation is a checkout, a
//! `yield_now` while holding the object (so that tasks really contend for
//! it), and the return. Async pools run on one 2-worker multi-thread Tokio
//! runtime; r2d2, being synchronous, runs on as many OS threads as there are
//! tasks. Pools alternate within each round, and each cell reports the
//! median over the rounds.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The no-op managers, one per pool crate.
mod managers {
    use std::convert::Infallible;

    pub struct Noop;

    impl aquifer::Manager for Noop {
        type Type = u64;
        type Error = Infallible;

        async fn create(&self) -> Result<u64, Infallible> {
            Ok(0)
        }
    }

    impl deadpool::managed::Manager for Noop {
        type Type = u64;
        type Error = Infallible;

        async fn create(&self) -> Result<u64, Infallible> {
            Ok(0)
        }

        async fn recycle(
            &self,
            _: &mut u64,
            _: &deadpool::managed::Metrics,
        ) -> deadpool::managed::RecycleResult<Infallible> {
            Ok(())
        }
    }

    impl bb8::ManageConnection for Noop {
        type Connection = u64;
        type Error = Infallible;

        async fn connect(&self) -> Result<u64, Infallible> {
            Ok(0)
        }

        async fn is_valid(&self, _: &mut u64) -> Result<(), Infallible> {
            Ok(())
        }

        fn has_broken(&self, _: &mut u64) -> bool {
            false
        }
    }

    #[qp::async_trait]
    impl qp::resource::Manage for Noop {
        type Output = u64;
        type Error = Infallible;

        async fn try_create(&self) -> Result<u64, Infallible> {
            Ok(0)
        }
    }

    #[mobc::async_trait]
    impl mobc::Manager for Noop {
        type Connection = u64;
        type Error = Infallible;

        async fn connect(&self) -> Result<u64, Infallible> {
            Ok(0)
        }

        async fn check(&self, conn: u64) -> Result<u64, Infallible> {
            Ok(conn)
        }
    }

    #[derive(Debug)]
    pub struct Never;

    impl std::fmt::Display for Never {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("never")
        }
    }

    impl std::error::Error for Never {}

    impl r2d2::ManageConnection for Noop {
        type Connection = u64;
        type Error = Never;

        fn connect(&self) -> Result<u64, Never> {
            Ok(0)
        }

        fn is_valid(&self, _: &mut u64) -> Result<(), Never> {
            Ok(())
        }

        fn has_broken(&self, _: &mut u64) -> bool {
            false
        }
    }
}

use managers::Noop;

const POOLS: &[&str] = &[
    "aquifer",
    "deadpool",
    "bb8",
    "qp",
    "qp-unchecked",
    "mobc",
    "r2d2",
];

struct Opts {
    sizes: Vec<usize>,
    tasks: Vec<usize>,
    rounds: usize,
    window: Duration,
    pools: Vec<String>,
    json: bool,
    hold: bool,
}

fn usage() -> &'static str {
    "usage: aquifer-bench [--json] [--hold] [--rounds N] [--millis MS] [--sizes 8,32] [--tasks 1,16,64,256] [--pools aquifer,deadpool,...]"
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
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--hold" => o.hold = true,
            "--rounds" => o.rounds = val()?.parse().map_err(|_| "bad --rounds")?,
            "--millis" => {
                o.window = Duration::from_millis(val()?.parse().map_err(|_| "bad --millis")?)
            }
            "--sizes" => o.sizes = list(&val()?)?,
            "--tasks" => o.tasks = list(&val()?)?,
            "--pools" => {
                o.pools = val()?.split(',').map(str::to_owned).collect();
                if let Some(p) = o.pools.iter().find(|p| !POOLS.contains(&p.as_str())) {
                    return Err(format!("unknown pool {p}; known: {}", POOLS.join(",")));
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

/// Runs `tasks` async loops of `op` for `window`; returns operations per
/// second, or `None` when some task was still stuck a second after the end
/// (a pool that lost a wakeup). The clock and the watchdog are OS threads, so
/// a pool that starves the runtime cannot stop the measurement.
async fn drive(
    tasks: usize,
    window: Duration,
    spawn: impl Fn(Arc<AtomicBool>, Arc<AtomicU64>) -> tokio::task::JoinHandle<()>,
) -> Option<f64> {
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
    let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    (!hung).then(|| total as f64 / elapsed.as_secs_f64())
}

/// Spawns one benchmark task: `$pool` is cloned once per task, then `$op`
/// runs with it in a loop until told to stop.
macro_rules! task {
    ($pool:expr, |$p:ident| $op:block) => {{
        let pool = $pool.clone();
        move |stop: Arc<AtomicBool>, count: Arc<AtomicU64>| {
            let $p = pool.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    $op;
                    n += 1;
                    if n % 64 == 0 {
                        count.store(n, Ordering::Relaxed);
                    }
                }
                count.store(n, Ordering::Relaxed);
            })
        }
    }};
}

/// One measurement of one pool.
fn measure(
    rt: &tokio::runtime::Runtime,
    pool: &str,
    size: usize,
    tasks: usize,
    window: Duration,
    hold: bool,
) -> Option<f64> {
    match pool {
        "aquifer" => rt.block_on(async {
            let p = aquifer::Pool::builder(Noop)
                .max(size)
                .build()
                .expect("valid config");
            p.start().await.expect("noop creates");
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "deadpool" => rt.block_on(async {
            let p = deadpool::managed::Pool::<Noop>::builder(Noop)
                .max_size(size)
                .build()
                .expect("valid config");
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "bb8" => rt.block_on(async {
            let p = bb8::Pool::builder()
                .max_size(size as u32)
                .build(Noop)
                .await
                .expect("valid config");
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "qp" | "qp-unchecked" => rt.block_on(async {
            let p = qp::Pool::new(Noop, size);
            let checked = pool == "qp";
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = if checked {
                        p.acquire().await
                    } else {
                        p.acquire_unchecked().await
                    }
                    .expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "mobc" => rt.block_on(async {
            let p = mobc::Pool::builder().max_open(size as u64).build(Noop);
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "r2d2" => {
            let p = r2d2::Pool::builder()
                .max_size(size as u32)
                .build(Noop)
                .expect("valid config");
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..tasks)
                .map(|_| {
                    let (p, stop, done) = (p.clone(), stop.clone(), done.clone());
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let o = p.get().expect("get");
                            if hold {
                                std::thread::yield_now();
                            }
                            drop(o);
                            n += 1;
                        }
                        done.fetch_add(n, Ordering::Relaxed);
                    })
                })
                .collect();
            let start = Instant::now();
            std::thread::sleep(window);
            stop.store(true, Ordering::Relaxed);
            let elapsed = start.elapsed();
            for t in threads {
                t.join().expect("bench thread panicked");
            }
            Some(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
        }
        other => unreachable!("unknown pool {other}"),
    }
}

/// The median, or NaN when any round hung.
fn median(v: &mut [Option<f64>]) -> f64 {
    if v.iter().any(Option::is_none) {
        return f64::NAN;
    }
    let mut v: Vec<f64> = v.iter().flatten().copied().collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn human(ops: f64) -> String {
    if ops.is_nan() {
        "hang".into()
    } else if ops >= 1e6 {
        format!("{:.2}M", ops / 1e6)
    } else {
        format!("{:.0}k", ops / 1e3)
    }
}

fn run(o: Opts) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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
                samples[ci][pi].push(measure(&rt, pool, size, tasks, o.window, o.hold));
            }
        }
        if !o.json {
            eprintln!("round {}/{} done", round + 1, o.rounds);
        }
    }
    let medians: Vec<Vec<f64>> = samples
        .iter_mut()
        .map(|c| c.iter_mut().map(|s| median(s)).collect())
        .collect();
    if o.json {
        for (ci, &(size, tasks)) in cells.iter().enumerate() {
            for (pi, pool) in o.pools.iter().enumerate() {
                println!(
                    "{}",
                    serde_json::json!({
                        "pool": pool, "size": size, "tasks": tasks,
                        "ops_per_sec": (!medians[ci][pi].is_nan()).then(|| medians[ci][pi].round()),
                        "rounds": o.rounds,
                    })
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "acquire + yield + release, ops/s, median of {} rounds of {:?}, 2 worker threads",
        o.rounds, o.window
    );
    let mut header = format!("| {:>4} | {:>5} |", "size", "tasks");
    for p in &o.pools {
        header += &format!(" {p:>12} |");
    }
    let aq = o.pools.iter().position(|p| p == "aquifer");
    if aq.is_some() {
        header += " aquifer / best peer |";
    }
    println!("{header}");
    println!(
        "|{}",
        "---|".repeat(2 + o.pools.len() + usize::from(aq.is_some()))
    );
    for (ci, &(size, tasks)) in cells.iter().enumerate() {
        let mut line = format!("| {size:>4} | {tasks:>5} |");
        for v in &medians[ci] {
            line += &format!(" {:>12} |", human(*v));
        }
        if let Some(a) = aq {
            let best = medians[ci]
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != a)
                .map(|(_, v)| *v)
                .filter(|v| !v.is_nan())
                .fold(0.0, f64::max);
            if best > 0.0 {
                line += &format!(" {:>19.2}x |", medians[ci][a] / best);
            }
        }
        println!("{line}");
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok(o) => run(o),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
