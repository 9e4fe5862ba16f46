//! What to open and how: a file or a shared in-memory database, open flags,
//! pragmas. Parsed from a path or a `sqlite:` URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A configuration that cannot work, with the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteConfigError {
    /// The URL or a setting is malformed; `part` names which.
    #[error("invalid SQLite {part}: {problem}")]
    Invalid {
        /// The part that is wrong (`url`, `mode`, `pragma name`…).
        part: &'static str,
        /// What is wrong with it and what is expected.
        problem: String,
    },
}

fn invalid(part: &'static str, problem: impl Into<String>) -> SqliteConfigError {
    SqliteConfigError::Invalid {
        part,
        problem: problem.into(),
    }
}

/// A URL's `true`/`false` parameter.
fn flag(part: &'static str, value: &str) -> Result<bool, SqliteConfigError> {
    match value {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(invalid(part, "expected true or false")),
    }
}

/// `PRAGMA journal_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalMode {
    /// Write-ahead log: readers do not block the writer. The default for
    /// files.
    Wal,
    /// The rollback journal, deleted after each transaction.
    Delete,
    /// The rollback journal, truncated after each transaction.
    Truncate,
    /// The rollback journal, its header zeroed after each transaction.
    Persist,
    /// The journal kept in memory. The default for in-memory databases.
    Memory,
    /// No journal: no rollback, no crash safety.
    Off,
}

impl JournalMode {
    fn as_sql(self) -> &'static str {
        match self {
            JournalMode::Wal => "WAL",
            JournalMode::Delete => "DELETE",
            JournalMode::Truncate => "TRUNCATE",
            JournalMode::Persist => "PERSIST",
            JournalMode::Memory => "MEMORY",
            JournalMode::Off => "OFF",
        }
    }
}

impl FromStr for JournalMode {
    type Err = SqliteConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "wal" => JournalMode::Wal,
            "delete" => JournalMode::Delete,
            "truncate" => JournalMode::Truncate,
            "persist" => JournalMode::Persist,
            "memory" => JournalMode::Memory,
            "off" => JournalMode::Off,
            _ => {
                return Err(invalid(
                    "journal_mode",
                    "expected wal, delete, truncate, persist, memory or off",
                ))
            }
        })
    }
}

/// `PRAGMA synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// No fsync: fastest, a power loss may corrupt the file.
    Off,
    /// fsync at checkpoints only. With WAL a power loss may lose the last
    /// commits but never corrupts the file. The default with WAL.
    Normal,
    /// fsync on every commit. The default without WAL.
    Full,
    /// Like `Full`, and the directory too after a journal delete.
    Extra,
}

impl Synchronous {
    fn as_sql(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

impl FromStr for Synchronous {
    type Err = SqliteConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" | "0" => Synchronous::Off,
            "normal" | "1" => Synchronous::Normal,
            "full" | "2" => Synchronous::Full,
            "extra" | "3" => Synchronous::Extra,
            _ => {
                return Err(invalid(
                    "synchronous",
                    "expected off, normal, full or extra",
                ))
            }
        })
    }
}

/// What a connection opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    File(PathBuf),
    /// A shared-cache in-memory database: every connection with this name
    /// sees the same data.
    Memory(String),
}

/// How the pool's connections open the database.
///
/// ```
/// use aquifer_sqlite::{JournalMode, SqliteConfig};
/// use std::time::Duration;
///
/// let file = SqliteConfig::file("data/app.db")
///     .busy_timeout(Duration::from_secs(2))
///     .pragma("cache_size", "-16000")
///     .unwrap();
/// assert_eq!(file.journal_mode_in_effect(), Some(JournalMode::Wal));
///
/// let parsed: SqliteConfig = "sqlite://data/app.db?mode=ro".parse().unwrap();
/// assert!(parsed.is_read_only());
///
/// let shared = SqliteConfig::memory();
/// assert!(shared.is_memory());
/// ```
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub(crate) target: Target,
    pub(crate) read_only: bool,
    pub(crate) create: bool,
    pub(crate) journal_mode: Option<JournalMode>,
    pub(crate) synchronous: Option<Synchronous>,
    pub(crate) busy_timeout: Duration,
    pub(crate) foreign_keys: bool,
    pub(crate) pragmas: Vec<(String, String)>,
    pub(crate) statement_cache_capacity: usize,
    pub(crate) read_anchor: bool,
}

static MEMORY_SEQ: AtomicU64 = AtomicU64::new(0);

impl SqliteConfig {
    fn with_target(target: Target) -> Self {
        SqliteConfig {
            target,
            read_only: false,
            create: true,
            journal_mode: None,
            synchronous: None,
            busy_timeout: Duration::from_secs(5),
            foreign_keys: true,
            pragmas: Vec::new(),
            statement_cache_capacity: 64,
            read_anchor: true,
        }
    }

