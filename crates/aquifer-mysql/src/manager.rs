//! The aquifer [`Manager`] for mysql_async connections.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aquifer::Manager;
use mysql_async::consts::StatusFlags;
use mysql_async::prelude::{AsQuery, Queryable, StatementLike};
use mysql_async::{
    BinaryProtocol, Conn, Opts, OptsBuilder, Params, QueryResult, Statement, TextProtocol,
    Transaction, TxOpts,
};

use crate::config::{self, MySqlConfigError};

/// A boxed, `Send` future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs on every new connection (and again after a
/// [`ResetMode::Connection`] reset, which clears session state) before the
/// pool hands it out.
pub type AfterConnect = Arc<
    dyn for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<(), mysql_async::Error>> + Send + Sync,
>;

/// Why a connection could not be made or checked. The message never holds
/// the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MySqlError {
    /// The URL is malformed.
    #[error(transparent)]
    Config(#[from] MySqlConfigError),
    /// No connection could be made to `target` (refused, unreachable,
    /// wrong password, unknown database…); the source has the details.
    #[error("could not connect to {target}")]
    Connect {
        /// `user@host:port/db`.
        target: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// The server or the connection failed a command.
    #[error(transparent)]
    Db(#[from] mysql_async::Error),
    /// The health check (a ping) got no answer in time.
    #[error("the health check got no answer within {}", aquifer::human_duration(*.0))]
    CheckTimeout(Duration),
    /// The `after_connect` hook failed; the connection was closed.
    #[error("after_connect failed")]
    AfterConnect(#[source] mysql_async::Error),
    /// The connection was already closed.
    #[error("the connection is closed")]
    Closed,
    /// After the reset on return the server still reported a transaction
    /// open, autocommit off or an answer unread; the connection is closed
    /// rather than handed on.
    #[error("the reset on return left the session dirty; the connection was closed")]
    ResetIncomplete,
}

impl MySqlError {
    /// The server's error code (e.g. 1045 for a wrong password, 1146 for
    /// an unknown table), if the server sent one.
    pub fn server_code(&self) -> Option<u16> {
        let e = match self {
            MySqlError::Connect { source, .. } => source,
            MySqlError::Db(e) | MySqlError::AfterConnect(e) => e,
            _ => return None,
        };
        match e {
            mysql_async::Error::Server(s) => Some(s.code),
            _ => None,
        }
    }
}

/// What a returned connection goes through before it is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResetMode {
    /// Clean up only connections that need it, as the server reports
    /// them: an answer not read to its end (a multi-statement query or a
    /// row stream dropped part-way) is read to its end first; then, if the
    /// server's status flags say a transaction is open or autocommit is
    /// off (or [`MySqlConnection::mark_dirty`] was called), `ROLLBACK` and
    /// `SET autocommit = 1`. A command dropped while it was being sent or
    /// answered closes the connection instead (the pool makes a new one).
    /// Costs nothing otherwise. Session state that is not a transaction
    /// (user variables, other `SET`s, temporary tables, prepared
    /// statements, `SET TRANSACTION` for the next transaction) is kept for
    /// the next borrower: use [`ResetMode::Connection`] to clear it. The
    /// default.
    #[default]
    IfDirty,
    /// `COM_RESET_CONNECTION` on every return: rolls back, drops temporary
    /// tables, user variables and prepared statements, restores session
    /// settings (then runs `after_connect` again). One round trip per
    /// checkout. What mysql_async's own pool does by default.
    Connection,
}

/// `ROLLBACK`, retried once: mysql_async reads what is left of an earlier
/// answer before it sends a command, and an error in that answer (a later
/// statement of a multi-statement query failed) ends the command before
/// it is sent.
async fn rollback(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    match conn.query_drop("ROLLBACK").await {
        Err(mysql_async::Error::Server(_)) => conn.query_drop("ROLLBACK").await,
        done => done,
    }
}

/// The server's status flags after its last complete answer.
fn status_flags(conn: &Conn) -> Option<StatusFlags> {
    conn.last_ok_packet().map(|ok| ok.status_flags())
}

/// Whether an answer is still to be read: rows of a result set, or more
/// result sets of a multi-statement query.
fn answer_pending(conn: &mut Conn) -> bool {
    !QueryResult::<'_, '_, TextProtocol>::new(conn).is_empty()
}

/// Whether the session would change what the next borrower's statements
/// do: a transaction open, or autocommit off.
fn session_dirty(conn: &Conn) -> bool {
    status_flags(conn).is_some_and(|f| {
        f.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
            || !f.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
    })
}

/// A pooled MySQL connection: a mysql_async [`Conn`] behind a type whose
/// `Debug` output holds no password (mysql_async's shows the connection
/// options). It runs every [`Queryable`] method, and forwards the `Conn`
/// methods a borrower needs; [`raw_mut`](Self::raw_mut) reaches the rest.
pub struct MySqlConnection {
    conn: Option<Conn>,
    dirty: bool,
    /// Errors that say the server's role changed, seen on this connection.
    pub(crate) watch: Arc<crate::roles::Watch>,
}

impl fmt::Debug for MySqlConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConnection")
            .field("id", &self.conn.as_ref().map(Conn::id))
            .field("in_transaction", &self.in_transaction())
            .finish_non_exhaustive()
    }
}

