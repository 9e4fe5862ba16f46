//! What a MySQL/MariaDB server is, for a replica set: `@@read_only` and
//! whether it replicates; and the errors that say a server stopped taking
//! writes, seen on any statement a connection runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;

use aquifer::{Role, RoleCheck, RoleManager, RoleSignal, WriteToken};
use mysql_async::prelude::Queryable;
use mysql_async::Row;

use crate::manager::{MySqlConnection, MySqlError, MySqlManager};

/// Server errors that say this connection's writes will not be taken:
/// 1290 (`--read-only` refuses the statement), 1836 (read-only mode),
/// 1053 (the server is shutting down).
const EVIDENCE: [u16; 3] = [1290, 1836, 1053];

/// What one connection saw; shared by the connection and its
/// transactions' futures.
#[derive(Debug)]
pub(crate) struct Watch {
    signal: RoleSignal,
    refused: AtomicBool,
}

impl Watch {
    pub(crate) fn new(signal: RoleSignal) -> Self {
        Watch {
            signal,
            refused: AtomicBool::new(false),
        }
    }

    /// Whether an error said the server no longer takes this connection's
    /// writes: the pool evicts it.
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    pub(crate) fn see<T>(&self, result: &Result<T, mysql_async::Error>) {
        if let Err(mysql_async::Error::Server(e)) = result {
            // Counted once per connection: it is evicted after this.
            if EVIDENCE.contains(&e.code) && !self.refused.swap(true, Ordering::AcqRel) {
                self.signal
                    .refused(format!("MySQL error {}: {}", e.code, e.message));
            }
        }
    }
}

/// `fut`, with its error looked at.
pub(crate) fn watched<'a, T: Send + 'a>(
    watch: Arc<Watch>,
    fut: futures_core::future::BoxFuture<'a, Result<T, mysql_async::Error>>,
) -> futures_core::future::BoxFuture<'a, Result<T, mysql_async::Error>> {
    Box::pin(async move {
        let result = fut.await;
        watch.see(&result);
        result
    })
}

impl RoleManager for MySqlManager {
    /// A standby when replication is configured (`SHOW REPLICA STATUS`
    /// has a row, whatever `read_only` says: a writable replica must not
    /// take writes either); read-only when `@@read_only` is on; else the
    /// primary. A user without the privilege to see replica status is
    /// judged by `read_only` alone.
    async fn check_role(&self, pooled: &mut MySqlConnection) -> Result<RoleCheck, MySqlError> {
        let conn = pooled.raw_mut();
        let read_only: Option<u8> = conn
            .query_first("SELECT @@global.read_only")
            .await
            .map_err(MySqlError::Db)?;
        let read_only = read_only == Some(1);
        let replica: Option<Row> = match conn.query_first("SHOW REPLICA STATUS").await {
            Ok(row) => row,
            Err(mysql_async::Error::Server(_)) => None,
            Err(e) => return Err(MySqlError::Db(e)),
        };
        let ro = if read_only { 1 } else { 0 };
        // MariaDB's applied GTIDs, for tokens; MySQL has no such variable.
        let gtid: Option<String> = conn
            .query_first("SELECT @@global.gtid_current_pos")
            .await
            .ok()
            .flatten();
        let check = match replica {
            Some(row) => {
                let field = |names: [&str; 2]| {
                    names
                        .iter()
                        .find_map(|n| row.get_opt::<String, _>(*n).and_then(Result::ok))
                        .unwrap_or_default()
                };
                let host = field(["Master_Host", "Source_Host"]);
                let port = field(["Master_Port", "Source_Port"]);
                let io = field(["Slave_IO_Running", "Replica_IO_Running"]);
                let sql = field(["Slave_SQL_Running", "Replica_SQL_Running"]);
                // NULL while a thread is stopped: not replicating, never 0.
                let behind = ["Seconds_Behind_Master", "Seconds_Behind_Source"]
                    .iter()
                    .find_map(|n| row.get_opt::<Option<u64>, _>(*n).and_then(Result::ok))
                    .flatten();
                let check = RoleCheck::new(
                    Role::Standby,
                    format!(
                        "read_only = {ro}, replicating from {host}:{port} (io {io}, sql {sql})"
                    ),
                )
                .replicating(io == "Yes" && sql == "Yes");
                match behind {
                    Some(s) => check.behind(std::time::Duration::from_secs(s)),
                    None => check,
                }
            }
            None if read_only => RoleCheck::new(Role::ReadOnly, "read_only = 1, not replicating"),
            None => RoleCheck::new(Role::Primary, "read_only = 0, not replicating"),
        };
        Ok(match gtid {
            Some(g) => check.gtid(g),
            None => check,
        })
    }

    /// MariaDB: the session's `@@last_gtid`, or the server's whole
    /// `@@gtid_binlog_pos` when the session wrote nothing. `None` on MySQL.
    async fn write_token(
        &self,
        pooled: &mut MySqlConnection,
    ) -> Result<Option<WriteToken>, MySqlError> {
        let conn = pooled.raw_mut();
        let pos: Option<(String, String)> = match conn
            .query_first("SELECT @@last_gtid, @@gtid_binlog_pos")
            .await
        {
            Ok(row) => row,
            Err(mysql_async::Error::Server(_)) => return Ok(None),
            Err(e) => return Err(MySqlError::Db(e)),
        };
        Ok(pos.and_then(|(last, all)| {
            let pos = if last.is_empty() { all } else { last };
            WriteToken::gtid(&pos).ok()
        }))
    }

    /// `MASTER_GTID_WAIT` on the replica, up to `wait`.
    async fn wait_for_token(
        &self,
        pooled: &mut MySqlConnection,
        token: &WriteToken,
        wait: Duration,
    ) -> Result<bool, MySqlError> {
        let Some(pos) = token.gtid_position() else {
            return Ok(false);
        };
        let done: Option<i64> = pooled
            .raw_mut()
            .exec_first("SELECT MASTER_GTID_WAIT(?, ?)", (pos, wait.as_secs_f64()))
            .await
            .map_err(MySqlError::Db)?;
        Ok(done == Some(0))
    }

    fn role_signal(&self) -> Option<&RoleSignal> {
        Some(&self.signal)
    }
}
