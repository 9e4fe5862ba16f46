//! A throwaway MariaDB server from the installed binaries.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::pg::{chown_tree, free_port, run, server_owner_named};
use crate::process::ServerProcess;
use crate::TestkitError;

mod replica;

pub use replica::MARIADB_APP_USER;

/// The password of the `aquifer` user every [`MariaDbServer`] has.
pub const MARIADB_PASSWORD: &str = "aquifer-test-secret";

/// The user tests connect as (all privileges, from any host).
pub const MARIADB_USER: &str = "aquifer";

const READY_WITHIN: Duration = Duration::from_secs(60);

/// InnoDB sized for tests: small, quick to start, no binary log.
const SERVER_ARGS: &[&str] = &[
    "--no-defaults",
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-flush-log-at-trx-commit=2",
    "--character-set-server=utf8mb4",
];

/// Settings for a [`MariaDbServer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MariaDbServerBuilder {
    max_connections: u32,
    settings: Vec<(String, String)>,
    ssl: Option<(PathBuf, PathBuf)>,
    tls_only: bool,
    binlog: bool,
}

impl Default for MariaDbServerBuilder {
    fn default() -> Self {
        MariaDbServerBuilder {
            max_connections: 100,
            settings: Vec::new(),
            ssl: None,
            tls_only: false,
            binlog: false,
        }
    }
}

