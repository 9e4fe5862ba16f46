//! The aquifer [`Manager`] for tokio-postgres connections.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aquifer::Manager;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use crate::config::{self, PgConfigError};
use crate::statements::StatementCache;
use crate::wire::{self, TxStatus, WireWatch};

/// A boxed, `Send` future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs on every new connection before the pool hands it out.
pub type AfterConnect = Arc<
    dyn for<'c> Fn(&'c Client) -> BoxFuture<'c, Result<(), tokio_postgres::Error>> + Send + Sync,
>;

/// Why a connection could not be made or checked. The message never holds
/// the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The server or the network said no (refused, wrong password, unknown
    /// database, connection closed…). tokio-postgres's own message is
    /// terse ("db error"), so this one spells out its causes (the server's
    /// words) and returns none as `source()`: each is named once.
    #[error("{}", describe(.0))]
    Db(tokio_postgres::Error),
    /// The health-check round trip did not come back in time.
    #[error("the health check got no answer within {}", aquifer::human_duration(*.0))]
    CheckTimeout(Duration),
    /// The `after_connect` hook failed; the connection was dropped.
    #[error("after_connect failed: {}", describe(.0))]
    AfterConnect(tokio_postgres::Error),
    /// No host could be reached (refused, unreachable, timed out).
    #[error("could not connect to {target}")]
    Connect {
        /// `host:port/db`.
        target: String,
        /// The last host's error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS connector could not be set up for this host.
    #[error("TLS setup failed: {0}")]
    TlsSetup(String),
    /// After the reset on return the server did not report the session
    /// idle; the connection is closed rather than handed on.
    #[error("the reset on return left the session {0:?}; the connection was closed")]
    ResetIncomplete(TxStatus),
    /// `target_session_attrs=read-write` and the server only allows reads
    /// (a standby, or `default_transaction_read_only`).
    #[error("{target} does not allow writes (target_session_attrs=read-write)")]
    ReadOnly {
        /// `host:port/db` of the configuration.
        target: String,
    },
}

/// tokio-postgres's own message is terse ("db error"); this adds its causes
/// ("db error: FATAL: password authentication failed for user …").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl PgError {
    /// The server's own error, if it sent one (SQLSTATE, message, detail).
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            PgError::Db(e) | PgError::AfterConnect(e) => e.as_db_error(),
            PgError::CheckTimeout(_)
            | PgError::ResetIncomplete(_)
            | PgError::Connect { .. }
            | PgError::TlsSetup(_)
            | PgError::ReadOnly { .. } => None,
        }
    }
}

/// What a returned connection goes through before it is reused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResetMode {
    /// Clean up only connections that need it, as read off the wire: a
    /// request sent (or still queued in the client) whose answer has not
    /// all come back, as when a query future is dropped or times out; a
    /// transaction open or failed, by the server's last ReadyForQuery; a
    /// transaction helper cancelled mid-way; or
    /// [`PgConnection::mark_dirty`]. Such a connection gets a `ROLLBACK`,
    /// which the server answers after everything sent before it, and is
    /// handed on only once the server says it is idle. Costs nothing for a
    /// connection at rest. Session state that is not a transaction
    /// (`SET`, temporary tables, prepared statements, advisory locks,
    /// `LISTEN`) is kept for the next borrower: use
    /// `ResetMode::Query("DISCARD ALL".into())` to clear it. The default.
    #[default]
    IfDirty,
    /// `ROLLBACK` on every return. One round trip per checkout.
    Rollback,
    /// `ROLLBACK`, then this query (e.g. `DISCARD ALL`, as PgBouncer's
    /// `server_reset_query`) on every return. The statement cache is
    /// cleared, since the server may have dropped its statements.
    Query(String),
}

/// How connections are made: in the clear, or over rustls.
#[derive(Clone)]
enum Connector {
    Plain,
    #[cfg(feature = "tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Drives a connection's I/O until it ends, telling `status` what it does.
fn spawn_driver<F>(connection: F, status: WireWatch)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    let driver = wire::Driver::new(Box::pin(connection), status);
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(target: "aquifer::postgres", error = %describe(&e), "connection ended");
        }
    });
}

