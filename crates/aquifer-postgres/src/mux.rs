//! The multiplexer over tokio-postgres clients: many requests pipelined on
//! each shared connection. Statements that would change the session that
//! every request shares are refused before they are sent.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use aquifer::{Manager, Multiplexed, Multiplexer, MuxError};
use parking_lot::Mutex;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, SimpleQueryMessage, Statement};

use crate::config::PgConfigError;
use crate::manager::{describe, PgConnection, PgError, PgManager};
use crate::session::session_change;
use crate::statements::StatementCache;
use crate::wire::TxStatus;

/// Many requests pipelined over shared PostgreSQL connections. Build it
/// with [`Multiplexer::builder`]`(`[`PgMuxManager`]`)`, query it through
/// [`PgMuxExt`].
pub type PgMultiplexer = Multiplexer<PgMuxManager>;

/// Opens the multiplexer's connections with a [`PgManager`] (its URL, TLS,
/// timeouts, `after_connect`, `statement_cache_capacity` and
/// `prepared_statements` apply).
#[derive(Debug, Clone)]
pub struct PgMuxManager(PgManager, FreshSession);

/// The fingerprint of a session as it opens, once one has been read.
/// Sessions opened by the same manager without an `after_connect` hook
/// start alike (what the server, the role and the database set has other
/// sources than `session`), so one read serves every later open, and an
/// open costs no extra round trip; a fresh backend's first look at the
/// catalogs is slow, and a burst of opens would wait for it.
#[derive(Debug, Clone, Default)]
struct FreshSession(Arc<OnceLock<String>>);

impl PgMuxManager {
    /// A manager for `postgres://…` or a `key=value` connection string.
    ///
    /// # Errors
    /// [`PgConfigError`] naming the malformed part.
    pub fn new(url: &str) -> Result<Self, PgConfigError> {
        PgManager::new(url).map(Self::from)
    }

    /// The connection manager inside.
    pub fn inner(&self) -> &PgManager {
        &self.0
    }
}

impl From<PgManager> for PgMuxManager {
    fn from(m: PgManager) -> Self {
        Self(m, FreshSession::default())
    }
}

impl Manager for PgMuxManager {
    type Type = MuxConnection;
    type Error = PgError;

    async fn create(&self) -> Result<MuxConnection, PgError> {
        let conn = self.0.create().await?;
        let capacity = self.0.statement_capacity();
        // The session as it opened (after `after_connect`): what every
        // request may count on, and what the checks compare with.
        let fresh = &(self.1).0;
        let baseline = match fresh.get() {
            Some(b) if !self.0.has_after_connect() => b.clone(),
            _ => {
                let b = fingerprint(conn.client()).await?;
                if !self.0.has_after_connect() {
                    let _ = fresh.set(b.clone());
                }
                b
            }
        };
        Ok(MuxConnection {
            conn,
            prepared: self.0.uses_prepared_statements(),
            statements: Mutex::new(StatementCache::new(capacity)),
            types: Mutex::new(HashMap::new()),
            capacity,
            baseline,
            changed: AtomicBool::new(false),
        })
    }

    async fn validate(&self, c: &mut MuxConnection) -> Result<(), PgError> {
        self.0.validate(&mut c.conn).await
    }

    /// Closed; left inside a transaction (through the raw client), so that
    /// every request after it would run in that transaction; or its session
    /// found changed after a failed request.
    fn is_broken(&self, c: &MuxConnection) -> bool {
        c.conn.client().is_closed()
            || matches!(
                c.conn.transaction_status(),
                TxStatus::InTransaction | TxStatus::Failed
            )
            || c.changed.load(Ordering::Relaxed)
    }

    fn is_permanent(&self, e: &PgError) -> bool {
        self.0.is_permanent(e)
    }

    fn driver_name(&self) -> &'static str {
        "postgres"
    }

    fn server(&self) -> Option<String> {
        self.0.server()
    }
}

impl Multiplexed for PgMuxManager {
    /// Compares the session with how it opened: settings set for the
    /// session, listened channels, session advisory locks, cursors held
    /// past their transaction, prepared statements made with SQL, and
    /// temporary tables. A function of the user's can change any of them
    /// where the statement text does not show it.
    async fn session_changed(&self, c: &MuxConnection) -> bool {
        c.recheck().await
    }
}