impl MariaDbServerBuilder {
    /// `max_connections`. Default 100.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Any other server option, passed as `--name=value`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Serves TLS with this certificate and key (PEM files, copied into the
    /// server's directory so the server user can read them).
    pub fn ssl(mut self, cert: &Path, key: &Path) -> Self {
        self.ssl = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    /// Refuses connections that are not encrypted
    /// (`require_secure_transport`). Needs [`ssl`](Self::ssl).
    pub fn tls_only(mut self) -> Self {
        self.tls_only = true;
        self
    }

    /// Copies the cached data directory and starts the server.
    ///
    /// # Errors
    /// [`TestkitError::Missing`] naming `apt-get install -y mariadb-server`
    /// when the binaries are not installed; a start-up failure with the
    /// tail of the server log.
    pub fn start(self) -> Result<MariaDbServer, TestkitError> {
        let bins = binaries()?;
        let owner = server_owner_named(
            "mysql",
            "the `mysql` user to run the server as (running as root)",
            "apt-get install -y mariadb-server",
        )?;
        let template = template(bins, owner)?;
        let dir = tempfile::Builder::new()
            .prefix("aquifer-mariadb-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the server dir", e))?;
        let data = dir.path().join("data");
        run(Command::new("cp").arg("-a").arg(template).arg(&data))?;
        let mut settings = self;
        if let Some((cert, key)) = settings.ssl.take() {
            let (cert_copy, key_copy) =
                (dir.path().join("server.crt"), dir.path().join("server.key"));
            fs::copy(&cert, &cert_copy)
                .map_err(|e| TestkitError::io("copying the certificate", e))?;
            fs::copy(&key, &key_copy).map_err(|e| TestkitError::io("copying the key", e))?;
            settings
                .settings
                .push(("ssl-cert".into(), cert_copy.display().to_string()));
            settings
                .settings
                .push(("ssl-key".into(), key_copy.display().to_string()));
        }
        if settings.tls_only {
            settings
                .settings
                .push(("require-secure-transport".into(), "ON".into()));
        }
        if settings.binlog {
            replica::binlog_settings(&mut settings.settings);
        }
        // A temp dir of its own for the server's temporary tables, so that
        // servers never share one. In CI a query on information_schema
        // once failed with "Error on delete of '/tmp/#sql-temptable-…'
        // (Errcode: 2)" while other tests' servers used the same /tmp; the
        // cause was not pinned down (a marker file in a shared /tmp
        // survived another server's start), but nothing is shared now.
        fs::create_dir(dir.path().join("tmp"))
            .map_err(|e| TestkitError::io("creating the server's temp dir", e))?;
        chown_tree(dir.path(), owner)?;
        let mut server = MariaDbServer {
            port: free_port()?,
            server: bins.server.clone(),
            client: bins.client.clone(),
            owner,
            process: ServerProcess::default(),
            socket: dir.path().join("mysqld.sock"),
            data,
            settings,
            dir,
        };
        // The port was free when it was picked; another process may take
        // it before the server binds it: then a new port, as for PostgreSQL.
        let mut last = None;
        for _ in 0..5 {
            match server.start() {
                Ok(()) => return Ok(server),
                Err(e @ TestkitError::Startup { .. }) if matches!(&e, TestkitError::Startup { log, .. } if log.contains("Address already in use")) =>
                {
                    last = Some(e);
                    server.port = free_port()?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// A MariaDB server of its own in a temporary directory, on 127.0.0.1 and
/// a free port, with a user [`MARIADB_USER`] (password
/// [`MARIADB_PASSWORD`]) and a database `aquifer`. Dropping it kills the
/// server and deletes everything.
///
/// Run as root, the server runs as the `mysql` user, which owns the
/// directory. `mariadb-install-db` runs once per machine into a cached
/// template that each server copies.
#[derive(Debug)]
pub struct MariaDbServer {
    port: u16,
    server: PathBuf,
    client: PathBuf,
    owner: Option<(u32, u32)>,
    process: ServerProcess,
    socket: PathBuf,
    data: PathBuf,
    settings: MariaDbServerBuilder,
    dir: tempfile::TempDir,
}

impl MariaDbServer {
    /// Starts a server with default settings.
    ///
    /// # Errors
    /// As [`MariaDbServerBuilder::start`].
    pub fn new() -> Result<Self, TestkitError> {
        Self::builder().start()
    }

    /// Settings for a new server.
    pub fn builder() -> MariaDbServerBuilder {
        MariaDbServerBuilder::default()
    }

    /// `mysql://aquifer:…@127.0.0.1:port/aquifer`.
    pub fn url(&self) -> String {
        self.url_on(self.port)
    }

    /// The URL of the `aquifer` database reached through `proxy` (which
    /// must forward to this server).
    pub fn url_through(&self, proxy: &crate::FaultProxy) -> String {
        self.url_on(proxy.port())
    }

    fn url_on(&self, port: u16) -> String {
        format!("mysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{port}/aquifer")
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// (Re)starts the server on the same data and port, waiting until it
    /// accepts connections.
    ///
    /// # Errors
    /// A start-up failure with the tail of the server log.
    pub fn start(&mut self) -> Result<(), TestkitError> {
        if self.is_running() {
            return Ok(());
        }
        let _ = fs::remove_file(&self.socket);
        let mut cmd = Command::new(&self.server);
        cmd.args(SERVER_ARGS)
            .arg(format!("--datadir={}", self.data.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!(
                "--tmpdir={}",
                self.dir.path().join("tmp").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", self.log_path().display()))
            .arg(format!(
                "--max-connections={}",
                self.settings.max_connections
            ))
            .args(
                self.settings
                    .settings
                    .iter()
                    .map(|(k, v)| format!("--{k}={v}")),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process
            .spawn(&mut cmd, self.owner, "spawning mariadbd")?;
        self.wait_ready()
    }

    /// Clean shutdown (SIGTERM): connections are closed, InnoDB flushes,
    /// the server exits.
    ///
    /// # Errors
    /// When the server could not be signalled.
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.halt("TERM")
    }

    /// SIGKILL, like a crash: the next [`start`](Self::start) runs InnoDB
    /// crash recovery.
    ///
    /// # Errors
    /// When the server could not be signalled.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.halt("KILL")
    }

    /// Runs SQL as `root` through the `mariadb` client over the unix socket
    /// (so it works whatever faults the TCP side has) and returns its
    /// tab-separated output without column names.
    ///
    /// # Errors
    /// [`TestkitError::Command`] with the client's message when the SQL
    /// fails.
    pub fn sql(&self, sql: &str) -> Result<String, TestkitError> {
        run(Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "--batch", "--skip-column-names", "-e", sql]))
    }

    /// How many connections the `aquifer` user has open.
    ///
    /// # Errors
    /// As [`sql`](Self::sql).
    pub fn sessions(&self) -> Result<usize, TestkitError> {
        let out = self.sql(&format!(
            "SELECT count(*) FROM information_schema.processlist WHERE user = '{MARIADB_USER}'"
        ))?;
        out.trim().parse().map_err(|_| TestkitError::Command {
            command: "counting sessions".into(),
            message: format!("unexpected output {out:?}"),
        })
    }

    /// The server's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn halt(&mut self, signal: &str) -> Result<(), TestkitError> {
        self.process.halt(signal, Duration::from_secs(30))
    }

    /// Waits until the server answers on its unix socket.
    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let socket = self.socket.clone();
        let log = self.log_path();
        self.process.wait_ready(
            "MariaDB",
            READY_WITHIN,
            "KILL",
            || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
            || fs::read_to_string(&log).unwrap_or_default(),
        )
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        let _ = self.halt("KILL");
    }
}

/// The installed programs.
#[derive(Debug)]
struct Binaries {
    server: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
}

/// Finds `mariadbd`, `mariadb-install-db` and `mariadb` in
/// `$AQUIFER_MARIADB_BIN`, or on the `PATH` and in `/usr/sbin`, `/usr/bin`.
fn binaries() -> Result<&'static Binaries, TestkitError> {
    static BINS: OnceLock<Option<Binaries>> = OnceLock::new();
    BINS.get_or_init(|| find_binaries(std::env::var_os("AQUIFER_MARIADB_BIN").map(PathBuf::from)))
        .as_ref()
        .ok_or_else(missing_binaries)
}

fn missing_binaries() -> TestkitError {
    TestkitError::Missing {
        what: "the MariaDB server binaries (mariadbd, mariadb-install-db, mariadb)",
        install:
            "apt-get install -y mariadb-server (or set AQUIFER_MARIADB_BIN to their directory)",
    }
}

fn find_binaries(explicit: Option<PathBuf>) -> Option<Binaries> {
    let dirs: Vec<PathBuf> = match explicit {
        Some(d) => vec![d],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
            .collect(),
    };
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    Some(Binaries {
        server: find("mariadbd")?,
        install_db: find("mariadb-install-db")?,
        client: find("mariadb")?,
    })
}

/// The data directory every server copies: made once per machine and
/// server version under the temp dir, with the test user and database.
fn template(bins: &Binaries, owner: Option<(u32, u32)>) -> Result<&'static Path, TestkitError> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| make_template(bins, owner).map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| TestkitError::Startup {
            server: "MariaDB (mariadb-install-db)",
            log: e.clone(),
        })
}

