//! `aquifer serve`: the admin router over the configured pools, or over
//! the embedded default (three SQLite pools and a demo workload).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aquifer::Cluster;
use aquifer_admin::Admin;
use aquifer_sqlite::SqliteManager;
use tokio::sync::watch;

use crate::config::Config;
use crate::exit;
use crate::fleet::Fleet;

/// Where the admin router listens unless told otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The configuration file; without one, the embedded default: a
    /// cluster of three SQLite pools with a demo workload.
    #[arg(long, short, env = "AQUIFER_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on (default: the configuration's
    /// admin.listen, else 127.0.0.1:7070). Port 0 picks a free port.
    #[arg(long)]
    listen: Option<String>,
    /// Where the embedded default keeps its SQLite files (default: a
    /// temporary directory removed at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// No demo workload on the embedded default.
    #[arg(long)]
    no_demo: bool,
}

/// An example configuration, printed by `aquifer config example`: every
/// setting at its default (unless a comment says otherwise), and it passes
/// `aquifer config check` as printed.
pub(crate) const EXAMPLE: &str = r#"# aquifer configuration: every setting, at its default unless a comment
# says otherwise. `aquifer config check FILE` checks a file without
# connecting to anything.
#
# Durations are a number and a unit ("500ms", "2s", "5m", "1h"); a bare
# number is an error. "off" turns an optional one off.
# Every field can be set from the environment, which wins over the file:
# AQUIFER_ADMIN_<FIELD>, AQUIFER_CLUSTERS_<NAME>_<FIELD>,
# AQUIFER_POOLS_<NAME>_<FIELD>, AQUIFER_MULTIPLEXERS_<NAME>_<FIELD>
# (names upper-cased, - as _).
# Passwords never need to be in this file: AQUIFER_POOLS_<NAME>_PASSWORD,
# or a pool's password_file = "/run/secrets/db-password" (its first line)
# or password_env = "DB_PASSWORD".

[admin]
listen = "127.0.0.1:7070"   # port 0 picks a free one
# token_file = "/run/secrets/aquifer-admin-token"   # or token = "…"; absent: generated, printed once
check_timeout = "2s"        # /readyz: how long each pool's check may take
remove_wait = "30s"         # DELETE /api/pools: how long to wait for connections out
snapshot_every = "1s"       # /api/events: how often every pool's state is sent

[clusters.main]
mode = "round_robin"        # random, least_busy, weighted, failover
ban_time = "30s"            # a failing pool takes no gets this long
# acquire_timeout = "2s"    # a cluster get's budget over every pool it tries; default: the first pool's
# log_file = "events.log"   # warnings kept on disk, relative to this file; default: none
log_max_bytes = 10485760    # the log is rotated past this size
max_warnings = 1000         # warnings kept in memory

[pools.primary]
cluster = "main"
url = "postgres://app@db1.internal:5432/app"   # password: AQUIFER_POOLS_PRIMARY_PASSWORD
tags = ["primary"]
weight = 1                  # its share of gets in mode = "weighted"
# Every pool setting (aquifer::PoolConfig):
max = 10
min = 0
# max_waiting = 100         # callers allowed to queue; default: no bound
acquire_timeout = "30s"
create_timeout = "10s"
destroy_timeout = "5s"
validate_timeout = "5s"
reset_timeout = "5s"
validate_on_borrow = true
validate_if_idle_for = "500ms"
order = "fifo"              # or "lifo"
clock = "auto"              # or "coarse", "tokio"
priority_levels = 1
eager = true
idle_timeout = "10m"
soft_idle_timeout = "off"
eviction_interval = "30s"
# tests_per_eviction_run = 3   # idle connections examined per run; default: all
max_lifetime = "30m"
lifetime_jitter = 0.025
keepalive_interval = "off"
leak_detection_threshold = "off"
create_concurrency = 4
event_capacity = 1024
backoff = { min = "100ms", max = "5s", factor = 2.0, jitter = 0.2 }

