//! What choosing a pool costs: `get_any()` on a cluster of 8 no-op pools,
//! in each mode, against `get()` on one pool, in one run. Every pool is
//! filled to its 8 objects first, so that no run starts with its tasks
//! queued behind creates (a queue that, handing each returned object to the
//! next waiter, can sustain itself for the whole run).

use std::time::Duration;

use aquifer::{Cluster, ClusterPool, Mode, Pool};

use crate::managers::Noop;
use crate::{drive, human, median, Sample};

const MODES: &[(&str, Mode)] = &[
    ("round_robin", Mode::RoundRobin),
    ("random", Mode::Random),
    ("least_busy", Mode::LeastBusy),
    ("weighted", Mode::Weighted),
    ("failover", Mode::Failover),
];

async fn single(tasks: usize, window: Duration) -> Option<Sample> {
    let p = Pool::builder(Noop)
        .min(8)
        .max(8)
        .build()
        .expect("valid config");
    p.start().await.expect("noop creates");
    drive(
        tasks,
        window,
        task!(p, |p| {
            drop(p.get().await.expect("get"));
        }),
    )
    .await
}

async fn cluster(mode: Mode, tasks: usize, window: Duration) -> Option<Sample> {
    let c: Cluster<Noop> = Cluster::builder().mode(mode).build();
    for i in 0..8 {
        let p = Pool::builder(Noop)
            .min(8)
            .max(8)
            .build()
            .expect("valid config");
        p.start().await.expect("noop creates");
        c.add(ClusterPool::new(format!("pool_{i}"), p).weight(i + 1))
            .expect("unique names");
    }
    drive(
        tasks,
        window,
        task!(c, |c| {
            drop(c.get_any().await.expect("get"));
        }),
    )
    .await
}

/// Runs the comparison and prints a table.
///
/// The machine drifts between speed levels from second to second, so each
/// mode is measured in pairs: one pool's run and the cluster's run back to
/// back (in alternating order from round to round), and the overhead is
/// the median over the rounds of each pair's ratio.
pub fn run(rounds: usize, window: Duration) -> std::process::ExitCode {
    let rt = crate::compare::runtime();
    println!(
        "cluster of 8 no-op pools: get_any() + release vs one pool's get() + release, ops/s; \
         {rounds} rounds of {window:?}, each mode paired with a single-pool run"
    );
    println!("| tasks | mode | single pool (fairness) | cluster (fairness) | overhead per op, median | per round |");
    println!("|---|---|---|---|---|---|");
    for tasks in [1, 16] {
        let mut base = vec![Vec::new(); MODES.len()];
        let mut per_mode = vec![Vec::new(); MODES.len()];
        for round in 0..rounds {
            for (i, (_, mode)) in MODES.iter().enumerate() {
                if round % 2 == 0 {
                    base[i].push(rt.block_on(single(tasks, window)));
                    per_mode[i].push(rt.block_on(cluster(*mode, tasks, window)));
                } else {
                    per_mode[i].push(rt.block_on(cluster(*mode, tasks, window)));
                    base[i].push(rt.block_on(single(tasks, window)));
                }
            }
        }
        for (i, (name, _)) in MODES.iter().enumerate() {
            // Time per operation, cluster over single, minus one.
            let overheads: Vec<Option<Sample>> = base[i]
                .iter()
                .zip(&per_mode[i])
                .map(|(b, c)| {
                    let (b, c) = ((*b)?, (*c)?);
                    Some(Sample {
                        ops: b.ops / c.ops - 1.0,
                        fairness: 1.0,
                    })
                })
                .collect();
            let each: Vec<String> = overheads
                .iter()
                .map(|o| o.map_or("hang".into(), |o| format!("{:+.0}%", o.ops * 100.0)))
                .collect();
            println!(
                "| {tasks} | {name} | {} ({:.2}) | {} ({:.2}) | {:+.0}% | {} |",
                human(median(&base[i], |s| s.ops)),
                median(&base[i], |s| s.fairness),
                human(median(&per_mode[i], |s| s.ops)),
                median(&per_mode[i], |s| s.fairness),
                median(&overheads, |s| s.ops) * 100.0,
                each.join(" ")
            );
        }
    }
    std::process::ExitCode::SUCCESS
}
