//! Console commands: the text of a simple Query in, a [`Command`] out.
//! Pure. As in PgBouncer's console: words are case-insensitive, one command
//! per query, a trailing semicolon is optional.

use super::ConsoleError;

/// What `SHOW` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Help,
    Backends,
    Pools,
    Clients,
    Servers,
    Stats,
    Routing,
    Config,
    Version,
}

impl Item {
    /// Every item, in `SHOW HELP` order.
    pub const ALL: [Item; 9] = [
        Item::Help,
        Item::Backends,
        Item::Pools,
        Item::Clients,
        Item::Servers,
        Item::Stats,
        Item::Routing,
        Item::Config,
        Item::Version,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Item::Help => "HELP",
            Item::Backends => "BACKENDS",
            Item::Pools => "POOLS",
            Item::Clients => "CLIENTS",
            Item::Servers => "SERVERS",
            Item::Stats => "STATS",
            Item::Routing => "ROUTING",
            Item::Config => "CONFIG",
            Item::Version => "VERSION",
        }
    }
}

/// A console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Only whitespace and semicolons: EmptyQueryResponse.
    Empty,
    Show(Item),
    /// `EXPLAIN ROUTE <sql>`: the statement, as typed.
    ExplainRoute(String),
    Pause,
    Resume,
    Reload,
    Drain(String),
    Undrain(String),
}

/// Commands of PgBouncer's console that pgsplit's does not have (0A000
/// rather than a syntax error: an operator's habit, not a typo).
const PGBOUNCER_ONLY: &[&str] = &[
    "SUSPEND",
    "KILL",
    "KILL_CLIENT",
    "SHUTDOWN",
    "RECONNECT",
    "DISABLE",
    "ENABLE",
    "WAIT_CLOSE",
    "SET",
];

/// `SHOW` items of PgBouncer's console that pgsplit's does not have.
const PGBOUNCER_ONLY_SHOW: &[&str] = &[
    "DATABASES",
    "USERS",
    "LISTS",
    "MEM",
    "FDS",
    "SOCKETS",
    "ACTIVE_SOCKETS",
    "DNS_HOSTS",
    "DNS_ZONES",
    "STATS_TOTALS",
    "STATS_AVERAGES",
    "TOTALS",
    "PEERS",
    "PEER_POOLS",
    "STATE",
];

/// Parses one query's text.
pub fn parse(text: &str) -> Result<Command, ConsoleError> {
    let text = text.trim();
    let text = text.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if text.trim_start_matches(';').trim().is_empty() {
        return Ok(Command::Empty);
    }
    let (verb, rest) = split_word(text);
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "EXPLAIN" => {
            let (word, statement) = split_word(rest);
            if !word.eq_ignore_ascii_case("ROUTE") {
                return Err(ConsoleError::Syntax(
                    "the console runs no SQL: EXPLAIN ROUTE <statement> shows where pgsplit would send one".into(),
                ));
            }
            if statement.trim().is_empty() {
                return Err(ConsoleError::Syntax(
                    "EXPLAIN ROUTE needs a statement: EXPLAIN ROUTE SELECT ...".into(),
                ));
            }
            Ok(Command::ExplainRoute(statement.trim().to_owned()))
        }
        "SHOW" => {
            let words = words(rest)?;
            let [item] = &words[..] else {
                return Err(ConsoleError::Syntax(
                    "SHOW takes one item: SHOW HELP lists them".into(),
                ));
            };
            let upper = item.to_ascii_uppercase();
            if let Some(item) = Item::ALL.iter().find(|i| i.name() == upper) {
                return Ok(Command::Show(*item));
            }
            if PGBOUNCER_ONLY_SHOW.contains(&upper.as_str()) {
                return Err(ConsoleError::Unsupported(format!(
                    "SHOW {upper} is a PgBouncer console command pgsplit does not have; SHOW HELP lists pgsplit's"
                )));
            }
            Err(ConsoleError::Syntax(format!(
                "unknown SHOW item {item:?}; SHOW HELP lists them"
            )))
        }
        "PAUSE" | "RESUME" | "RELOAD" => {
            if !words(rest)?.is_empty() {
                return Err(ConsoleError::Unsupported(format!(
                    "{verb} takes no argument: it applies to every database and backend"
                )));
            }
            Ok(match verb.as_str() {
                "PAUSE" => Command::Pause,
                "RESUME" => Command::Resume,
                _ => Command::Reload,
            })
        }
        "DRAIN" | "UNDRAIN" => {
            let words = words(rest)?;
            let [backend] = &words[..] else {
                return Err(ConsoleError::Syntax(format!(
                    "{verb} takes one backend name: {verb} pg2"
                )));
            };
            Ok(if verb == "DRAIN" {
                Command::Drain(backend.clone())
            } else {
                Command::Undrain(backend.clone())
            })
        }
        v if PGBOUNCER_ONLY.contains(&v) => Err(ConsoleError::Unsupported(format!(
            "{v} is a PgBouncer console command pgsplit does not have; SHOW HELP lists pgsplit's"
        ))),
        _ => Err(ConsoleError::Syntax(format!(
            "unknown console command {:?}; the console runs no SQL, SHOW HELP lists its commands",
            first_words(text)
        ))),
    }
}