[pools.replica]
cluster = "main"
url = "postgres://app@db2.internal:5432/app"   # password: AQUIFER_POOLS_REPLICA_PASSWORD
tags = ["replica"]

[pools.orders]              # MySQL or MariaDB, outside any cluster
url = "mysql://app@db3.internal:3306/orders"   # password: AQUIFER_POOLS_ORDERS_PASSWORD
max = 8

[multiplexers.reads]        # PostgreSQL statements pipelined over a few shared connections
url = "postgres://app@db2.internal:5432/app"   # password: AQUIFER_MULTIPLEXERS_READS_PASSWORD
min = 1
max = 10
adaptive = true             # keep the count between min and max that measures best; false: follow the demand
max_in_flight = 100         # requests on one connection at once
pipeline_horizon = "100ms"  # never queue behind more measured work than this; "off": no bound
scale_down_after = "30s"
maintenance_interval = "1s" # also how often each connection's session is checked
# max_queued = 1000         # requests allowed to wait; default: no bound
acquire_timeout = "30s"
spread = "least_loaded"     # or "round_robin"
pool = { max_lifetime = "30m" }   # the settings of the pool its connections come from

[pools.cache]               # SQLite, outside any cluster
url = "sqlite://cache.db"   # relative to this file; sqlite:///absolute/path.db, sqlite::memory:
create = true               # create the file when it is missing; default false
max = 4
"#;

/// The embedded default: three SQLite files under `dir`.
pub(crate) fn demo_config(dir: &Path) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"{DEFAULT_LISTEN}\"\n\n[clusters.local]\nmode = \"least_busy\"\nban_time = \"5s\"\n"
    );
    for (i, max) in [(1, 2), (2, 3), (3, 4)] {
        let path = dir.join(format!("local_{i}.db"));
        text.push_str(&format!(
            "\n[pools.local_{i}]\ncluster = \"local\"\nurl = \"sqlite://{}\"\ncreate = true\ntags = [\"{}\"]\nmax = {max}\nmin = 1\nacquire_timeout = \"2s\"\n",
            crate::config::percent_encode(path.to_string_lossy().as_bytes(), b"/"),
            if i == 1 { "primary" } else { "replica" }
        ));
    }
    text
}

