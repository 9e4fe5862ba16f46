//! What a PostgreSQL server is, for a replica set: `in_hot_standby` as the
//! server reports it, `pg_is_in_recovery()`, the timeline, and
//! `default_transaction_read_only`.

use std::time::Duration;

use aquifer::{Role, RoleCheck, RoleManager, RoleSignal, WriteToken};
use tokio_postgres::SimpleQueryMessage;

use crate::manager::{PgConnection, PgError, PgManager};

/// One round trip: whether the server is in recovery, whether it refuses
/// writes by default, and on a primary its timeline (the first eight hex
/// digits of its current WAL file's name); its position in the WAL in
/// bytes (written on a primary, replayed on a standby); on a standby how
/// far behind it is in time (zero when it replayed all it received, so an
/// idle primary is no lag) and whether its WAL receiver is streaming.
const CHECK: &str = "SELECT pg_is_in_recovery()::text, \
     current_setting('default_transaction_read_only'), \
     CASE WHEN pg_is_in_recovery() THEN '' \
     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text END, \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
     ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::text, \
     CASE WHEN NOT pg_is_in_recovery() THEN '' \
     WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN '0' \
     ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::text, '') END, \
     CASE WHEN pg_is_in_recovery() \
     THEN coalesce((SELECT status FROM pg_stat_wal_receiver), 'stopped') ELSE '' END, \
     (SELECT system_identifier FROM pg_control_system())::text, \
     CASE WHEN pg_is_in_recovery() THEN coalesce( \
     (SELECT received_tli FROM pg_stat_wal_receiver), \
     (SELECT timeline_id FROM pg_control_checkpoint()))::text ELSE '' END";

/// After a commit, on the same session: the system, the timeline and the
/// WAL insert position, which is at or past the commit's record.
const TOKEN: &str = "SELECT (SELECT system_identifier FROM pg_control_system())::text, \
     ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text, \
     (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text";

/// How often a standby is asked again while a read waits for a token.
const TOKEN_POLL: Duration = Duration::from_millis(5);

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
        let position = get(3).split('.').next().and_then(|b| b.parse::<u64>().ok());
        let behind = get(4)
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .map(|s| Duration::from_secs_f64(s.max(0.0)));
        let receiver = get(5);
        let system = get(6).parse::<u64>().ok();
        let standby_timeline = get(7).parse::<u64>().ok();
        let reported = match conn.status.hot_standby() {
            Some(on) => format!(", in_hot_standby = {}", if on { "on" } else { "off" }),
            None => String::new(),
        };
        let check = if recovery == "true" {
            let check = RoleCheck::new(
                Role::Standby,
                format!("pg_is_in_recovery() = t, WAL receiver {receiver}{reported}"),
            )
            .replicating(receiver == "streaming");
            let check = match standby_timeline {
                Some(t) => check.timeline(t),
                None => check,
            };
            match behind {
                Some(b) => check.behind(b),
                None => check,
            }
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
        };
        let check = match system {
            Some(id) => check.system(id),
            None => check,
        };
        Ok(match position {
            Some(p) => check.wal_position(p),
            None => check,
        })
    }

    async fn write_token(&self, conn: &mut PgConnection) -> Result<Option<WriteToken>, PgError> {
        let rows = conn.client().simple_query(TOKEN).await?;
        let row = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        });
        let get = |i| {
            row.and_then(|r| r.get(i))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Ok(match (get(0), get(1), get(2)) {
            (Some(system), Some(timeline), Some(lsn)) => {
                Some(WriteToken::wal(system, timeline, lsn))
            }
            _ => None,
        })
    }

    /// Polls `pg_last_wal_replay_lsn()` (PostgreSQL 15 has no `WAIT FOR
    /// LSN`) until it reaches the token or `wait` runs out.
    async fn wait_for_token(
        &self,
        conn: &mut PgConnection,
        token: &WriteToken,
        wait: Duration,
    ) -> Result<bool, PgError> {
        let Some(lsn) = token.lsn() else {
            // Not a PostgreSQL token: nothing here can have it.
            return Ok(false);
        };
        let give_up = tokio::time::Instant::now() + wait;
        let sql = format!(
            "SELECT coalesce(pg_last_wal_replay_lsn() - '0/0'::pg_lsn >= {lsn}, false)::text"
        );
        loop {
            let rows = conn.client().simple_query(&sql).await?;
            let done = rows
                .iter()
                .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("true")));
            if done {
                return Ok(true);
            }
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            tokio::time::sleep(TOKEN_POLL.min(left)).await;
        }
    }

    fn role_signal(&self) -> Option<&RoleSignal> {
        Some(&self.signal)
    }
}
