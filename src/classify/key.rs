//! Cache keys that ignore literal values, for statements sent with their
//! values inline (the simple protocol, client-side interpolation): without
//! this, every `SELECT ... WHERE id = 42` is a new text and pays a full
//! classification.
//!
//! Sound by construction, not by cleverness: a text is normalised only when
//! it is a single SELECT, INSERT, UPDATE or DELETE made of characters whose
//! lexing is unambiguous (no backslash, dollar quote, double quote, comment,
//! prefixed string such as `E'...'`, or `;` before the end). In such a text
//! PostgreSQL's lexer reads `'...'` (with `''` inside) as one string constant
//! and a digit run not glued to an identifier as one numeric constant, and
//! the verdict for these statement kinds never depends on a constant's value
//! (it depends on the statement's shape and its function names; it carries
//! no statement text). Anything else is keyed by its exact text.

/// The key for `sql`: its literals replaced by placeholders, behind a NUL
/// (which no SQL text contains) so it can never equal an exact text. None
/// when `sql` is not one of the plain shapes above.
pub(crate) fn literal_free(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let first = first_word(bytes)?;
    if !["select", "insert", "update", "delete"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k.as_bytes()))
    {
        return None;
    }
    // `current_setting('transaction_read_only')` is the primary's question,
    // `current_setting('search_path')` is not: the verdict depends on the
    // constant, so such texts keep their exact key.
    if contains_ignore_case(bytes, b"current_setting") {
        return None;
    }
    let body = trim_trailing_semicolon(bytes)?;
    let mut out = String::with_capacity(sql.len() + 1);
    out.push('\0');
    let mut i = 0;
    let mut changed = false;
    while i < body.len() {
        let c = body[i];
        match c {
            b'\\' | b'$' | b'"' | b';' | 0 => return None,
            b'/' if body.get(i + 1) == Some(&b'*') => return None,
            b'-' if body.get(i + 1) == Some(&b'-') => return None,
            b'\'' => {
                // A prefix glued to the quote (E'', U&'', B'', X'', N'')
                // changes how the string lexes.
                if i > 0 && (is_ident_byte(body[i - 1]) || body[i - 1] == b'&') {
                    return None;
                }
                let mut j = i + 1;
                loop {
                    match body.get(j) {
                        None => return None,
                        Some(b'\'') if body.get(j + 1) == Some(&b'\'') => j += 2,
                        Some(b'\'') => break,
                        Some(b'\\') => return None,
                        Some(_) => j += 1,
                    }
                }
                // Two strings separated only by whitespace with a newline
                // are one constant to PostgreSQL: keep such text exact.
                out.push_str("'?'");
                changed = true;
                i = j + 1;
                if continues_string(&body[i..]) {
                    return None;
                }
            }
            b'0'..=b'9' if i == 0 || !is_ident_byte(body[i - 1]) && body[i - 1] != b'.' => {
                let mut j = i;
                while j < body.len() && (body[j].is_ascii_digit() || body[j] == b'.') {
                    j += 1;
                }
                // A number glued to letters (1e5, 0x1F, 1_000) keeps its
                // own spelling.
                if j < body.len() && is_ident_byte(body[j]) {
                    out.push_str(std::str::from_utf8(&body[i..j]).ok()?);
                } else {
                    out.push('?');
                    changed = true;
                }
                i = j;
            }
            _ => {
                // Copy up to the next byte that needs a look.
                let start = i;
                i += 1;
                while i < body.len()
                    && !matches!(
                        body[i],
                        b'\\' | b'$' | b'"' | b';' | 0 | b'/' | b'-' | b'\'' | b'0'..=b'9'
                    )
                {
                    i += 1;
                }
                out.push_str(std::str::from_utf8(&body[start..i]).ok()?);
            }
        }
    }
    changed.then_some(out)
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn first_word(bytes: &[u8]) -> Option<&[u8]> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let len = bytes[start..]
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(bytes.len() - start);
    Some(&bytes[start..start + len])
}