impl MySqlConnection {
    /// Whether the connection is inside a transaction, as far as the
    /// client knows: the status flags of the server's last OK packet, or a
    /// [`mark_dirty`](Self::mark_dirty) not yet cleared.
    pub fn in_transaction(&self) -> bool {
        self.dirty
            || self.conn.as_ref().is_some_and(|c| {
                c.last_ok_packet().is_some_and(|ok| {
                    ok.status_flags()
                        .contains(StatusFlags::SERVER_STATUS_IN_TRANS)
                })
            })
    }

    /// Makes the pool roll the connection back on return, whatever the
    /// status flags say (the transaction helper does this while it runs).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub(crate) fn clean(&mut self) {
        self.dirty = false;
    }

    fn is_closed(&self) -> bool {
        self.conn.as_ref().is_none_or(Conn::is_disconnected) || self.watch.refused()
    }
}

impl MySqlConnection {
    fn raw(&self) -> &Conn {
        // Only `destroy` takes the connection out, and a destroyed object
        // is never handed out again.
        self.conn.as_ref().expect("a pooled connection is open")
    }

    /// mysql_async's connection itself, for what this type does not
    /// forward. Its `Debug` output shows the connection options,
    /// password included: never log it.
    pub fn raw_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a pooled connection is open")
    }

    /// Starts a transaction (see mysql_async's `Conn::start_transaction`).
    ///
    /// # Errors
    /// The server's error.
    pub async fn start_transaction(
        &mut self,
        options: TxOpts,
    ) -> Result<MySqlTransaction<'_>, mysql_async::Error> {
        let watch = Arc::clone(&self.watch);
        let tx = self.raw_mut().start_transaction(options).await;
        watch.see(&tx);
        tx.map(|t| MySqlTransaction(t, watch))
    }

    /// The server's id of this connection.
    pub fn id(&self) -> u32 {
        self.raw().id()
    }

    /// Rows the last statement changed.
    pub fn affected_rows(&self) -> u64 {
        self.raw().affected_rows()
    }

    /// The id the last `INSERT` generated, if any.
    pub fn last_insert_id(&self) -> Option<u64> {
        self.raw().last_insert_id()
    }

    /// Warnings the last statement raised.
    pub fn get_warnings(&self) -> u16 {
        self.raw().get_warnings()
    }

    /// The server's info string about the last statement.
    pub fn info(&self) -> std::borrow::Cow<'_, str> {
        self.raw().info()
    }

    /// The server's version.
    pub fn server_version(&self) -> (u16, u16, u16) {
        self.raw().server_version()
    }

    /// The server's last OK packet (its status flags among others).
    pub fn last_ok_packet(&self) -> Option<&mysql_async::OkPacket<'static>> {
        self.raw().last_ok_packet()
    }

    /// Whether the connection is closed, or was left mid-command.
    pub fn is_disconnected(&self) -> bool {
        self.raw().is_disconnected()
    }
}

