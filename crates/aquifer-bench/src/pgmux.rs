//! The multiplexer against exclusive pools on PostgreSQL, in one process
//! and one run against a throwaway server from the testkit.
//!
//! `pg-mux`: `SELECT 1` round trips per second from many tasks through
//! the multiplexer (at 4 and at `size` connections, least loaded and
//! round robin), aquifer's exclusive pool, deadpool-postgres, and `size`
//! raw tokio-postgres clients shared by every task (task `k` always on
//! client `k % size`, its requests pipelined with the others').
//!
//! `pg-sleep`: the node.js balancer's workload, scaled: `queries`
//! statements of `select pg_sleep(s)` fired at once at a pool of `min`
//! to `max` connections. A connection runs one statement at a time, so
//! no pool can beat `queries * s / max`; each row reports its wall time
//! over that limit. `raw-floor` is what the server allows: `max` raw
//! clients connected before the clock starts, the statements dealt out
//! evenly and pipelined, so that no connection waits for a round trip
//! between two of its statements. `raw-ramp` is what the server allows a
//! pool that starts at `min`: `min` raw clients connected before the
//! clock, the other `max - min` opened all at once when it starts, and
//! every client taking the next statement as soon as its last one ends.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aquifer::Spread;
use aquifer_postgres::{PgManager, PgMultiplexer, PgMuxExt, PgMuxManager, PgPool};
use aquifer_testkit::PgServer;
use tokio_postgres::NoTls;

use crate::compare::{self, DbOpts};
use crate::Sample;

/// The rows of `pg-mux`.
pub const MUX_ROWS: &[&str] = &[
    "aquifer-mux-4",
    "aquifer-mux",
    "aquifer-mux-rr",
    "aquifer",
    "deadpool-postgres",
    "raw-shared",
];

/// Rows `pg-mux` runs only when `--pools` names them: the multiplexer
/// fixed at 1, 2, 8 or 16 connections; left to size itself between 1 and
/// `size` (`aquifer-mux-scale`, at its defaults: the adaptive limit); and
/// scaling with the demand alone (`aquifer-mux-demand`, adaptive off).
/// Each says on stderr how many connections it ended with.
pub const MUX_SIZING_ROWS: &[&str] = &[
    "aquifer-mux-1",
    "aquifer-mux-2",
    "aquifer-mux-8",
    "aquifer-mux-16",
    "aquifer-mux-scale",
    "aquifer-mux-demand",
];

/// The rows of `pg-sleep`.
pub const SLEEP_ROWS: &[&str] = &[
    "aquifer-mux",
    "aquifer",
    "deadpool-postgres",
    "raw-floor",
    "raw-ramp",
];

/// A throwaway server for the multiplexer benchmarks.
pub(crate) fn start_server() -> Result<PgServer, ExitCode> {
    PgServer::builder()
        .max_connections(400)
        .trust()
        .start()
        .map_err(|e| {
            eprintln!("cannot start a PostgreSQL server for the benchmark: {e}");
            ExitCode::FAILURE
        })
}

/// What `pg-mux` runs beyond the common options: `--warmup-ms` runs the
/// rows that size themselves (`aquifer-mux-scale`, `aquifer-mux-demand`)
/// that long before their window, so that the window measures where they
/// settled, and the other rows a second of it (they have nothing to
/// settle); `--mixed` makes one statement in ten (at random) a 50 ms
/// `pg_sleep`.
#[derive(Clone, Copy, Default)]
pub struct MuxOpts {
    pub warmup: Duration,
    pub mixed: bool,
}

/// Parses `pg-mux`'s options: the common ones and `--warmup-ms MS`,
/// `--mixed`.
pub fn parse_select(args: impl Iterator<Item = String>) -> Result<(DbOpts, MuxOpts), String> {
    let mut rest = Vec::new();
    let mut m = MuxOpts::default();
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--warmup-ms" => {
                let v = args.next().ok_or("--warmup-ms needs a value")?;
                m.warmup = Duration::from_millis(v.parse().map_err(|_| "bad --warmup-ms")?);
            }
            "--mixed" => m.mixed = true,
            _ => rest.push(a),
        }
    }
    let o = compare::parse(
        "pg-mux [--warmup-ms MS] [--mixed]",
        (MUX_ROWS, MUX_SIZING_ROWS),
        (16, 256),
        rest.into_iter(),
    )?;
    let sizes_itself = |p: &String| p == "aquifer-mux-scale" || p == "aquifer-mux-demand";
    if !m.warmup.is_zero() && !o.pools.iter().any(sizes_itself) {
        return Err(
            "--warmup-ms warms only the rows that size themselves: name aquifer-mux-scale or aquifer-mux-demand with --pools"
                .into(),
        );
    }
    if m.mixed {
        if let Some(p) = o
            .pools
            .iter()
            .find(|p| *p == "aquifer" || *p == "deadpool-postgres")
        {
            return Err(format!(
                "--mixed runs the multiplexer rows and raw-shared only, not {p}: name them with --pools"
            ));
        }
    }
    Ok((o, m))
}