/// One row, one text: the parts of a session that a statement can leave
/// behind for the next request. The parameters a pooler such as PgBouncer
/// sets on each server connection it hands over are left out.
const FINGERPRINT: &str = "SELECT concat_ws('|', \
    (SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings \
        WHERE source = 'session' AND name NOT IN ('application_name', 'client_encoding', \
        'DateStyle', 'TimeZone', 'standard_conforming_strings', 'IntervalStyle')), \
    (SELECT count(*) FROM pg_listening_channels()), \
    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), \
    (SELECT count(*) FROM pg_cursors WHERE is_holdable), \
    (SELECT count(*) FROM pg_prepared_statements WHERE from_sql), \
    (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()))";

async fn fingerprint(client: &Client) -> Result<String, PgError> {
    let rows = client.simple_query(FINGERPRINT).await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}

/// A connection that many requests share. Its methods refuse statements
/// that change the session ([`PgMuxError::SessionState`]) and prepare each
/// statement once per connection.
pub struct MuxConnection {
    conn: PgConnection,
    prepared: bool,
    statements: Mutex<StatementCache>,
    /// Parameter types per statement, when named statements are off.
    types: Mutex<HashMap<String, Arc<[Type]>>>,
    capacity: usize,
    /// The session's fingerprint when it opened.
    baseline: String,
    /// The session was found changed: the connection is retired.
    changed: AtomicBool,
}

