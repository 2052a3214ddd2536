//! The lexer pass: hints, the standard_conforming_strings guard, and a fast
//! path for plain SELECTs that needs no parse.
//!
//! The fast path is sound by construction, not by keyword guessing: within
//! one statement that starts with SELECT, a write needs `WITH` (a
//! data-modifying CTE), `FOR` (a locking clause), `INTO`, or a function call,
//! and a call needs a name followed by `(`. The path admits only reserved
//! keywords from a fixed list (so no WITH/FOR/INTO), at most one `;` at the
//! very end, and `(` only after an operator, punctuation, a listed reserved
//! keyword, or an unqualified name that the read lists settle as read.
//! Anything else goes to the full parse. A statement it admits that the
//! grammar would reject is only a syntax error on the replica.

use pg_query::protobuf::{KeywordKind, ScanToken, Token};

use super::functions::{FunctionLists, Settled};
use super::RouteMode;

/// What the lexer saw in the whole text.
pub(crate) struct Scanned {
    pub(crate) tokens: Vec<ScanToken>,
    pub(crate) hint: Option<RouteMode>,
    /// A `'…'` or `N'…'` string holds a backslash right before a quote, so its
    /// extent depends on the server's standard_conforming_strings: with it
    /// off, `\'` does not end a string, and what this lexer took for a string
    /// could be code on the server (or the other way round).
    pub(crate) backslash_in_plain_string: bool,
    /// An upper bound, in tokens, on how deeply the parse tree can nest: the
    /// deepest parenthesis plus every token that can open a tree level (not
    /// names, constants, commas or closing brackets). libpg_query turns the
    /// tree into protobuf by plain recursion, so this sizes the stack.
    pub(crate) nesting_bound: usize,
}

pub(crate) fn scan(sql: &str) -> Result<Scanned, pg_query::Error> {
    let tokens = pg_query::scan(sql)?.tokens;
    let mut hint = None;
    let mut backslash_in_plain_string = false;
    let (mut parens, mut deepest, mut openers) = (0usize, 0usize, 0usize);
    for token in &tokens {
        if opens_a_level(token) {
            openers += 1;
        } else if is(token, Token::Ascii40) {
            parens += 1;
            deepest = deepest.max(parens);
        } else if is(token, Token::Ascii41) {
            parens = parens.saturating_sub(1);
        }
        let text = token_text(sql, token);
        if token.token == Token::CComment as i32 || token.token == Token::SqlComment as i32 {
            if text.contains("pgsplit:primary") {
                hint = Some(RouteMode::Primary);
            } else if text.contains("pgsplit:replica") && hint.is_none() {
                hint = Some(RouteMode::Replica);
            }
        } else if token.token == Token::Sconst as i32 {
            let plain = text.starts_with('\'') || text.starts_with("N'") || text.starts_with("n'");
            // A backslash before anything but a quote changes no extent.
            if plain && text.contains("\\'") {
                backslash_in_plain_string = true;
            }
        }
    }
    let nesting_bound = deepest + openers;
    Ok(Scanned {
        tokens,
        hint,
        backslash_in_plain_string,
        nesting_bound,
    })
}

/// Whether a token can add a level to the parse tree by itself. Leaves
/// (names, constants, NULL/TRUE/FALSE/DEFAULT), separators and parentheses
/// (counted by depth instead) cannot.
fn opens_a_level(token: &ScanToken) -> bool {
    const LEAVES: &[Token] = &[
        Token::Ident,
        Token::Uident,
        Token::Fconst,
        Token::Sconst,
        Token::Usconst,
        Token::Bconst,
        Token::Xconst,
        Token::Iconst,
        Token::Param,
        Token::SqlComment,
        Token::CComment,
        Token::NullP,
        Token::TrueP,
        Token::FalseP,
        Token::Default,
        Token::Ascii40, // (
        Token::Ascii41, // )
        Token::Ascii44, // ,
        Token::Ascii59, // ;
        Token::Ascii93, // ]
    ];
    !LEAVES.iter().any(|k| is(token, *k))
}

fn token_text<'a>(sql: &'a str, token: &ScanToken) -> &'a str {
    let (start, end) = (token.start.max(0) as usize, token.end.max(0) as usize);
    sql.get(start..end).unwrap_or("")
}

/// Reserved keywords a plain SELECT may use. None of them is WITH, FOR or
/// INTO, and a reserved keyword cannot name a function, so `(` after one of
/// these opens a subquery, a list or a grouping, never a call.
const RESERVED_OK: &[Token] = &[
    Token::Select,
    Token::From,
    Token::Where,
    Token::And,
    Token::Or,
    Token::Not,
    Token::As,
    Token::Order,
    Token::GroupP,
    Token::Having,
    Token::Limit,
    Token::Offset,
    Token::On,
    Token::NullP,
    Token::TrueP,
    Token::FalseP,
    Token::InP,
    Token::Case,
    Token::When,
    Token::Then,
    Token::Else,
    Token::EndP,
    Token::Union,
    Token::Except,
    Token::Intersect,
    Token::All,
    Token::Any,
    Token::Some,
    Token::Array,
    Token::Cast,
    Token::Distinct,
    Token::Asc,
    Token::Desc,
    Token::Only,
    Token::Using,
    Token::CurrentDate,
    Token::CurrentTime,
    Token::CurrentTimestamp,
    Token::CurrentUser,
    Token::CurrentRole,
    Token::SessionUser,
    Token::Localtime,
    Token::Localtimestamp,
];