/// The next statement: `SELECT 1`, or with `--mixed` one time in ten a
/// 50 ms sleep.
fn statement(mixed: bool) -> &'static str {
    if mixed && fastrand::u8(..10) == 0 {
        "SELECT pg_sleep(0.05)"
    } else {
        "SELECT 1"
    }
}

async fn select_one(
    url: &str,
    row: &str,
    (size, tasks, window): (usize, usize, Duration),
    extra: MuxOpts,
) -> Option<Sample> {
    let mixed = extra.mixed;
    let config: tokio_postgres::Config = url.parse().expect("testkit URL");
    match row {
        row if row.starts_with("aquifer-mux") => {
            let builder = PgMultiplexer::builder(PgMuxManager::new(url).expect("testkit URL"));
            let builder = if row == "aquifer-mux-scale" {
                // Left to itself between 1 and `size`, at its defaults.
                builder.min(1).max(size)
            } else if row == "aquifer-mux-demand" {
                builder.min(1).max(size).adaptive(false)
            } else {
                // `aquifer-mux-N`: N connections; `aquifer-mux`: `size`.
                let n = row
                    .strip_prefix("aquifer-mux-")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(size);
                let spread = if row == "aquifer-mux-rr" {
                    Spread::RoundRobin
                } else {
                    Spread::LeastLoaded
                };
                builder
                    .min(n)
                    .max(n)
                    .max_in_flight(tasks.div_ceil(n).max(1))
                    .spread(spread)
            };
            let mux = builder.build().expect("valid config");
            mux.ready().await.expect("connect");
            let load = task!(mux, |m| {
                m.simple_query(statement(mixed)).await.expect("statement");
            });
            if !extra.warmup.is_zero() {
                // The rows that size themselves run the whole warm-up; the
                // others a second of it, so that every row is measured warm.
                let warmup = if row == "aquifer-mux-scale" || row == "aquifer-mux-demand" {
                    extra.warmup
                } else {
                    extra.warmup.min(Duration::from_secs(1))
                };
                crate::drive(tasks, warmup, &load).await;
            }
            let sample = crate::drive(tasks, window, &load).await;
            report_status(row, &mux.status());
            mux.close().await;
            sample
        }
        // The exclusive pools, as the `pg` comparison runs them.
        "aquifer" | "deadpool-postgres" => crate::pg::measure(url, row, size, tasks, window).await,
        "raw-shared" => {
            let clients = Arc::new(crate::pg::connect_raw(&config, size).await);
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let load = move |stop: Arc<std::sync::atomic::AtomicBool>,
                             count: Arc<std::sync::atomic::AtomicU64>| {
                let clients = Arc::clone(&clients);
                let mine = next.fetch_add(1, Ordering::Relaxed) % clients.len();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        clients[mine]
                            .simple_query(statement(mixed))
                            .await
                            .expect("statement");
                        n += 1;
                        count.store(n, Ordering::Relaxed);
                    }
                })
            };
            if !extra.warmup.is_zero() {
                crate::drive(tasks, extra.warmup.min(Duration::from_secs(1)), &load).await;
            }
            crate::drive(tasks, window, &load).await
        }
        other => unreachable!("unknown row {other}"),
    }
}

/// Says on stderr where a multiplexer row ended: its connections and
/// how long a request kept one busy.
fn report_status(row: &str, s: &aquifer::MuxStatus) {
    let service = s
        .service_time
        .map_or_else(|| "-".to_owned(), |d| format!("{} µs", d.as_micros()));
    let limit = s.limit.as_ref().map_or_else(String::new, |l| {
        format!(
            ", limit {} ({}, {} changes{})",
            l.limit,
            l.reason.as_str(),
            l.changes,
            if l.settled { ", settled" } else { "" }
        )
    });
    eprintln!(
        "{row}: {} connections at the end of the window, service time {service}{limit}",
        s.connections
    );
}

