//! What choosing a pool costs: `get_any()` on a cluster of 8 no-op pools,
//! in each mode, against `get()` on one pool, in one run.

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
    let p = Pool::builder(Noop).max(8).build().expect("valid config");
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
        let p = Pool::builder(Noop).max(8).build().expect("valid config");
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
pub fn run(rounds: usize, window: Duration) -> std::process::ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "cluster of 8 no-op pools: get_any() + release vs one pool's get() + release, ops/s, median of {rounds} rounds of {window:?}"
    );
    println!("| tasks | single pool | mode | cluster | overhead per op |");
    println!("|---|---|---|---|---|");
    for tasks in [1, 16] {
        let mut base = Vec::new();
        let mut per_mode = vec![Vec::new(); MODES.len()];
        for _ in 0..rounds {
            base.push(rt.block_on(single(tasks, window)));
            for (i, (_, mode)) in MODES.iter().enumerate() {
                per_mode[i].push(rt.block_on(cluster(*mode, tasks, window)));
            }
        }
        let single_ops = median(&base, |s| s.ops);
        for (i, (name, _)) in MODES.iter().enumerate() {
            let ops = median(&per_mode[i], |s| s.ops);
            // Time per operation, cluster over single, minus one.
            let overhead = single_ops / ops - 1.0;
            println!(
                "| {tasks} | {} | {name} | {} | {:+.0}% |",
                human(single_ops),
                human(ops),
                overhead * 100.0
            );
        }
    }
    std::process::ExitCode::SUCCESS
}
