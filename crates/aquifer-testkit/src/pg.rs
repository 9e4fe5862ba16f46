//! Throwaway PostgreSQL servers from the installed server binaries.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::ServerProcess;
use crate::TestkitError;

mod replica;
mod template;

use template::template;

/// The superuser's password on every test server. Test servers listen on
/// 127.0.0.1 only and live in a temporary directory.
pub const PG_PASSWORD: &str = "aquifer-test";

const READY_WITHIN: Duration = Duration::from_secs(60);

/// Settings for a [`PgServer`], started with [`start`](PgServerBuilder::start).
#[derive(Debug, Clone)]
#[must_use]
pub struct PgServerBuilder {
    max_connections: u32,
    password_auth: bool,
    settings: Vec<(String, String)>,
    ssl: Option<(PathBuf, PathBuf)>,
    ssl_only: bool,
    /// Start as a streaming replica of the server on this socket
    /// directory and port, from a base backup, instead of the template.
    upstream: Option<(PathBuf, u16)>,
}

impl Default for PgServerBuilder {
    fn default() -> Self {
        Self {
            max_connections: 100,
            password_auth: true,
            settings: Vec::new(),
            ssl: None,
            ssl_only: false,
            upstream: None,
        }
    }
}

impl PgServerBuilder {
    /// `max_connections`. Default 100.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Accept TCP clients without checking the password. Default: passwords
    /// are checked (SCRAM-SHA-256), so a wrong one fails as in production.
    pub fn trust(mut self) -> Self {
        self.password_auth = false;
        self
    }

    /// Any other `postgresql.conf` setting, e.g. `("log_connections", "on")`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Serve TLS with this PEM certificate and key (both are copied).
    pub fn ssl(mut self, cert: &Path, key: &Path) -> Self {
        self.ssl = Some((cert.to_owned(), key.to_owned()));
        self
    }

    /// Refuse TCP clients that do not use TLS (needs [`ssl`](Self::ssl)).
    pub fn ssl_only(mut self) -> Self {
        self.ssl_only = true;
        self
    }

    /// Creates the server from a cached `initdb` template and starts it on a
    /// free port.
    ///
    /// # Errors
    /// [`TestkitError::Missing`] when the server binaries are not installed
    /// (the message names the package), or a start-up failure with the tail
    /// of the server log.
    pub fn start(self) -> Result<PgServer, TestkitError> {
        let bin = bindir()?.to_owned();
        let owner = server_owner()?;
        let template = template(&bin, owner)?;
        let dir = tempfile::Builder::new()
            .prefix("aquifer-pg-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the server directory", e))?;
        let data = dir.path().join("data");
        let socket = dir.path().join("sock");
        match &self.upstream {
            None => {
                run(Command::new("cp").arg("-a").arg(template).arg(&data))?;
            }
            Some((up_socket, up_port)) => {
                chown_tree(dir.path(), owner)?;
                replica::base_backup(&bin, owner, up_socket, *up_port, &data)?;
            }
        }
        fs::create_dir(&socket).map_err(|e| TestkitError::io("creating the socket dir", e))?;
        if let Some(ssl) = &self.ssl {
            for (from, name) in [(&ssl.0, "server.crt"), (&ssl.1, "server.key")] {
                let to = data.join(name);
                fs::copy(from, &to).map_err(|e| TestkitError::io("copying a TLS file", e))?;
                set_mode(&to, 0o600)?;
            }
        }
        let mut server = PgServer {
            port: 0,
            bin,
            owner,
            process: ServerProcess::default(),
            socket,
            data,
            dir,
            settings: self,
        };
        server.write_hba()?;
        chown_tree(server.dir.path(), owner)?;
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            server.write_conf()?;
            match server.start() {
                Ok(()) => return Ok(server),
                Err(e @ TestkitError::Startup { .. })
                    if server.log().contains("could not bind") =>
                {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// A PostgreSQL server of its own in a temporary directory, on 127.0.0.1
/// and a free port. Dropping it stops the server (immediately) and deletes
/// everything.
///
/// Run as root, the server runs as the `postgres` user, which owns the
/// directory. `initdb` runs once per machine into a cached template that
/// each server copies, so starting one takes about a second.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    process: ServerProcess,
    socket: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
    /// What it was built with, to write its configuration again (after a
    /// rewind copied another server's).
    settings: PgServerBuilder,
}

impl PgServer {
    /// Starts a server with default settings.
    ///
    /// # Errors
    /// As [`PgServerBuilder::start`].
    pub fn new() -> Result<Self, TestkitError> {
        Self::builder().start()
    }

    /// Settings for a new server.
    pub fn builder() -> PgServerBuilder {
        PgServerBuilder::default()
    }

    /// `postgres://postgres:…@127.0.0.1:port/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// The URL of the `postgres` database reached through `proxy` (which
    /// must forward to this server).
    pub fn url_through(&self, proxy: &crate::FaultProxy) -> String {
        format!(
            "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres",
            proxy.port()
        )
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The postmaster's process id, while running.
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
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| TestkitError::io("opening the server log", e))?;
        let err = log
            .try_clone()
            .map_err(|e| TestkitError::io("opening the server log", e))?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        self.process
            .spawn(&mut cmd, self.owner, "spawning postgres")?;
        self.wait_ready()
    }

    /// Fast shutdown: open sessions are ended cleanly, then the server exits.
    ///
    /// # Errors
    /// When the server could not be signalled.
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.halt("INT")
    }

