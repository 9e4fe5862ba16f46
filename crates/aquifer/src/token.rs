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
/// and a WAL position: `pg.6f2b09c1d3e4a5b6.2.16b3a28`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteToken {
    /// Which database system (PostgreSQL's `system_identifier`): a token
    /// is never trusted to a server of another.
    pub(crate) system: u64,
    /// The primary's timeline when the write committed.
    pub(crate) timeline: u64,
    /// The WAL position after the commit, in bytes.
    pub(crate) lsn: u64,
}

impl WriteToken {
    /// A PostgreSQL token: the system identifier, the timeline, and the
    /// WAL position (in bytes) read after the commit.
    pub fn wal(system: u64, timeline: u64, lsn: u64) -> Self {
        WriteToken {
            system,
            timeline,
            lsn,
        }
    }

    /// The WAL position, in bytes.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// The timeline.
    pub fn timeline(&self) -> u64 {
        self.timeline
    }

    /// The system identifier.
    pub fn system(&self) -> u64 {
        self.system
    }
}

impl fmt::Display for WriteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pg.{:x}.{}.{:x}", self.system, self.timeline, self.lsn)
    }
}

/// A string that is not a [`WriteToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a write token: {text:?} ({problem}); a token looks like pg.<system, hex>.<timeline>.<position, hex>, as WriteToken's to_string() writes it")]
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
        let mut parts = s.split('.');
        if parts.next() != Some("pg") {
            return Err(fail("it does not start with `pg.`"));
        }
        let (Some(system), Some(timeline), Some(lsn), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("it does not have four parts"));
        };
        Ok(WriteToken {
            system: u64::from_str_radix(system, 16)
                .map_err(|_| fail("the system identifier is not hexadecimal"))?,
            timeline: timeline
                .parse()
                .map_err(|_| fail("the timeline is not a number"))?,
            lsn: u64::from_str_radix(lsn, 16)
                .map_err(|_| fail("the position is not hexadecimal"))?,
        })
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
        for (bad, problem) in [
            ("", "it does not start with `pg.`"),
            ("my.1.2.3", "it does not start with `pg.`"),
            ("pg.1.2", "it does not have four parts"),
            ("pg.1.2.3.4", "it does not have four parts"),
            ("pg.xyz.2.3", "the system identifier is not hexadecimal"),
            ("pg.1.two.3", "the timeline is not a number"),
            ("pg.1.2.0/16B3A28", "the position is not hexadecimal"),
        ] {
            let e = bad.parse::<WriteToken>().unwrap_err();
            assert_eq!(e.problem, problem, "{bad}");
            assert!(e.to_string().contains("pg.<system, hex>"), "{e}");
        }
    }
}
