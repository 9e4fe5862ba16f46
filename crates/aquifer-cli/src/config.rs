//! The configuration file: TOML, every field overridable from the
//! environment, and errors that name the file, the line and the field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aquifer::{Mode, MuxConfig, PoolConfig};
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::fleet::Driver;

/// Where the configuration came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The file, or a description of the built-in default.
    pub(crate) file: String,
    text: String,
    /// `section.key` paths set from the environment, and the variable.
    from_env: HashMap<String, String>,
}

impl Origin {
    /// Where `section.key` was written: `file:line` or the variable.
    fn place(&self, section: &str, key: Option<&str>) -> String {
        if let Some(key) = key {
            if let Some(var) = self.from_env.get(&format!("{section}.{key}")) {
                return format!("environment variable {var}");
            }
        }
        match line_of(&self.text, section, key) {
            Some(line) => format!("{}:{line}", self.file),
            None => self.file.clone(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{place}: {problem}")]
    Syntax { place: String, problem: String },
    #[error("{place}: `{field}`: {problem}")]
    Field {
        place: String,
        field: String,
        problem: String,
    },
    /// Every error found, one a line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\nerror: "))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// One error, or all of them.
    fn all(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ConfigError::Several(errors)),
        }
    }
}

/// The 1-based line of `key` inside `[section]` (or of the header when
/// `key` is `None`), found by reading the text as TOML lays it out.
fn line_of(text: &str, section: &str, key: Option<&str>) -> Option<usize> {
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l.strip_prefix('[')?.strip_suffix(']')?;
        Some(
            inner
                .split('.')
                .map(|p| p.trim().trim_matches('"'))
                .collect::<Vec<_>>()
                .join("."),
        )
    };
    let mut inside = section.is_empty();
    let mut header_line = None;
    for (i, l) in text.lines().enumerate() {
        if let Some(h) = header(l) {
            inside = h == section;
            if inside {
                header_line = Some(i + 1);
            }
            continue;
        }
        if inside {
            if let Some(key) = key {
                let t = l.trim_start();
                let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
                if t.contains('=') && k == key {
                    return Some(i + 1);
                }
            }
        }
    }
    header_line
}

/// The admin router's address and token.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdminSection {
    pub(crate) listen: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) check_timeout: Option<Duration>,
    pub(crate) remove_wait: Option<Duration>,
    pub(crate) snapshot_every: Option<Duration>,
}

/// A cluster's settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterSection {
    pub(crate) mode: Mode,
    pub(crate) ban_time: Option<Duration>,
    pub(crate) acquire_timeout: Option<Duration>,
    pub(crate) log_file: Option<PathBuf>,
    pub(crate) log_max_bytes: u64,
    pub(crate) max_warnings: Option<usize>,
}

/// One pool: where, in which cluster, and its pool settings.
#[derive(Clone)]
pub(crate) struct PoolSection {
    /// The URL with the password put in (from a file or the environment).
    pub(crate) url: String,
    pub(crate) cluster: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) weight: u32,
    /// SQLite: whether a missing file is created (default: no).
    pub(crate) create: Option<bool>,
    pub(crate) options: PoolConfig,
}

impl fmt::Debug for PoolSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolSection")
            .field("url", &"<redacted>")
            .field("cluster", &self.cluster)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL multiplexer: where, and its settings.
#[derive(Clone)]
pub(crate) struct MuxSection {
    /// The URL with the password put in.
    pub(crate) url: String,
    pub(crate) options: MuxConfig,
}

impl fmt::Debug for MuxSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxSection")
            .field("url", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A whole configuration, checked.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) origin: Origin,
    /// The file's directory: relative SQLite paths are relative to it.
    pub(crate) dir: PathBuf,
    pub(crate) admin: AdminSection,
    pub(crate) clusters: IndexMap<String, ClusterSection>,
    pub(crate) pools: IndexMap<String, PoolSection>,
    pub(crate) multiplexers: IndexMap<String, MuxSection>,
}