/// Runs `pg-mux` and prints its table.
pub fn run_select((o, extra): (DbOpts, MuxOpts)) -> ExitCode {
    let server = match start_server() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let url = server.url();
    let samples = compare::rounds(&o, async |row| {
        select_one(&url, row, (o.size, o.tasks, o.window), extra).await
    });
    let what = match (extra.mixed, extra.warmup.is_zero()) {
        (false, true) => "SELECT 1 round trips/s".to_owned(),
        (true, true) => "statements/s (90% SELECT 1, 10% pg_sleep(0.05))".to_owned(),
        (false, false) => format!(
            "SELECT 1 round trips/s ({:?} of warm-up for the rows that size themselves, 1s for the others)",
            extra.warmup
        ),
        (true, false) => format!(
            "statements/s (90% SELECT 1, 10% pg_sleep(0.05); {:?} of warm-up for the rows that size themselves, 1s for the others)",
            extra.warmup
        ),
    };
    let code = compare::report(
        if extra.mixed { "postgres-mux-mixed" } else { "postgres-mux-select-1" },
        &format!("{what} (aquifer-mux-N: N connections; aquifer-mux-scale: 1 to `size`, adaptive; aquifer-mux-demand: 1 to `size` with the demand; every other row: `size`)"),
        &o,
        &samples,
        Some("raw-shared"),
    );
    if !o.json {
        against_best_fixed(&o, &samples);
    }
    code
}

/// The adaptive row against the best fixed count of each round (the
/// strictest comparison: the best count is known only afterwards) and
/// against the fixed count with the best median: the median and the worst
/// of the per-round ratios.
fn against_best_fixed(o: &DbOpts, samples: &[Vec<Option<Sample>>]) {
    let at = |name: &str| o.pools.iter().position(|p| p == name);
    let Some(adaptive) = at("aquifer-mux-scale") else {
        return;
    };
    let fixed: Vec<usize> = [
        "aquifer-mux-1",
        "aquifer-mux-2",
        "aquifer-mux-4",
        "aquifer-mux-8",
        "aquifer-mux-16",
    ]
    .iter()
    .filter_map(|r| at(r))
    .collect();
    if fixed.is_empty() {
        return;
    }
    let ratios = (0..o.rounds).filter_map(|r| {
        let ours = samples[adaptive][r]?.ops;
        let best = fixed
            .iter()
            .filter_map(|&i| samples[i][r].map(|s| s.ops))
            .fold(0.0, f64::max);
        (best > 0.0).then(|| ours / best)
    });
    print_ratios("the best fixed count of each round", ratios.collect());
    // The count with the best median over the run (the median the table
    // shows), as a user who measured the counts once would fix it.
    let best = fixed
        .iter()
        .map(|&i| (i, crate::median(&samples[i], |s| s.ops)))
        .filter(|(_, m)| m.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((best, _)) = best {
        let ratios =
            (0..o.rounds).filter_map(|r| Some(samples[adaptive][r]?.ops / samples[best][r]?.ops));
        let what = format!(
            "{} (the best fixed count of the run), per round",
            o.pools[best]
        );
        print_ratios(&what, ratios.collect());
    }
}

/// Prints the median and the worst of the adaptive row's `ratios` to `what`.
fn print_ratios(what: &str, mut ratios: Vec<f64>) {
    if ratios.is_empty() {
        return;
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "aquifer-mux-scale / {what}: median {:.2}x, worst {:.2}x",
        ratios[ratios.len() / 2],
        ratios[0]
    );
}

/// Settings of `pg-sleep`.
pub struct SleepOpts {
    pub queries: usize,
    pub sleep: Duration,
    pub min: usize,
    pub max: usize,
    pub max_in_flight: usize,
    pub rounds: usize,
    pub rows: Vec<String>,
    pub json: bool,
}

/// Parses `[--queries N] [--sleep-ms MS] [--min N] [--max N]
/// [--max-in-flight N] [--rounds N] [--pools a,b] [--json]`.
pub fn parse_sleep(args: impl Iterator<Item = String>) -> Result<SleepOpts, String> {
    let usage = format!(
        "usage: aquifer-bench pg-sleep [--json] [--queries 2000] [--sleep-ms 100] [--min 10] [--max 100] [--max-in-flight 100] [--rounds 3] [--pools {}]",
        SLEEP_ROWS.join(",")
    );
    let mut o = SleepOpts {
        queries: 2000,
        sleep: Duration::from_millis(100),
        min: 10,
        max: 100,
        max_in_flight: 100,
        rounds: 3,
        rows: SLEEP_ROWS.iter().map(|s| s.to_string()).collect(),
        json: false,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut num = || -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{a} needs a number"))
        };
        match a.as_str() {
            "--queries" => o.queries = num()?,
            "--sleep-ms" => o.sleep = Duration::from_millis(num()? as u64),
            "--min" => o.min = num()?,
            "--max" => o.max = num()?,
            "--max-in-flight" => o.max_in_flight = num()?,
            "--rounds" => o.rounds = num()?,
            "--json" => o.json = true,
            "--pools" => {
                let v = args.next().ok_or("--pools needs a value")?;
                o.rows = v.split(',').map(str::to_owned).collect();
                if let Some(p) = o.rows.iter().find(|p| !SLEEP_ROWS.contains(&p.as_str())) {
                    return Err(format!("unknown pool {p}; known: {}", SLEEP_ROWS.join(",")));
                }
            }
            "-h" | "--help" => return Err(usage),
            _ => return Err(format!("unknown argument {a}\n{usage}")),
        }
    }
    if o.queries == 0 || o.max == 0 || o.min > o.max || o.rounds == 0 || o.max_in_flight == 0 {
        return Err(format!(
            "queries, max, rounds and max-in-flight must be at least 1, min at most max\n{usage}"
        ));
    }
    Ok(o)
}

