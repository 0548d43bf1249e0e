//! One parameter syntax for both backends: SQLite's `?`, `?NNN`, `:name`, `@name` and `$name`
//! are rewritten to PostgreSQL's `$N`, numbered the way SQLite numbers them, so a client's SQL
//! text and arguments mean the same on either database.
//!
//! String literals, quoted identifiers, comments, dollar-quoted bodies and `::` casts are left
//! alone. `$N` already in the text is kept as it is.
//!
//! ```
//! use protocol::placeholders::to_dollar;
//! let t = to_dollar("UPDATE t SET s = :s WHERE id = ? AND note <> '?'");
//! assert_eq!(t.sql, "UPDATE t SET s = $1 WHERE id = $2 AND note <> '?'");
//! assert_eq!(t.params, 2);
//! assert_eq!(t.index_of(":s"), Some(1));
//! ```

/// SQL rewritten to `$N` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The text for PostgreSQL.
    pub sql: String,
    /// The highest parameter number used.
    pub params: usize,
    /// Named parameters, with their prefix (`:s`), and their numbers.
    pub names: Vec<(String, usize)>,
}

impl Translated {
    /// The number of a named parameter (given with its prefix, as SQLite names it).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().find(|(n, _)| n == name).map(|(_, i)| *i)
    }
}

/// PostgreSQL's limit on parameters of one statement; larger numbers are clamped to it (and the
/// server then refuses the statement).
const MAX_PARAMS: usize = 65535;

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Rewrites `sql`'s placeholders to `$N`.
pub fn to_dollar(sql: &str) -> Translated {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut max = 0usize;
    let mut i = 0;
    // Bytes up to `copied` are already in `out`.
    let mut copied = 0;
    let put = |out: &mut String, copied: &mut usize, from: usize, to: usize, n: usize| {
        out.push_str(&sql[*copied..from]);
        out.push('$');
        out.push_str(&n.to_string());
        *copied = to;
    };
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(b.len(), |n| i + n + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b'?' => {
                let start = i;
                i += 1;
                let digits = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let n = if i > digits {
                    sql[digits..i].parse().unwrap_or(MAX_PARAMS).min(MAX_PARAMS)
                } else {
                    (max + 1).min(MAX_PARAMS)
                };
                max = max.max(n);
                put(&mut out, &mut copied, start, i, n);
            }
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                max = max.max(
                    sql[start + 1..i]
                        .parse()
                        .unwrap_or(MAX_PARAMS)
                        .min(MAX_PARAMS),
                );
            }
            c @ (b':' | b'@' | b'$')
                if b.get(i + 1)
                    .is_some_and(|&n| n.is_ascii_alphabetic() || n == b'_')
                    && !(i > 0 && c != b'$' && ident_char(b[i - 1])) =>
            {
                let start = i;
                i += 1;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                if c == b'$' && b.get(i) == Some(&b'$') {
                    // A dollar-quoted body: $tag$ … $tag$.
                    let tag = &sql[start..=i];
                    i = sql[i + 1..]
                        .find(tag)
                        .map_or(b.len(), |n| i + 1 + n + tag.len());
                    continue;
                }
                let name = &sql[start..i];
                let n = match names.iter().find(|(k, _)| k == name) {
                    Some((_, n)) => *n,
                    None => {
                        max = (max + 1).min(MAX_PARAMS);
                        names.push((name.to_string(), max));
                        max
                    }
                };
                put(&mut out, &mut copied, start, i, n);
            }
            b'$' if b.get(i + 1) == Some(&b'$') => {
                i = sql[i + 2..].find("$$").map_or(b.len(), |n| i + 2 + n + 2);
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    Translated {
        sql: out,
        params: max,
        names,
    }
}

#[cfg(test)]
mod tests {
    use super::to_dollar;

    #[test]
    fn numbers_like_sqlite() {
        let t = to_dollar("SELECT ?, ?5, ?, :a, @b, :a, $c");
        assert_eq!(t.sql, "SELECT $1, $5, $6, $7, $8, $7, $9");
        assert_eq!(t.params, 9);
        assert_eq!(t.index_of("@b"), Some(8));
    }

    #[test]
    fn leaves_literals_comments_casts_and_dollar_quotes_alone() {
        let sql = "SELECT '?', \"a?\", x::int, 'it''s ?' -- ?\n /* :x */ $$ ? $$, $q$ :y $q$, $1";
        let t = to_dollar(sql);
        assert_eq!(t.sql, sql);
        assert_eq!(t.params, 1);
        assert!(t.names.is_empty());
    }

    #[test]
    fn odd_input_does_not_panic() {
        for sql in [
            "'",
            "\"",
            "/*",
            "--",
            "$$",
            "$a$",
            "?99999999999999999999999",
            ":",
            "é?",
        ] {
            let _ = to_dollar(sql);
        }
        assert_eq!(to_dollar("é?").sql, "é$1");
    }
}