impl Config {
    /// Reads `path`, applies the `AQUIFER_…` environment, and checks it.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        Self::parse(&path.display().to_string(), &dir, &text, std::env::vars())
    }

    /// Parses `text` (from `file`, in `dir`) with these environment
    /// variables, and checks everything `serve` would before it connects,
    /// touching nothing on disk. Every error is reported, not the first.
    pub(crate) fn parse(
        file: &str,
        dir: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::Syntax {
                place: file.to_owned(),
                problem: "the file is empty: `aquifer config example` prints one to start from"
                    .to_owned(),
            });
        }
        let mut origin = Origin {
            file: file.to_owned(),
            text: text.to_owned(),
            from_env: HashMap::new(),
        };
        let mut doc: Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            ConfigError::Syntax {
                place: match line {
                    Some(l) => format!("{file}:{l}"),
                    None => file.to_owned(),
                },
                problem: format!("not valid TOML: {}", e.message().trim()),
            }
        })?;
        let passwords = apply_env(&mut doc, &mut origin, env)?;
        let errors = RefCell::new(Vec::new());

        let mut top = Section::new(&origin, &errors, "", doc);
        let admin = top.take::<Table>("admin", "a table").unwrap_or_default();
        let clusters = top
            .take::<Table>("clusters", "a table of clusters")
            .unwrap_or_default();
        let pools = top
            .take::<Table>("pools", "a table of pools")
            .unwrap_or_default();
        let multiplexers = top
            .take::<Table>("multiplexers", "a table of multiplexers")
            .unwrap_or_default();
        top.finish("admin, clusters, pools, multiplexers");
        if pools.is_empty() && multiplexers.is_empty() {
            errors.borrow_mut().push(ConfigError::Syntax {
                place: file.to_owned(),
                problem: "no pools are defined: add a [pools.NAME] section with a url \
                          (`aquifer config example` prints one)"
                    .to_owned(),
            });
        }

        let mut a = Section::new(&origin, &errors, "admin", admin);
        let listen = a.take::<String>("listen", "an address such as \"127.0.0.1:7070\"");
        if let Some(l) = &listen {
            if let Err(problem) = check_listen(l) {
                a.error(Some("listen"), "listen", &problem);
            }
        }
        let mut token = a.take::<String>("token", "a string");
        if let Some(f) = a.take::<String>("token_file", "a path") {
            if token.is_some() {
                a.error(
                    Some("token_file"),
                    "token_file",
                    "both token and token_file are set: keep one",
                );
            }
            token = a.secret_file("token_file", &f, dir);
        }
        let admin = AdminSection {
            listen,
            token,
            check_timeout: a.duration("check_timeout"),
            remove_wait: a.duration("remove_wait"),
            snapshot_every: a.duration("snapshot_every"),
        };
        a.finish("listen, token, token_file, check_timeout, remove_wait, snapshot_every");

        let mut out = IndexMap::new();
        for (name, value) in clusters {
            let Some(table) = table_of(&origin, &errors, "clusters", &name, value) else {
                continue;
            };
            let mut c = Section::new(&origin, &errors, &format!("clusters.{name}"), table);
            let mode = c
                .take::<Mode>(
                    "mode",
                    "round_robin, random, least_busy, weighted or failover",
                )
                .unwrap_or_default();
            let log_file = c.take::<PathBuf>("log_file", "a path").map(|f| dir.join(f));
            if let Some(f) = &log_file {
                let parent = f.parent().unwrap_or(Path::new("/"));
                if !parent.is_dir() {
                    c.error(
                        Some("log_file"),
                        "log_file",
                        &format!(
                            "its directory {} does not exist: create it first",
                            parent.display()
                        ),
                    );
                }
            }
            let section = ClusterSection {
                mode,
                ban_time: c.duration("ban_time"),
                acquire_timeout: c.duration("acquire_timeout"),
                log_file,
                log_max_bytes: c
                    .take("log_max_bytes", "a number of bytes")
                    .unwrap_or(10 << 20),
                max_warnings: c.take("max_warnings", "a whole number"),
            };
            c.finish("mode, ban_time, acquire_timeout, log_file, log_max_bytes, max_warnings");
            out.insert(name, section);
        }
        let clusters = out;

        let mut out = IndexMap::new();
        let mut drivers: IndexMap<String, (String, Driver)> = IndexMap::new();
        for (name, value) in pools {
            let path = format!("pools.{name}");
            let Some(table) = table_of(&origin, &errors, "pools", &name, value) else {
                continue;
            };
            let mut p = Section::new(&origin, &errors, &path, table);
            let url = p.take::<String>("url", "a URL (postgres://, mysql://, sqlite://)");
            let Some(mut url) = url else {
                p.error(None, "url", "missing: every pool needs a url");
                for key in [
                    "cluster",
                    "tags",
                    "weight",
                    "create",
                    "password_file",
                    "password_env",
                ] {
                    p.table.remove(key);
                }
                p.pool_options();
                continue;
            };
            let driver = match Driver::of(&url) {
                Ok(d) => Some(d),
                Err(e) => {
                    p.error(Some("url"), "url", &e);
                    None
                }
            };
            let create = p.take::<bool>("create", "true or false");
            if create.is_some() && driver.is_some_and(|d| d != Driver::Sqlite) {
                p.error(
                    Some("create"),
                    "create",
                    "only a sqlite: pool creates its database; remove it",
                );
            }
            let cluster = p.take::<String>("cluster", "a cluster's name");
            if let Some(c) = &cluster {
                if !clusters.contains_key(c) {
                    p.error(
                        Some("cluster"),
                        "cluster",
                        &format!("no cluster `{c}` is defined: add a [clusters.{c}] section"),
                    );
                } else if let Some(d) = driver {
                    match drivers.get(c) {
                        Some((first, fd)) if *fd != d => p.error(
                            Some("cluster"),
                            "cluster",
                            &format!(
                                "cluster `{c}` holds {} pools ({first}) and this is {}: a cluster holds one driver; put it in a cluster of its own",
                                fd.name(),
                                d.name()
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            drivers.insert(c.clone(), (name.clone(), d));
                        }
                    }
                }
            }
            let tags = p
                .take::<Vec<String>>("tags", "a list of strings")
                .unwrap_or_default();
            let weight = p.take::<u32>("weight", "a whole number").unwrap_or(1);
            p.put_password(&mut url, passwords.get(&name).cloned(), dir);
            let options = p.pool_options();
            let section = PoolSection {
                url,
                cluster,
                tags,
                weight,
                create,
                options: options.unwrap_or_default(),
            };
            if let Some(d) = driver {
                if let Err(problem) = check_url(d, &section.url, dir) {
                    p.error(Some("url"), "url", &problem);
                }
            }
            out.insert(name, section);
        }
        let pools = out;

        let mut out = IndexMap::new();
        for (name, value) in multiplexers {
            let path = format!("multiplexers.{name}");
            let Some(table) = table_of(&origin, &errors, "multiplexers", &name, value) else {
                continue;
            };
            let mut m = Section::new(&origin, &errors, &path, table);
            if pools.contains_key(&name) || clusters.contains_key(&name) {
                m.error(
                    None,
                    "multiplexer",
                    &format!("`{name}` is also a pool or a cluster: every name is served once; rename one"),
                );
            }
            let Some(mut url) = m.take::<String>("url", "a postgres:// URL") else {
                m.error(
                    None,
                    "url",
                    "missing: every multiplexer needs a postgres:// url",
                );
                continue;
            };
            if Driver::of(&url) != Ok(Driver::Postgres) {
                m.error(
                    Some("url"),
                    "url",
                    "a multiplexer pipelines PostgreSQL statements: give a postgres:// URL (use a pool for other databases)",
                );
            }
            m.put_password(&mut url, passwords.get(&name).cloned(), dir);
            if let Err(problem) = check_url(Driver::Postgres, &url, dir) {
                m.error(Some("url"), "url", &problem);
            }
            let options = m.mux_options();
            out.insert(
                name,
                MuxSection {
                    url,
                    options: options.unwrap_or_default(),
                },
            );
        }
        if let Some(e) = ConfigError::all(errors.into_inner()) {
            return Err(e);
        }
        Ok(Config {
            origin,
            dir: dir.to_owned(),
            admin,
            clusters,
            pools,
            multiplexers: out,
        })
    }

    /// An error about pool `name` found after parsing (a driver refused
    /// its URL, its settings contradict each other).
    pub(crate) fn pool_error(&self, name: &str, field: &str, problem: String) -> ConfigError {
        let section = format!("pools.{name}");
        let key = (field != "pool").then_some(field);
        ConfigError::Field {
            place: self.origin.place(&section, key),
            field: key.map_or(section.clone(), |k| format!("{section}.{k}")),
            problem,
        }
    }
}