    /// A database file, created if missing (see [`create`](Self::create)).
    /// Defaults: read-write, WAL, `synchronous = NORMAL`, busy timeout 5 s,
    /// foreign keys on, 64 cached statements per connection, the
    /// [read anchor](Self::read_anchor) on.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::with_target(Target::File(path.into()))
    }

    /// A fresh in-memory database that all of the pool's connections share.
    /// It lives as long as the manager (which keeps one connection of its
    /// own open), however many pooled connections come and go.
    pub fn memory() -> Self {
        let n = MEMORY_SEQ.fetch_add(1, Ordering::Relaxed);
        Self::with_target(Target::Memory(format!(
            "aquifer-{}-{n}",
            std::process::id()
        )))
    }

    /// A shared in-memory database by name: managers in this process using
    /// the same name see the same data.
    ///
    /// # Errors
    /// A name that is empty or has characters other than ASCII letters,
    /// digits, `-` and `_`.
    pub fn memory_named(name: &str) -> Result<Self, SqliteConfigError> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(invalid(
                "memory name",
                "use ASCII letters, digits, '-' and '_' only",
            ));
        }
        Ok(Self::with_target(Target::Memory(name.to_owned())))
    }

    /// Parses a `sqlite:` URL: `sqlite://relative/path.db`,
    /// `sqlite:///absolute/path.db`, `sqlite:path.db`, `sqlite::memory:`,
    /// `sqlite://:memory:`, with query parameters `mode` (`ro`, `rw`,
    /// `rwc`, `memory`), `journal_mode`, `synchronous`, `busy_timeout`
    /// (`250ms`, `5s`), `foreign_keys` and `read_anchor` (`true`/`false`).
    /// Percent-escapes are decoded in the path and the values, as in every
    /// other URL (`my%20app.db` is `my app.db`). A plain path is not a URL:
    /// give it to [`file`](Self::file).
    ///
    /// # Errors
    /// [`SqliteConfigError::Invalid`] naming the bad part; a string without
    /// the `sqlite:` scheme is refused with the forms to write instead.
    pub fn from_url(url: &str) -> Result<Self, SqliteConfigError> {
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(invalid(
                "url",
                format!(
                    "{url:?} does not start with sqlite: (write sqlite:///absolute/path.db, \
                     sqlite://relative/path.db or sqlite::memory:, or use SqliteConfig::file for a plain path)"
                ),
            ));
        };
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        let mut config = match location {
            ":memory:" => Self::memory(),
            "" => {
                return Err(invalid(
                    "path",
                    "the URL names no file (use :memory: for memory)",
                ))
            }
            path => Self::file(decode_path(path)?),
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid("url", format!("parameter {pair:?} has no value")))?;
            let value = &String::from_utf8(percent_decode(value)?)
                .map_err(|_| invalid("url", format!("parameter {key:?} is not UTF-8")))?;
            let value = value.as_str();
            match key {
                "mode" => match value {
                    "ro" => config = config.read_only(true),
                    "rw" => config = config.read_only(false).create(false),
                    "rwc" => config = config.read_only(false).create(true),
                    "memory" => {
                        if let Target::File(path) = &config.target {
                            let name = path.to_string_lossy().into_owned();
                            config.target = Self::memory_named(&name)?.target;
                        }
                    }
                    _ => return Err(invalid("mode", "expected ro, rw, rwc or memory")),
                },
                "journal_mode" => config.journal_mode = Some(value.parse()?),
                "synchronous" => config.synchronous = Some(value.parse()?),
                "busy_timeout" => {
                    config.busy_timeout = aquifer::parse_duration(value)
                        .map_err(|e| invalid("busy_timeout", e.to_string()))?;
                }
                "read_anchor" => config.read_anchor = flag("read_anchor", value)?,
                "foreign_keys" => config.foreign_keys = flag("foreign_keys", value)?,
                other => {
                    return Err(invalid(
                        "url",
                        format!("unknown parameter {other:?} (known: mode, journal_mode, synchronous, busy_timeout, foreign_keys, read_anchor)"),
                    ))
                }
            }
        }
        Ok(config)
    }

    /// Opens read-only: writes fail with `SQLITE_READONLY`. Default off.
    /// The journal mode is then left as the file has it.
    #[must_use]
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Creates the file when it is missing. Default on; ignored when
    /// read-only.
    #[must_use]
    pub fn create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// `PRAGMA journal_mode`. Default [`JournalMode::Wal`] for files,
    /// [`JournalMode::Memory`] in memory; read-only connections leave it
    /// alone unless it is set here.
    #[must_use]
    pub fn journal_mode(mut self, mode: JournalMode) -> Self {
        self.journal_mode = Some(mode);
        self
    }

    /// `PRAGMA synchronous`. Default [`Synchronous::Normal`] with WAL,
    /// [`Synchronous::Full`] otherwise.
    #[must_use]
    pub fn synchronous(mut self, level: Synchronous) -> Self {
        self.synchronous = Some(level);
        self
    }

    /// How long a statement waits for another connection's lock before it
    /// fails with `SQLITE_BUSY`. Default 5 s.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// `PRAGMA foreign_keys`. Default on (SQLite's own default is off).
    #[must_use]
    pub fn foreign_keys(mut self, on: bool) -> Self {
        self.foreign_keys = on;
        self
    }

    /// How many prepared statements each connection keeps for
    /// `prepare_cached` (least recently used go first). Default 64.
    #[must_use]
    pub fn statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.statement_cache_capacity = capacity;
        self
    }

    /// Whether the manager keeps a connection of its own inside a read
    /// transaction while the pool's connections are in use (file databases
    /// in WAL mode only). Each read transaction then takes and drops its
    /// lock on the WAL index inside the process, instead of asking the
    /// kernel twice (`fcntl`), which can cost more than a point query
    /// (`BENCHMARKS.md` has the difference). The anchor renews its snapshot every 5 ms
    /// and lets go after 5 ms without use, so it holds back checkpoints by
    /// that much at most (a `wal_checkpoint(TRUNCATE)` waits it out), and
    /// an idle pool holds no lock. The anchor's connection runs this
    /// configuration's pragmas but not the manager's `after_connect` hook,
    /// and reads nothing but the schema. Default on.
    #[must_use]
    pub fn read_anchor(mut self, on: bool) -> Self {
        self.read_anchor = on;
        self
    }

    /// One more `PRAGMA name = value`, run on every new connection after the
    /// built-in ones.
    ///
    /// # Errors
    /// A name that is not an identifier, or a value holding `;`, a quote
    /// or a line break.
    pub fn pragma(mut self, name: &str, value: &str) -> Result<Self, SqliteConfigError> {
        let ident = name
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if name.is_empty() || !ident {
            return Err(invalid("pragma name", "expected an identifier"));
        }
        if value.is_empty() || value.contains([';', '\'', '"', '\n', '\r']) {
            return Err(invalid(
                "pragma value",
                "expected a bare word or number (no ';', quotes or line breaks)",
            ));
        }
        self.pragmas.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether this is a shared in-memory database.
    pub fn is_memory(&self) -> bool {
        matches!(self.target, Target::Memory(_))
    }

    /// The file, for a file database.
    pub fn path(&self) -> Option<&Path> {
        match &self.target {
            Target::File(p) => Some(p),
            Target::Memory(_) => None,
        }
    }

    /// Takes a relative file path as relative to `dir` instead of the
    /// working directory (a configuration file's own directory, say).
    /// Absolute paths and in-memory databases are left as they are.
    #[must_use]
    pub fn relative_to(mut self, dir: &Path) -> Self {
        if let Target::File(p) = &self.target {
            if p.is_relative() {
                self.target = Target::File(dir.join(p));
            }
        }
        self
    }

    /// The journal mode new connections set, if any.
    pub fn journal_mode_in_effect(&self) -> Option<JournalMode> {
        match (self.journal_mode, &self.target) {
            (Some(mode), _) => Some(mode),
            (None, _) if self.read_only => None,
            (None, Target::File(_)) => Some(JournalMode::Wal),
            (None, Target::Memory(_)) => Some(JournalMode::Memory),
        }
    }

    /// The pragmas a new connection runs, in order.
    pub(crate) fn setup_sql(&self) -> String {
        let mut sql = String::new();
        if let Some(mode) = self.journal_mode_in_effect() {
            sql.push_str(&format!("PRAGMA journal_mode = {};\n", mode.as_sql()));
        }
        let sync = self.synchronous.unwrap_or(
            if self.journal_mode_in_effect() == Some(JournalMode::Wal) {
                Synchronous::Normal
            } else {
                Synchronous::Full
            },
        );
        sql.push_str(&format!("PRAGMA synchronous = {};\n", sync.as_sql()));
        sql.push_str(&format!(
            "PRAGMA foreign_keys = {};\n",
            if self.foreign_keys { "ON" } else { "OFF" }
        ));
        for (name, value) in &self.pragmas {
            sql.push_str(&format!("PRAGMA {name} = {value};\n"));
        }
        sql
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is an
/// error (a path with a literal `%` writes `%25`).
fn percent_decode(text: &str) -> Result<Vec<u8>, SqliteConfigError> {
    let b = text.as_bytes();
    let stray = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if stray {
        return Err(invalid(
            "url",
            format!("{text:?} has a % not followed by two hex digits (write %25 for %)"),
        ));
    }
    Ok(percent_encoding::percent_decode_str(text).collect())
}

/// A URL's path, percent-decoded.
fn decode_path(path: &str) -> Result<PathBuf, SqliteConfigError> {
    let bytes = percent_decode(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
    #[cfg(not(unix))]
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| invalid("path", "the decoded path is not UTF-8"))
}

impl FromStr for SqliteConfig {
    type Err = SqliteConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_url(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::File(p) => write!(f, "{}", p.display()),
            Target::Memory(name) => write!(f, "memory:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        let c = SqliteConfig::from_url("sqlite://data/a.db").unwrap();
        assert_eq!(c.path(), Some(Path::new("data/a.db")));
        let c = SqliteConfig::from_url("sqlite:///abs/a.db").unwrap();
        assert_eq!(c.path(), Some(Path::new("/abs/a.db")));
        let c = SqliteConfig::from_url("sqlite:a.db?mode=ro&busy_timeout=250ms").unwrap();
        assert!(c.is_read_only());
        assert_eq!(c.busy_timeout, Duration::from_millis(250));
        assert_eq!(c.journal_mode_in_effect(), None);
        let c = SqliteConfig::from_url("sqlite:///srv/data/my%20app%25.db?mode=r%77").unwrap();
        assert_eq!(c.path(), Some(Path::new("/srv/data/my app%.db")));
        assert!(!c.create);
        assert!(SqliteConfig::from_url("sqlite::memory:")
            .unwrap()
            .is_memory());
        assert!(SqliteConfig::from_url("sqlite://:memory:")
            .unwrap()
            .is_memory());
        let c = SqliteConfig::from_url("sqlite://cache?mode=memory").unwrap();
        assert_eq!(c.target, Target::Memory("cache".into()));
        let c =
            SqliteConfig::from_url("sqlite://x.db?journal_mode=delete&synchronous=full").unwrap();
        assert_eq!(c.journal_mode_in_effect(), Some(JournalMode::Delete));
        assert!(c.setup_sql().contains("synchronous = FULL"));
    }

    #[test]
    fn two_unnamed_memory_databases_are_distinct() {
        assert_ne!(SqliteConfig::memory().target, SqliteConfig::memory().target);
    }

    #[test]
    fn bad_input_names_the_part() {
        let part = |r: Result<SqliteConfig, SqliteConfigError>| match r {
            Err(SqliteConfigError::Invalid { part, .. }) => part,
            Ok(_) => "accepted",
        };
        assert_eq!(part(SqliteConfig::from_url("")), "url");
        assert_eq!(part(SqliteConfig::from_url("plain/file.sqlite")), "url");
        assert_eq!(part(SqliteConfig::from_url("localhost:5432")), "url");
        assert_eq!(part(SqliteConfig::from_url("sqlite://a%2.db")), "url");
        assert_eq!(part(SqliteConfig::from_url("sqlite://")), "path");
        assert_eq!(part(SqliteConfig::from_url("postgres://h/db")), "url");
        assert_eq!(part(SqliteConfig::from_url("sqlite:a.db?mode=rx")), "mode");
        assert_eq!(part(SqliteConfig::from_url("sqlite:a.db?nope=1")), "url");
        assert_eq!(part(SqliteConfig::from_url("sqlite:a.db?mode")), "url");
        assert_eq!(
            part(SqliteConfig::from_url("sqlite:a.db?busy_timeout=soon")),
            "busy_timeout"
        );
        assert_eq!(
            part(SqliteConfig::from_url("sqlite:a.db?busy_timeout=250")),
            "busy_timeout"
        );
        assert_eq!(
            part(SqliteConfig::from_url("sqlite:a.db?journal_mode=fast")),
            "journal_mode"
        );
        assert_eq!(part(SqliteConfig::memory_named("a b")), "memory name");
        assert_eq!(
            part(SqliteConfig::file("a").pragma("x;y", "1")),
            "pragma name"
        );
        assert_eq!(
            part(SqliteConfig::file("a").pragma("cache_size", "1; DROP TABLE t")),
            "pragma value"
        );
    }

    #[test]
    fn defaults_follow_the_target() {
        let file = SqliteConfig::file("a.db");
        assert!(file.setup_sql().contains("journal_mode = WAL"));
        assert!(file.setup_sql().contains("synchronous = NORMAL"));
        assert!(file.setup_sql().contains("foreign_keys = ON"));
        let mem = SqliteConfig::memory();
        assert!(mem.setup_sql().contains("journal_mode = MEMORY"));
        assert!(mem.setup_sql().contains("synchronous = FULL"));
        let ro = SqliteConfig::file("a.db").read_only(true);
        assert!(!ro.setup_sql().contains("journal_mode"));
    }
}
