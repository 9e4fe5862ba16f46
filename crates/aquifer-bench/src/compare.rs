//! What the database comparisons (`pg`, `sqlite`, `mysql`) share: their
//! flags, the rounds, and the table with per-round ratios.

use std::process::ExitCode;
use std::time::Duration;

use crate::{human, median, Sample};

/// Settings of one database comparison.
pub struct DbOpts {
    pub size: usize,
    pub tasks: usize,
    pub rounds: usize,
    pub window: Duration,
    pub pools: Vec<String>,
    pub json: bool,
}

/// Parses `[--json] [--rounds N] [--millis MS] [--size N] [--tasks N]
/// [--pools a,b]` for a comparison of `known` pools, and of `more` ones
/// when `--pools` names them.
pub fn parse(
    command: &str,
    (known, more): (&[&str], &[&str]),
    (size, tasks): (usize, usize),
    args: impl Iterator<Item = String>,
) -> Result<DbOpts, String> {
    let usage = format!(
        "usage: aquifer-bench {command} [--json] [--rounds N] [--millis MS] [--size {size}] [--tasks {tasks}] [--pools {}]",
        known.iter().chain(more).copied().collect::<Vec<_>>().join(",")
    );
    let mut o = DbOpts {
        size,
        tasks,
        rounds: 5,
        window: Duration::from_millis(1000),
        pools: known.iter().map(|s| s.to_string()).collect(),
        json: false,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--rounds" => o.rounds = val()?.parse().map_err(|_| "bad --rounds")?,
            "--millis" => {
                o.window = Duration::from_millis(val()?.parse().map_err(|_| "bad --millis")?)
            }
            "--size" => o.size = val()?.parse().map_err(|_| "bad --size")?,
            "--tasks" => o.tasks = val()?.parse().map_err(|_| "bad --tasks")?,
            "--pools" => {
                o.pools = val()?.split(',').map(str::to_owned).collect();
                let is_known = |p: &str| known.contains(&p) || more.contains(&p);
                if let Some(p) = o.pools.iter().find(|p| !is_known(p)) {
                    let all: Vec<_> = known.iter().chain(more).copied().collect();
                    return Err(format!("unknown pool {p}; known: {}", all.join(",")));
                }
            }
            "-h" | "--help" => return Err(usage),
            _ => return Err(format!("unknown argument {a}\n{usage}")),
        }
    }
    if o.rounds == 0 || o.size == 0 || o.tasks == 0 {
        return Err("rounds, size and tasks must be at least 1".into());
    }
    Ok(o)
}

/// The runtime every comparison runs on: two workers, as many as the
/// machine's cores, with the servers on the same cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs every pool once per round on a 2-worker Tokio runtime and returns
/// `samples[pool][round]`. Each round runs the pools in a shuffled order
/// (the same for the same round number in every run), so that no pool is
/// always measured first (while the server still cleans up after the last
/// one) or always right after the same other pool, which a rotation would
/// keep. A pause between pools lets the server finish closing connections.
pub fn rounds(
    o: &DbOpts,
    measure: impl AsyncFn(&str) -> Option<Sample>,
) -> Vec<Vec<Option<Sample>>> {
    let rt = runtime();
    let n = o.pools.len();
    let mut samples: Vec<Vec<Option<Sample>>> = vec![Vec::new(); n];
    for round in 0..o.rounds {
        for i in round_order(n, round) {
            samples[i].push(rt.block_on(measure(&o.pools[i])));
            std::thread::sleep(SETTLE);
        }
        if !o.json {
            eprintln!("round {}/{} done", round + 1, o.rounds);
        }
    }
    samples
}

/// The order in which round `round` measures `n` pools.
fn round_order(n: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    fastrand::Rng::with_seed(round as u64).shuffle(&mut order);
    order
}

