//! A throwaway PgBouncer in front of a [`PgServer`](crate::PgServer).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::pg::{chown_tree, server_owner};
use crate::process::ServerProcess;
use crate::{PgServer, TestkitError, PG_PASSWORD};

/// How PgBouncer shares server connections between clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client session.
    Session,
    /// A server connection per transaction: session state and named
    /// prepared statements do not survive between transactions.
    Transaction,
}

/// PgBouncer listening on a free port of 127.0.0.1, forwarding every
/// database to one [`PgServer`]. Stopped and removed on drop.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    process: ServerProcess,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer in front of `server` with server pools of
    /// `pool_size` connections.
    ///
    /// # Errors
    /// [`TestkitError::Missing`] naming the package when PgBouncer is not
    /// installed, or a start-up failure with the tail of its log.
    pub fn start(server: &PgServer, mode: PoolMode, pool_size: u32) -> Result<Self, TestkitError> {
        let bin = [
            "/usr/sbin/pgbouncer",
            "/usr/bin/pgbouncer",
            "/usr/local/bin/pgbouncer",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(TestkitError::Missing {
            what: "PgBouncer",
            install: "apt-get install -y pgbouncer",
        })?;
        let owner = server_owner()?;
        let dir = tempfile::Builder::new()
            .prefix("aquifer-bouncer-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the PgBouncer directory", e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| TestkitError::io("finding a free port", e))?
            .port();
        let d = dir.path();
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={upstream}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {d}/userlist.txt\n\
             pool_mode = {mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n\
             admin_users = postgres\n",
            upstream = server.port(),
            d = d.display(),
            mode = match mode {
                PoolMode::Session => "session",
                PoolMode::Transaction => "transaction",
            },
        );
        let write = |name: &str, text: &str| {
            fs::write(d.join(name), text)
                .map_err(|e| TestkitError::io("writing PgBouncer config", e))
        };
        write("pgbouncer.ini", &ini)?;
        write("userlist.txt", &format!("\"postgres\" \"{PG_PASSWORD}\"\n"))?;
        chown_tree(d, owner)?;
        let mut cmd = Command::new(bin);
        cmd.arg(d.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = ServerProcess::default();
        process.spawn(&mut cmd, owner, "spawning pgbouncer")?;
        let mut bouncer = Self { port, process, dir };
        bouncer.wait_ready()?;
        Ok(bouncer)
    }

    /// The URL of database `db` through PgBouncer.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// The `postgres` database through PgBouncer.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The port PgBouncer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything PgBouncer logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let port = self.port;
        let log = self.dir.path().join("pgbouncer.log");
        self.process.wait_ready(
            "PgBouncer",
            Duration::from_secs(20),
            "INT",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || fs::read_to_string(&log).unwrap_or_default(),
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.process.halt("INT", Duration::from_secs(5));
    }
}
