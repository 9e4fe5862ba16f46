//! The configuration file: TOML, every field overridable from the
//! environment, and errors that name the file, the line and the field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aquifer::{Mode, MuxConfig, PoolConfig};
use indexmap::IndexMap;
use toml::Table;

use crate::fleet::Driver;

mod checks;
mod env;
mod section;
mod text;

pub(crate) use checks::check_listen;
use checks::check_url;
use env::apply_env;
use section::{table_of, Section};
use text::line_of;
pub(crate) use text::{percent_encode, put_password, read_secret};

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
    /// A replica set: each member's role found from its server.
    pub(crate) roles: Option<aquifer::Roles>,
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
            let roles = cluster_roles(&mut c);
            let section = ClusterSection {
                roles,
                mode,
                ban_time: c.duration("ban_time"),
                acquire_timeout: c.duration("acquire_timeout"),
                log_file,
                log_max_bytes: c
                    .take("log_max_bytes", "a number of bytes")
                    .unwrap_or(10 << 20),
                max_warnings: c.take("max_warnings", "a whole number"),
            };
            c.finish(
                "mode, ban_time, acquire_timeout, log_file, log_max_bytes, max_warnings, \
                 roles, role_interval, split_brain",
            );
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
                // The pool's own keys are not settings: only check those.
                p.forget(&[
                    "cluster",
                    "tags",
                    "weight",
                    "create",
                    "password_file",
                    "password_env",
                ]);
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
                    if d == Driver::Sqlite && clusters[c].roles.is_some() {
                        p.error(
                            Some("cluster"),
                            "cluster",
                            &format!(
                                "cluster `{c}` watches roles (roles = true) and SQLite has no replicas: use PostgreSQL or MySQL/MariaDB pools, or leave roles out"
                            ),
                        );
                    }
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
                m.section_error(&format!(
                    "`{name}` is also a pool or a cluster: every name is served once; rename one"
                ));
            }
            let Some(mut url) = m.take::<String>("url", "a postgres:// URL") else {
                m.error(
                    None,
                    "url",
                    "missing: every multiplexer needs a postgres:// url",
                );
                continue;
            };
            m.put_password(&mut url, passwords.get(&name).cloned(), dir);
            if Driver::of(&url) != Ok(Driver::Postgres) {
                m.error(
                    Some("url"),
                    "url",
                    "a multiplexer pipelines PostgreSQL statements: give a postgres:// URL (use a pool for other databases)",
                );
            } else if let Err(problem) = check_url(Driver::Postgres, &url, dir) {
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

/// A cluster's `roles`, `role_interval` and `split_brain`: role watching
/// when `roles = true`; the other two only with it.
fn cluster_roles(c: &mut Section<'_>) -> Option<aquifer::Roles> {
    let on = c.take::<bool>("roles", "true or false").unwrap_or(false);
    let interval = c.duration("role_interval");
    let split = c.take::<String>("split_brain", "\"higher_timeline\" or \"refuse\"");
    let split = split.and_then(|s| match s.as_str() {
        "higher_timeline" => Some(aquifer::SplitBrain::HigherTimeline),
        "refuse" => Some(aquifer::SplitBrain::Refuse),
        other => {
            c.error(
                Some("split_brain"),
                "split_brain",
                &format!("`{other}` is not a rule: write \"higher_timeline\" or \"refuse\""),
            );
            None
        }
    });
    if !on {
        for (given, key) in [
            (interval.is_some(), "role_interval"),
            (split.is_some(), "split_brain"),
        ] {
            if given {
                c.error(
                    Some(key),
                    key,
                    "only a cluster with roles = true watches roles: add it, or remove this",
                );
            }
        }
        return None;
    }
    if interval.is_some_and(|d| d.is_zero()) {
        c.error(
            Some("role_interval"),
            "role_interval",
            "a zero interval would check without pause: write \"1s\" or more",
        );
    }
    let mut roles = aquifer::Roles::default();
    if let Some(d) = interval.filter(|d| !d.is_zero()) {
        roles = roles.interval(d);
    }
    if let Some(s) = split {
        roles = roles.split_brain(s);
    }
    Some(roles)
}