/// The first word and the rest of `text` (its leading whitespace kept off).
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    }
}

/// Arguments: words, or quoted names ('pg 2', "pg2"), with no trailing
/// text after a closing quote.
fn words(text: &str) -> Result<Vec<String>, ConsoleError> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let first = rest.chars().next().expect("not empty");
        if first == '\'' || first == '"' {
            let body = &rest[1..];
            let Some(end) = body.find(first) else {
                return Err(ConsoleError::Syntax(format!(
                    "unterminated quoted name: {rest}"
                )));
            };
            out.push(body[..end].to_owned());
            rest = &body[end + 1..];
            if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
                return Err(ConsoleError::Syntax(format!(
                    "unexpected text after a quoted name: {rest}"
                )));
            }
        } else {
            let (word, more) = split_word(rest);
            out.push(word.to_owned());
            rest = more;
        }
        rest = rest.trim_start();
    }
    Ok(out)
}

/// The start of `text`, for an error message.
fn first_words(text: &str) -> String {
    let shown: String = text.chars().take(40).collect();
    if shown.len() < text.len() {
        format!("{shown}...")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> &'static str {
        parse(text).unwrap_err().sqlstate()
    }

    #[test]
    fn commands_are_case_insensitive_with_an_optional_semicolon() {
        assert_eq!(
            parse("SHOW BACKENDS").unwrap(),
            Command::Show(Item::Backends)
        );
        assert_eq!(
            parse("  show   clients ; ").unwrap(),
            Command::Show(Item::Clients)
        );
        assert_eq!(parse("Show Help;").unwrap(), Command::Show(Item::Help));
        assert_eq!(parse("pause").unwrap(), Command::Pause);
        assert_eq!(parse("RESUME;").unwrap(), Command::Resume);
        assert_eq!(parse("reload").unwrap(), Command::Reload);
        assert_eq!(parse("drain pg2").unwrap(), Command::Drain("pg2".into()));
        assert_eq!(
            parse("UNDRAIN 'pg 2';").unwrap(),
            Command::Undrain("pg 2".into())
        );
        assert_eq!(
            parse("drain \"Pg2\"").unwrap(),
            Command::Drain("Pg2".into())
        );
        assert_eq!(parse("").unwrap(), Command::Empty);
        assert_eq!(parse(" ;; ").unwrap(), Command::Empty);
        for item in Item::ALL {
            assert_eq!(
                parse(&format!("show {}", item.name())).unwrap(),
                Command::Show(item)
            );
        }
    }

    #[test]
    fn explain_route_keeps_the_statement_as_typed() {
        assert_eq!(
            parse("explain route SELECT ';' FROM t WHERE a = 'x;y';").unwrap(),
            Command::ExplainRoute("SELECT ';' FROM t WHERE a = 'x;y'".into())
        );
        assert_eq!(
            parse("EXPLAIN ROUTE\n  INSERT INTO t VALUES (1)").unwrap(),
            Command::ExplainRoute("INSERT INTO t VALUES (1)".into())
        );
        assert_eq!(code("EXPLAIN ROUTE"), "42601");
        assert_eq!(code("EXPLAIN SELECT 1"), "42601");
    }

    #[test]
    fn unknown_text_is_a_syntax_error_and_pgbouncer_only_commands_unsupported() {
        assert_eq!(code("SELECT 1"), "42601");
        assert_eq!(code("SHOW"), "42601");
        assert_eq!(code("SHOW BACKENDS now"), "42601");
        assert_eq!(code("SHOW nonsense"), "42601");
        assert_eq!(code("DRAIN"), "42601");
        assert_eq!(code("DRAIN a b"), "42601");
        assert_eq!(code("DRAIN 'a"), "42601");
        assert_eq!(code("DRAIN 'a'b"), "42601");
        assert_eq!(code("SHOW DATABASES"), "0A000");
        assert_eq!(code("kill app"), "0A000");
        assert_eq!(code("SHUTDOWN"), "0A000");
        assert_eq!(code("PAUSE app"), "0A000");
        let e = parse("SELECT * FROM a_very_long_table_name_that_goes_on_and_on").unwrap_err();
        assert!(e.to_string().contains("..."), "{e}");
    }

    proptest::proptest! {
        /// Whatever a client types, the parser answers without panicking,
        /// and a refusal is 42601 or 0A000.
        #[test]
        fn any_text_parses_or_is_refused_with_a_console_sqlstate(
            text in "(?s)(SHOW|EXPLAIN ROUTE|DRAIN|PAUSE|[a-z]+)?.{0,60}"
        ) {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(
                    matches!(e.sqlstate(), "42601" | "0A000"),
                    "{text:?}: {} {e}", e.sqlstate()
                );
            }
        }
    }
}
