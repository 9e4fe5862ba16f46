//! Text helpers: where a key is written, secrets in files, passwords in
//! URLs.

use std::path::Path;

/// The 1-based line of `key` inside `[section]` (or of the header when
/// `key` is `None`), found by reading the text as TOML lays it out.
pub(super) fn line_of(text: &str, section: &str, key: Option<&str>) -> Option<usize> {
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