/// Makes, checks, resets and closes PostgreSQL connections for an
/// [`aquifer::Pool`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = aquifer_postgres::PgManager::new("postgres://app:secret@localhost/app")?
///     .statement_cache_capacity(256);
/// let pool = aquifer_postgres::PgPool::builder(manager).max(16).build()?;
/// let conn = pool.get().await?;
/// let row = conn.query_one("SELECT 1::int4", &[]).await?;
/// assert_eq!(row.get::<_, i32>(0), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgManager {
    config: tokio_postgres::Config,
    connector: Connector,
    check_query: String,
    check_timeout: Duration,
    reset: ResetMode,
    statement_cache_capacity: usize,
    prepared_statements: bool,
    after_connect: Option<AfterConnect>,
    /// Raised by its connections on signs of a role change.
    pub(crate) signal: aquifer::RoleSignal,
}

impl fmt::Debug for PgManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgManager")
            .field("target", &config::target(&self.config))
            .field("user", &self.config.get_user())
            .field(
                "tls",
                &match self.connector {
                    Connector::Plain => "none",
                    #[cfg(feature = "tls")]
                    Connector::Rustls(_) => "rustls",
                },
            )
            .field("check_timeout", &self.check_timeout)
            .field("reset", &self.reset)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("prepared_statements", &self.prepared_statements)
            .finish_non_exhaustive()
    }
}

impl PgManager {
    /// A manager for `postgres://user:password@host:port/db?…` or a
    /// `key=value` connection string.
    ///
    /// # Errors
    /// [`PgConfigError`] naming the malformed part.
    pub fn new(url: &str) -> Result<Self, PgConfigError> {
        let (cfg, wanted) = config::parse_with_tls(url)?;
        let manager = Self::from_config(cfg);
        // libpq's `sslmode` (`require`, `verify-ca`, `verify-full`) and
        // `sslrootcert`; without the `tls` feature the parse refused them,
        // saying so.
        #[cfg(feature = "tls")]
        if wanted != config::TlsWanted::None {
            return crate::tls::for_url(&wanted)
                .map(|c| manager.tls_config(c))
                .map_err(|e| config::invalid("option", aquifer::error_chain(&e)));
        }
        let _ = wanted;
        Ok(manager)
    }

    /// A manager for a tokio-postgres configuration. Without an
    /// `application_name` it is set to `aquifer`, so the pool's sessions are
    /// easy to find in `pg_stat_activity`.
    pub fn from_config(mut config: tokio_postgres::Config) -> Self {
        if config.get_application_name().is_none() {
            config.application_name("aquifer");
        }
        Self {
            config,
            connector: Connector::Plain,
            check_query: String::new(),
            check_timeout: Duration::from_secs(2),
            reset: ResetMode::default(),
            statement_cache_capacity: 100,
            prepared_statements: true,
            after_connect: None,
            signal: aquifer::RoleSignal::new(),
        }
    }

    /// The query the health check sends. Default: the empty query, one round
    /// trip with no work for the server.
    #[must_use]
    pub fn check_query(mut self, sql: &str) -> Self {
        self.check_query = sql.to_owned();
        self
    }

