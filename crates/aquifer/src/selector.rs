//! Naming pools in a [`Cluster`](crate::Cluster): by exact name, glob,
//! regex or tag.

use std::fmt;

/// Which pools of a cluster an operation applies to.
///
/// A string converts by its look: with `*`, `?` or `[` it is a glob
/// (`asia_*`, `asia_[12]`, `*`), otherwise an exact name. Regexes and tags
/// are built explicitly.
///
/// ```
/// use aquifer::Selector;
///
/// assert!(matches!(Selector::from("asia_*"), Selector::Glob(_)));
/// assert!(matches!(Selector::from("asia_1"), Selector::Name(_)));
/// assert!(Selector::regex("^asia_[0-9]+$").is_ok());
/// assert!(Selector::regex("(unclosed").is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Selector {
    /// One pool, by its exact name.
    Name(String),
    /// Names matching a glob, as a shell matches file names: `*` is any
    /// run of characters, `?` one, `[12]`, `[a-c]` or `[!x]` one from (or
    /// not from) a set. Pool names cannot hold these characters.
    Glob(String),
    /// Names matching a regular expression.
    Regex(regex::Regex),
    /// Pools carrying a tag, such as `primary` or `replica`.
    Tag(String),
    /// Every pool (what [`Cluster::get_any`](crate::Cluster::get_any) uses).
    Any,
}

/// A regex that does not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid pool regex `{pattern}`: {message}")]
pub struct RegexError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub message: String,
}

impl Selector {
    /// Pools whose name matches `pattern`.
    ///
    /// # Errors
    /// [`RegexError`] when the pattern does not compile.
    pub fn regex(pattern: &str) -> Result<Self, RegexError> {
        regex::Regex::new(pattern)
            .map(Selector::Regex)
            .map_err(|e| RegexError {
                pattern: pattern.to_owned(),
                message: e.to_string(),
            })
    }

    /// Pools carrying `tag`.
    pub fn tag(tag: &str) -> Self {
        Selector::Tag(tag.to_owned())
    }

    /// Whether the selector names nothing at all (an empty name or pattern).
    pub fn is_empty(&self) -> bool {
        match self {
            Selector::Name(s) | Selector::Glob(s) | Selector::Tag(s) => s.is_empty(),
            Selector::Regex(r) => r.as_str().is_empty(),
            Selector::Any => false,
        }
    }

    /// Whether it names one pool exactly.
    pub fn is_exact(&self) -> bool {
        matches!(self, Selector::Name(_))
    }

    /// Whether a pool with this name and these tags is selected.
    #[inline]
    pub fn matches(&self, name: &str, tags: &[String]) -> bool {
        match self {
            Selector::Name(n) => n == name,
            Selector::Glob(g) => glob(g.as_bytes(), name.as_bytes()),
            Selector::Regex(r) => r.is_match(name),
            Selector::Tag(t) => tags.iter().any(|x| x == t),
            Selector::Any => true,
        }
    }
}

impl From<&str> for Selector {
    fn from(s: &str) -> Self {
        if s == "*" {
            Selector::Any
        } else if s.contains(['*', '?', '[']) {
            Selector::Glob(s.to_owned())
        } else {
            Selector::Name(s.to_owned())
        }
    }
}

impl From<String> for Selector {
    fn from(s: String) -> Self {
        Selector::from(s.as_str())
    }
}

impl From<&Selector> for Selector {
    fn from(s: &Selector) -> Self {
        s.clone()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(s) | Selector::Glob(s) => f.write_str(s),
            Selector::Regex(r) => write!(f, "/{}/", r.as_str()),
            Selector::Tag(t) => write!(f, "tag:{t}"),
            Selector::Any => f.write_str("*"),
        }
    }
}

/// A `[...]` set at the start of `pattern`: whether it holds `c`, and the
/// set's length. `None` when there is no closing `]` (the `[` is then
/// itself).
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let negate = matches!(pattern.get(1), Some(b'!' | b'^'));
    let start = if negate { 2 } else { 1 };
    // A `]` right after the opening is a member, as in a shell.
    let close = start + 1 + pattern.get(start + 1..)?.iter().position(|&b| b == b']')?;
    let set = &pattern[start..close];
    let mut hit = false;
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == b'-' {
            hit |= (set[i]..=set[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= set[i] == c;
            i += 1;
        }
    }
    Some((hit != negate, close + 1))
}

/// `*` matches any run of bytes, `?` one byte, `[...]` one byte of a set;
/// everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is trying to cover.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let set = match pattern.get(p) {
            Some(b'[') => class(&pattern[p..], text[t]),
            _ => None,
        };
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            _ if set.is_some_and(|(hit, _)| hit) => {
                p += set.map_or(1, |(_, len)| len);
                t += 1;
            }
            Some(&c) if set.is_none() && (c == b'?' || c == text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more byte and retry.
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        for (pat, name, want) in [
            ("asia_*", "asia_1", true),
            ("asia_*", "asia_", true),
            ("asia_*", "africa_1", false),
            ("africa*", "africa", true),
            ("*", "anything", true),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*_2", "africa_2", true),
            ("*_2", "africa_12", false),
            ("*2", "africa_12", true),
            ("*_2", "africa_21", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("asia_[12]", "asia_1", true),
            ("asia_[12]", "asia_2", true),
            ("asia_[12]", "asia_3", false),
            ("asia_[12]", "asia_12", false),
            ("asia_[1-3]*", "asia_30", true),
            ("asia_[!1]", "asia_2", true),
            ("asia_[!1]", "asia_1", false),
            ("*_[a-c]", "db_b", true),
            ("[", "[", true),
            ("a[b", "a[b", true),
        ] {
            assert_eq!(
                glob(pat.as_bytes(), name.as_bytes()),
                want,
                "{pat} ~ {name}"
            );
        }
    }

    #[test]
    fn strings_become_names_or_globs_and_regexes_are_checked() {
        let tags = vec!["replica".to_owned()];
        assert!(Selector::from("asia_*").matches("asia_3", &[]));
        assert!(!Selector::from("asia_1").matches("asia_10", &[]));
        assert!(Selector::tag("replica").matches("x", &tags));
        let r = Selector::regex("^asia_[0-9]+$").unwrap();
        assert!(r.matches("asia_12", &[]) && !r.matches("asia_x", &[]));
        let e = Selector::regex("asia_(").unwrap_err();
        assert!(e.to_string().contains("asia_("), "{e}");
        assert!(Selector::from("").is_empty());
        assert_eq!(Selector::tag("primary").to_string(), "tag:primary");
    }
}
