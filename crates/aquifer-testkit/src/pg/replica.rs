//! Streaming replication between test servers: replicas from a base
//! backup, replay paused and resumed, promotion, and an old primary put
//! back as a standby of the new one.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{run, write_owned, PgServer, PgServerBuilder};
use crate::TestkitError;

/// How long replication helpers wait for a server to get where they want.
const PATIENCE: Duration = Duration::from_secs(60);

impl PgServerBuilder {
    /// Starts the server as a hot standby of `primary`, streaming its WAL:
    /// a base backup (`pg_basebackup -R -X stream`, which writes
    /// `standby.signal` and `primary_conninfo`) instead of the template.
    /// Its `max_connections` must be at least the primary's.
    pub fn replica_of(mut self, primary: &PgServer) -> Self {
        self.upstream = Some((primary.socket.clone(), primary.port));
        self
    }
}

/// `pg_basebackup` of the server on `socket`:`port` into `data`, run as
/// the server's owner.
pub(super) fn base_backup(
    bin: &Path,
    owner: Option<(u32, u32)>,
    socket: &Path,
    port: u16,
    data: &Path,
) -> Result<(), TestkitError> {
    let mut cmd = Command::new(bin.join("pg_basebackup"));
    cmd.arg("-h")
        .arg(socket)
        .arg("-p")
        .arg(port.to_string())
        .args([
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ])
        .arg("-D")
        .arg(data);
    as_owner(&mut cmd, owner);
    run(&mut cmd).map(drop)
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    cmd.env("LC_ALL", "C");
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}

impl PgServer {
    /// A hot standby of this server, with default settings.
    ///
    /// # Errors
    /// As [`PgServerBuilder::start`].
    pub fn start_replica(&self) -> Result<PgServer, TestkitError> {
        PgServer::builder()
            .max_connections(self.settings.max_connections)
            .replica_of(self)
            .start()
    }

    /// `pg_is_in_recovery()`: whether the server is a standby now.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn is_in_recovery(&self) -> Result<bool, TestkitError> {
        Ok(self.psql("SELECT pg_is_in_recovery()")? == "t")
    }

    /// Pauses WAL replay on this standby (`pg_wal_replay_pause()`): it
    /// keeps receiving WAL but applies none, so it falls behind.
    ///
    /// # Errors
    /// As [`psql`](Self::psql); on a primary, the server's refusal.
    pub fn pause_replay(&self) -> Result<(), TestkitError> {
        self.psql("SELECT pg_wal_replay_pause()").map(drop)
    }

    /// Resumes WAL replay (`pg_wal_replay_resume()`).
    ///
    /// # Errors
    /// As [`pause_replay`](Self::pause_replay).
    pub fn resume_replay(&self) -> Result<(), TestkitError> {
        self.psql("SELECT pg_wal_replay_resume()").map(drop)
    }

    /// Promotes this standby to a primary (`pg_promote()`) and waits until
    /// it takes writes.
    ///
    /// # Errors
    /// As [`psql`](Self::psql), or [`TestkitError::Command`] when the
    /// promotion did not finish within a minute.
    pub fn promote(&self) -> Result<(), TestkitError> {
        let done = self.psql("SELECT pg_promote(true, 60)")?;
        if done != "t" {
            return Err(TestkitError::Command {
                command: "pg_promote".into(),
                message: format!("the promotion did not finish within 60 s ({done:?})"),
            });
        }
        Ok(())
    }

    /// The WAL position inserted so far on a primary (committed or not yet
    /// flushed: test servers commit asynchronously), or replayed so far on
    /// a standby.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn wal_lsn(&self) -> Result<String, TestkitError> {
        self.psql(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE pg_current_wal_insert_lsn() END",
        )
    }

    /// Waits until this standby has replayed everything `primary` had
    /// written when the call began.
    ///
    /// # Errors
    /// As [`psql`](Self::psql), or [`TestkitError::Command`] after a minute.
    pub fn wait_replayed(&self, primary: &PgServer) -> Result<(), TestkitError> {
        let target = primary.wal_lsn()?;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        self.wait_for(&sql, "replaying the primary's WAL")
    }

    /// Puts this server (an old primary, stopped or running) back as a hot
    /// standby of `primary`: stops it, rewinds it onto the new timeline
    /// with `pg_rewind` (nothing to do when it never diverged), points it
    /// at `primary` and starts it.
    ///
    /// # Errors
    /// A failing `pg_rewind` with its message, or a start-up failure.
    pub fn follow(&mut self, primary: &PgServer) -> Result<(), TestkitError> {
        self.stop()?;
        // A primary just promoted has not written its new timeline to its
        // control file until a checkpoint; pg_rewind reads it there.
        primary.psql("CHECKPOINT")?;
        let source = format!(
            "host={} port={} user=postgres dbname=postgres",
            primary.socket.display(),
            primary.port
        );
        let mut cmd = Command::new(self.bin.join("pg_rewind"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg(format!("--source-server={source}"))
            .arg("--no-sync");
        as_owner(&mut cmd, self.owner);
        run(&mut cmd)?;
        // A rewind copies the source's configuration: this server's own
        // is written again, then it follows `primary`.
        self.write_conf()?;
        self.write_hba()?;
        let auto = format!("primary_conninfo = '{source}'\nrecovery_target_timeline = 'latest'\n");
        write_owned(&self.data.join("postgresql.auto.conf"), &auto, self.owner)?;
        write_owned(&self.data.join("standby.signal"), "", self.owner)?;
        self.start()?;
        self.wait_for("SELECT pg_is_in_recovery()", "starting as a standby")
    }

    /// Polls `sql` (one boolean) until it says `t`.
    fn wait_for(&self, sql: &str, what: &str) -> Result<(), TestkitError> {
        let give_up = Instant::now() + PATIENCE;
        loop {
            let last = self.psql(sql);
            if matches!(last.as_deref(), Ok("t")) {
                return Ok(());
            }
            if Instant::now() > give_up {
                return Err(TestkitError::Command {
                    command: what.to_owned(),
                    message: format!("not done after {PATIENCE:?}; last answer {last:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