    /// How long the health check may take. Default 2 s.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// TCP connect timeout (per host). Default none: the pool's
    /// `create_timeout` bounds the whole connect.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout(timeout);
        self
    }

    /// What a returned connection goes through. Default [`ResetMode::IfDirty`].
    #[must_use]
    pub fn reset(mut self, mode: ResetMode) -> Self {
        self.reset = mode;
        self
    }

    /// Most prepared statements kept per connection by
    /// [`PgConnection::prepare_cached`]; the least recently used goes first.
    /// 0 turns the cache off. Default 100.
    #[must_use]
    pub fn statement_cache_capacity(mut self, n: usize) -> Self {
        self.statement_cache_capacity = n;
        self
    }

    /// Whether named server-side prepared statements may be kept across
    /// transactions. Turn it off behind PgBouncer in transaction pooling
    /// mode (before 1.21, or without `max_prepared_statements`), where the
    /// next statement may run on another server connection:
    /// `prepare_cached` then caches nothing, and the pool's query helpers
    /// send statements without parameters as one unnamed round trip and run
    /// those with parameters inside a transaction of their own, which keeps
    /// them on one server connection. Default `true`.
    #[must_use]
    pub fn prepared_statements(mut self, on: bool) -> Self {
        self.prepared_statements = on;
        self
    }

    /// Runs `hook` on every new connection, e.g. to set `search_path`. A
    /// failure drops the connection and counts as a failed create.
    #[must_use]
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(&'c Client) -> BoxFuture<'c, Result<(), tokio_postgres::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.after_connect = Some(Arc::new(hook));
        self
    }

    /// Encrypts every connection and verifies the server's certificate
    /// against the CA certificates in `ca_pem` and its host name (libpq's
    /// `verify-full`). A server that does not offer TLS is an error, never a
    /// fallback to plain text.
    ///
    /// # Errors
    /// [`TlsError`](crate::TlsError) when `ca_pem` holds no usable certificate.
    #[cfg(feature = "tls")]
    pub fn tls_verified(self, ca_pem: &[u8]) -> Result<Self, crate::TlsError> {
        Ok(self.tls_config(crate::tls::verified(ca_pem)?))
    }

    /// Encrypts every connection but accepts any server certificate (libpq's
    /// `sslmode=require`): it stops eavesdropping, not an active attacker.
    ///
    /// # Errors
    /// [`TlsError`](crate::TlsError) when rustls refuses the setup.
    #[cfg(feature = "tls")]
    pub fn tls_unverified(self) -> Result<Self, crate::TlsError> {
        Ok(self.tls_config(crate::tls::unverified()?))
    }

    /// Encrypts every connection with a rustls configuration of your own.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.config
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        self.connector = Connector::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config));
        self
    }

    /// The connection settings (the password stays redacted in `Debug`).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// `host:port/db`, for messages.
    pub fn target(&self) -> String {
        config::target(&self.config)
    }

    pub(crate) fn uses_prepared_statements(&self) -> bool {
        self.prepared_statements
    }

    /// Whether an `after_connect` hook runs on each new connection.
    pub(crate) fn has_after_connect(&self) -> bool {
        self.after_connect.is_some()
    }

    pub(crate) fn statement_capacity(&self) -> usize {
        self.statement_cache_capacity
    }

    async fn connect_host(&self, i: usize) -> Result<PgConnection, PgError> {
        // The host name is only needed for TLS (SNI and verification).
        #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
        let (socket, host) =
            wire::open_host(&self.config, i)
                .await
                .map_err(|source| PgError::Connect {
                    target: self.target(),
                    source,
                })?;
        let status = WireWatch::with_signal(self.signal.clone());
        let client = match &self.connector {
            Connector::Plain => {
                let watched = wire::Watched::new(socket, status.clone());
                let (client, connection) = self.config.connect_raw(watched, NoTls).await?;
                spawn_driver(connection, status.clone());
                client
            }
            #[cfg(feature = "tls")]
            Connector::Rustls(make) => {
                use tokio_postgres::tls::MakeTlsConnect;
                let tls =
                    MakeTlsConnect::<wire::Socket>::make_tls_connect(&mut make.clone(), &host)
                        .map_err(|e| PgError::TlsSetup(e.to_string()))?;
                let watched = wire::WatchedTls {
                    inner: tls,
                    status: status.clone(),
                };
                let (client, connection) = self.config.connect_raw(socket, watched).await?;
                spawn_driver(connection, status.clone());
                client
            }
        };
        if self.config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
            let read_only = client
                .simple_query("SHOW transaction_read_only")
                .await?
                .iter()
                .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("on")));
            if read_only {
                return Err(PgError::ReadOnly {
                    target: self.target(),
                });
            }
        }
        if let Some(hook) = &self.after_connect {
            hook(&client).await.map_err(PgError::AfterConnect)?;
        }
        let capacity = if self.prepared_statements {
            self.statement_cache_capacity
        } else {
            0
        };
        Ok(PgConnection {
            client,
            statements: StatementCache::new(capacity),
            dirty: false,
            status,
        })
    }
}

impl Manager for PgManager {
    type Type = PgConnection;
    type Error = PgError;

    /// Tries each host of the configuration in turn, as libpq and
    /// tokio-postgres do, and returns the first connection that works (and
    /// allows writes, when `target_session_attrs=read-write`), or the last
    /// host's error.
    async fn create(&self) -> Result<PgConnection, PgError> {
        let mut last = None;
        for i in 0..wire::host_count(&self.config) {
            match self.connect_host(i).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    tracing::debug!(target: "aquifer::postgres", host = i, error = %e, "host skipped");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("there is at least one host"))
    }

