//! `mysql://` URLs turned into driver options, with errors that name the bad
//! part and never echo a value (the password lives in the URL).

use mysql_async::{Opts, OptsBuilder, UrlError};

/// A connection URL that cannot work, with the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MySqlConfigError {
    /// The URL or one of its parameters is malformed; `part` names which.
    /// The message never repeats the URL or a value from it.
    #[error("invalid MySQL {part}: {problem}")]
    Invalid {
        /// The part that is wrong (`url`, `scheme`, `host`, `port`,
        /// `parameter`).
        part: &'static str,
        /// What is wrong and what is expected.
        problem: String,
    },
}

fn invalid(part: &'static str, problem: impl Into<String>) -> MySqlConfigError {
    MySqlConfigError::Invalid {
        part,
        problem: problem.into(),
    }
}

/// Parses `mysql://user:password@host:port/db?param=value`. Unless the URL
/// says `prefer_socket=true`, connections stay on the address given
/// (mysql_async would otherwise switch a local TCP connection to the unix
/// socket, around any proxy in between).
pub(crate) fn parse(url: &str) -> Result<Opts, MySqlConfigError> {
    const FORM: &str = "expected mysql://user:password@host:port/database";
    if url.trim().is_empty() {
        return Err(invalid("url", format!("is empty: {FORM}")));
    }
    if !url.contains("://") {
        return Err(invalid("url", format!("has no scheme: {FORM}")));
    }
    let (url, ssl) = take_ssl(url)?;
    let url = url.as_str();
    let opts = Opts::from_url(url).map_err(|e| match e {
        UrlError::UnsupportedScheme { .. } => invalid("scheme", "expected mysql://"),
        UrlError::UnknownParameter { param } => {
            invalid("parameter", format!("unknown parameter {param:?}"))
        }
        UrlError::InvalidParamValue { param, .. } => {
            invalid("parameter", format!("invalid value for {param:?}"))
        }
        UrlError::FeatureRequired { feature, param } => invalid(
            "parameter",
            format!("{param:?} needs mysql_async's {feature:?} feature (aquifer-mysql's `tls`)"),
        ),
        UrlError::InvalidPoolConstraints { .. } => invalid(
            "parameter",
            "pool_min > pool_max (pool_* parameters are mysql_async's own pool, which aquifer replaces)",
        ),
        UrlError::Parse(e) => {
            let text = e.to_string();
            let part = if text.contains("port") {
                "port"
            } else if text.contains("host")
                || text.contains("domain")
                || text.contains("address")
            {
                "host"
            } else {
                "url"
            };
            invalid(part, text)
        }
        _ => invalid("url", "expected mysql://user:password@host:port/database"),
    })?;
    let explicit_socket = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("prefer_socket=")));
    let mut builder = OptsBuilder::from_opts(opts);
    if !explicit_socket {
        builder = builder.prefer_socket(false);
    }
    if let Some(ssl) = ssl {
        builder = builder.ssl_opts(ssl);
    }
    Ok(builder.into())
}

/// Takes MySQL's own `ssl-mode` (`DISABLED`, `REQUIRED`, `VERIFY_CA`,
/// `VERIFY_IDENTITY`) and `ssl-ca` (a PEM file) out of the URL, which
/// mysql_async does not know, and turns them into its TLS options. As the
/// MySQL client does, `REQUIRED` with `ssl-ca` verifies the chain.
fn take_ssl(url: &str) -> Result<(String, Option<mysql_async::SslOpts>), MySqlConfigError> {
    let Some((head, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut mode = None;
    let mut ca = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("ssl-mode") || k == "ssl_mode" => {
                mode = Some(v.to_ascii_uppercase())
            }
            Some((k, v)) if k.eq_ignore_ascii_case("ssl-ca") || k == "ssl_ca" => {
                let path = percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .map_err(|_| invalid("parameter", "ssl-ca is not UTF-8"))?;
                ca = Some(path.into_owned());
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    let ssl = match mode.as_deref() {
        None | Some("DISABLED") if ca.is_none() => None,
        None | Some("DISABLED") => {
            return Err(invalid(
                "parameter",
                "ssl-ca is set without ssl-mode=VERIFY_IDENTITY (or VERIFY_CA, REQUIRED): add one",
            ))
        }
        Some("PREFERRED") => {
            return Err(invalid(
                "parameter",
                "ssl-mode=PREFERRED would fall back to plain text unseen: write REQUIRED, VERIFY_CA or VERIFY_IDENTITY (or DISABLED)",
            ))
        }
        Some(m @ ("REQUIRED" | "VERIFY_CA" | "VERIFY_IDENTITY")) => {
            if cfg!(not(feature = "tls")) {
                return Err(invalid(
                    "parameter",
                    "ssl-mode needs TLS: enable aquifer-mysql's `tls` feature (the aquifer binary has it)",
                ));
            }
            let verify_chain = m != "REQUIRED" || ca.is_some();
            let mut ssl = mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(!verify_chain)
                .with_danger_skip_domain_validation(m != "VERIFY_IDENTITY");
            if let Some(path) = &ca {
                let pem = std::fs::read(path).map_err(|e| {
                    invalid("parameter", format!("cannot read ssl-ca {path}: {e}"))
                })?;
                ssl = ssl
                    .with_root_certs(vec![pem.into()])
                    .with_disable_built_in_roots(true);
            }
            Some(ssl)
        }
        Some(_) => {
            return Err(invalid(
                "parameter",
                "ssl-mode takes DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY",
            ))
        }
    };
    Ok((rest, ssl))
}

/// `user@host:port/db`: names a server in messages without the password.
pub(crate) fn describe(opts: &Opts) -> String {
    format!(
        "{}@{}:{}/{}",
        opts.user().unwrap_or(""),
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(url: &str) -> &'static str {
        match parse(url) {
            Err(MySqlConfigError::Invalid { part, .. }) => part,
            Ok(_) => "accepted",
        }
    }

    #[test]
    fn good_urls_parse_and_stay_on_tcp() {
        let o = parse("mysql://app:pw@db.internal:3307/shop").unwrap();
        assert_eq!(o.ip_or_hostname(), "db.internal");
        assert_eq!(o.tcp_port(), 3307);
        assert_eq!(o.db_name(), Some("shop"));
        assert!(!o.prefer_socket());
        assert!(parse("mysql://a@h/d?prefer_socket=true")
            .unwrap()
            .prefer_socket());
        assert_eq!(describe(&o), "app@db.internal:3307/shop");
    }

    #[test]
    fn bad_urls_name_the_part_and_never_the_password() {
        assert_eq!(part("postgres://a:b@h/d"), "scheme");
        assert_eq!(part("mysql://a:b@h:99999/d"), "port");
        assert_eq!(part("mysql://a:b@h/d?nonsense=1"), "parameter");
        assert_eq!(part("mysql://a:b@h/d?stmt_cache_size=lots"), "parameter");
        assert_eq!(part("not a url"), "url");
        for garbage in ["", "   ", "localhost:3306/db"] {
            let e = parse(garbage).unwrap_err().to_string();
            assert!(e.contains("expected mysql://"), "{garbage:?}: {e}");
            assert!(!e.contains("relative URL"), "{e}");
        }
        for url in [
            "mysql://u:hunter2@h:99999/d",
            "mysql://u:pw@h/d?tcp_keepalive=hunter2",
            "mysql://u:hunter2@h/d?stmt_cache_size=x",
        ] {
            let err = parse(url).unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
            }
        }
    }
}