/// A distribution-free 95% confidence interval for the median of `v`:
/// the `k`-th smallest and `k`-th largest values, `k` the largest rank
/// with at most a 2.5% chance on each side that the median lies beyond
/// it (from the binomial distribution). `None` below six values, where
/// even the extremes leave more than that.
pub(crate) fn median_interval(v: &[f64]) -> Option<(f64, f64)> {
    let n = v.len();
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    // tail(k) = P(Binomial(n, 1/2) <= k - 1): the chance that fewer than
    // k of the n values fall below the median.
    let mut k = 0;
    let (mut tail, mut term) = (0.0, 0.5f64.powi(n as i32));
    for j in 0..n / 2 {
        tail += term;
        if 2.0 * tail > 0.05 {
            break;
        }
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    (k > 0).then(|| (sorted[k - 1], sorted[n - k]))
}

/// The pause between two pools' measurements.
const SETTLE: Duration = Duration::from_millis(200);

/// Whether a row is aquifer (or one of its ways of running the same work)
/// rather than a peer.
fn is_ours(pool: &str) -> bool {
    pool == "aquifer" || pool.starts_with("aquifer-")
}

/// Prints the table (or JSON lines): median ops/s and Jain's fairness
/// index over the tasks per pool, the ratio to
/// the best peer and to `floor` (a pool-less baseline, if measured), and
/// the per-round ratio of each of aquifer's rows to each other pool.
pub fn report(
    bench: &str,
    title: &str,
    o: &DbOpts,
    samples: &[Vec<Option<Sample>>],
    floor: Option<&str>,
) -> ExitCode {
    let ops: Vec<f64> = samples.iter().map(|s| median(s, |x| x.ops)).collect();
    let fair: Vec<f64> = samples.iter().map(|s| median(s, |x| x.fairness)).collect();
    if o.json {
        for ((pool, v), f) in o.pools.iter().zip(&ops).zip(&fair) {
            println!(
                "{}",
                serde_json::json!({
                    "bench": bench, "pool": pool, "size": o.size,
                    "tasks": o.tasks, "ops_per_sec": (!v.is_nan()).then(|| v.round()),
                    "fairness": (!f.is_nan()).then_some(*f),
                    "rounds": o.rounds,
                })
            );
        }
        return ExitCode::SUCCESS;
    }
    let at = |name: &str| o.pools.iter().position(|p| p == name);
    let floor_ops = floor.and_then(at).map(|i| ops[i]);
    let best_peer = o
        .pools
        .iter()
        .zip(&ops)
        .filter(|(p, _)| !is_ours(p) && Some(p.as_str()) != floor)
        .map(|(_, v)| *v)
        .filter(|v| !v.is_nan())
        .fold(0.0, f64::max);
    println!(
        "{title}, pool size {}, {} tasks, 2 worker threads, median of {} rounds of {:?}",
        o.size, o.tasks, o.rounds, o.window
    );
    match floor {
        Some(f) => {
            println!("| pool | ops/s | fairness | vs best peer | vs {f} |");
            println!("|---|---|---|---|---|");
        }
        None => {
            println!("| pool | ops/s | fairness | vs best peer |");
            println!("|---|---|---|---|");
        }
    }
    for ((pool, v), f) in o.pools.iter().zip(&ops).zip(&fair) {
        let peer = if best_peer > 0.0 {
            format!("{:.2}x", v / best_peer)
        } else {
            "-".into()
        };
        match floor {
            Some(_) => {
                let vs = floor_ops.map_or("-".into(), |r| format!("{:.2}x", v / r));
                println!("| {pool} | {} | {f:.2} | {peer} | {vs} |", human(*v));
            }
            None => println!("| {pool} | {} | {f:.2} | {peer} |", human(*v)),
        }
    }
    // The machine's speed drifts between rounds; pools measured back to
    // back in one round share it, so the ratio within each round is the
    // steadier figure.
    for (a, ours) in o.pools.iter().enumerate().filter(|(_, p)| is_ours(p)) {
        let mut lines = Vec::new();
        for (b, other) in o.pools.iter().enumerate().filter(|(_, p)| !is_ours(p)) {
            let ratios: Vec<Option<Sample>> = (0..o.rounds)
                .map(|r| match (samples[a][r], samples[b][r]) {
                    (Some(x), Some(y)) if y.ops > 0.0 => Some(Sample {
                        ops: x.ops / y.ops,
                        fairness: 1.0,
                    }),
                    _ => None,
                })
                .collect();
            let mid = median(&ratios, |x| x.ops);
            let all: Option<Vec<f64>> = ratios.iter().map(|r| r.map(|x| x.ops)).collect();
            match all.as_deref().and_then(median_interval) {
                Some((lo, hi)) => lines.push(format!("{other} {mid:.2}x (95% CI {lo:.2}-{hi:.2})")),
                None => lines.push(format!("{other} {mid:.2}x")),
            }
        }
        println!("{ours} per round, median: {}", lines.join(", "));
    }
    ExitCode::SUCCESS
}