impl Config {
    /// An error about multiplexer `name` found after parsing.
    pub(crate) fn mux_error(&self, name: &str, problem: String) -> ConfigError {
        let section = format!("multiplexers.{name}");
        ConfigError::Field {
            place: self.origin.place(&section, None),
            field: section,
            problem,
        }
    }
}

fn table_of(
    origin: &Origin,
    errors: &RefCell<Vec<ConfigError>>,
    kind: &str,
    name: &str,
    value: Value,
) -> Option<Table> {
    match value {
        Value::Table(t) => Some(t),
        other => {
            errors.borrow_mut().push(ConfigError::Field {
                place: origin.place(kind, Some(name)),
                field: format!("{kind}.{name}"),
                problem: format!(
                    "expected a table ([{kind}.{name}]), found {}",
                    other.type_str()
                ),
            });
            None
        }
    }
}

/// `host:port`, as `serve` will bind it.
pub(crate) fn check_listen(text: &str) -> Result<(), String> {
    let ok = match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{text}` is not an address to listen on: write host:port, such as \"127.0.0.1:7070\" or \"0.0.0.0:7070\" (port 0 picks a free one)"
        ))
    }
}

/// Whether the driver takes the URL, parsed as it will be used; nothing
/// is opened.
fn check_url(driver: Driver, url: &str, dir: &Path) -> Result<(), String> {
    let chain = |e: &(dyn std::error::Error + 'static)| aquifer::error_chain(e);
    match driver {
        Driver::Postgres => aquifer_postgres::PgManager::new(url)
            .map(drop)
            .map_err(|e| chain(&e)),
        Driver::MySql => {
            aquifer_mysql::MySqlManager::new(&url.replacen("mariadb://", "mysql://", 1))
                .map(drop)
                .map_err(|e| chain(&e))
        }
        Driver::Sqlite => crate::fleet::sqlite_config(url, dir, None)
            .map(drop)
            .map_err(|e| chain(&e)),
    }
}

/// One section's keys, taken one by one so that every error names its
/// field and line; keys left at the end are unknown. Errors are gathered,
/// so that a file's every mistake is reported at once.
struct Section<'a> {
    origin: &'a Origin,
    errors: &'a RefCell<Vec<ConfigError>>,
    path: String,
    table: Table,
}

impl<'a> Section<'a> {
    fn new(
        origin: &'a Origin,
        errors: &'a RefCell<Vec<ConfigError>>,
        path: &str,
        table: Table,
    ) -> Self {
        Self {
            origin,
            errors,
            path: path.to_owned(),
            table,
        }
    }

    fn error(&self, key: Option<&str>, field: &str, problem: &str) {
        let field = if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        };
        self.errors.borrow_mut().push(ConfigError::Field {
            place: self.origin.place(&self.path, key),
            field,
            problem: problem.to_owned(),
        });
    }

    fn take<T: DeserializeOwned>(&mut self, key: &str, expected: &str) -> Option<T> {
        let value = self.table.remove(key)?;
        let shown = match &value {
            Value::String(s) => format!("\"{s}\""),
            Value::Table(_) => "a table".to_owned(),
            Value::Array(_) => "a list".to_owned(),
            v => v.to_string(),
        };
        match value.try_into() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(
                    Some(key),
                    key,
                    &format!("expected {expected}, found {shown}"),
                );
                None
            }
        }
    }

    /// A duration with a unit; a bare number is refused, as everywhere.
    fn duration(&mut self, key: &str) -> Option<Duration> {
        let value = self.table.remove(key)?;
        let text = match &value {
            Value::String(s) => s.clone(),
            Value::Integer(_) | Value::Float(_) => value.to_string(),
            other => {
                self.error(
                    Some(key),
                    key,
                    &format!(
                        "expected a duration such as \"500ms\", \"30s\" or \"5m\", found {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        match aquifer::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(Some(key), key, &e.to_string());
                None
            }
        }
    }

    /// Puts the password into `url`: from `password_file` or
    /// `password_env` (one of them), else `from_env` (the
    /// `AQUIFER_…_PASSWORD` variable).
    fn put_password(&mut self, url: &mut String, from_env: Option<String>, dir: &Path) {
        let mut password = from_env;
        let file = self.take::<String>("password_file", "a path");
        let var = self.take::<String>("password_env", "an environment variable's name");
        if let Some(f) = &file {
            password = self.secret_file("password_file", f, dir).or(password);
        }
        if file.is_some() && var.is_some() {
            self.error(
                Some("password_env"),
                "password_env",
                "both password_file and password_env are set: keep one",
            );
        }
        if let Some(var) = var {
            match std::env::var(&var) {
                Ok(v) if !v.is_empty() => password = Some(v),
                Ok(_) => self.error(
                    Some("password_env"),
                    "password_env",
                    &format!("the environment variable {var} is empty"),
                ),
                Err(_) => self.error(
                    Some("password_env"),
                    "password_env",
                    &format!("the environment variable {var} is not set"),
                ),
            }
        }
        if let Some(pw) = password {
            match put_password(url, &pw) {
                Some(u) => *url = u,
                None => self.error(
                    Some("url"),
                    "url",
                    "a password was given but the URL has no user (write scheme://user@host/…)",
                ),
            }
        }
    }

    /// A secret's first line, from a file relative to `dir`; an empty one
    /// is an error.
    fn secret_file(&self, key: &str, file: &str, dir: &Path) -> Option<String> {
        let path = dir.join(file);
        match read_secret(&path) {
            Ok(s) if !s.is_empty() => Some(s),
            Ok(_) => {
                self.error(
                    Some(key),
                    key,
                    &format!("{} is empty: its first line is the secret", path.display()),
                );
                None
            }
            Err(e) => {
                self.error(
                    Some(key),
                    key,
                    &format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn finish(self, allowed: &str) {
        for key in self.table.keys() {
            self.error(
                Some(key),
                key,
                &format!("unknown field; this section takes {allowed}"),
            );
        }
    }

    /// The keys left, as multiplexer settings; each key that does not read
    /// is an error naming it.
    fn mux_options(&self) -> Option<MuxConfig> {
        self.settings::<MuxConfig>(
            "a multiplexer takes url, password_file, password_env and the settings of aquifer::MuxConfig (min, max, max_in_flight, pipeline_horizon, scale_down_after, acquire_timeout, pool…)",
            MuxConfig::validate,
        )
    }

    /// The keys left, as pool settings; each key that does not read is an
    /// error naming it.
    fn pool_options(&self) -> Option<PoolConfig> {
        self.settings::<PoolConfig>(
            "a pool takes url, cluster, tags, weight, create, password_file, password_env and the settings of aquifer::PoolConfig (max, min, acquire_timeout…)",
            PoolConfig::validate,
        )
    }

    /// The keys left as `T`, checked by `validate`; a key that does not
    /// read is an error naming it, an unknown one says what `takes`.
    fn settings<T: DeserializeOwned>(
        &self,
        takes: &str,
        validate: impl Fn(&T) -> Result<(), aquifer::BuildError>,
    ) -> Option<T> {
        let whole = match Value::Table(self.table.clone()).try_into::<T>() {
            Ok(cfg) => match validate(&cfg) {
                Ok(()) => return Some(cfg),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        let mut named = false;
        for (key, value) in &self.table {
            let mut one = Table::new();
            one.insert(key.clone(), value.clone());
            if let Err(e) = Value::Table(one).try_into::<T>() {
                let problem = e.to_string();
                // toml adds "in `key`", which the error names already.
                let problem = problem.split("\nin `").next().unwrap_or_default();
                let problem = if problem.contains("unknown field") {
                    format!("unknown field; {takes}")
                } else {
                    problem.trim().to_owned()
                };
                self.error(Some(key), key, &problem);
                named = true;
            }
        }
        if !named {
            // Settings that read but do not fit together: the pool's own.
            self.errors.borrow_mut().push(ConfigError::Field {
                place: self.origin.place(&self.path, None),
                field: self.path.clone(),
                problem: whole.trim().to_owned(),
            });
        }
        None
    }
}