/// A parameter list, as tokio-postgres takes it.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl MuxConnection {
    /// The client, unchecked: what it sends is not looked at, so a
    /// statement that changes the session reaches every request that
    /// shares the connection. Prefer the checked methods.
    pub fn client(&self) -> &Client {
        self.conn.client()
    }

    /// Runs a statement and returns its rows.
    ///
    /// # Errors
    /// [`PgMuxError`]; see [`PgMuxError::may_have_run`].
    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, PgMuxError> {
        self.query_checked(check(sql)?, params).await
    }

    async fn query_checked(
        &self,
        Checked(sql): Checked<'_>,
        params: Params<'_>,
    ) -> Result<Vec<Row>, PgMuxError> {
        let client = self.client();
        let sent_closed = client.is_closed();
        let result = if self.prepared {
            let st = self.statement(sql).await?;
            client.query(&st, params).await
        } else {
            let typed = self.typed(sql, params).await?;
            client.query_typed(sql, &typed).await
        }
        .map_err(|e| PgMuxError::sent(e, sent_closed));
        self.watch(result).await
    }

    /// Runs a statement that returns exactly one row.
    ///
    /// # Errors
    /// As [`query`](MuxConnection::query), and when it returns another
    /// number of rows.
    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, PgMuxError> {
        self.query_one_checked(check(sql)?, params).await
    }

    async fn query_one_checked(
        &self,
        sql: Checked<'_>,
        params: Params<'_>,
    ) -> Result<Row, PgMuxError> {
        let mut rows = self.query_checked(sql, params).await?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            n => Err(PgMuxError::RowCount(n)),
        }
    }

    /// Runs a statement and returns how many rows it changed.
    ///
    /// # Errors
    /// As [`query`](MuxConnection::query).
    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, PgMuxError> {
        self.execute_checked(check(sql)?, params).await
    }

    async fn execute_checked(
        &self,
        Checked(sql): Checked<'_>,
        params: Params<'_>,
    ) -> Result<u64, PgMuxError> {
        let client = self.client();
        let sent_closed = client.is_closed();
        let result = if self.prepared {
            let st = self.statement(sql).await?;
            client.execute(&st, params).await
        } else {
            let typed = self.typed(sql, params).await?;
            client.execute_typed(sql, &typed).await
        }
        .map_err(|e| PgMuxError::sent(e, sent_closed));
        self.watch(result).await
    }

    /// Runs statements given as text, without parameters, in one round
    /// trip (several statements separated by `;` run as one implicit
    /// transaction).
    ///
    /// # Errors
    /// As [`query`](MuxConnection::query).
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, PgMuxError> {
        self.simple_query_checked(check(sql)?).await
    }

    async fn simple_query_checked(
        &self,
        Checked(sql): Checked<'_>,
    ) -> Result<Vec<SimpleQueryMessage>, PgMuxError> {
        let client = self.client();
        let sent_closed = client.is_closed();
        let result = client
            .simple_query(sql)
            .await
            .map_err(|e| PgMuxError::sent(e, sent_closed));
        self.watch(result).await
    }

    /// Whether the session differs from how it opened (checked now, on
    /// the connection, pipelined with its requests). Once changed it stays
    /// changed; a check that fails leaves the answer to `is_broken`.
    async fn recheck(&self) -> bool {
        if !self.changed.load(Ordering::Relaxed) {
            let changed = match fingerprint(self.client()).await {
                Ok(now) => now != self.baseline,
                // The server refused a read of its own catalogs: a session
                // that cannot run it (a 1 ms statement_timeout, a role
                // without rights) is not the one requests expect.
                Err(PgError::Db(e)) => e.as_db_error().is_some(),
                Err(_) => false,
            };
            if changed {
                self.changed.store(true, Ordering::Relaxed);
            }
        }
        self.changed.load(Ordering::Relaxed)
    }

    /// A statement the server failed may have left something behind (a
    /// session lock taken before the error survives the rollback): the
    /// session is checked before the error goes back, and a changed one
    /// retires the connection when this request gives its slot back.
    async fn watch<T>(&self, result: Result<T, PgMuxError>) -> Result<T, PgMuxError> {
        if let Err(PgMuxError::Db(_)) = &result {
            if self.recheck().await {
                tracing::warn!(
                    target: "aquifer::mux",
                    "a failed statement left the shared session changed; the connection is retired and replaced"
                );
            }
        }
        result
    }

    /// Statements prepared on this connection now.
    pub fn cached_statements(&self) -> usize {
        self.statements.lock().len()
    }

    async fn statement(&self, sql: &str) -> Result<Statement, PgMuxError> {
        if let Some(st) = self.statements.lock().get(sql) {
            return Ok(st);
        }
        // Two requests may prepare the same text at once; the second
        // insert replaces the first, whose drop closes it on the server.
        let st = self
            .client()
            .prepare(sql)
            .await
            .map_err(PgMuxError::preparing)?;
        self.statements.lock().insert(sql, st.clone());
        Ok(st)
    }

    /// The parameters with their types, learnt once per statement text
    /// from a statement prepared and closed at once: each request then goes
    /// as one unnamed round trip, which a pooler in transaction mode keeps
    /// on one server connection.
    async fn typed<'p>(
        &self,
        sql: &str,
        params: Params<'p>,
    ) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>, PgMuxError> {
        let known = self.types.lock().get(sql).cloned();
        let types = match known {
            Some(t) => t,
            None if params.is_empty() => Arc::from([]),
            None => {
                let st = self
                    .client()
                    .prepare(sql)
                    .await
                    .map_err(PgMuxError::preparing)?;
                let t: Arc<[Type]> = st.params().into();
                let mut map = self.types.lock();
                if map.len() >= self.capacity.max(1) {
                    map.clear();
                }
                map.insert(sql.to_owned(), Arc::clone(&t));
                t
            }
        };
        Ok(params.iter().copied().zip(types.iter().cloned()).collect())
    }
}

impl fmt::Debug for MuxConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxConnection")
            .field("closed", &self.client().is_closed())
            .field("cached_statements", &self.cached_statements())
            .finish()
    }
}

/// Statement text that passed the session check.
#[derive(Clone, Copy)]
struct Checked<'a>(&'a str);

fn check(sql: &str) -> Result<Checked<'_>, PgMuxError> {
    match session_change(sql) {
        Some(statement) => Err(PgMuxError::SessionState { statement }),
        None => Ok(Checked(sql)),
    }
}

