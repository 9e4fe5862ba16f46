//! Which statements would change a connection's session state: what a
//! multiplexer, whose connections every request shares, must refuse. A
//! small lexer skips comments, strings, quoted names and dollar quotes,
//! splits the text into statements and looks at each one's first words
//! and at the functions it calls.

/// Why a statement was refused: the words that change the session.
pub(crate) fn session_change(sql: &str) -> Option<String> {
    for statement in statements(&tokens(sql)) {
        if let Some(why) = statement_change(statement) {
            return Some(why);
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A keyword or unquoted name, lowercased.
    Word(String),
    Open,
    Close,
    Comma,
    Semicolon,
    /// Anything else: a literal, a quoted name, an operator.
    Other,
}

fn tokens(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                // E'…' strings take backslash escapes.
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E') && ends_word(b, i - 1);
                i = skip_quoted(b, i, b'\'', escapes);
                if escapes {
                    out.pop();
                }
                out.push(Token::Other);
            }
            b'"' => {
                i = skip_quoted(b, i, b'"', false);
                out.push(Token::Other);
            }
            b'$' => {
                if let Some(end) = dollar_quote_end(b, i) {
                    i = end;
                } else {
                    // A parameter ($1) or an operator.
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                out.push(Token::Other);
            }
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Token::Word(sql[start..i].to_ascii_lowercase()));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    out
}

/// Whether the word ending at `at` (inclusive) is a lone `e`/`E`.
fn ends_word(b: &[u8], at: usize) -> bool {
    at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_')
}

/// The index after a quoted run opened at `i`; a doubled quote is part
/// of it (and, with `escapes`, so is a backslashed character).
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, escapes: bool) -> usize {
    i += 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// If a dollar quote (`$$` or `$tag$`) opens at `i`, the index after it
/// closes.
fn dollar_quote_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    if b.get(j) != Some(&b'$') || b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let tag = &b[i..=j];
    let mut k = j + 1;
    while k + tag.len() <= b.len() {
        if &b[k..k + tag.len()] == tag {
            return Some(k + tag.len());
        }
        k += 1;
    }
    Some(b.len())
}

fn statements(tokens: &[Token]) -> impl Iterator<Item = &[Token]> {
    tokens
        .split(|t| *t == Token::Semicolon)
        .filter(|s| !s.is_empty())
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    }
}

/// Statements whose first word changes the session (or needs state a
/// request cannot count on: a transaction, a prepared statement, a cursor).
const LEADING: &[&str] = &[
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "savepoint",
    "release",
    "prepare",
    "execute",
    "deallocate",
    "set",
    "reset",
    "discard",
    "listen",
    "unlisten",
    "lock",
    "declare",
    "fetch",
    "move",
    "close",
    // Code the lexer cannot read: a block or procedure may set anything,
    // commit, or leave a transaction open.
    "do",
    "call",
    // Loads a library into the session.
    "load",
];

/// Functions that take a lock held by the session past the statement.
const SESSION_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

fn statement_change(s: &[Token]) -> Option<String> {
    let first = word(s.first())?;
    if LEADING.contains(&first) {
        // `SET LOCAL` lasts until the statement's implicit transaction ends.
        let local = first == "set" && word(s.get(1)) == Some("local");
        if !local {
            return Some(first.to_ascii_uppercase());
        }
    }
    if first == "copy" {
        // COPY … FROM STDIN / TO STDOUT takes over the connection's
        // protocol until it ends; COPY to or from a server file does not.
        let stream = s
            .iter()
            .any(|t| matches!(word(Some(t)), Some("stdin" | "stdout")));
        if stream {
            return Some("COPY … STDIN/STDOUT".into());
        }
    }
    let into_temp = s.windows(2).any(|w| {
        word(w.first()) == Some("into")
            && matches!(word(w.get(1)), Some("temp" | "temporary" | "unlogged"))
    });
    if into_temp && first != "insert" {
        return Some("SELECT INTO TEMPORARY".into());
    }
    if first == "create" {
        let temp = s
            .iter()
            .skip(1)
            .take(3)
            .any(|t| matches!(word(Some(t)), Some("temp" | "temporary")));
        if temp {
            return Some("CREATE TEMPORARY".into());
        }
    }
    for (i, t) in s.iter().enumerate() {
        let Some(name) = word(Some(t)) else { continue };
        if s.get(i + 1) != Some(&Token::Open) {
            continue;
        }
        if SESSION_LOCKS.contains(&name) {
            return Some(format!("{name}()"));
        }
        if name == "set_config" && !is_local_call(&s[i + 1..]) {
            return Some("set_config(…, false)".into());
        }
    }
    None
}

