//! `pg-mux-settle`: how long the multiplexer's adaptive limit takes to
//! settle after the load changes. One multiplexer (`min` 1, `max` size,
//! its defaults) runs through phases of `SELECT 1` callers (4, then 64,
//! then 4 by default); the limit is sampled every 5 ms. A phase's settle
//! time is how long after its start the limit last left the band of one
//! connection around where the phase ended.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aquifer_postgres::{PgMultiplexer, PgMuxExt, PgMuxManager};

/// Settings of `pg-mux-settle`.
pub struct SettleOpts {
    pub phases: Vec<usize>,
    pub phase: Duration,
    pub size: usize,
    pub runs: usize,
}

/// Parses `[--phases 4,64,4] [--phase-ms 4000] [--size 16] [--runs 3]`.
pub fn parse(args: impl Iterator<Item = String>) -> Result<SettleOpts, String> {
    let usage = "usage: aquifer-bench pg-mux-settle [--phases 4,64,4] [--phase-ms 4000] [--size 16] [--runs 3]";
    let mut o = SettleOpts {
        phases: vec![4, 64, 4],
        phase: Duration::from_millis(4000),
        size: 16,
        runs: 3,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--phases" => {
                o.phases = val()?
                    .split(',')
                    .map(|n| n.parse().map_err(|_| format!("bad --phases entry {n}")))
                    .collect::<Result<_, _>>()?;
            }
            "--phase-ms" => {
                o.phase = Duration::from_millis(val()?.parse().map_err(|_| "bad --phase-ms")?)
            }
            "--size" => o.size = val()?.parse().map_err(|_| "bad --size")?,
            "--runs" => o.runs = val()?.parse().map_err(|_| "bad --runs")?,
            "-h" | "--help" => return Err(usage.into()),
            _ => return Err(format!("unknown argument {a}\n{usage}")),
        }
    }
    if o.phases.is_empty() || o.phases.contains(&0) || o.size < 2 || o.runs == 0 {
        return Err(format!(
            "phases must be task counts of at least 1, size at least 2, runs at least 1\n{usage}"
        ));
    }
    Ok(o)
}

/// What one phase of one run saw.
struct Phase {
    tasks: usize,
    end_limit: usize,
    settled_after: Duration,
    changes: usize,
    per_second: f64,
}

/// One caller of `SELECT 1` in a loop until `stop`.
fn caller(
    mux: &PgMultiplexer,
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (mux, stop, done) = (mux.clone(), stop.clone(), done.clone());
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            mux.simple_query("SELECT 1").await.expect("SELECT 1");
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

async fn one_run(url: &str, o: &SettleOpts) -> Vec<Phase> {
    let mux = PgMultiplexer::builder(PgMuxManager::new(url).expect("testkit URL"))
        .min(1)
        .max(o.size)
        .build()
        .expect("valid config");
    mux.ready().await.expect("connect");
    let done = Arc::new(AtomicU64::new(0));
    let mut callers: Vec<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut phases = Vec::new();
    for &tasks in &o.phases {
        while callers.len() < tasks {
            let stop = Arc::new(AtomicBool::new(false));
            let h = caller(&mux, &stop, &done);
            callers.push((stop, h));
        }
        for (stop, h) in callers.drain(tasks..) {
            stop.store(true, Ordering::Relaxed);
            h.await.expect("caller");
        }
        let start = Instant::now();
        let mut limits = Vec::new();
        let mut last_second = None;
        while start.elapsed() < o.phase {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let l = mux.status().limit.map_or(o.size, |l| l.limit);
            limits.push((start.elapsed(), l));
            if last_second.is_none() && start.elapsed() + Duration::from_secs(1) >= o.phase {
                last_second = Some((Instant::now(), done.load(Ordering::Relaxed)));
            }
        }
        let (t, n) = last_second.expect("a phase lasts more than a second");
        let per_second = (done.load(Ordering::Relaxed) - n) as f64 / t.elapsed().as_secs_f64();
        let end_limit = limits.last().map_or(o.size, |&(_, l)| l);
        let settled_after = limits
            .iter()
            .rev()
            .find(|&&(_, l)| l.abs_diff(end_limit) > 1)
            .map_or(Duration::ZERO, |&(t, _)| t);
        let changes = limits.windows(2).filter(|w| w[0].1 != w[1].1).count();
        phases.push(Phase {
            tasks,
            end_limit,
            settled_after,
            changes,
            per_second,
        });
    }
    for (stop, h) in callers {
        stop.store(true, Ordering::Relaxed);
        h.await.expect("caller");
    }
    mux.close().await;
    phases
}

/// Runs `pg-mux-settle` and prints its table.
pub fn run(o: SettleOpts) -> ExitCode {
    let server = match crate::pgmux::start_server() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = crate::compare::runtime();
    println!(
        "The adaptive limit through phases of {:?} SELECT 1 callers, {:?} each, max {}",
        o.phases, o.phase, o.size
    );
    println!("| run | callers | limit at the end | settled after | limit changes seen | queries/s, last second |");
    println!("|---|---|---|---|---|---|");
    for run in 1..=o.runs {
        for p in rt.block_on(one_run(&server.url(), &o)) {
            println!(
                "| {run} | {} | {} | {} ms | {} | {:.0}k |",
                p.tasks,
                p.end_limit,
                p.settled_after.as_millis(),
                p.changes,
                p.per_second / 1000.0
            );
        }
        // Let the server settle before the next run.
        std::thread::sleep(Duration::from_millis(500));
    }
    ExitCode::SUCCESS
}