/// Fires every statement at once and waits for the last; the pool is
/// built and holds `min` connections before the clock starts. Returns the
/// time taken and, for `raw-ramp`, when its last connection was open.
async fn sleep_run(url: &str, row: &str, o: &SleepOpts) -> (Duration, Option<Duration>) {
    let sql = format!("select pg_sleep({})", o.sleep.as_secs_f64());
    // The last statement waits for all the others: no timeout before then.
    let wait = o.sleep * (2 * o.queries / o.max) as u32 + Duration::from_secs(30);
    macro_rules! fire {
        ($pool:expr, |$p:ident, $sql:ident| $op:expr) => {{
            let start = Instant::now();
            let tasks: Vec<_> = (0..o.queries)
                .map(|_| {
                    let ($p, $sql) = ($pool.clone(), sql.clone());
                    tokio::spawn(async move { $op })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            start.elapsed()
        }};
    }
    match row {
        "aquifer-mux" => {
            let mux = PgMultiplexer::builder(PgMuxManager::new(url).expect("testkit URL"))
                .min(o.min)
                .max(o.max)
                .max_in_flight(o.max_in_flight)
                .acquire_timeout(wait)
                .build()
                .expect("valid config");
            mux.ready().await.expect("connect");
            let took = fire!(mux, |m, sql| m.simple_query(&sql).await.expect("sleep"));
            mux.close().await;
            (took, None)
        }
        "aquifer" => {
            let p = PgPool::builder(PgManager::new(url).expect("testkit URL"))
                .min(o.min)
                .max(o.max)
                .acquire_timeout(wait)
                .build()
                .expect("valid config");
            p.start().await.expect("connect");
            let took = fire!(p, |p, sql| p
                .get()
                .await
                .expect("get")
                .simple_query(&sql)
                .await
                .expect("sleep"));
            p.close().await;
            (took, None)
        }
        "deadpool-postgres" => {
            let p = crate::pg::deadpool(url, o.max);
            // deadpool has no `min`: open as many first.
            let held: Vec<_> = futures_join(&p, o.min).await;
            drop(held);
            let took = fire!(p, |p, sql| p
                .get()
                .await
                .expect("get")
                .simple_query(&sql)
                .await
                .expect("sleep"));
            p.close();
            (took, None)
        }
        "raw-floor" => {
            let config: tokio_postgres::Config = url.parse().expect("testkit URL");
            let clients = crate::pg::connect_raw(&config, o.max).await;
            let dealer = Arc::new((clients, std::sync::atomic::AtomicUsize::new(0)));
            let took = fire!(dealer, |d, sql| {
                let i = d.1.fetch_add(1, Ordering::Relaxed) % d.0.len();
                d.0[i].simple_query(&sql).await.expect("sleep")
            });
            (took, None)
        }
        "raw-ramp" => {
            let config: tokio_postgres::Config = url.parse().expect("testkit URL");
            let clients = crate::pg::connect_raw(&config, o.min).await;
            // Each client runs the next statement not yet taken, until none is left.
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let queries = o.queries;
            let work = move |client: tokio_postgres::Client, sql: String| {
                let next = Arc::clone(&next);
                async move {
                    while next.fetch_add(1, Ordering::Relaxed) < queries {
                        client.simple_query(&sql).await.expect("sleep");
                    }
                }
            };
            let start = Instant::now();
            let mut tasks: Vec<_> = clients
                .into_iter()
                .map(|c| {
                    let run = work(c, sql.clone());
                    tokio::spawn(async move {
                        run.await;
                        None
                    })
                })
                .collect();
            for _ in o.min..o.max {
                let (config, work, sql) = (config.clone(), work.clone(), sql.clone());
                tasks.push(tokio::spawn(async move {
                    let (client, conn) = config.connect(NoTls).await.expect("connect");
                    let open = start.elapsed();
                    tokio::spawn(conn);
                    work(client, sql).await;
                    Some(open)
                }));
            }
            let mut ramp = None;
            for t in tasks {
                ramp = ramp.max(t.await.expect("task"));
            }
            (start.elapsed(), ramp)
        }
        other => unreachable!("unknown row {other}"),
    }
}

async fn futures_join(p: &deadpool_postgres::Pool, n: usize) -> Vec<deadpool_postgres::Object> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(p.get().await.expect("connect"));
    }
    held
}