type Answer<'a, T> = futures_core::future::BoxFuture<'a, Result<T, mysql_async::Error>>;

/// `Queryable` for a wrapper, forwarding the six methods the trait
/// requires to the mysql_async type that `$inner` reaches; the trait's own
/// bodies do the rest.
macro_rules! forward_queryable {
    ($wrapper:ty, |$this:ident| $inner:expr, |$w:ident| $watch:expr) => {
        impl Queryable for $wrapper {
            fn ping(&mut self) -> Answer<'_, ()> {
                let $this = self;
                $inner.ping()
            }

            fn query_iter<'a, Q>(
                &'a mut self,
                query: Q,
            ) -> Answer<'a, QueryResult<'a, 'static, TextProtocol>>
            where
                Q: AsQuery + 'a,
            {
                let watch = {
                    let $w = &*self;
                    Arc::clone($watch)
                };
                let $this = self;
                crate::roles::watched(watch, $inner.query_iter(query))
            }

            fn prep<'a, Q>(&'a mut self, query: Q) -> Answer<'a, Statement>
            where
                Q: AsQuery + 'a,
            {
                let watch = {
                    let $w = &*self;
                    Arc::clone($watch)
                };
                let $this = self;
                crate::roles::watched(watch, $inner.prep(query))
            }

            fn close(&mut self, stmt: Statement) -> Answer<'_, ()> {
                let $this = self;
                $inner.close(stmt)
            }

            fn exec_iter<'a: 's, 's, Q, P>(
                &'a mut self,
                stmt: Q,
                params: P,
            ) -> Answer<'s, QueryResult<'a, 'static, BinaryProtocol>>
            where
                Q: StatementLike + 's,
                P: Into<Params>,
            {
                let watch = {
                    let $w = &*self;
                    Arc::clone($watch)
                };
                let $this = self;
                crate::roles::watched(watch, $inner.exec_iter(stmt, params))
            }

            fn exec_batch<'a: 'b, 'b, S, P, I>(
                &'a mut self,
                stmt: S,
                params_iter: I,
            ) -> Answer<'b, ()>
            where
                S: StatementLike + 'b,
                I: IntoIterator<Item = P> + Send + 'b,
                I::IntoIter: Send,
                P: Into<Params> + Send,
            {
                let watch = {
                    let $w = &*self;
                    Arc::clone($watch)
                };
                let $this = self;
                crate::roles::watched(watch, $inner.exec_batch(stmt, params_iter))
            }
        }
    };
}

// Queries run on the connection as on mysql_async's `Conn`: every
// `Queryable` method works.
forward_queryable!(MySqlConnection, |c| c.raw_mut(), |c| &c.watch);

/// A transaction on a pooled connection: mysql_async's `Transaction`,
/// whose `Debug` would show the password, behind one that does not.
/// Dropped without `commit` or `rollback`, it is rolled back before the
/// connection is used again.
pub struct MySqlTransaction<'a>(Transaction<'a>, Arc<crate::roles::Watch>);

impl fmt::Debug for MySqlTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlTransaction")
            .field("id", &self.0.id())
            .finish_non_exhaustive()
    }
}

impl<'a> MySqlTransaction<'a> {
    /// Commits.
    ///
    /// # Errors
    /// The server's error.
    pub async fn commit(self) -> Result<(), mysql_async::Error> {
        self.0.commit().await
    }

    /// Rolls back.
    ///
    /// # Errors
    /// The server's error.
    pub async fn rollback(self) -> Result<(), mysql_async::Error> {
        self.0.rollback().await
    }

