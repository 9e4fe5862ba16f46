//! GTID replication between test MariaDB servers: a replica that follows
//! a primary, its SQL thread stopped and started, promotion, and an old
//! primary put back as a replica of the new one.

use std::sync::atomic::{AtomicU32, Ordering};

use std::process::Command;

use super::{MariaDbServer, MariaDbServerBuilder, MARIADB_PASSWORD, MARIADB_USER};
use crate::pg::run;
use crate::TestkitError;

/// A user with every privilege on the `aquifer` database and none that
/// lets it write past `read_only` (the `aquifer` user can: it has them
/// all), as an application connects. Its password is [`MARIADB_PASSWORD`].
/// Made by [`MariaDbServer::create_app_user`].
pub const MARIADB_APP_USER: &str = "app";

/// Binary log options for a server that replicates or is replicated from:
/// a server id no other test server has, GTIDs, the replica's applied
/// changes logged too, so that it can be promoted, and semi-synchronous
/// replication both ways (a commit is acknowledged once a connected
/// replica has it in its relay log; without one, at once), so that a
/// failover loses no acknowledged write.
pub(super) fn binlog_settings(settings: &mut Vec<(String, String)>) {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let id = (std::process::id() % 400_000) * 10_000 + NEXT.fetch_add(1, Ordering::Relaxed);
    for (k, v) in [
        ("log-bin", "mariadb-bin".to_owned()),
        ("server-id", id.to_string()),
        ("log-slave-updates", "ON".to_owned()),
        ("binlog-format", "ROW".to_owned()),
        ("rpl-semi-sync-master-enabled", "ON".to_owned()),
        ("rpl-semi-sync-slave-enabled", "ON".to_owned()),
        ("rpl-semi-sync-master-wait-point", "AFTER_SYNC".to_owned()),
        ("rpl-semi-sync-master-wait-no-slave", "OFF".to_owned()),
        ("rpl-semi-sync-master-timeout", "5000".to_owned()),
    ] {
        settings.push((k.to_owned(), v));
    }
}

impl MariaDbServerBuilder {
    /// Keeps a binary log with GTIDs (off by default: tests write faster
    /// without), as a primary must; [`MariaDbServer::start_replica`] turns
    /// it on for replicas.
    pub fn binlog(mut self) -> Self {
        self.binlog = true;
        self
    }
}

impl MariaDbServer {
    /// A replica of this server (which must keep a
    /// [`binlog`](MariaDbServerBuilder::binlog)): `read_only`, following it
    /// by GTID from the start of its binary log.
    ///
    /// # Errors
    /// As [`MariaDbServerBuilder::start`], or the server's refusal to
    /// replicate.
    pub fn start_replica(&self) -> Result<MariaDbServer, TestkitError> {
        let replica = MariaDbServer::builder()
            .max_connections(self.settings.max_connections)
            .binlog()
            .start()?;
        replica.replicate_from(self, "slave_pos")?;
        Ok(replica)
    }

    /// Puts this server (an old primary, running, stopped or killed) back
    /// as a `read_only` replica of `primary`: (re)started with
    /// `--init-rpl-role=SLAVE`, whose crash recovery rolls back and cuts
    /// from its binary log the transactions no replica acknowledged (they
    /// were never acknowledged to a client either, and the new primary
    /// does not have them), then following `primary` from its own GTID
    /// position.
    ///
    /// # Errors
    /// A start-up failure, or the server's refusal to replicate.
    pub fn follow(&mut self, primary: &MariaDbServer) -> Result<(), TestkitError> {
        if self.is_running() {
            self.stop()?;
        }
        self.settings
            .settings
            .push(("init-rpl-role".into(), "SLAVE".into()));
        let started = self.start();
        self.settings.settings.pop();
        started?;
        self.replicate_from(primary, "current_pos")
    }

    fn replicate_from(&self, primary: &MariaDbServer, position: &str) -> Result<(), TestkitError> {
        self.sql(&format!(
            "SET GLOBAL read_only = 1; \
             CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
             MASTER_USER = '{MARIADB_USER}', MASTER_PASSWORD = '{MARIADB_PASSWORD}', \
             MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = {position}; \
             START SLAVE",
            primary.port
        ))
        .map(drop)
    }

    /// Creates [`MARIADB_APP_USER`] and returns its URL of the `aquifer`
    /// database. On a primary, its replicas get the user too.
    ///
    /// # Errors
    /// As [`sql`](Self::sql).
    pub fn create_app_user(&self) -> Result<String, TestkitError> {
        self.sql(&format!(
            "CREATE USER IF NOT EXISTS '{MARIADB_APP_USER}'@'%' IDENTIFIED BY '{MARIADB_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON aquifer.* TO '{MARIADB_APP_USER}'@'%'; \
             GRANT SLAVE MONITOR ON *.* TO '{MARIADB_APP_USER}'@'%'"
        ))?;
        Ok(self.app_url())
    }

