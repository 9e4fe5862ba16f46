//! `aquifer check`: one connection and one round trip per pool, a table
//! or JSON, and an exit code a readiness probe can use.

use std::path::PathBuf;
use std::time::Duration;

use aquifer_admin::{PoolState, Readiness};
use serde_json::json;

use crate::exit;
use crate::fleet::Fleet;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The configuration file.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The configuration file, as the other commands take it (else
    /// AQUIFER_CONFIG names it).
    #[arg(long, short, conflicts_with = "file")]
    config: Option<PathBuf>,
    /// How long each pool may take to answer.
    #[arg(long, default_value = "5s", value_parser = crate::positive_duration)]
    timeout: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> u8 {
    let named = args.file.or(args.config);
    let Some(path) = named.or_else(|| std::env::var_os("AQUIFER_CONFIG").map(PathBuf::from)) else {
        eprintln!("error: name the file: aquifer check FILE (or --config FILE, or AQUIFER_CONFIG)");
        return exit::CONFIG;
    };
    let cfg = match crate::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            crate::report(&e);
            return exit::CONFIG;
        }
    };
    // Nothing connects until its check: the first connection is the probe.
    let fleet = match Fleet::build(&cfg, false) {
        Ok(f) => f,
        Err(e) => {
            crate::report(&e);
            return exit::CONFIG;
        }
    };
    // Every pool of every source at once: three unreachable pools take
    // one timeout, not three.
    let checks = fleet
        .sources
        .iter()
        .map(|(name, s)| s.check(name, args.timeout));
    let results: Vec<Readiness> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    fleet.close(Duration::ZERO).await;

    let all = results.iter().all(Readiness::is_ready);
    if args.json {
        let out = json!({ "healthy": all, "pools": results });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", table(&results));
    }
    if all {
        exit::OK
    } else {
        exit::UNHEALTHY
    }
}

fn table(results: &[Readiness]) -> String {
    // A ROLE column when a replica set is checked: what each server says
    // it is, and which one takes the writes.
    let roles = results.iter().any(|r| r.role.is_some());
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let (state, latency, error) = match &r.health {
                Some(h) => (
                    if h.healthy { "healthy" } else { "unhealthy" }.to_owned(),
                    aquifer::human_duration(h.latency),
                    h.error.clone().unwrap_or_default(),
                ),
                None => (
                    match r.state {
                        PoolState::Frozen => "frozen",
                        PoolState::Banned => "banned",
                        PoolState::Closed => "closed",
                        PoolState::Active => "unchecked",
                    }
                    .to_owned(),
                    "-".to_owned(),
                    r.reason.clone().unwrap_or_default(),
                ),
            };
            let mut row = vec![r.cluster.clone(), r.pool.clone(), state];
            if roles {
                row.push(match &r.role {
                    Some(i) if i.writes_here => format!("{} (writes)", i.role),
                    Some(i) if i.role == aquifer::Role::Standby => {
                        let mut s = i.role.to_string();
                        match (i.lag_bytes, i.lag) {
                            (Some(b), _) => s += &format!(" ({b} bytes behind"),
                            (None, Some(t)) => {
                                s += &format!(" ({} behind", aquifer::human_duration(t));
                            }
                            (None, None) => s += " (lag not known",
                        }
                        if !i.in_rotation {
                            s += "; no reads";
                        }
                        s + ")"
                    }
                    Some(i) => i.role.to_string(),
                    None => "-".to_owned(),
                });
            }
            row.extend([latency, error]);
            row
        })
        .collect();
    let mut head: Vec<String> = ["CLUSTER", "POOL", "STATE"].map(str::to_owned).into();
    if roles {
        head.push("ROLE".to_owned());
    }
    head.extend(["LATENCY".to_owned(), "ERROR".to_owned()]);
    let last = head.len() - 1;
    let mut width = vec![0; last];
    for row in std::iter::once(&head).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&head).chain(&rows) {
        for (i, cell) in row.iter().enumerate() {
            if i < last {
                out.push_str(&format!("{cell:<w$}  ", w = width[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}