    /// Immediate shutdown, like a crash: every backend quits at once without
    /// cleanup, and the next [`start`](Self::start) runs crash recovery.
    ///
    /// # Errors
    /// When the server could not be signalled.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.halt("QUIT")
    }

    /// Runs SQL through `psql` over the unix socket (so it works whatever
    /// faults the TCP side has) and returns its unaligned, tuples-only output.
    ///
    /// # Errors
    /// [`TestkitError::Command`] with psql's message when the SQL fails.
    pub fn psql(&self, sql: &str) -> Result<String, TestkitError> {
        self.psql_in("postgres", sql)
    }

    /// [`psql`](Self::psql) in database `db`.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn psql_in(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        let out = run(Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.socket)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql))?;
        Ok(out.trim().to_owned())
    }

    /// Creates a database and returns its URL.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        self.psql(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url_for(name))
    }

    /// Sessions on the server whose `application_name` is `app`.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn sessions(&self, app: &str) -> Result<usize, TestkitError> {
        let n = self.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}'",
            app.replace('\'', "''")
        ))?;
        n.parse().map_err(|_| TestkitError::Command {
            command: "psql".into(),
            message: format!("not a count: {n}"),
        })
    }

    /// The server's temporary directory (data, socket and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn halt(&mut self, signal: &str) -> Result<(), TestkitError> {
        self.process.halt(signal, Duration::from_secs(30))
    }

    /// Waits for `postmaster.pid` to say "ready".
    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let pidfile = self.data.join("postmaster.pid");
        let log = self.log_path();
        self.process.wait_ready(
            "PostgreSQL",
            READY_WITHIN,
            "QUIT",
            || {
                fs::read_to_string(&pidfile)
                    .is_ok_and(|text| text.lines().nth(7).is_some_and(|s| s.trim() == "ready"))
            },
            || fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    fn write_conf(&self) -> Result<(), TestkitError> {
        let b = &self.settings;
        let mut conf = format!(
            "\n# aquifer-testkit\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = {}\n\
             fsync = off\nsynchronous_commit = off\n\
             shared_buffers = 16MB\nlog_min_messages = warning\n\
             password_encryption = 'scram-sha-256'\nwal_log_hints = on\n",
            self.port,
            self.socket.display(),
            b.max_connections
        );
        if b.ssl.is_some() {
            conf += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
        }
        for (k, v) in &b.settings {
            conf += &format!("{k} = '{}'\n", v.replace('\'', "''"));
        }
        // Written anew on every attempt (the port changes), after the
        // template's own lines, so these win.
        let base = self.data.join("postgresql.conf.template");
        let path = self.data.join("postgresql.conf");
        if !base.exists() {
            let text = fs::read_to_string(&path)
                .map_err(|e| TestkitError::io("saving postgresql.conf", e))?;
            write_owned(&base, &text, self.owner)?;
        }
        let mut text = fs::read_to_string(&base)
            .map_err(|e| TestkitError::io("reading postgresql.conf", e))?;
        text += &conf;
        write_owned(&path, &text, self.owner)
    }

    fn write_hba(&self) -> Result<(), TestkitError> {
        let b = &self.settings;
        let method = if b.password_auth {
            "scram-sha-256"
        } else {
            "trust"
        };
        let host = if b.ssl_only {
            format!(
                "hostssl all all 127.0.0.1/32 {method}\nhostnossl all all 127.0.0.1/32 reject\n"
            )
        } else {
            format!("host all all 127.0.0.1/32 {method}\n")
        };
        // Replicas connect over the unix socket, without a password.
        let text = format!("local all all trust\nlocal replication all trust\n{host}");
        write_owned(&self.data.join("pg_hba.conf"), &text, self.owner)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.halt("QUIT");
    }
}