/// Why a multiplexed statement failed, and whether it may have run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgMuxError {
    /// The statement would change the session state that every request on
    /// the connection shares (a transaction, a setting, a listener, a
    /// prepared statement, a temporary table, a session lock): it was not
    /// sent.
    #[error("`{statement}` changes the session state that the multiplexer shares between requests, so it was not sent: run it on a connection from the exclusive pool (`PgPool`)")]
    SessionState {
        /// The words that change it.
        statement: String,
    },
    /// No connection could take the request; it was not sent.
    #[error("no multiplexed connection")]
    Unavailable(#[from] MuxError<PgError>),
    /// The connection broke. The message spells out tokio-postgres's
    /// causes, so it returns none as `source()`.
    #[error("the connection was lost {}: {}", if *.may_have_run { "after the statement was sent (it may have run)" } else { "before the statement was sent (it did not run)" }, describe(.error))]
    ConnectionLost {
        /// `false` only when the statement is known not to have reached
        /// the server (the connection was closed before, or broke while
        /// the statement was being prepared).
        may_have_run: bool,
        /// The driver's error.
        error: tokio_postgres::Error,
    },
    /// The server refused or failed the statement; it ran as a
    /// transaction of its own, rolled back. The message spells out the
    /// server's words.
    #[error("{}", describe(.0))]
    Db(tokio_postgres::Error),
    /// `query_one` got another number of rows than one.
    #[error("expected one row, got {0}")]
    RowCount(usize),
}

impl PgMuxError {
    /// Whether the statement may have taken effect on the server. `false`
    /// means retrying cannot run it twice.
    pub fn may_have_run(&self) -> bool {
        matches!(
            self,
            PgMuxError::ConnectionLost {
                may_have_run: true,
                ..
            }
        )
    }

    /// The server's own error (SQLSTATE, message, detail), if it sent one.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            PgMuxError::Db(e) | PgMuxError::ConnectionLost { error: e, .. } => e.as_db_error(),
            _ => None,
        }
    }

    fn lost(e: &tokio_postgres::Error) -> bool {
        e.is_closed()
            || e.as_db_error().is_some_and(|db| {
                matches!(db.severity(), "FATAL" | "PANIC") || db.code().code().starts_with("08")
            })
            || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
    }

    /// A failure of the statement itself; `closed_before` when the client
    /// was closed before it was handed the statement.
    fn sent(e: tokio_postgres::Error, closed_before: bool) -> Self {
        if Self::lost(&e) {
            PgMuxError::ConnectionLost {
                may_have_run: !closed_before,
                error: e,
            }
        } else {
            PgMuxError::Db(e)
        }
    }

    /// A failure while preparing: the statement itself was not sent.
    fn preparing(e: tokio_postgres::Error) -> Self {
        if Self::lost(&e) {
            PgMuxError::ConnectionLost {
                may_have_run: false,
                error: e,
            }
        } else {
            PgMuxError::Db(e)
        }
    }
}

/// Queries straight on a [`PgMultiplexer`]: each takes a slot, runs one
/// checked statement and gives the slot back.
///
/// ```no_run
/// use aquifer_postgres::{PgMultiplexer, PgMuxExt, PgMuxManager};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mux = PgMultiplexer::builder(PgMuxManager::new("postgres://app@localhost/app")?)
///     .min(2)
///     .max(16)
///     .build()?;
/// let row = mux.query_one("SELECT $1::int + 1", &[&41i32]).await?;
/// assert_eq!(row.get::<_, i32>(0), 42);
/// # Ok(())
/// # }
/// ```
pub trait PgMuxExt {
    /// See [`MuxConnection::query`].
    ///
    /// # Errors
    /// [`PgMuxError`].
    fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Vec<Row>, PgMuxError>> + Send;

    /// See [`MuxConnection::query_one`].
    ///
    /// # Errors
    /// [`PgMuxError`].
    fn query_one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Row, PgMuxError>> + Send;

    /// See [`MuxConnection::execute`].
    ///
    /// # Errors
    /// [`PgMuxError`].
    fn execute(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<u64, PgMuxError>> + Send;

    /// See [`MuxConnection::simple_query`].
    ///
    /// # Errors
    /// [`PgMuxError`].
    fn simple_query(
        &self,
        sql: &str,
    ) -> impl Future<Output = Result<Vec<SimpleQueryMessage>, PgMuxError>> + Send;
}

impl PgMuxExt for PgMultiplexer {
    async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, PgMuxError> {
        let sql = check(sql)?;
        self.lease().await?.query_checked(sql, params).await
    }

    async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, PgMuxError> {
        let sql = check(sql)?;
        self.lease().await?.query_one_checked(sql, params).await
    }

    async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, PgMuxError> {
        let sql = check(sql)?;
        self.lease().await?.execute_checked(sql, params).await
    }

    async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, PgMuxError> {
        let sql = check(sql)?;
        self.lease().await?.simple_query_checked(sql).await
    }
}
