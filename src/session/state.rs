//! Whether a session has left state on its server connection that would be
//! lost if the connection were replaced: named prepared statements, settings,
//! LISTEN, cursors, temp tables, advisory locks.
//!
//! A clean session can move to another server at an idle point without the
//! client noticing (the server went away, or the topology moved it). A session
//! that may hold state cannot, so it is told instead. The check errs towards
//! "may hold state": a false "clean" would silently lose a setting, a false
//! "stateful" only costs the client one clear error.

use crate::protocol::{cstr, tag};

/// See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionState {
    #[default]
    Clean,
    /// The first reason it may hold state.
    Stateful(&'static str),
}

impl SessionState {
    pub fn is_clean(self) -> bool {
        self == SessionState::Clean
    }

    /// Updates the state for one client message about to be forwarded.
    pub fn note(&mut self, msg_tag: u8, body: &[u8]) {
        if !self.is_clean() {
            return;
        }
        let reason = match msg_tag {
            tag::PARSE => match cstr(body) {
                Some((b"", _)) => None,
                _ => Some("named prepared statement"),
            },
            tag::QUERY => cstr(body)
                .map(|(sql, _)| sql)
                .map_or(Some("malformed query"), query_state),
            tag::FUNCTION_CALL => Some("function call"),
            _ => None,
        };
        if let Some(reason) = reason {
            *self = SessionState::Stateful(reason);
        }
    }
}

/// Statement kinds that leave nothing behind on the server connection (outside
/// what they call: see `risky_words`).
const STATELESS_FIRST_WORDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "with",
    "values",
    "table",
    "show",
    "explain",
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "copy",
    "merge",
    "create",
    "alter",
    "drop",
    "truncate",
    "grant",
    "revoke",
    "comment",
    "vacuum",
    "analyze",
    "refresh",
    "reindex",
    "checkpoint",
    "notify",
    "lock",
];

/// Words that, anywhere in a statement, may mean session state, by first
/// letter (so one pass over the text checks them all).
fn risky_words(first: u8) -> &'static [&'static [u8]] {
    match first {
        b's' => &[b"set_config", b"setseed"],
        b'a' => &[b"advisory"],
        b't' => &[b"temp"],
        b'p' => &[b"prepare"],
        b'l' => &[b"listen", b"lo_", b"lastval", b"load"],
        b'd' => &[b"declare", b"dblink", b"discard"],
        b'c' => &[b"cursor", b"currval"],
        _ => &[],
    }
}

/// Whether any risky word occurs in `sql`, ignoring ASCII case.
fn contains_risky(sql: &[u8]) -> bool {
    (0..sql.len()).any(|i| {
        let rest = &sql[i..];
        risky_words(rest[0].to_ascii_lowercase())
            .iter()
            .any(|w| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w))
    })
}

/// Why a simple query may leave state, or None if it surely does not.
/// Allocation-free: it runs on every simple query of a clean session.
fn query_state(sql: &[u8]) -> Option<&'static str> {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let rest = &sql[start..];
    if rest.starts_with(b"/*") || rest.starts_with(b"--") {
        return Some("query starting with a comment");
    }
    let word_len = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let first = &rest[..word_len];
    if !STATELESS_FIRST_WORDS
        .iter()
        .any(|w| first.eq_ignore_ascii_case(w.as_bytes()))
    {
        return Some("statement that may change session state");
    }
    // More than one statement: any could be anything.
    let end = sql
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(0, |i| i + 1);
    if sql[..end].contains(&b';') {
        return Some("multi-statement query");
    }
    if contains_risky(sql) {
        return Some("query that may change session state");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(tag: u8, body: &[u8]) -> SessionState {
        let mut s = SessionState::Clean;
        s.note(tag, body);
        s
    }

    #[test]
    fn plain_reads_and_writes_stay_clean() {
        for sql in [
            "SELECT 1\0",
            "  insert into t values (1);\0",
            "BEGIN\0",
            "COMMIT\0",
            "UPDATE t SET x = 1 WHERE id = 2\0",
            "CREATE TABLE t(id int)\0",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42;\0",
        ] {
            assert!(after(b'Q', sql.as_bytes()).is_clean(), "{sql}");
        }
        assert!(after(b'P', b"\0SELECT $1\0\0\0").is_clean());
        assert!(after(b'B', b"s1\0\0").is_clean());
    }

    #[test]
    fn anything_that_may_hold_state_is_stateful() {
        for sql in [
            "SET search_path = x\0",
            "select set_config('a.b', '1', false)\0",
            "SELECT 1; SET x = 1\0",
            "PREPARE p AS SELECT 1\0",
            "LISTEN chan\0",
            "CREATE TEMP TABLE t(x int)\0",
            "SELECT pg_advisory_lock(1)\0",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1\0",
            "/* hint */ SELECT 1\0",
            "DO $$ BEGIN PERFORM 1; END $$\0",
            "SELECT * INTO TEMP x FROM t\0",
        ] {
            assert!(!after(b'Q', sql.as_bytes()).is_clean(), "{sql}");
        }
        assert!(!after(b'P', b"s1\0SELECT 1\0\0\0").is_clean());
    }
}
