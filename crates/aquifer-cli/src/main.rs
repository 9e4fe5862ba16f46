//! `aquifer`: serve the admin dashboard over configured pools, health-check
//! them, load-test a database, check a configuration.

mod bench;
mod check;
mod config;
mod fleet;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Exit codes, as the README documents them.
pub(crate) mod exit {
    /// Done; every pool healthy.
    pub(crate) const OK: u8 = 0;
    /// A pool is unhealthy (`check`) or queries failed (`bench`).
    pub(crate) const UNHEALTHY: u8 = 1;
    /// The command line or the configuration is wrong.
    pub(crate) const CONFIG: u8 = 2;
    /// Could not start: the address is taken, a directory cannot be made.
    pub(crate) const START: u8 = 3;
}

#[derive(Parser)]
#[command(
    name = "aquifer",
    version,
    about = "Database connection pools: serve their dashboard, check them, load-test a database.",
    after_help = "Logs go to stderr; RUST_LOG sets what is shown (default: serve logs warnings and aquifer's info, bench errors, check and config nothing).\nExit codes: 0 ok, 1 unhealthy or failed queries, 2 bad usage or configuration, 3 could not start."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admin dashboard, JSON API and Prometheus metrics over the
    /// configured pools; without a configuration, over three SQLite pools
    /// with a small demo workload.
    Serve(serve::Args),
    /// Health-check every configured pool (a connection and a round trip
    /// each); exit 1 when any is unhealthy.
    Check(check::Args),
    /// Load-test a database: `SELECT 1` throughput, or the pg_sleep
    /// workload, through the pool or the multiplexer.
    Bench(bench::Args),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration without connecting to anything.
    Check {
        /// The configuration file.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The configuration file, as the other commands take it (else
        /// AQUIFER_CONFIG names it).
        #[arg(long, short, conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Print an example configuration with every section.
    Example,
}

/// Reads a configuration file, or `None` when none was given.
pub(crate) fn load(path: Option<&Path>) -> Result<Option<Config>, ConfigError> {
    path.map(Config::load).transpose()
}

/// `--timeout 5s`, `--sleep 100ms`: a duration as configuration writes it.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    aquifer::parse_duration(text).map_err(|e| e.to_string())
}

/// A duration that must be more than zero: a timeout or a run length.
pub(crate) fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err(format!(
            "`{text}` is zero: give a time longer than that, such as 5s"
        )),
        d => Ok(d),
    }
}

/// A count that must be at least one.
pub(crate) fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("0 would do nothing: give at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// An error's text with what to do added where the driver's words leave
/// it out.
pub(crate) fn hint(text: &str) -> String {
    if text.contains("password missing") {
        format!("{text} (give the password in a file or the environment: bench takes --password-file or AQUIFER_PASSWORD, a configuration password_file or password_env)")
    } else {
        text.to_owned()
    }
}

/// Prints an error and its causes, each once.
pub(crate) fn report(e: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {}", aquifer::error_chain(e));
}

/// Logs to stderr: what `RUST_LOG` asks for, else `default`.
fn logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs what it does; a command that prints its answer keeps
    // the pools' own lines out of it.
    logs(match cli.command {
        Command::Serve(_) => "warn,aquifer=info",
        Command::Bench(_) => "error",
        Command::Check(_) | Command::Config(_) => "off",
    });
    let code = match cli.command {
        Command::Config(ConfigCommand::Example) => {
            print!("{}", serve::EXAMPLE);
            exit::OK
        }
        // Reads and checks; builds nothing and touches nothing on disk.
        Command::Config(ConfigCommand::Check { config, file }) => {
            let named = file.or(config);
            let Some(path) =
                named.or_else(|| std::env::var_os("AQUIFER_CONFIG").map(PathBuf::from))
            else {
                eprintln!("error: name the file: aquifer config check FILE (or --config FILE, or AQUIFER_CONFIG)");
                return ExitCode::from(exit::CONFIG);
            };
            match Config::load(&path) {
                Ok(cfg) => {
                    println!(
                        "{}: ok ({} clusters, {} pools, {} multiplexers)",
                        path.display(),
                        cfg.clusters.len(),
                        cfg.pools.len(),
                        cfg.multiplexers.len()
                    );
                    exit::OK
                }
                Err(e) => {
                    report(&e);
                    exit::CONFIG
                }
            }
        }
        command => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    report(&e);
                    return ExitCode::from(exit::START);
                }
            };
            let code = rt.block_on(async move {
                match command {
                    Command::Serve(a) => serve::run(a).await,
                    Command::Check(a) => check::run(a).await,
                    Command::Bench(a) => bench::run(a).await,
                    // Handled above, without a runtime.
                    Command::Config(_) => exit::OK,
                }
            });
            // Connections still streaming events end with the runtime.
            rt.shutdown_timeout(Duration::from_secs(1));
            code
        }
    };
    ExitCode::from(code)
}
