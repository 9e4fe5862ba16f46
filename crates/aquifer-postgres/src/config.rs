//! Reading a connection URL, with errors that name the bad part and never
//! repeat what was written there (it could be a password in the wrong place).

use std::str::FromStr;

/// A connection string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgConfigError {
    /// One part of the URL is malformed.
    #[error("invalid PostgreSQL URL: the {part} {problem}")]
    Invalid {
        /// Which part: `scheme`, `host`, `port`, `user`, `database`, `option`.
        part: &'static str,
        /// What is wrong with it (never the part's text).
        problem: String,
    },
}

pub(crate) fn invalid(part: &'static str, problem: impl Into<String>) -> PgConfigError {
    PgConfigError::Invalid {
        part,
        problem: problem.into(),
    }
}

/// Parses `postgres://user:password@host:port/db?option=value` or a
/// `key=value` connection string.
pub(crate) fn parse(text: &str) -> Result<tokio_postgres::Config, PgConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("URL", "is empty"));
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        check_url(scheme, rest)?;
    }
    let config = tokio_postgres::Config::from_str(text).map_err(|e| {
        // tokio-postgres says which option is bad in the error's source and
        // never repeats a value.
        let detail = std::error::Error::source(&e)
            .map(ToString::to_string)
            .unwrap_or_else(|| e.to_string());
        invalid("option", format!("is not accepted: {detail}"))
    })?;
    if cfg!(not(feature = "tls"))
        && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require
    {
        return Err(invalid(
            "option",
            "sslmode=require needs TLS: enable aquifer-postgres's `tls` feature",
        ));
    }
    Ok(config)
}

fn check_url(scheme: &str, rest: &str) -> Result<(), PgConfigError> {
    if scheme != "postgres" && scheme != "postgresql" {
        let shown = if scheme.len() <= 12 && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            format!("`{scheme}`")
        } else {
            "given".to_owned()
        };
        return Err(invalid(
            "scheme",
            format!("{shown} is not PostgreSQL's: start the URL with postgres:// or postgresql://"),
        ));
    }
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if user.is_empty() {
                return Err(invalid(
                    "user",
                    "is empty: write user@host or leave both out",
                ));
            }
            if !percent_ok(userinfo) {
                return Err(invalid(
                    "user or password",
                    "has a bad %-escape: escape a literal % as %25",
                ));
            }
            hosts
        }
        None => authority,
    };
    if !percent_ok(db) {
        return Err(invalid("database", "has a bad %-escape"));
    }
    for host in hosts.split(',') {
        let port = if let Some(v6) = host.strip_prefix('[') {
            match v6.split_once(']') {
                Some((_, after)) => after.strip_prefix(':'),
                None => return Err(invalid("host", "opens an IPv6 `[` without closing it")),
            }
        } else {
            host.split_once(':').map(|(_, p)| p)
        };
        if let Some(port) = port {
            if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
                return Err(invalid(
                    "port",
                    "is not a port number (1-65535); if a password contains : / @ or ?, percent-encode it",
                ));
            }
        }
    }
    Ok(())
}

fn percent_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits must follow.
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// `host:port/db` for messages: where, never who or with what password.
pub(crate) fn target(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .zip(cfg.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            Host::Tcp(name) => format!("{name}:{p}"),
            Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", cfg.get_dbname().unwrap_or("postgres"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> (String, String) {
        match parse(url).unwrap_err() {
            PgConfigError::Invalid { part, problem } => (part.to_owned(), problem),
        }
    }

    #[test]
    fn good_urls_and_key_value_strings_parse() {
        let c =
            parse("postgres://app:s3cret@db.internal:6432/orders?application_name=api").unwrap();
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_ports(), &[6432]);
        assert_eq!(c.get_dbname(), Some("orders"));
        assert_eq!(target(&c), "db.internal:6432/orders");
        parse("postgresql://[::1]:5432/x").unwrap();
        parse("postgres://a%40b:p%25w@h/db").unwrap();
        parse("host=localhost port=5433 user=app dbname=x").unwrap();
    }

    #[test]
    fn each_bad_part_is_named_and_never_echoed() {
        assert_eq!(err("mysql://u:p@h/db").0, "scheme");
        assert!(err("mysql://u:p@h/db").1.contains("postgres://"));
        assert_eq!(err("postgres://u:p@h:99999/db").0, "port");
        // A password with an unescaped `/` looks like a port: it must not
        // show up in the message.
        let (part, problem) = err("postgres://u:hunter/2@h/db");
        assert_eq!(part, "port");
        assert!(!problem.contains("hunter"), "{problem}");
        assert_eq!(err("postgres://:pw@h/db").0, "user");
        assert_eq!(err("postgres://u:p%zz@h/db").0, "user or password");
        assert_eq!(err("postgres://[::1/db").0, "host");
        assert_eq!(err("postgres://u@h/db?bogus_option=1").0, "option");
        assert_eq!(err("   ").0, "URL");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn sslmode_require_without_the_tls_feature_says_to_enable_it() {
        let e = parse("postgres://u:p@h/db?sslmode=require").unwrap_err();
        assert!(e.to_string().contains("`tls` feature"), "{e}");
        assert!(parse("postgres://u:p@h/db?sslmode=prefer").is_ok());
    }
}