/// Whether a call's last argument (the tokens from its `(`) is `true`,
/// as in `set_config(name, value, true)`.
fn is_local_call(s: &[Token]) -> bool {
    let mut depth = 0;
    for (i, t) in s.iter().enumerate() {
        match t {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return i >= 2
                        && word(s.get(i - 1)) == Some("true")
                        && s[i - 2] == Token::Comma;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::session_change;

    #[test]
    fn statements_that_change_the_session_are_named() {
        for (sql, why) in [
            ("BEGIN", "BEGIN"),
            ("  begin isolation level serializable", "BEGIN"),
            ("START TRANSACTION", "START"),
            ("COMMIT", "COMMIT"),
            ("end", "END"),
            ("ROLLBACK", "ROLLBACK"),
            ("abort", "ABORT"),
            ("SAVEPOINT a", "SAVEPOINT"),
            ("RELEASE SAVEPOINT a", "RELEASE"),
            ("PREPARE q AS SELECT 1", "PREPARE"),
            ("PREPARE TRANSACTION 'x'", "PREPARE"),
            ("EXECUTE q", "EXECUTE"),
            ("DEALLOCATE ALL", "DEALLOCATE"),
            ("SET search_path = x", "SET"),
            ("SET SESSION statement_timeout = 0", "SET"),
            ("RESET ALL", "RESET"),
            ("DISCARD ALL", "DISCARD"),
            ("LISTEN ch", "LISTEN"),
            ("UNLISTEN *", "UNLISTEN"),
            ("LOCK TABLE t", "LOCK"),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "DECLARE"),
            ("CREATE TEMP TABLE t (a int)", "CREATE TEMPORARY"),
            (
                "create global temporary table t (a int)",
                "CREATE TEMPORARY",
            ),
            ("SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
            (
                "select PG_TRY_ADVISORY_LOCK(1, 2)",
                "pg_try_advisory_lock()",
            ),
            (
                "SELECT set_config('a.b', 'c', false)",
                "set_config(…, false)",
            ),
            ("SELECT set_config('a.b', 'c', $1)", "set_config(…, false)"),
            ("SELECT 1; BEGIN", "BEGIN"),
            (
                "DO $$ BEGIN PERFORM set_config('search_path','nowhere',false); END $$",
                "DO",
            ),
            ("do language plpgsql 'begin null; end'", "DO"),
            ("CALL proc()", "CALL"),
            ("COPY t FROM STDIN", "COPY … STDIN/STDOUT"),
            (
                "copy (select 1) to stdout with (format csv)",
                "COPY … STDIN/STDOUT",
            ),
            ("LOAD 'auto_explain'", "LOAD"),
            ("SELECT 1 AS a INTO TEMP scratch", "SELECT INTO TEMPORARY"),
            ("/* a */ -- b\n BEGIN", "BEGIN"),
        ] {
            assert_eq!(session_change(sql).as_deref(), Some(why), "{sql}");
        }
    }

    #[test]
    fn everything_else_passes_even_when_it_mentions_those_words() {
        for sql in [
            "SELECT 1",
            "select pg_sleep(0.1)",
            "INSERT INTO t VALUES ('BEGIN; SET x = 1')",
            "SELECT E'it\\'s; BEGIN'",
            "SELECT $$ ; COMMIT $$, $tag$ ; LISTEN x $tag$",
            "SELECT \"begin\" FROM t",
            "SELECT 1 -- ; BEGIN",
            "SELECT 1 /* ; /* nested */ BEGIN */",
            "UPDATE t SET a = 1 WHERE id = $1",
            "SET LOCAL statement_timeout = 100; SELECT 1",
            "SELECT set_config('a.b', 'c', true)",
            "SELECT pg_advisory_xact_lock(1)",
            "CREATE TABLE t (a int)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "NOTIFY ch, 'set'",
            "SELECT begin_at FROM events",
            "COPY t TO '/tmp/t.csv'",
            "SELECT do_it(), call_count FROM calls",
            "INSERT INTO temp VALUES (1)",
            "SELECT 1 INTO TABLE kept",
            "",
            ";;",
        ] {
            assert_eq!(session_change(sql), None, "{sql}");
        }
    }
}