/// The text without one trailing `;` (and whitespace); None if a `;` is
/// left (several statements).
fn trim_trailing_semicolon(bytes: &[u8]) -> Option<&[u8]> {
    let mut end = bytes.len();
    while end > 0 && bytes[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    if end > 0 && bytes[end - 1] == b';' {
        end -= 1;
    }
    Some(&bytes[..end])
}

/// Whether what follows a string constant continues it: whitespace with a
/// newline, then another quote (SQL's string continuation).
fn continues_string(rest: &[u8]) -> bool {
    let ws = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    rest.get(ws) == Some(&b'\'') && rest[..ws].contains(&b'\n')
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_become_placeholders() {
        let a = literal_free("SELECT abalance FROM pgbench_accounts WHERE aid = 42;").unwrap();
        let b = literal_free("SELECT abalance FROM pgbench_accounts WHERE aid = 7").unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with('\0'));
        assert_eq!(
            literal_free("UPDATE t SET v = 'it''s', n = n + 1.5 WHERE id = 3").unwrap(),
            "\0UPDATE t SET v = '?', n = n + ? WHERE id = ?"
        );
        // Identifiers with digits and numbers glued to letters stay.
        assert_eq!(
            literal_free("select c1 from t2 where x = 1e5 and y = 'a'").unwrap(),
            "\0select c1 from t2 where x = 1e5 and y = '?'"
        );
    }

    #[test]
    fn anything_ambiguous_keeps_its_exact_text() {
        for sql in [
            "SELECT 'a\\'; DELETE FROM t; --'",
            "SELECT E'x' FROM t WHERE id = 1",
            "SELECT U&'x' WHERE 1 = 1",
            "SELECT $$x$$, 1",
            "SELECT \"Col\" FROM t WHERE id = 1",
            "/* pgsplit:primary */ SELECT 1",
            "SELECT 1 /* pgsplit:primary */",
            "SELECT 1 -- pgsplit:primary",
            "SELECT 1; DELETE FROM t",
            "SET application_name = 'x'",
            "SET pgsplit.route = 'replica'",
            "WITH d AS (DELETE FROM t RETURNING 1) SELECT 1",
            "SELECT 'a'\n'b' WHERE 1 = 1",
            "SELECT * FROM t WHERE id = $1",
            "SELECT 'unterminated",
            "SELECT a FROM t",
        ] {
            assert_eq!(literal_free(sql), None, "{sql}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1500, ..Default::default() })]
        /// Random statement shapes, each filled twice with different
        /// values: texts that get the same key get the same verdict.
        #[test]
        fn one_shape_one_key_one_verdict(
            head in 0usize..4,
            shape in proptest::collection::vec(0usize..SHAPE.len(), 1..14),
            a in proptest::collection::vec(0usize..VALUES.len(), 14),
            b in proptest::collection::vec(0usize..VALUES.len(), 14),
        ) {
            let fill = |values: &[usize]| {
                let mut text = String::from(["SELECT ", "INSERT INTO t SELECT ", "UPDATE t SET v = ", "DELETE FROM t WHERE v = "][head]);
                for (k, &piece) in shape.iter().enumerate() {
                    text.push_str(&SHAPE[piece].replace("{}", VALUES[values[k]]));
                    text.push(' ');
                }
                text
            };
            let (x, y) = (fill(&a), fill(&b));
            if let (Some(kx), Some(ky)) = (literal_free(&x), literal_free(&y)) {
                // Values spelled as identifiers make another shape.
                proptest::prop_assume!(kx == ky);
                let classifier = super::super::Classifier::new(&[], &[], 0);
                proptest::prop_assert_eq!(
                    classifier.classify_uncached(&x),
                    classifier.classify_uncached(&y),
                    "{} / {}", x, y
                );
            }
        }
    }

    const SHAPE: &[&str] = &[
        "{}",
        "'{}'",
        "({})",
        ", {}",
        "+ {}",
        "FROM t",
        "WHERE id = {}",
        "AND v = '{}'",
        "FOR UPDATE",
        "FOR SHARE",
        "INTO x",
        "nextval('{}')",
        "lower('{}')",
        "my_fn({})",
        "pg_advisory_lock({})",
        "set_config('{}', '{}', false)",
        "ORDER BY {}",
        "LIMIT {}",
        "= ANY(ARRAY[{}, {}])",
        "::int",
        "IS NULL",
        "RETURNING {}",
        "JOIN u ON u.id = t.id",
        "(SELECT {} FROM u FOR UPDATE)",
        "now()",
        "random()",
        "CASE WHEN {} THEN '{}' END",
    ];

    const VALUES: &[&str] = &[
        "1",
        "42",
        "0",
        "3.5",
        "x",
        "",
        "it''s",
        "DELETE FROM t",
        "t.id",
    ];

    /// The point of the module: texts that share a key share a verdict.
    #[test]
    fn texts_with_one_key_have_one_verdict() {
        let classifier = super::super::Classifier::new(&[], &[], 0);
        let templates = [
            "SELECT v FROM t WHERE id = {}",
            "SELECT nextval('s'), {} FROM t",
            "SELECT * FROM t WHERE id = {} FOR UPDATE",
            "SELECT pg_advisory_lock({})",
            "SELECT set_config('a', '{}', false)",
            "INSERT INTO t VALUES ({}, 'x')",
            "DELETE FROM t WHERE id = {}",
            "UPDATE t SET v = '{}' WHERE id = 1",
            "SELECT my_fn({}) FROM t",
            "SELECT * INTO TEMP x FROM t WHERE id = {}",
        ];
        for template in templates {
            let texts: Vec<String> = ["1", "42", "007", "3.14", "''", "x"]
                .iter()
                .map(|v| template.replace("{}", v))
                .collect();
            let mut by_key: std::collections::HashMap<String, super::super::Verdict> =
                Default::default();
            for text in &texts {
                let Some(key) = literal_free(text) else {
                    continue;
                };
                let verdict = classifier.classify_uncached(text);
                if let Some(seen) = by_key.get(&key) {
                    assert_eq!(seen, &verdict, "{text} shares {key:?}");
                }
                by_key.insert(key, verdict);
            }
        }
    }
}
