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

/// What a connection string asks of TLS, in libpq's words: `sslmode`
/// (`require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or
/// `system` for the system's roots, the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsWanted {
    /// No TLS asked for (`disable`, `allow`, `prefer`, or nothing).
    None,
    /// Encrypt; verify the chain only if `sslrootcert` names a file (as
    /// libpq does when a root certificate is there).
    Require(Option<String>),
    /// Encrypt and verify the chain, not the host name.
    VerifyCa(Option<String>),
    /// Encrypt and verify the chain and the host name.
    VerifyFull(Option<String>),
}

/// Takes `sslmode=verify-ca|verify-full` and `sslrootcert=…` out of a
/// connection string (tokio-postgres knows neither): the string left asks
/// for `sslmode=require`, and the TLS wanted is returned beside it.
fn take_tls(text: &str) -> Result<(String, TlsWanted), PgConfigError> {
    let url = text.contains("://");
    let (head, params, sep): (&str, &str, char) = if url {
        match text.split_once('?') {
            Some((h, q)) => (h, q, '&'),
            None => (text, "", '&'),
        }
    } else {
        ("", text, ' ')
    };
    let mut mode = None;
    let mut root = None;
    let mut kept = Vec::new();
    for pair in params.split(sep).filter(|p| !p.trim().is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = Some(v.to_owned());
                kept.push(pair.to_owned());
            }
            Some(("sslrootcert", v)) => root = Some(decode(v)?),
            _ => kept.push(pair.to_owned()),
        }
    }
    let wanted =
        match mode.as_deref() {
            Some("require") => TlsWanted::Require(root),
            Some("verify-ca") => TlsWanted::VerifyCa(root),
            Some("verify-full") => TlsWanted::VerifyFull(root),
            _ if root.is_some() => return Err(invalid(
                "option",
                "sslrootcert is set without sslmode=verify-full (or verify-ca, require): add one",
            )),
            _ => TlsWanted::None,
        };
    for p in &mut kept {
        if matches!(p.as_str(), "sslmode=verify-ca" | "sslmode=verify-full") {
            *p = "sslmode=require".to_owned();
        }
    }
    let joined = kept.join(&sep.to_string());
    let text = match (url, joined.is_empty()) {
        (true, true) => head.to_owned(),
        (true, false) => format!("{head}?{joined}"),
        (false, _) => joined,
    };
    Ok((text, wanted))
}

/// A URL parameter's `%XX` escapes decoded.
fn decode(v: &str) -> Result<String, PgConfigError> {
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| invalid("option", "sslrootcert is not UTF-8 once decoded"))
}

/// Parses `postgres://user:password@host:port/db?option=value` or a
/// `key=value` connection string.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Result<tokio_postgres::Config, PgConfigError> {
    parse_with_tls(text).map(|(config, _)| config)
}

/// As [`parse`], with what the string asks of TLS.
pub(crate) fn parse_with_tls(
    text: &str,
) -> Result<(tokio_postgres::Config, TlsWanted), PgConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("URL", "is empty"));
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        check_url(scheme, rest)?;
    }
    let (text, wanted) = take_tls(text)?;
    let text = text.as_str();
    let config = tokio_postgres::Config::from_str(text).map_err(|e| {
        // tokio-postgres says which option is bad in the error's source and
        // never repeats a value.
        let detail = std::error::Error::source(&e)
            .map(ToString::to_string)
            .unwrap_or_else(|| e.to_string());
        invalid("option", format!("is not accepted: {detail}"))
    })?;
    if cfg!(not(feature = "tls")) && wanted != TlsWanted::None {
        return Err(invalid(
            "option",
            "this sslmode needs TLS: enable aquifer-postgres's `tls` feature (the aquifer binary has it)",
        ));
    }
    Ok((config, wanted))
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

    #[test]
    fn tls_options_are_read_in_libpqs_words() {
        let (text, wanted) =
            take_tls("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fca%20dir%2Froot.crt&application_name=x")
                .unwrap();
        assert_eq!(text, "postgres://u@h/db?sslmode=require&application_name=x");
        assert_eq!(
            wanted,
            TlsWanted::VerifyFull(Some("/ca dir/root.crt".into()))
        );
        let (text, wanted) = take_tls("host=h sslmode=verify-ca dbname=x").unwrap();
        assert_eq!(text, "host=h sslmode=require dbname=x");
        assert_eq!(wanted, TlsWanted::VerifyCa(None));
        assert_eq!(
            take_tls("postgres://u@h/db?sslmode=require").unwrap().1,
            TlsWanted::Require(None)
        );
        assert_eq!(
            take_tls("postgres://u@h/db?sslmode=prefer").unwrap().1,
            TlsWanted::None
        );
        assert_eq!(
            take_tls("postgres://u@h/db").unwrap().0,
            "postgres://u@h/db"
        );
        assert!(take_tls("postgres://u@h/db?sslrootcert=/x").is_err());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn sslmode_require_without_the_tls_feature_says_to_enable_it() {
        let e = parse("postgres://u:p@h/db?sslmode=require").unwrap_err();
        assert!(e.to_string().contains("`tls` feature"), "{e}");
        assert!(parse("postgres://u:p@h/db?sslmode=prefer").is_ok());
    }
}