pub(crate) async fn run(args: Args) -> u8 {
    if let Some(l) = &args.listen {
        if let Err(e) = crate::config::check_listen(l) {
            eprintln!("error: --listen: {e}");
            return exit::CONFIG;
        }
    }
    // The embedded default keeps its files in a directory of its own.
    let mut temp = None;
    let mut demo_dir = None;
    let cfg = match crate::load(args.config.as_deref()) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            let dir = match &args.data_dir {
                // Absolute, so that the demo's URLs do not depend on where
                // the configuration is read from.
                Some(d) => std::fs::create_dir_all(d).and_then(|()| std::path::absolute(d)),
                None => tempfile::Builder::new()
                    .prefix("aquifer-demo-")
                    .tempdir()
                    .map(|t| temp.insert(t).path().to_owned()),
            };
            let dir = match dir {
                Ok(d) => demo_dir.insert(d).clone(),
                Err(e) => {
                    let which = args
                        .data_dir
                        .as_ref()
                        .map_or("a temporary directory".to_owned(), |d| {
                            d.display().to_string()
                        });
                    eprintln!("error: cannot make the data directory {which}: {e}; choose another with --data-dir");
                    return exit::START;
                }
            };
            match Config::parse(
                "(embedded default)",
                &dir,
                &demo_config(&dir),
                std::env::vars(),
            ) {
                Ok(cfg) => cfg,
                Err(e) => {
                    crate::report(&e);
                    return exit::CONFIG;
                }
            }
        }
        Err(e) => {
            crate::report(&e);
            return exit::CONFIG;
        }
    };
    let demo = args.config.is_none() && !args.no_demo;
    let fleet = match Fleet::build(&cfg, true) {
        Ok(f) => f,
        Err(e) => {
            crate::report(&e);
            return exit::CONFIG;
        }
    };

    let mut admin = Admin::new();
    if let Some(t) = cfg.admin.check_timeout {
        admin = admin.check_timeout(t);
    }
    if let Some(w) = cfg.admin.remove_wait {
        admin = admin.remove_wait(w);
    }
    if let Some(e) = cfg.admin.snapshot_every {
        admin = admin.snapshot_every(e);
    }
    let generated = cfg.admin.token.is_none();
    if let Some(t) = &cfg.admin.token {
        admin = admin.with_token(t);
    }
    let token = admin.token().clone();
    for (name, source) in &fleet.sources {
        admin = admin.source(name, Arc::clone(source));
    }
    let listen = args
        .listen
        .or(cfg.admin.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}; choose another with --listen or admin.listen");
            fleet.close(Duration::ZERO).await;
            return exit::START;
        }
    };
    let addr = listener.local_addr().map_or(listen, |a| a.to_string());
    println!("aquifer is serving the dashboard at http://{addr}/");
    if generated {
        println!("admin token (generated; set admin.token_file or AQUIFER_ADMIN_TOKEN to choose one): {}", token.reveal());
    }
    if let Some(dir) = &demo_dir {
        let work = if demo { ", with a demo workload" } else { "" };
        println!(
            "embedded default: 3 SQLite pools in {}{work}",
            dir.display()
        );
    }

    let (stop, stopped) = watch::channel(false);
    let workers = if demo {
        fleet
            .sqlite
            .iter()
            .flat_map(|c| workload(c, &stopped))
            .collect()
    } else {
        Vec::new()
    };
    let server = axum::serve(listener, admin.router());
    tokio::select! {
        r = server => {
            if let Err(e) = r {
                eprintln!("error: the server stopped: {e}");
            }
        }
        () = shutdown_signal() => {}
    }
    println!("stopping: no new work, draining, closing every pool");
    let _ = stop.send(true);
    for w in workers {
        let _ = w.await;
    }
    let closed = fleet.close(Duration::from_secs(10)).await;
    println!("closed {closed} pools");
    drop(temp);
    exit::OK
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A small, steady mix of reads and writes on `cluster`, so that the
/// dashboard has something to show: twelve workers, each holding its
/// connection for a few milliseconds, with pauses between; for five
/// seconds of every thirty they hold it ten times longer, so that callers
/// queue and the wait chart moves.
fn workload(
    cluster: &Cluster<SqliteManager>,
    stopped: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let started = std::time::Instant::now();
    (0..12u64)
        .map(|n| {
            let (cluster, mut stopped) = (cluster.clone(), stopped.clone());
            tokio::spawn(async move {
                let mut k = n;
                while !*stopped.borrow() {
                    k = k.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    let roll = (k >> 33) % 100;
                    if let Ok(conn) = cluster.get_any().await {
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                        let work = conn.interact(move |db| {
                            db.execute_batch(
                                "CREATE TABLE IF NOT EXISTS demo (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, note TEXT)",
                            )?;
                            if roll < 30 {
                                db.execute("INSERT INTO demo (at, note) VALUES (?1, 'demo')", [now])?;
                                db.execute("DELETE FROM demo WHERE id <= (SELECT max(id) - 1000 FROM demo)", [])?;
                            } else {
                                db.query_row("SELECT count(*), max(at) FROM demo", [], |_| Ok(()))?;
                            }
                            Ok::<_, aquifer_sqlite::rusqlite::Error>(())
                        });
                        let _ = work.await;
                        // Held a little longer, as an application would.
                        let busy = started.elapsed().as_secs() % 30 >= 25;
                        let hold = (5 + (k >> 40) % 40) * if busy { 10 } else { 1 };
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                        drop(conn);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20 + (k >> 50) % 60)) => {}
                        _ = stopped.changed() => {}
                    }
                }
            })
        })
        .collect()
}