    /// Rows the last statement changed.
    pub fn affected_rows(&self) -> u64 {
        self.0.affected_rows()
    }

    /// The id the last `INSERT` generated, if any.
    pub fn last_insert_id(&self) -> Option<u64> {
        self.0.last_insert_id()
    }

    /// mysql_async's transaction itself. Its `Debug` output shows the
    /// password: never log it.
    pub fn raw_mut(&mut self) -> &mut Transaction<'a> {
        &mut self.0
    }
}

forward_queryable!(MySqlTransaction<'_>, |t| &mut t.0, |t| &t.1);

/// Makes, checks, resets and closes MySQL/MariaDB connections for an
/// [`aquifer::Pool`]. mysql_async's own pool is not involved: every
/// connection is a `Conn` of its own, and aquifer decides when it is made,
/// checked, reset and closed.
///
/// ```no_run
/// use aquifer_mysql::{MySqlManager, MySqlPool};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = MySqlManager::new("mysql://app:secret@127.0.0.1:3306/shop")?;
/// let pool = MySqlPool::builder(manager).max(16).build()?;
/// # Ok(())
/// # }
/// ```
pub struct MySqlManager {
    opts: Opts,
    target: String,
    after_connect: Option<AfterConnect>,
    reset: ResetMode,
    check_timeout: Duration,
    /// Raised by its connections on signs of a role change.
    pub(crate) signal: aquifer::RoleSignal,
}

impl fmt::Debug for MySqlManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `opts`: its Debug shows the password.
        f.debug_struct("MySqlManager")
            .field("target", &self.target)
            .field("reset", &self.reset)
            .field("check_timeout", &self.check_timeout)
            .field("after_connect", &self.after_connect.is_some())
            .finish_non_exhaustive()
    }
}

impl MySqlManager {
    /// A manager for the server at `url`
    /// (`mysql://user:password@host:port/database?param=value`).
    ///
    /// # Errors
    /// [`MySqlError::Config`] naming the malformed part.
    pub fn new(url: &str) -> Result<Self, MySqlError> {
        Ok(Self::from_opts(config::parse(url)?))
    }

    /// A manager from driver options built in code. mysql_async's pool
    /// settings in them are ignored.
    pub fn from_opts(opts: impl Into<Opts>) -> Self {
        let opts = opts.into();
        MySqlManager {
            target: config::describe(&opts),
            opts,
            after_connect: None,
            reset: ResetMode::default(),
            check_timeout: Duration::from_secs(5),
            signal: aquifer::RoleSignal::new(),
        }
    }

    /// Runs `hook` on every new connection; an error closes it and fails
    /// the create with [`MySqlError::AfterConnect`].
    #[must_use]
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<(), mysql_async::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.after_connect = Some(Arc::new(hook));
        self
    }

    /// What a returned connection goes through. Default
    /// [`ResetMode::IfDirty`].
    #[must_use]
    pub fn reset_mode(mut self, mode: ResetMode) -> Self {
        self.reset = mode;
        self
    }

    /// How long the health check (a ping) may take. Default 5 s.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Encrypts connections. `ca_pem`: verify the server's certificate
    /// against this CA (and its host name); `None`: encrypt without
    /// verifying (like `ssl-mode=REQUIRED`).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, ca_pem: Option<Vec<u8>>) -> Self {
        let ssl = match ca_pem {
            Some(pem) => mysql_async::SslOpts::default()
                .with_root_certs(vec![pem.into()])
                .with_disable_built_in_roots(true),
            None => mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        };
        self.opts = OptsBuilder::from_opts(self.opts).ssl_opts(ssl).into();
        self
    }

    /// `user@host:port/db`, for messages (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn run_hook(&self, conn: &mut Conn) -> Result<(), MySqlError> {
        match &self.after_connect {
            Some(hook) => hook(conn).await.map_err(MySqlError::AfterConnect),
            None => Ok(()),
        }
    }
}