/// A secret kept in a file: its first line, without the newline.
pub(crate) fn read_secret(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.lines().next().unwrap_or("").to_owned())
}

/// Puts a password into a URL's user part, percent-encoded; `None` when
/// the URL names no user.
pub(crate) fn put_password(url: &str, password: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..authority_end].rfind('@')? + start;
    let user = url[start..at].split(':').next().unwrap_or("");
    let encoded = percent_encode(password.as_bytes(), b"");
    Some(format!("{}{user}:{encoded}{}", &url[..start], &url[at..]))
}

/// `bytes` percent-encoded, but for letters, digits, `-._~` and `keep`.
pub(crate) fn percent_encode(bytes: &[u8], keep: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b if keep.contains(&b) => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Applies `AQUIFER_ADMIN_<FIELD>`, `AQUIFER_CLUSTERS_<NAME>_<FIELD>` and
/// `AQUIFER_POOLS_<NAME>_<FIELD>` to the document. `<NAME>` is matched
/// against the names in the file, upper-cased with `-` as `_`. Values
/// read as TOML (numbers, booleans, lists) or else as strings.
/// `AQUIFER_POOLS_<NAME>_PASSWORD` is a password, returned by pool.
fn apply_env(
    doc: &mut Table,
    origin: &mut Origin,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut passwords = HashMap::new();
    let names = |doc: &Table, kind: &str| -> Vec<String> {
        match doc.get(kind) {
            Some(Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        }
    };
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("AQUIFER_"))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let rest = &var["AQUIFER_".len()..];
        let (section, field) = if let Some(field) = rest.strip_prefix("ADMIN_") {
            ("admin".to_owned(), field.to_ascii_lowercase())
        } else if let Some((kind, tail)) = rest
            .strip_prefix("CLUSTERS_")
            .map(|t| ("clusters", t))
            .or_else(|| rest.strip_prefix("POOLS_").map(|t| ("pools", t)))
            .or_else(|| {
                rest.strip_prefix("MULTIPLEXERS_")
                    .map(|t| ("multiplexers", t))
            })
        {
            let mut candidates = names(doc, kind);
            candidates.sort_by_key(|n| std::cmp::Reverse(n.len()));
            let found = candidates.into_iter().find(|n| {
                let up = n.to_ascii_uppercase().replace('-', "_");
                tail.strip_prefix(&up).is_some_and(|f| f.starts_with('_'))
            });
            let Some(name) = found else {
                return Err(ConfigError::Syntax {
                    place: format!("environment variable {var}"),
                    problem: format!(
                        "names no {} in {}: the part after AQUIFER_{}_ must start with a name from the file",
                        &kind[..kind.len() - 1],
                        origin.file,
                        kind.to_ascii_uppercase()
                    ),
                });
            };
            let up = name.to_ascii_uppercase().replace('-', "_");
            let field = tail[up.len() + 1..].to_ascii_lowercase();
            if kind != "clusters" && field == "password" {
                passwords.insert(name, value);
                continue;
            }
            (format!("{kind}.{name}"), field)
        } else {
            continue; // AQUIFER_CONFIG and the like are the CLI's own
        };
        let parsed = format!("v = {value}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(Value::String(value));
        let mut table = &mut *doc;
        for part in section.split('.') {
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            table = match entry {
                Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Syntax {
                        place: format!("environment variable {var}"),
                        problem: format!("`{section}` is not a table in {}", origin.file),
                    })
                }
            };
        }
        table.insert(field.clone(), parsed);
        origin.from_env.insert(format!("{section}.{field}"), var);
    }
    Ok(passwords)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_under_their_section() {
        let text = "[admin]\nlisten = 1\n\n[pools.a]\nurl = \"x\"\nmax = 3\n[pools.\"b\"]\nmax=4\n";
        assert_eq!(line_of(text, "pools.a", Some("max")), Some(6));
        assert_eq!(line_of(text, "pools.b", Some("max")), Some(8));
        assert_eq!(line_of(text, "pools.a", Some("nope")), Some(4));
        assert_eq!(line_of(text, "admin", Some("listen")), Some(2));
    }

    #[test]
    fn passwords_are_encoded_into_the_user_part() {
        let p = put_password;
        assert_eq!(
            p("postgres://app@db:5432/x?sslmode=disable", "p@ss:w/rd").as_deref(),
            Some("postgres://app:p%40ss%3Aw%2Frd@db:5432/x?sslmode=disable")
        );
        assert_eq!(
            p("mysql://app:old@db/x", "new").as_deref(),
            Some("mysql://app:new@db/x")
        );
        assert_eq!(p("postgres://db/x", "pw"), None);
    }
}
