//! What a PostgreSQL server is, for a replica set: `in_hot_standby` as the
//! server reports it, `pg_is_in_recovery()`, the timeline, and
//! `default_transaction_read_only`.

use aquifer::{Role, RoleCheck, RoleManager, RoleSignal};
use tokio_postgres::SimpleQueryMessage;

use crate::manager::{PgConnection, PgError, PgManager};

/// One round trip: whether the server is in recovery, whether it refuses
/// writes by default, and on a primary its timeline (the first eight hex
/// digits of its current WAL file's name).
const CHECK: &str = "SELECT pg_is_in_recovery()::text, \
     current_setting('default_transaction_read_only'), \
     CASE WHEN pg_is_in_recovery() THEN '' \
     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text END";

impl RoleManager for PgManager {
    /// A standby when `pg_is_in_recovery()`; read-only when
    /// `default_transaction_read_only` is on; else the primary, with its
    /// timeline. The evidence names what the server said, with
    /// `in_hot_standby` when it reports it.
    async fn check_role(&self, conn: &mut PgConnection) -> Result<RoleCheck, PgError> {
        let rows = conn.client().simple_query(CHECK).await?;
        let row = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        });
        let get = |i| row.and_then(|r| r.get(i)).unwrap_or("");
        let (recovery, read_only, timeline) = (get(0), get(1), get(2));
        let reported = match conn.status.hot_standby() {
            Some(on) => format!(", in_hot_standby = {}", if on { "on" } else { "off" }),
            None => String::new(),
        };
        Ok(if recovery == "true" {
            RoleCheck::new(Role::Standby, format!("pg_is_in_recovery() = t{reported}"))
        } else if read_only == "on" {
            RoleCheck::new(
                Role::ReadOnly,
                format!("default_transaction_read_only = on{reported}"),
            )
        } else {
            let check = RoleCheck::new(
                Role::Primary,
                format!("pg_is_in_recovery() = f, timeline {timeline}{reported}"),
            );
            match timeline.parse() {
                Ok(t) => check.timeline(t),
                Err(_) => check,
            }
        })
    }

    fn role_signal(&self) -> Option<&RoleSignal> {
        Some(&self.signal)
    }
}