    /// The URL of the `aquifer` database as [`MARIADB_APP_USER`].
    pub fn app_url(&self) -> String {
        format!(
            "mysql://{MARIADB_APP_USER}:{MARIADB_PASSWORD}@127.0.0.1:{}/aquifer",
            self.port
        )
    }

    /// `@@read_only`.
    ///
    /// # Errors
    /// As [`sql`](Self::sql).
    pub fn is_read_only(&self) -> Result<bool, TestkitError> {
        Ok(self.sql("SELECT @@read_only")?.trim() == "1")
    }

    /// Waits until this replica has applied everything `primary` had
    /// logged when the call began (up to a minute).
    ///
    /// # Errors
    /// As [`sql`](Self::sql), or [`TestkitError::Command`] after a minute.
    pub fn wait_replayed(&self, primary: &MariaDbServer) -> Result<(), TestkitError> {
        let pos = primary.sql("SELECT @@gtid_binlog_pos")?;
        self.wait_applied(pos.trim())
    }

    /// Waits until `gtid_current_pos` covers `pos` in every domain (which,
    /// unlike `MASTER_GTID_WAIT`, counts this server's own writes from when
    /// it was a primary).
    fn wait_applied(&self, pos: &str) -> Result<(), TestkitError> {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let applied = self.sql("SELECT @@gtid_current_pos")?;
            if covers(applied.trim(), pos) {
                return Ok(());
            }
            if std::time::Instant::now() > give_up {
                return Err(TestkitError::Command {
                    command: "waiting for replication".into(),
                    message: format!("{pos} not applied after 60 s ({})", applied.trim()),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Stops applying replicated changes (`STOP SLAVE SQL_THREAD`): the
    /// replica keeps receiving them and falls behind.
    ///
    /// # Errors
    /// As [`sql`](Self::sql).
    pub fn stop_replica_sql(&self) -> Result<(), TestkitError> {
        self.sql("STOP SLAVE SQL_THREAD").map(drop)
    }

    /// Applies each replicated change `delay` after its primary made it
    /// (`MASTER_DELAY`, whole seconds): the replica keeps replicating,
    /// behind.
    ///
    /// # Errors
    /// As [`sql`](Self::sql).
    pub fn delay_replica(&self, delay: std::time::Duration) -> Result<(), TestkitError> {
        self.sql(&format!(
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = {}; START SLAVE",
            delay.as_secs()
        ))
        .map(drop)
    }

    /// Applies replicated changes again (`START SLAVE SQL_THREAD`).
    ///
    /// # Errors
    /// As [`sql`](Self::sql).
    pub fn start_replica_sql(&self) -> Result<(), TestkitError> {
        self.sql("START SLAVE SQL_THREAD").map(drop)
    }

    /// Promotes this replica: stops receiving, applies everything it
    /// received (so no acknowledged write is left in its relay log), then
    /// forgets its primary and takes writes (`STOP SLAVE; RESET SLAVE ALL;
    /// SET GLOBAL read_only = 0`).
    ///
    /// # Errors
    /// As [`sql`](Self::sql), or [`TestkitError::Command`] when what it
    /// received is not applied within a minute.
    pub fn promote(&self) -> Result<(), TestkitError> {
        self.sql("STOP SLAVE IO_THREAD")?;
        let status = run(Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "--batch", "-e", "SHOW SLAVE STATUS"]))?;
        let mut lines = status.lines();
        let (head, row) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        let received = head
            .split('\t')
            .position(|c| c == "Gtid_IO_Pos")
            .and_then(|i| row.split('\t').nth(i))
            .unwrap_or("");
        self.wait_applied(received)?;
        self.sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
            .map(drop)
    }
}

/// Whether GTID position `have` is at or past `want` in every domain of
/// `want` (positions are `domain-server-seq` lists).
fn covers(have: &str, want: &str) -> bool {
    let parse = |pos: &str| -> Vec<(u64, u64)> {
        pos.split(',')
            .filter_map(|g| {
                let mut f = g.trim().split('-');
                let domain = f.next()?.parse().ok()?;
                let seq = f.nth(1)?.parse().ok()?;
                Some((domain, seq))
            })
            .collect()
    };
    let have = parse(have);
    parse(want)
        .into_iter()
        .all(|(d, s)| have.iter().any(|&(hd, hs)| hd == d && hs >= s))
}