/// Sends `signal` to a child still running and waits for it to exit; kills
/// it after `patience`.
pub(crate) fn signal_and_reap(
    mut child: Child,
    signal: &str,
    patience: Duration,
) -> Result<(), TestkitError> {
    if let Ok(None) = child.try_wait() {
        run(Command::new("kill")
            .args(["-s", signal])
            .arg(child.id().to_string()))?;
        let give_up = Instant::now() + patience;
        while let Ok(None) = child.try_wait() {
            if Instant::now() > give_up {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.wait();
    }
    Ok(())
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command; its stdout on success, its stderr in the error.
pub(crate) fn run(cmd: &mut Command) -> Result<String, TestkitError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::io("running a command", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TestkitError::Command {
            command: format!("{cmd:?}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

pub(crate) fn free_port() -> Result<u16, TestkitError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| TestkitError::io("finding a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| TestkitError::io("finding a free port", e))
}

/// Where the server binaries are: `$AQUIFER_PG_BIN`, `pg_config --bindir`,
/// the newest `/usr/lib/postgresql/*/bin`, or `postgres` on the `PATH`.
fn bindir() -> Result<&'static Path, TestkitError> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| find_bindir(std::env::var_os("AQUIFER_PG_BIN").map(PathBuf::from)))
        .as_deref()
        .ok_or_else(missing_binaries)
}

fn missing_binaries() -> TestkitError {
    TestkitError::Missing {
        what: "the PostgreSQL server binaries (initdb, postgres)",
        install: "apt-get install -y postgresql (or set AQUIFER_PG_BIN to their directory)",
    }
}

/// `explicit` (from `$AQUIFER_PG_BIN`) is taken as it is, or not at all.
fn find_bindir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    {
        let has = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
        if let Some(d) = explicit {
            return has(&d).then_some(d);
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has(&d) {
                return Some(d);
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, d)| has(d))
            .collect();
        versions.sort();
        if let Some((_, d)) = versions.pop() {
            return Some(d);
        }
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has(d)))
    }
}

/// The uid and gid the server must run as: `postgres` when we are root
/// (PostgreSQL refuses to run as root), else ourselves (`None`).
pub(crate) fn server_owner() -> Result<Option<(u32, u32)>, TestkitError> {
    server_owner_named(
        "postgres",
        "the `postgres` user to run the server as (running as root)",
        "apt-get install -y postgresql",
    )
}

/// The uid and gid of `user` when we are root, else `None` (run as
/// ourselves). The user comes with the server's package, `install`;
/// `what` says what is missing when it does not exist.
pub(crate) fn server_owner_named(
    user: &'static str,
    what: &'static str,
    install: &'static str,
) -> Result<Option<(u32, u32)>, TestkitError> {
    let me = fs::metadata("/proc/self")
        .map_err(|e| TestkitError::io("reading /proc/self", e))?
        .uid();
    if me != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| TestkitError::io("reading /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user) && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or(TestkitError::Missing { what, install })
}

pub(crate) fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> Result<(), TestkitError> {
    if let Some((uid, gid)) = owner {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TestkitError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| TestkitError::io("setting file permissions", e))
}

fn write_owned(path: &Path, text: &str, owner: Option<(u32, u32)>) -> Result<(), TestkitError> {
    let mut f = fs::File::create(path).map_err(|e| TestkitError::io("writing a config file", e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| TestkitError::io("writing a config file", e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| TestkitError::io("chown of a config file", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_package_to_install() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(find_bindir(Some(empty.path().to_owned())), None);
        let msg = missing_binaries().to_string();
        assert!(msg.contains("apt-get install -y postgresql"), "{msg}");
        assert!(msg.contains("AQUIFER_PG_BIN"), "{msg}");
    }

    #[test]
    fn an_explicit_directory_with_the_binaries_is_used() {
        let d = tempfile::tempdir().unwrap();
        for name in ["postgres", "initdb"] {
            fs::write(d.path().join(name), "").unwrap();
        }
        assert_eq!(
            find_bindir(Some(d.path().to_owned())),
            Some(d.path().to_owned())
        );
    }
}
