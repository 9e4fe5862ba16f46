//! One section of the file, its keys taken one at a time, its errors
//! gathered.

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use aquifer::{MuxConfig, PoolConfig};
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{put_password, read_secret, ConfigError, Origin};

pub(super) fn table_of(
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

/// One section's keys, taken one by one so that every error names its
/// field and line; keys left at the end are unknown. Errors are gathered,
/// so that a file's every mistake is reported at once.
pub(super) struct Section<'a> {
    origin: &'a Origin,
    errors: &'a RefCell<Vec<ConfigError>>,
    path: String,
    table: Table,
}

impl<'a> Section<'a> {
    pub(super) fn new(
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

    /// An error about the whole section, named by its path.
    pub(super) fn section_error(&self, problem: &str) {
        self.errors.borrow_mut().push(ConfigError::Field {
            place: self.origin.place(&self.path, None),
            field: self.path.clone(),
            problem: problem.to_owned(),
        });
    }

    /// Leaves these keys unread and unreported.
    pub(super) fn forget(&mut self, keys: &[&str]) {
        for key in keys {
            self.table.remove(*key);
        }
    }

    pub(super) fn error(&self, key: Option<&str>, field: &str, problem: &str) {
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

    pub(super) fn take<T: DeserializeOwned>(&mut self, key: &str, expected: &str) -> Option<T> {
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
    pub(super) fn duration(&mut self, key: &str) -> Option<Duration> {
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
    pub(super) fn put_password(&mut self, url: &mut String, from_env: Option<String>, dir: &Path) {
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
    pub(super) fn secret_file(&self, key: &str, file: &str, dir: &Path) -> Option<String> {
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

    pub(super) fn finish(self, allowed: &str) {
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
    pub(super) fn mux_options(&self) -> Option<MuxConfig> {
        self.settings::<MuxConfig>(
            "a multiplexer takes url, password_file, password_env and the settings of aquifer::MuxConfig (min, max, adaptive, max_in_flight, pipeline_horizon, scale_down_after, acquire_timeout, pool…)",
            MuxConfig::validate,
        )
    }

    /// The keys left, as pool settings; each key that does not read is an
    /// error naming it.
    pub(super) fn pool_options(&self) -> Option<PoolConfig> {
        self.settings::<PoolConfig>(
            "a pool takes url, cluster, tags, weight, create, password_file, password_env and the settings of aquifer::PoolConfig (max, min, acquire_timeout…)",
            PoolConfig::validate,
        )
    }

    /// The keys left as `T`, checked by `validate`; a key that does not
    /// read is an error naming it, an unknown one says what `takes`.
    pub(super) fn settings<T: DeserializeOwned>(
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
            // Settings that read but do not fit together: the section's own.
            self.section_error(whole.trim());
        }
        None
    }
}
