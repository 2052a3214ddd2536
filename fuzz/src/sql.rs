//! Grammar-shaped SQL from fuzzer bytes: each byte picks a production, so
//! libFuzzer's mutations move between statement shapes the classifier
//! distinguishes (reads, writes, locking clauses, CTEs, transaction
//! control, SET forms, function calls, hints) instead of spending its time
//! on texts the parser rejects at the first token.

/// Reads choices from the fuzzer's bytes; past the end every choice is 0.
pub struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Choices<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Choices { bytes, at: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn pick<'s>(&mut self, options: &[&'s str]) -> &'s str {
        options[self.byte() as usize % options.len()]
    }

    fn exhausted(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

const FUNCTIONS: &[&str] = &[
    "now()",
    "lower(name)",
    "nextval('s')",
    "pg_advisory_lock(1)",
    "pg_try_advisory_xact_lock(2)",
    "set_config('search_path', 'x', false)",
    "current_setting('transaction_read_only')",
    "pg_is_in_recovery()",
    "pg_current_wal_lsn()",
    "pg_backend_pid()",
    "my_func(1)",
    "myschema.price_of(id)",
    "\"MixedCase\"(2)",
    "lo_creat(-1)",
    "txid_current()",
    "random()",
    "count(*)",
    "dblink_exec('x', 'y')",
    "pg_promote()",
    "pg_sleep(0)",
];

const RELATIONS: &[&str] = &[
    "t",
    "public.t",
    "pg_stat_activity",
    "pg_locks",
    "pg_settings",
    "\"Quoted\"",
    "tmp_x",
    "unlogged_t",
    "pg_catalog.pg_class",
    "information_schema.tables",
];

const LITERALS: &[&str] = &[
    "1",
    "42",
    "-7.5e3",
    "'x'",
    "'it''s'",
    "E'\\n'",
    "$$dollar$$",
    "$q$ ; DELETE FROM t $q$",
    "NULL",
    "true",
    "B'101'",
    "X'ff'",
    "$1",
    "ARRAY[1,2]",
    "'0/16B3748'::pg_lsn",
];

fn expression(c: &mut Choices, depth: u8) -> String {
    if depth > 3 || c.exhausted() {
        return c.pick(LITERALS).to_owned();
    }
    match c.byte() % 7 {
        0 => c.pick(LITERALS).to_owned(),
        1 => c.pick(FUNCTIONS).to_owned(),
        2 => format!(
            "{} {} {}",
            expression(c, depth + 1),
            c.pick(&["+", "=", "<>", "AND", "OR", "||", "IS DISTINCT FROM"]),
            expression(c, depth + 1)
        ),
        3 => format!("({})", select(c, depth + 1)),
        4 => format!("CASE WHEN {} THEN 1 ELSE 2 END", expression(c, depth + 1)),
        5 => format!("EXISTS ({})", select(c, depth + 1)),
        _ => "id".to_owned(),
    }
}

fn select(c: &mut Choices, depth: u8) -> String {
    let mut sql = format!("SELECT {}", expression(c, depth + 1));
    if c.byte() % 2 == 0 {
        sql.push_str(&format!(" FROM {}", c.pick(RELATIONS)));
    }
    if c.byte() % 3 == 0 {
        sql.push_str(&format!(" WHERE {}", expression(c, depth + 1)));
    }
    sql.push_str(c.pick(&[
        "",
        "",
        " FOR UPDATE",
        " FOR SHARE",
        " FOR NO KEY UPDATE SKIP LOCKED",
        " LIMIT 1",
        " ORDER BY 1",
        " UNION ALL SELECT 1",
    ]));
    sql
}

fn write(c: &mut Choices, depth: u8) -> String {
    let relation = c.pick(RELATIONS);
    match c.byte() % 5 {
        0 => format!(
            "INSERT INTO {relation} VALUES ({}) {}",
            expression(c, depth + 1),
            c.pick(&["", "RETURNING id", "ON CONFLICT DO NOTHING"])
        ),
        1 => format!(
            "UPDATE {relation} SET v = {} WHERE {}",
            expression(c, depth + 1),
            expression(c, depth + 1)
        ),
        2 => format!("DELETE FROM {relation} WHERE {}", expression(c, depth + 1)),
        3 => format!(
            "MERGE INTO {relation} USING s ON true WHEN MATCHED THEN {}",
            c.pick(&["DO NOTHING", "DELETE", "UPDATE SET v = 1"])
        ),
        _ => format!("COPY {relation} FROM STDIN"),
    }
}

fn statement(c: &mut Choices, depth: u8) -> String {
    match c.byte() % 12 {
        0 | 1 => select(c, depth),
        2 => write(c, depth),
        3 => format!(
            "WITH d AS ({}) {}",
            if c.byte() % 2 == 0 {
                write(c, depth + 1)
            } else {
                select(c, depth + 1)
            },
            select(c, depth + 1)
        ),
        4 => c
            .pick(&[
                "BEGIN",
                "BEGIN READ ONLY",
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "COMMIT",
                "ROLLBACK",
                "SAVEPOINT a",
                "ROLLBACK TO SAVEPOINT a",
                "RELEASE a",
                "SET TRANSACTION READ ONLY",
                "PREPARE TRANSACTION 'x'",
                "COMMIT AND CHAIN",
                "END",
            ])
            .to_owned(),
        5 => format!(
            "{} {} {} {}",
            c.pick(&["SET", "SET LOCAL", "SET SESSION", "RESET", "SHOW"]),
            c.pick(&[
                "search_path",
                "pgsplit.route",
                "pgsplit.min_lsn",
                "role",
                "application_name",
                "default_transaction_isolation",
                "transaction_read_only",
                "ALL",
            ]),
            c.pick(&["=", "TO", ""]),
            c.pick(&["'primary'", "replica", "DEFAULT", "'0/0'", "serializable", "x"])
        ),
        6 => c
            .pick(&[
                "DISCARD ALL",
                "DISCARD TEMP",
                "LISTEN ch",
                "UNLISTEN *",
                "NOTIFY ch, 'x'",
                "CREATE TEMP TABLE tmp_x (a int)",
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                "CLOSE ALL",
                "CHECKPOINT",
                "VACUUM t",
                "ALTER SYSTEM SET work_mem = '1MB'",
                "LOCK TABLE t",
            ])
            .to_owned(),
        7 => format!(
            "{} {}",
            c.pick(&["EXPLAIN", "EXPLAIN ANALYZE", "EXPLAIN (ANALYZE, BUFFERS)"]),
            statement(c, depth + 1)
        ),
        8 => format!(
            "PREPARE p{} AS {}",
            c.byte() % 4,
            if c.byte() % 2 == 0 {
                select(c, depth + 1)
            } else {
                write(c, depth + 1)
            }
        ),
        9 => format!(
            "{} p{}",
            c.pick(&["EXECUTE", "DEALLOCATE", "DEALLOCATE PREPARE", "CREATE TABLE x AS EXECUTE"]),
            c.byte() % 4
        ),
        10 => format!(
            "{} {}",
            c.pick(&["CALL", "DO $$BEGIN PERFORM", "SELECT * FROM"]),
            c.pick(FUNCTIONS)
        ),
        _ => format!("TABLE {}", c.pick(RELATIONS)),
    }
}

/// One Query message's text: statements separated by `;`, with comments
/// (hints among them) and whitespace between tokens where a byte says so.
pub fn query(bytes: &[u8]) -> String {
    let mut c = Choices::new(bytes);
    let count = 1 + c.byte() % 3;
    let mut sql = String::new();
    for i in 0..count {
        if i > 0 {
            sql.push_str(c.pick(&["; ", ";\n", " ; "]));
        }
        sql.push_str(c.pick(&[
            "",
            "",
            "/* pgsplit:primary */ ",
            "/* pgsplit:replica */ ",
            "-- a comment\n",
            "/* nested /* comment */ */ ",
        ]));
        sql.push_str(&statement(&mut c, 0));
    }
    sql.push_str(c.pick(&["", ";", " -- trailing", ";;"]));
    sql
}
