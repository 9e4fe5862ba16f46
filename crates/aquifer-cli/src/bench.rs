//! `aquifer bench`: a load test against the user's own database.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aquifer::{error_chain, Multiplexer, Pool};
use aquifer_mysql::{MySqlManager, MySqlPoolExt};
use aquifer_postgres::{PgManager, PgMultiplexer, PgMuxExt, PgMuxManager, PgPoolExt};
use aquifer_sqlite::{SqliteManager, SqlitePoolExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::exit;
use crate::fleet::Driver;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Workload {
    /// `SELECT 1` from many tasks for a while: throughput and latency.
    Select1,
    /// Many sleeping queries started at once (`pg_sleep`, MySQL's
    /// `SLEEP`): how close the pool comes to queries × sleep / max.
    Sleep,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The database URL (postgres://, mysql://, sqlite://). A password may
    /// come from AQUIFER_PASSWORD or --password-file instead.
    #[arg(long, env = "AQUIFER_BENCH_URL", conflicts_with = "config")]
    url: Option<String>,
    /// A configuration file: the pool named by --pool (or the first) with
    /// its own settings. Without --url, AQUIFER_CONFIG names it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// With --config: which pool.
    #[arg(long)]
    pool: Option<String>,
    /// With --url: a file whose first line is the password.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Workload::Select1)]
    workload: Workload,
    /// Through the multiplexer (PostgreSQL) instead of the pool.
    #[arg(long)]
    mux: bool,
    /// select1: concurrent tasks.
    #[arg(long, default_value = "64", value_parser = crate::at_least_one)]
    tasks: usize,
    /// select1: how long to run.
    #[arg(long, default_value = "5s", value_parser = crate::positive_duration)]
    duration: Duration,
    /// sleep: how many queries, all started at once.
    #[arg(long, default_value = "2000", value_parser = crate::at_least_one)]
    queries: usize,
    /// sleep: how long each query sleeps.
    #[arg(long, default_value = "100ms", value_parser = crate::positive_duration)]
    sleep: Duration,
    /// Minimum connections (default: 10 for sleep, 1 for select1; with
    /// --config, the pool's own).
    #[arg(long)]
    min: Option<usize>,
    /// Maximum connections (default: 100 for sleep, 16 for select1; with
    /// --config, the pool's own).
    #[arg(long)]
    max: Option<usize>,
    /// How long to wait for the first connections before giving up with
    /// the reason.
    #[arg(long, default_value = "10s", value_parser = crate::positive_duration)]
    connect_timeout: Duration,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// What the queries go through.
enum Target {
    Pg(Pool<PgManager>),
    PgMux(PgMultiplexer),
    MySql(Pool<MySqlManager>),
    Sqlite(Pool<SqliteManager>),
}

impl Target {
    fn through(&self) -> &'static str {
        match self {
            Target::PgMux(_) => "multiplexer",
            _ => "pool",
        }
    }

    async fn select1(&self) -> Result<(), String> {
        let e = |e: &(dyn std::error::Error + 'static)| error_chain(e);
        match self {
            Target::Pg(p) => p
                .query_one("SELECT 1", &[])
                .await
                .map(drop)
                .map_err(|x| e(&x)),
            Target::PgMux(m) => m
                .query_one("SELECT 1", &[])
                .await
                .map(drop)
                .map_err(|x| e(&x)),
            Target::MySql(p) => p.query_drop("SELECT 1").await.map_err(|x| e(&x)),
            Target::Sqlite(p) => p
                .query_row("SELECT 1", (), |r| r.get::<_, i64>(0))
                .await
                .map(drop)
                .map_err(|x| e(&x)),
        }
    }

    /// One sleeping query, in the simple protocol (one round trip, as the
    /// node.js article's `select pg_sleep(1)`).
    async fn sleep(&self, d: Duration) -> Result<(), String> {
        let secs = d.as_secs_f64();
        let e = |e: &(dyn std::error::Error + 'static)| error_chain(e);
        let sql = format!("SELECT pg_sleep({secs})");
        match self {
            Target::Pg(p) => match p.get().await {
                Ok(conn) => conn.simple_query(&sql).await.map(drop).map_err(|x| e(&x)),
                Err(x) => Err(e(&x)),
            },
            Target::PgMux(m) => m.simple_query(&sql).await.map(drop).map_err(|x| e(&x)),
            Target::MySql(p) => p
                .query_drop(format!("SELECT SLEEP({secs})").as_str())
                .await
                .map_err(|x| e(&x)),
            Target::Sqlite(_) => Err("the sleep workload needs a server database".into()),
        }
    }

    /// Opens `min` connections, so that the run measures the pool at work
    /// rather than its first connects (reported apart).
    async fn warm(&self) -> Result<(), String> {
        let e = |e: &(dyn std::error::Error + 'static)| error_chain(e);
        match self {
            Target::Pg(p) => p.start().await.map_err(|x| e(&x)),
            Target::PgMux(m) => m.ready().await.map_err(|x| e(&x)),
            Target::MySql(p) => p.start().await.map_err(|x| e(&x)),
            Target::Sqlite(p) => p.start().await.map_err(|x| e(&x)),
        }
    }

    /// Why connections are not opening, if they are failing now.
    fn last_error(&self) -> Option<String> {
        match self {
            Target::Pg(p) => p.last_create_error().map(|e| error_chain(&e)),
            Target::PgMux(m) => m.last_open_error().map(|e| error_chain(&e)),
            Target::MySql(p) => p.last_create_error().map(|e| error_chain(&e)),
            Target::Sqlite(p) => p.last_create_error().map(|e| error_chain(&e)),
        }
    }

    async fn close(&self) {
        match self {
            Target::Pg(p) => p.close().await,
            Target::PgMux(m) => m.close().await,
            Target::MySql(p) => p.close().await,
            Target::Sqlite(p) => p.close().await,
        }
    }
}

#[derive(Serialize)]
struct Results {
    workload: Workload,
    through: &'static str,
    driver: &'static str,
    server: Option<String>,
    min: usize,
    max: usize,
    tasks: usize,
    /// Time to open `min` connections, before the run.
    warmup_seconds: f64,
    queries: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    per_second: f64,
    /// Latency quantiles in seconds (select1).
    p50: Option<f64>,
    p99: Option<f64>,
    worst: Option<f64>,
    /// sleep: queries × sleep / max, the least time it can take.
    ideal_seconds: Option<f64>,
    /// sleep: seconds / ideal_seconds.
    ratio: Option<f64>,
}

fn setup(args: &Args) -> Result<(Target, Driver, Option<String>, usize, usize), String> {
    let (defaults_min, defaults_max) = match args.workload {
        Workload::Sleep => (10, 100),
        Workload::Select1 => (1, 16),
    };
    // An exported AQUIFER_CONFIG names the file only when --url does not
    // say what to load.
    let config = args.config.clone().or_else(|| {
        args.url
            .is_none()
            .then(|| std::env::var_os("AQUIFER_CONFIG").map(PathBuf::from))
            .flatten()
    });
    let here = std::env::current_dir().unwrap_or_default();
    let (mut url, mut options, dir, create) = match (&args.url, &config) {
        (Some(url), _) => (url.clone(), aquifer::PoolConfig::default(), here, None),
        (None, Some(path)) => {
            let cfg = crate::config::Config::load(path).map_err(|e| error_chain(&e))?;
            let names = || cfg.pools.keys().cloned().collect::<Vec<_>>().join(", ");
            let sec = match &args.pool {
                Some(n) => cfg.pools.get(n).ok_or_else(|| {
                    format!("{} has no pool `{n}`; it has {}", path.display(), names())
                })?,
                None => cfg
                    .pools
                    .values()
                    .next()
                    .ok_or_else(|| format!("{} has no pools", path.display()))?,
            };
            (
                sec.url.clone(),
                sec.options.clone(),
                cfg.dir.clone(),
                sec.create,
            )
        }
        (None, None) => return Err("give --url or --config (or export AQUIFER_CONFIG)".into()),
    };
    if args.url.is_some() {
        options.min = args.min.unwrap_or(defaults_min);
        options.max = args.max.unwrap_or(defaults_max);
        options.acquire_timeout = Duration::from_secs(60);
        let password = match &args.password_file {
            Some(f) => Some(
                crate::config::read_secret(f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?,
            ),
            None => std::env::var("AQUIFER_PASSWORD").ok(),
        };
        if let Some(pw) = password {
            url = crate::config::put_password(&url, &pw)
                .ok_or("a password was given but the URL has no user (scheme://user@host/…)")?;
        }
    } else {
        options.min = args.min.unwrap_or(options.min);
        options.max = args.max.unwrap_or(options.max);
    }
    let driver = Driver::of(&url)?;
    if driver == Driver::Sqlite && args.workload == Workload::Sleep {
        return Err("the sleep workload needs a server (PostgreSQL or MySQL): SQLite has no sleeping query; use --workload select1".into());
    }
    let (min, max) = (options.min, options.max);
    let target = match (driver, args.mux) {
        (Driver::Postgres, true) => {
            let m = PgMuxManager::new(&url).map_err(|e| error_chain(&e))?;
            let server = aquifer::Manager::server(&m);
            let mux = Multiplexer::builder(m)
                .min(min)
                .max(max)
                .acquire_timeout(options.acquire_timeout)
                .build()
                .map_err(|e| error_chain(&e))?;
            return Ok((Target::PgMux(mux), driver, server, min, max));
        }
        (_, true) => return Err("--mux needs a PostgreSQL URL".into()),
        (Driver::Postgres, false) => {
            let m = PgManager::new(&url).map_err(|e| error_chain(&e))?;
            Target::Pg(Pool::new(m, options).map_err(|e| error_chain(&e))?)
        }
        (Driver::MySql, false) => {
            let m = MySqlManager::new(&url.replacen("mariadb://", "mysql://", 1))
                .map_err(|e| error_chain(&e))?;
            Target::MySql(Pool::new(m, options).map_err(|e| error_chain(&e))?)
        }
        (Driver::Sqlite, false) => {
            let c = crate::fleet::sqlite_config(&url, &dir, create).map_err(|e| error_chain(&e))?;
            let m = SqliteManager::new(c).map_err(|e| error_chain(&e))?;
            Target::Sqlite(Pool::new(m, options).map_err(|e| error_chain(&e))?)
        }
    };
    let server = match &target {
        Target::Pg(p) => aquifer::Manager::server(p.manager()),
        Target::MySql(p) => aquifer::Manager::server(p.manager()),
        Target::Sqlite(p) => aquifer::Manager::server(p.manager()),
        Target::PgMux(_) => None,
    };
    Ok((target, driver, server, min, max))
}

/// A progress bar on a terminal, a line a second otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    last_line: Instant,
    /// For the plain lines: "3 of 5 s: …".
    len: u64,
    unit: String,
}

impl Progress {
    fn new(len: u64, unit: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(len);
            let style = format!("{{bar:40}} {{pos}}/{{len}} {unit} {{msg}}");
            if let Ok(s) = ProgressStyle::with_template(&style) {
                bar.set_style(s);
            }
            bar
        });
        Self {
            bar,
            last_line: Instant::now(),
            len,
            unit: unit.to_owned(),
        }
    }

    fn set(&mut self, pos: u64, msg: String) {
        match &self.bar {
            Some(b) => {
                b.set_position(pos);
                b.set_message(msg);
            }
            None if self.last_line.elapsed() >= Duration::from_secs(1) => {
                eprintln!("  {pos} of {} {}: {msg}", self.len, self.unit);
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Opens the first connections within `timeout`, saying each second what
/// it waits for and why it is not there yet.
async fn warm(target: &Target, timeout: Duration, n: usize, place: &str) -> Result<(), String> {
    let started = Instant::now();
    let warm = target.warm();
    tokio::pin!(warm);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = &mut warm => return done.map_err(|e| crate::hint(&e)),
            _ = tick.tick() => {
                let why = target.last_error().map_or(String::new(), |e| format!(" (last failure: {})", crate::hint(&e)));
                eprintln!(
                    "waiting for {n} connection(s) to {place}: {:.0} s of --connect-timeout {}{why}",
                    started.elapsed().as_secs_f64(),
                    aquifer::human_duration(timeout)
                );
            }
            () = &mut deadline => {
                let why = target.last_error().map_or_else(
                    || "no answer".to_owned(),
                    |e| crate::hint(&e),
                );
                return Err(format!("none within --connect-timeout {}: {why}", aquifer::human_duration(timeout)));
            }
        }
    }
}

pub(crate) async fn run(args: Args) -> u8 {
    let (target, driver, server, min, max) = match setup(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let warmup = Instant::now();
    let place = server.as_deref().unwrap_or("the database");
    if let Err(e) = warm(&target, args.connect_timeout, min.max(1), place).await {
        eprintln!("error: could not open the first connections (min {min}): {e}");
        target.close().await;
        return exit::UNHEALTHY;
    }
    let warmup_seconds = warmup.elapsed().as_secs_f64();
    let target = Arc::new(target);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let fail = {
        let (errors, first_error) = (Arc::clone(&errors), Arc::clone(&first_error));
        move |e: String| {
            errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = first_error.lock() {
                f.get_or_insert(e);
            }
        }
    };
    let start = Instant::now();
    let (tasks, latencies) = match args.workload {
        Workload::Select1 => {
            let deadline = start + args.duration;
            let mut progress = Progress::new(args.duration.as_secs().max(1), "s");
            let workers: Vec<_> = (0..args.tasks)
                .map(|_| {
                    let (target, done, fail) =
                        (Arc::clone(&target), Arc::clone(&done), fail.clone());
                    tokio::spawn(async move {
                        let mut lat = Vec::new();
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            match target.select1().await {
                                Ok(()) => lat.push(t.elapsed().as_nanos() as u64),
                                Err(e) => fail(e),
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        lat
                    })
                })
                .collect();
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = done.load(Ordering::Relaxed);
                let rate = n as f64 / start.elapsed().as_secs_f64();
                progress.set(
                    start.elapsed().as_secs(),
                    format!("{n} queries done, {rate:.0} queries/s"),
                );
            }
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.await.unwrap_or_default());
            }
            progress.done();
            (args.tasks, all)
        }
        Workload::Sleep => {
            let mut progress = Progress::new(args.queries as u64, "queries");
            let sleep = args.sleep;
            let workers: Vec<_> = (0..args.queries)
                .map(|_| {
                    let (target, done, fail) =
                        (Arc::clone(&target), Arc::clone(&done), fail.clone());
                    tokio::spawn(async move {
                        if let Err(e) = target.sleep(sleep).await {
                            fail(e);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            while done.load(Ordering::Relaxed) < args.queries as u64 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                progress.set(
                    done.load(Ordering::Relaxed),
                    format!("{:.1} s elapsed", start.elapsed().as_secs_f64()),
                );
            }
            for w in workers {
                let _ = w.await;
            }
            progress.done();
            (args.queries, Vec::new())
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    target.close().await;

    let mut lat = latencies;
    lat.sort_unstable();
    let q = |p: f64| {
        (!lat.is_empty())
            .then(|| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e9)
    };
    let queries = done.load(Ordering::Relaxed);
    let ideal = (args.workload == Workload::Sleep)
        .then(|| args.queries as f64 * args.sleep.as_secs_f64() / max.max(1) as f64);
    let results = Results {
        workload: args.workload,
        through: target.through(),
        driver: driver.name(),
        server,
        min,
        max,
        tasks,
        warmup_seconds,
        queries,
        errors: errors.load(Ordering::Relaxed),
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
        seconds,
        per_second: queries as f64 / seconds,
        p50: q(0.5),
        p99: q(0.99),
        worst: lat.last().map(|&n| n as f64 / 1e9),
        ideal_seconds: ideal,
        ratio: ideal.map(|i| seconds / i),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    } else {
        print!("{}", table(&results));
    }
    if results.errors > 0 {
        exit::UNHEALTHY
    } else {
        exit::OK
    }
}

fn table(r: &Results) -> String {
    let ms = |s: Option<f64>| {
        s.and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map_or("-".to_owned(), aquifer::human_duration)
    };
    let mut rows = vec![
        (
            "workload",
            match r.workload {
                Workload::Sleep => "sleep",
                Workload::Select1 => "select1",
            }
            .to_owned(),
        ),
        (
            "through",
            format!(
                "{} ({}, {})",
                r.through,
                r.driver,
                r.server.as_deref().unwrap_or("?")
            ),
        ),
        (
            "connections",
            format!(
                "min {} max {} (min open in {:.3} s)",
                r.min, r.max, r.warmup_seconds
            ),
        ),
        ("tasks", r.tasks.to_string()),
        ("queries", r.queries.to_string()),
        ("errors", r.errors.to_string()),
        ("seconds", format!("{:.3}", r.seconds)),
        ("per second", format!("{:.0}", r.per_second)),
    ];
    if r.workload == Workload::Select1 {
        rows.push(("p50", ms(r.p50)));
        rows.push(("p99", ms(r.p99)));
        rows.push(("worst", ms(r.worst)));
    } else {
        rows.push((
            "ideal seconds",
            r.ideal_seconds.map_or("-".into(), |i| format!("{i:.3}")),
        ));
        rows.push(("ratio", r.ratio.map_or("-".into(), |x| format!("{x:.3}"))));
    }
    if let Some(e) = &r.first_error {
        rows.push(("first error", e.clone()));
    }
    rows.iter().map(|(k, v)| format!("{k:<14}{v}\n")).collect()
}