impl Manager for MySqlManager {
    type Type = MySqlConnection;
    type Error = MySqlError;

    async fn create(&self) -> Result<MySqlConnection, MySqlError> {
        // No mysql_async pool: a plain connection, with its own reset on
        // drop turned off since aquifer resets on return.
        let opts = OptsBuilder::from_opts(self.opts.clone());
        let mut conn = Conn::new(opts)
            .await
            .map_err(|source| MySqlError::Connect {
                target: self.target.clone(),
                source,
            })?;
        if let Err(e) = self.run_hook(&mut conn).await {
            let _ = conn.disconnect().await;
            return Err(e);
        }
        Ok(MySqlConnection {
            conn: Some(conn),
            dirty: false,
            watch: Arc::new(crate::roles::Watch::new(self.signal.clone())),
        })
    }

    async fn validate(&self, conn: &mut MySqlConnection) -> Result<(), MySqlError> {
        let conn = conn.conn.as_mut().ok_or(MySqlError::Closed)?;
        match tokio::time::timeout(self.check_timeout, conn.ping()).await {
            Ok(result) => result.map_err(MySqlError::Db),
            Err(_) => Err(MySqlError::CheckTimeout(self.check_timeout)),
        }
    }

    fn is_broken(&self, conn: &MySqlConnection) -> bool {
        conn.is_closed()
    }

    fn needs_reset(&self, pooled: &mut MySqlConnection) -> bool {
        let dirty = pooled.dirty;
        let Some(conn) = pooled.conn.as_mut() else {
            return false;
        };
        match self.reset {
            ResetMode::IfDirty => dirty || answer_pending(conn) || session_dirty(conn),
            ResetMode::Connection => true,
        }
    }

    async fn reset(&self, pooled: &mut MySqlConnection) -> Result<(), MySqlError> {
        let conn = pooled.conn.as_mut().ok_or(MySqlError::Closed)?;
        match self.reset {
            ResetMode::IfDirty => {
                rollback(conn).await?;
                if !status_flags(conn)
                    .is_none_or(|f| f.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT))
                {
                    conn.query_drop("SET autocommit = 1").await?;
                }
            }
            ResetMode::Connection => {
                if !conn.reset().await? {
                    // Servers before MySQL 5.7.3 / MariaDB 10.2.4.
                    rollback(conn).await?;
                }
                self.run_hook(conn).await?;
            }
        }
        // What the server said after the clean-up, not what was sent.
        if answer_pending(conn) || session_dirty(conn) {
            return Err(MySqlError::ResetIncomplete);
        }
        pooled.clean();
        Ok(())
    }

    /// Access denied (1045, 1044), an unknown database (1049), TLS asked
    /// for from a server without it, or a malformed configuration: waiting
    /// does not fix these.
    fn is_permanent(&self, error: &MySqlError) -> bool {
        match error {
            MySqlError::Config(_) => true,
            MySqlError::Connect { source, .. } => {
                matches!(error.server_code(), Some(1044 | 1045 | 1049))
                    || matches!(
                        source,
                        mysql_async::Error::Driver(
                            mysql_async::DriverError::NoClientSslFlagFromServer
                        )
                    )
            }
            _ => false,
        }
    }

    fn driver_name(&self) -> &'static str {
        "mysql"
    }

    fn server(&self) -> Option<String> {
        // `user@host:port/db` without the user.
        let at = self.target.rfind('@').map_or(0, |i| i + 1);
        Some(self.target[at..].to_owned())
    }

    async fn destroy(&self, pooled: &mut MySqlConnection) -> Result<(), MySqlError> {
        match pooled.conn.take() {
            Some(conn) if !conn.is_disconnected() => {
                conn.disconnect().await.map_err(MySqlError::Db)
            }
            _ => Ok(()),
        }
    }
}
