//! Read-your-writes tokens: where a committed write is in its primary's
//! history, as a short string that crosses processes.

use std::fmt;
use std::str::FromStr;

/// Where a committed write is in its primary's history, so that a later
/// read (in this process or another) can go to a replica that has it:
/// take it with [`WriteConn::token`](crate::WriteConn::token) after the
/// commit, pass it on as a string (`to_string()`, short enough for an HTTP
/// header or a cookie), read it back with `parse()`, and read with
/// [`Cluster::read_at_least`](crate::Cluster::read_at_least).
///
/// A PostgreSQL token holds the server's system identifier, its timeline
/// and a WAL position: `pg.6f2b09c1d3e4a5b6.2.16b3a28`. A MariaDB token
/// holds GTIDs (domain, server, sequence), `+` between domains:
/// `gtid.0-11-2054+1-12-7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteToken(pub(crate) Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Repr {
    /// PostgreSQL.
    Wal {
        /// Which database system (`system_identifier`): a token is never
        /// trusted to a server of another.
        system: u64,
        /// The primary's timeline when the write committed.
        timeline: u64,
        /// The WAL position after the commit, in bytes.
        lsn: u64,
    },
    /// MariaDB: the last GTID of each replication domain written.
    Gtid(Gtids),
}

/// MariaDB GTIDs, one per replication domain: `(domain, server, sequence)`,
/// sorted by domain.
pub(crate) type Gtids = Vec<(u32, u64, u64)>;

impl WriteToken {
    /// A PostgreSQL token: the system identifier, the timeline, and the
    /// WAL position (in bytes) read after the commit.
    pub fn wal(system: u64, timeline: u64, lsn: u64) -> Self {
        WriteToken(Repr::Wal {
            system,
            timeline,
            lsn,
        })
    }

    /// A MariaDB token from a GTID position as the server writes it
    /// (`0-11-2054,1-12-7`; `@@last_gtid`, `@@gtid_binlog_pos`).
    ///
    /// # Errors
    /// [`TokenError`] when it is not a GTID position, or is empty.
    pub fn gtid(position: &str) -> Result<Self, TokenError> {
        let fail = |problem| TokenError {
            text: position.chars().take(80).collect(),
            problem,
        };
        let gtids = parse_gtids(position, ',').ok_or_else(|| fail("it is not a GTID position"))?;
        if gtids.is_empty() {
            return Err(fail("it is empty: nothing was written"));
        }
        Ok(WriteToken(Repr::Gtid(gtids)))
    }

    /// A PostgreSQL token's WAL position, in bytes.
    pub fn lsn(&self) -> Option<u64> {
        match self.0 {
            Repr::Wal { lsn, .. } => Some(lsn),
            Repr::Gtid(_) => None,
        }
    }

    /// A PostgreSQL token's timeline.
    pub fn timeline(&self) -> Option<u64> {
        match self.0 {
            Repr::Wal { timeline, .. } => Some(timeline),
            Repr::Gtid(_) => None,
        }
    }

    /// A PostgreSQL token's system identifier.
    pub fn system(&self) -> Option<u64> {
        match self.0 {
            Repr::Wal { system, .. } => Some(system),
            Repr::Gtid(_) => None,
        }
    }

    /// A MariaDB token's GTID position, as the server writes it.
    pub fn gtid_position(&self) -> Option<String> {
        match &self.0 {
            Repr::Gtid(g) => Some(write_gtids(g, ",")),
            Repr::Wal { .. } => None,
        }
    }
}

/// `d-s-n` items split by `sep`, sorted by domain (the newest sequence of
/// a domain named twice); `None` when one does not parse.
pub(crate) fn parse_gtids(text: &str, sep: char) -> Option<Gtids> {
    let mut out: Gtids = Vec::new();
    for item in text.split(sep).map(str::trim).filter(|s| !s.is_empty()) {
        let mut f = item.split('-');
        let (Some(d), Some(s), Some(n), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return None;
        };
        let (d, s, n) = (d.parse().ok()?, s.parse().ok()?, n.parse().ok()?);
        match out.iter_mut().find(|g| g.0 == d) {
            Some(g) if g.2 < n => *g = (d, s, n),
            Some(_) => {}
            None => out.push((d, s, n)),
        }
    }
    out.sort_unstable();
    Some(out)
}