fn make_template(bins: &Binaries, owner: Option<(u32, u32)>) -> Result<PathBuf, TestkitError> {
    let version = run(Command::new(&bins.server).arg("--version"))?;
    let version: String = version
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    let uid = owner.map_or_else(|| "self".to_owned(), |(u, _)| u.to_string());
    let base = std::env::temp_dir().join(format!("aquifer-testkit-{uid}"));
    fs::create_dir_all(&base).map_err(|e| TestkitError::io("creating the template dir", e))?;
    let done = base.join(format!("mariadb-{version}"));
    if done.join("aquifer").is_dir() {
        return Ok(done);
    }
    let stage = tempfile::Builder::new()
        .prefix("mariadb-stage-")
        .tempdir_in(&base)
        .map_err(|e| TestkitError::io("creating the template dir", e))?;
    let data = stage.path().join("data");
    chown_tree(stage.path(), owner)?;
    let as_owner = |cmd: &mut Command| {
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
    };
    let mut install = Command::new(&bins.install_db);
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            "--innodb-log-file-size=8M",
        ]);
    as_owner(&mut install);
    run(&mut install)?;
    // The test user and database, written in bootstrap mode (no network).
    let setup = format!(
        "FLUSH PRIVILEGES;\n\
         CREATE DATABASE aquifer;\n\
         CREATE USER '{MARIADB_USER}'@'%' IDENTIFIED BY '{MARIADB_PASSWORD}';\n\
         GRANT ALL PRIVILEGES ON *.* TO '{MARIADB_USER}'@'%';\n"
    );
    let mut bootstrap = Command::new(&bins.server);
    bootstrap
        .args(SERVER_ARGS)
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", stage.path().display()))
        .arg("--bootstrap")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_owner(&mut bootstrap);
    let mut child = bootstrap
        .spawn()
        .map_err(|e| TestkitError::io("spawning mariadbd --bootstrap", e))?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(setup.as_bytes())
            .map_err(|e| TestkitError::io("writing the bootstrap SQL", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TestkitError::io("waiting for mariadbd --bootstrap", e))?;
    if !out.status.success() || !data.join("aquifer").is_dir() {
        return Err(TestkitError::Command {
            command: "mariadbd --bootstrap".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    // Another process may have finished first; either template is good.
    match fs::rename(&data, &done) {
        Ok(()) => Ok(done),
        Err(_) if done.join("aquifer").is_dir() => Ok(done),
        Err(e) => Err(TestkitError::io("publishing the template", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_package_to_install() {
        let text = missing_binaries().to_string();
        assert!(text.contains("apt-get install -y mariadb-server"), "{text}");
        assert!(text.contains("mariadbd"), "{text}");
    }

    #[test]
    fn missing_binaries_are_none_and_an_explicit_dir_is_used() {
        let empty = tempfile::tempdir().unwrap();
        assert!(find_binaries(Some(empty.path().to_path_buf())).is_none());
        for name in ["mariadbd", "mariadb-install-db", "mariadb"] {
            fs::write(empty.path().join(name), "").unwrap();
        }
        let found = find_binaries(Some(empty.path().to_path_buf())).unwrap();
        assert_eq!(found.server, empty.path().join("mariadbd"));
    }
}
