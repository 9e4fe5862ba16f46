//! `AQUIFER_…` environment variables laid over the file.

use std::collections::HashMap;

use toml::{Table, Value};

use super::{ConfigError, Origin};

/// Applies `AQUIFER_ADMIN_<FIELD>`, `AQUIFER_CLUSTERS_<NAME>_<FIELD>` and
/// `AQUIFER_POOLS_<NAME>_<FIELD>` to the document. `<NAME>` is matched
/// against the names in the file, upper-cased with `-` as `_`. Values
/// read as TOML (numbers, booleans, lists) or else as strings.
/// `AQUIFER_POOLS_<NAME>_PASSWORD` is a password, returned by pool.
pub(super) fn apply_env(
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