/// Runs `pg-sleep` and prints its table.
pub fn run_sleep(o: SleepOpts) -> ExitCode {
    let server = match start_server() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let url = server.url();
    let rt = crate::compare::runtime();
    let limit = o.sleep.as_secs_f64() * o.queries as f64 / o.max as f64;
    let n = o.rows.len();
    let mut ratios = vec![Vec::new(); n];
    let mut ramps = Vec::new();
    for round in 0..o.rounds {
        let mut order: Vec<usize> = (0..n).collect();
        fastrand::Rng::with_seed(round as u64).shuffle(&mut order);
        for i in order {
            let (took, ramp) = rt.block_on(sleep_run(&url, &o.rows[i], &o));
            ratios[i].push(took.as_secs_f64() / limit);
            ramps.extend(ramp.map(|r| r.as_secs_f64()));
            // Let the server finish closing the last pool's connections.
            std::thread::sleep(Duration::from_millis(500));
        }
        if !o.json {
            eprintln!("round {}/{} done", round + 1, o.rounds);
        }
    }
    let mid = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    if o.json {
        for (row, r) in o.rows.iter().zip(&ratios) {
            println!(
                "{}",
                serde_json::json!({
                    "bench": "postgres-sleep", "pool": row, "queries": o.queries,
                    "sleep_s": o.sleep.as_secs_f64(), "min": o.min, "max": o.max,
                    "limit_s": limit, "median_ratio": mid(r), "worst_ratio": worst(r),
                    "rounds": o.rounds,
                    "ramp_s": (row == "raw-ramp" && !ramps.is_empty()).then(|| mid(&ramps)),
                })
            );
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "{} x select pg_sleep({}) at once, min {} max {} (multiplexer max_in_flight {}), limit {limit:.2} s, {} rounds",
        o.queries,
        o.sleep.as_secs_f64(),
        o.min,
        o.max,
        o.max_in_flight,
        o.rounds
    );
    println!("| pool | time / limit, median | worst | seconds, median |");
    println!("|---|---|---|---|");
    for (row, r) in o.rows.iter().zip(&ratios) {
        println!(
            "| {row} | {:.4} | {:.4} | {:.2} |",
            mid(r),
            worst(r),
            mid(r) * limit
        );
    }
    if !ramps.is_empty() {
        println!(
            "raw-ramp had its {} connections open {:.0} ms after the start (median)",
            o.max,
            mid(&ramps) * 1e3
        );
    }
    if let Some(d) = o.rows.iter().position(|r| r == "deadpool-postgres") {
        for (i, row) in o.rows.iter().enumerate().filter(|(i, _)| *i != d) {
            let per: Vec<String> = ratios[i]
                .iter()
                .zip(&ratios[d])
                .map(|(a, b)| format!("{:.3}", a / b))
                .collect();
            println!("{row} / deadpool-postgres per round: {}", per.join(", "));
        }
    }
    ExitCode::SUCCESS
}