/// Constants and parameters.
const VALUES: &[Token] = &[
    Token::Fconst,
    Token::Sconst,
    Token::Bconst,
    Token::Xconst,
    Token::Iconst,
    Token::Param,
];

/// Non-keyword tokens a plain SELECT may use besides [`VALUES`] (`;` is
/// handled apart).
const OTHER_OK: &[Token] = &[
    Token::Ident,
    Token::Op,
    Token::Typecast,
    Token::LessEquals,
    Token::GreaterEquals,
    Token::NotEquals,
    Token::EqualsGreater,
    Token::Ascii37, // %
    Token::Ascii40, // (
    Token::Ascii41, // )
    Token::Ascii42, // *
    Token::Ascii43, // +
    Token::Ascii44, // ,
    Token::Ascii45, // -
    Token::Ascii46, // .
    Token::Ascii47, // /
    Token::Ascii58, // :
    Token::Ascii60, // <
    Token::Ascii61, // =
    Token::Ascii62, // >
    Token::Ascii91, // [
    Token::Ascii93, // ]
    Token::Ascii94, // ^
];

fn is(token: &ScanToken, kind: Token) -> bool {
    token.token == kind as i32
}

fn is_reserved(token: &ScanToken) -> bool {
    token.keyword_kind == KeywordKind::ReservedKeyword as i32
}

fn is_name(token: &ScanToken) -> bool {
    let keyword = token.keyword_kind != KeywordKind::NoKeyword as i32;
    (keyword && !is_reserved(token)) || is(token, Token::Ident)
}

/// True when the tokens are one SELECT proven read-only without a parse.
pub(crate) fn plain_select(sql: &str, tokens: &[ScanToken], lists: &FunctionLists) -> bool {
    let comment = |t: &&ScanToken| is(t, Token::CComment) || is(t, Token::SqlComment);
    let code: Vec<&ScanToken> = tokens.iter().filter(|t| !comment(t)).collect();
    let Some(first) = code.first() else {
        return false;
    };
    if !is(first, Token::Select) {
        return false;
    }
    for (i, token) in code.iter().enumerate() {
        let ok = if is(token, Token::Ascii59) {
            i + 1 == code.len()
        } else if is_reserved(token) {
            RESERVED_OK.iter().any(|k| is(token, *k))
        } else if token.keyword_kind != KeywordKind::NoKeyword as i32 {
            // Unreserved and column/type-function keywords act as names
            // here (`name`, `value`, `left`); they may not be a lookahead
            // variant the grammar treats specially.
            !is(token, Token::WithLa) && !is(token, Token::FormatLa)
        } else {
            OTHER_OK.iter().chain(VALUES).any(|k| is(token, *k))
        };
        if !ok {
            return false;
        }
        if is(token, Token::Ascii40) && i > 0 && !paren_ok(sql, &code, i - 1, lists) {
            return false;
        }
    }
    true
}

/// Whether the `(` after `code[prev]` is safe: not a call, or a call the
/// lists settle as read.
fn paren_ok(sql: &str, code: &[&ScanToken], prev: usize, lists: &FunctionLists) -> bool {
    let before = code[prev];
    if is_reserved(before) {
        return RESERVED_OK.iter().any(|k| is(before, *k));
    }
    if !is_name(before) {
        // After `)`, a constant or a parameter, `(` is not grammatical SQL we
        // want to reason about; after an operator or punctuation it groups.
        let closing = is(before, Token::Ascii41) || is(before, Token::Ascii93);
        let value = VALUES.iter().any(|k| is(before, *k));
        return !closing && !value;
    }
    // A call: the name must be unqualified and unquoted.
    if prev > 0 && is(code[prev - 1], Token::Ascii46) {
        return false;
    }
    let name = token_text(sql, before);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return false;
    }
    let name = name.to_ascii_lowercase();
    // Its verdict depends on its argument (`transaction_read_only` is the
    // primary's question): the parser looks at that.
    if name == "current_setting" {
        return false;
    }
    lists.settle(&[name.as_str()]) == Settled::Read
}

/// Every name in a statement the fast path admitted, as the server folds
/// it (lower case), deduplicated: a superset of the relations it reads.
pub(crate) fn names(sql: &str, tokens: &[ScanToken]) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    for token in tokens.iter().filter(|t| is_name(t)) {
        let text = token_text(sql, token);
        // A quoted name keeps its case; an unquoted one folds.
        let folded = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => text.to_ascii_lowercase(),
        };
        if !out.iter().any(|n| **n == *folded) {
            out.push(folded.into_boxed_str());
        }
    }
    out
}