fn write_gtids(g: &Gtids, sep: &str) -> String {
    g.iter()
        .map(|(d, s, n)| format!("{d}-{s}-{n}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Whether position `have` is at or past `want` in every domain of `want`.
pub(crate) fn gtids_cover(have: &Gtids, want: &Gtids) -> bool {
    want.iter()
        .all(|&(d, _, n)| have.iter().any(|&(hd, _, hn)| hd == d && hn >= n))
}

impl fmt::Display for WriteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Wal {
                system,
                timeline,
                lsn,
            } => write!(f, "pg.{system:x}.{timeline}.{lsn:x}"),
            Repr::Gtid(g) => write!(f, "gtid.{}", write_gtids(g, "+")),
        }
    }
}

/// A string that is not a [`WriteToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a write token: {text:?} ({problem}); a token looks like pg.<system, hex>.<timeline>.<position, hex> or gtid.<domain>-<server>-<sequence>, as WriteToken's to_string() writes it")]
pub struct TokenError {
    /// The text given (cut at 80 characters).
    pub text: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl FromStr for WriteToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let fail = |problem| TokenError {
            text: s.chars().take(80).collect(),
            problem,
        };
        if let Some(rest) = s.strip_prefix("gtid.") {
            let gtids = parse_gtids(rest, '+').ok_or_else(|| fail("the GTIDs do not parse"))?;
            if gtids.is_empty() {
                return Err(fail("it holds no GTID"));
            }
            return Ok(WriteToken(Repr::Gtid(gtids)));
        }
        let mut parts = s.split('.');
        if parts.next() != Some("pg") {
            return Err(fail("it does not start with `pg.` or `gtid.`"));
        }
        let (Some(system), Some(timeline), Some(lsn), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("it does not have four parts"));
        };
        Ok(WriteToken::wal(
            u64::from_str_radix(system, 16)
                .map_err(|_| fail("the system identifier is not hexadecimal"))?,
            timeline
                .parse()
                .map_err(|_| fail("the timeline is not a number"))?,
            u64::from_str_radix(lsn, 16).map_err(|_| fail("the position is not hexadecimal"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_survives_its_string_and_bad_strings_say_what_is_wrong() {
        let t = WriteToken::wal(0x6f2b_09c1_d3e4_a5b6, 2, 0x16b_3a28);
        let s = t.to_string();
        assert_eq!(s, "pg.6f2b09c1d3e4a5b6.2.16b3a28");
        assert_eq!(s.parse::<WriteToken>().unwrap(), t);
        let g = WriteToken::gtid("1-12-7,0-11-2054").unwrap();
        assert_eq!(g.to_string(), "gtid.0-11-2054+1-12-7");
        assert_eq!(g.to_string().parse::<WriteToken>().unwrap(), g);
        assert_eq!(g.gtid_position().unwrap(), "0-11-2054,1-12-7");
        for (bad, problem) in [
            ("", "it does not start with `pg.` or `gtid.`"),
            ("my.1.2.3", "it does not start with `pg.` or `gtid.`"),
            ("pg.1.2", "it does not have four parts"),
            ("pg.1.2.3.4", "it does not have four parts"),
            ("pg.xyz.2.3", "the system identifier is not hexadecimal"),
            ("pg.1.two.3", "the timeline is not a number"),
            ("pg.1.2.0/16B3A28", "the position is not hexadecimal"),
            ("gtid.0-1", "the GTIDs do not parse"),
            ("gtid.", "it holds no GTID"),
        ] {
            let e = bad.parse::<WriteToken>().unwrap_err();
            assert_eq!(e.problem, problem, "{bad}");
            assert!(e.to_string().contains("pg.<system, hex>"), "{e}");
        }
        assert_eq!(
            WriteToken::gtid("").unwrap_err().problem,
            "it is empty: nothing was written"
        );
    }

    #[test]
    fn a_gtid_position_covers_another_domain_by_domain() {
        let have = parse_gtids("0-1-100,1-2-5", ',').unwrap();
        assert!(gtids_cover(&have, &parse_gtids("0-9-100", ',').unwrap()));
        assert!(gtids_cover(
            &have,
            &parse_gtids("0-1-50,1-2-5", ',').unwrap()
        ));
        assert!(!gtids_cover(&have, &parse_gtids("0-1-101", ',').unwrap()));
        assert!(!gtids_cover(&have, &parse_gtids("2-1-1", ',').unwrap()));
    }
}