    async fn validate(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        match tokio::time::timeout(
            self.check_timeout,
            conn.client.simple_query(&self.check_query),
        )
        .await
        {
            Ok(r) => r.map(drop).map_err(PgError::Db),
            Err(_) => Err(PgError::CheckTimeout(self.check_timeout)),
        }
    }

    /// A wrong password or role (SQLSTATE class 28), a database that does
    /// not exist (3D000), a TLS setup that cannot work, a server without
    /// TLS when TLS is required, or a certificate that does not verify:
    /// waiting does not fix these.
    fn is_permanent(&self, error: &PgError) -> bool {
        match error {
            PgError::TlsSetup(_) => return true,
            // tokio-postgres gives these no kind of their own: its message
            // and the cause's words are all there is.
            PgError::Db(e) if e.as_db_error().is_none() => {
                let text = describe(e);
                if text.starts_with("error performing TLS handshake")
                    && (text.contains("server does not support TLS")
                        || text.contains("certificate"))
                {
                    return true;
                }
            }
            _ => {}
        }
        error.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            code.starts_with("28") || code == "3D000"
        })
    }

    fn driver_name(&self) -> &'static str {
        "postgres"
    }

    fn server(&self) -> Option<String> {
        Some(config::target(&self.config))
    }

    /// Closed, or it read an error saying its server refuses writes or is
    /// shutting down (`25006`, `57P01`, `57P02`): such a connection is
    /// evicted rather than handed out again.
    fn is_broken(&self, conn: &PgConnection) -> bool {
        conn.client.is_closed() || conn.status.refused()
    }

    fn needs_reset(&self, conn: &mut PgConnection) -> bool {
        if conn.dirty || self.reset != ResetMode::IfDirty {
            return true;
        }
        conn.status.help_write();
        !conn.status.at_rest()
    }

    /// Waits until every request of the last borrower's is on the wire and
    /// answered, then rolls back if the server says a transaction is open
    /// (or the mode asks for it).
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        // A read-only transaction dropped mid-way leaves its mark.
        conn.status.intend_read_only(false);
        conn.status.settle().await;
        if self.reset == ResetMode::IfDirty && !conn.dirty && conn.status.at_rest() {
            return Ok(());
        }
        // Outside a transaction this only draws a warning from the server.
        conn.client.batch_execute("ROLLBACK").await?;
        if let ResetMode::Query(sql) = &self.reset {
            conn.client.batch_execute(sql).await?;
            conn.statements.clear();
        }
        // What the server said last, not what was sent.
        let status = conn.status.get();
        if status != TxStatus::Idle {
            return Err(PgError::ResetIncomplete(status));
        }
        conn.dirty = false;
        Ok(())
    }
}

/// A pooled PostgreSQL connection: a tokio-postgres [`Client`] (it derefs to
/// one) with a bounded prepared-statement cache.
pub struct PgConnection {
    client: Client,
    statements: StatementCache,
    dirty: bool,
    pub(crate) status: WireWatch,
}

impl PgConnection {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Prepares `sql` once per connection and reuses the statement; the
    /// least recently used statement is closed past the cache's capacity.
    ///
    /// # Errors
    /// The server's error when `sql` does not prepare.
    pub async fn prepare_cached(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st);
        }
        let st = self.client.prepare(sql).await?;
        self.statements.insert(sql, st.clone());
        Ok(st)
    }

    /// Statements in the cache now.
    pub fn cached_statements(&self) -> usize {
        self.statements.len()
    }

    /// Makes the pool roll the connection back when it comes back, e.g.
    /// after a raw `BEGIN`.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether the connection will be rolled back on return: marked dirty,
    /// a request not yet answered, or the server last said it is inside a
    /// transaction.
    pub fn is_dirty(&self) -> bool {
        self.dirty || !self.status.at_rest()
    }

    /// The transaction status the server reported after the last statement
    /// (read off the wire, at no cost).
    pub fn transaction_status(&self) -> TxStatus {
        self.status.get()
    }

    /// Forgets a dirty mark, once a transaction ended cleanly.
    pub(crate) fn clean(&mut self) {
        self.dirty = false;
    }
}

impl Deref for PgConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnection")
            .field("closed", &self.client.is_closed())
            .field("cached_statements", &self.statements.len())
            .field("dirty", &self.dirty)
            .finish()
    }
}
