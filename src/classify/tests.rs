use super::*;

fn classifier() -> Classifier {
    Classifier::new(&[], &[], 0)
}

fn verdict(sql: &str) -> Verdict {
    classifier().classify_uncached(sql)
}

/// Proven reads: Read, nothing to look up, no effects.
const READS: &[&str] = &[
    "SELECT 1",
    "select 1;",
    "SELECT * FROM t",
    "SELECT a, b FROM t WHERE a = 1 AND b IN (1, 2, 3) ORDER BY a DESC LIMIT 10 OFFSET 5",
    "SELECT count(*) FROM t",
    "SELECT name, value FROM settings WHERE key = $1",
    "SELECT now(), current_timestamp, current_user",
    "SELECT lower(name), upper(name), length(name) FROM users",
    "SELECT coalesce(a, 0), nullif(b, 1), greatest(1, 2), least(3, 4) FROM t",
    "SELECT to_char(now(), 'YYYY'), date_trunc('day', ts), extract(year FROM ts) FROM t",
    "SELECT * FROM generate_series(1, 10) g",
    "SELECT array_agg(x), string_agg(y, ',') FROM t GROUP BY z HAVING count(*) > 1",
    "SELECT jsonb_build_object('a', 1), json_agg(t) FROM t",
    "SELECT abs(-1), round(2.5), random(), gen_random_uuid()",
    "SELECT pg_sleep(0.1)",
    "SELECT version(), current_setting('server_version'), pg_is_in_recovery()",
    "SELECT pg_last_wal_replay_lsn(), pg_current_wal_lsn(), inet_server_port()",
    "SELECT pg_backend_pid(), current_database(), format('%s', 1)",
    "SELECT pg_catalog.lower('A')",
    "SELECT * FROM t JOIN u ON t.id = u.id LEFT JOIN v USING (id)",
    "SELECT * FROM (SELECT * FROM t) s",
    "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
    "SELECT 1 UNION SELECT 2 EXCEPT SELECT 3",
    "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
    "SELECT CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END FROM t",
    "SELECT CAST(a AS text), a::int, '1'::numeric(10, 2) FROM t",
    "SELECT ARRAY[1, 2], ARRAY(SELECT 1)",
    "VALUES (1), (2)",
    "TABLE t",
    "SHOW search_path",
    "SHOW ALL",
    "EXPLAIN SELECT 1",
    "EXPLAIN DELETE FROM t",
    "EXPLAIN (ANALYZE false) DELETE FROM t",
    "EXPLAIN ANALYZE SELECT * FROM t",
    "EXPLAIN (ANALYZE, BUFFERS) SELECT 1",
    "COPY t TO STDOUT",
    "COPY (SELECT 1) TO STDOUT",
    "COPY t (a, b) TO STDOUT WITH (FORMAT csv)",
    "/* /* */ DELETE */ SELECT 1",
    "SELECT $$; DELETE FROM t$$",
    "SELECT $tag$; DELETE FROM t$tag$",
    "SELECT 'x'';DELETE'",
    "SELECT E'\\';DELETE FROM t; --'",
    "SELECT 1 -- ; DELETE FROM t",
    "SELECT \"update\", \"for\" FROM \"delete\"",
    "SELECT * FROM t TABLESAMPLE SYSTEM (10)",
    "SELECT a FROM t WHERE b = ANY ($1)",
    "FETCH 10 FROM c",
    "MOVE NEXT IN c",
    "SELECT pg_catalog.count(*) FROM t",
    "SELECT x FROM t ORDER BY abs(x)",
    "SELECT left('abc', 1), right('abc', 1)",
    "SELECT 1 WHERE 1 = 1 /* pgsplit:replica */",
    "SELECT json_build_object('k', v) -> 'k' FROM t",
    "SELECT * FROM t WHERE a BETWEEN 1 AND 2 AND b LIKE 'x%' AND c IS NOT NULL",
    "SELECT * FROM LATERAL generate_series(1, 2) AS g(x)",
    "SELECT setval_history FROM t",
    "SELECT * FROM t WHERE name LIKE 'a\\_b%'",
    "SELECT 'C:\\dir', E'\\''",
];

/// Writes and the reason label each must carry.
const WRITES: &[(&str, &str)] = &[
    ("INSERT INTO t VALUES (1)", "write"),
    ("UPDATE t SET a = 1", "write"),
    ("DELETE FROM t", "write"),
    (
        "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
        "write",
    ),
    ("INSERT INTO t SELECT * FROM u RETURNING *", "write"),
    ("CREATE TABLE t (a int)", "utility"),
    ("DROP TABLE t", "utility"),
    ("ALTER TABLE t ADD COLUMN b int", "utility"),
    ("CREATE INDEX ON t (a)", "utility"),
    ("TRUNCATE t", "utility"),
    ("GRANT SELECT ON t TO r", "utility"),
    ("VACUUM t", "utility"),
    ("ANALYZE t", "utility"),
    ("CLUSTER t", "utility"),
    ("REINDEX TABLE t", "utility"),
    ("CHECKPOINT", "utility"),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "utility"),
    ("NOTIFY c, 'x'", "utility"),
    ("UNLISTEN c", "utility"),
    ("DO $$ BEGIN PERFORM 1; END $$", "utility"),
    ("CALL p(1)", "write"),
    ("REFRESH MATERIALIZED VIEW mv", "utility"),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "ddl",
    ),
    ("COMMENT ON TABLE t IS 'x'", "utility"),
    ("SECURITY LABEL ON TABLE t IS 'x'", "utility"),
    ("CREATE TABLE n AS SELECT * FROM t", "write"),
    ("COPY t FROM STDIN", "copy_from"),
    ("COPY t TO '/tmp/x'", "copy_file"),
    ("COPY t TO PROGRAM 'cat'", "copy_file"),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", "cte_write"),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "cte_write",
    ),
    (
        "WITH a AS (WITH b AS (UPDATE t SET x = 1 RETURNING x) SELECT * FROM b) SELECT * FROM a",
        "cte_write",
    ),
    (
        "SELECT * FROM (WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i) s",
        "cte_write",
    ),
    ("SELECT * FROM t FOR UPDATE", "locking"),
    ("SELECT * FROM t FOR NO KEY UPDATE", "locking"),
    ("SELECT * FROM t FOR SHARE", "locking"),
    ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", "locking"),
    ("SELECT * FROM (SELECT * FROM t FOR SHARE) s", "locking"),
    (
        "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)",
        "locking",
    ),
    (
        "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x",
        "locking",
    ),
    ("SELECT INTO x FROM t", "select_into"),
    ("SELECT * INTO new FROM t", "select_into"),
    ("SELECT nextval('s')", "function"),
    ("SELECT pg_catalog.nextval('s')", "function"),
    ("SELECT NEXTVAL('s')", "function"),
    ("SELECT setval('s', 1), currval('s'), lastval()", "function"),
    ("SELECT * FROM t WHERE id = nextval('s')", "function"),
    ("SELECT * FROM t ORDER BY nextval('s')", "function"),
    ("SELECT (SELECT nextval('s'))", "function"),
    ("SELECT * FROM nextval('s')", "function"),
    ("SELECT pg_advisory_xact_lock(1)", "function"),
    ("SELECT pg_try_advisory_xact_lock(1)", "function"),
    ("SELECT pg_advisory_unlock(1)", "function"),
    ("SELECT lo_create(0)", "function"),
    ("SELECT lo_import('/tmp/x')", "function"),
    ("SELECT loread(0, 1)", "function"),
    ("SELECT pg_notify('c', 'x')", "function"),
    ("SELECT txid_current()", "function"),
    ("SELECT pg_current_xact_id()", "function"),
    ("SELECT pg_promote()", "function"),
    ("SELECT pg_terminate_backend(1)", "function"),
    ("SELECT pg_cancel_backend(1)", "function"),
    ("SELECT pg_reload_conf()", "function"),
    ("SELECT pg_switch_wal()", "function"),
    (
        "SELECT pg_create_physical_replication_slot('s')",
        "function",
    ),
    ("SELECT pg_drop_replication_slot('s')", "function"),
    ("SELECT pg_stat_reset()", "function"),
    ("SELECT dblink_exec('x', 'DELETE FROM t')", "function"),
    ("SELECT pg_logical_emit_message(true, 'p', 'x')", "function"),
    ("SELECT 1; INSERT INTO t VALUES (1)", "write"),
    ("SELECT 1 /* /* */ */; DELETE FROM t", "write"),
    ("EXPLAIN ANALYZE DELETE FROM t", "write"),
    ("EXPLAIN (ANALYZE true) UPDATE t SET a = 1", "write"),
    ("EXPLAIN ANALYZE SELECT nextval('s')", "function"),
    ("EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", "locking"),
    ("DISCARD TEMP", "utility"),
    ("PREPARE TRANSACTION 'x'", "transaction"),
    ("COMMIT PREPARED 'x'", "transaction"),
    ("ROLLBACK PREPARED 'x'", "transaction"),
    ("BEGIN", "transaction"),
    ("START TRANSACTION READ WRITE", "transaction"),
    ("SELECT 'a\\'; DELETE FROM t; --'", "backslash_string"),
    ("SELECT 'x\\', ' ; DELETE FROM t; --'", "backslash_string"),
    ("SELECT 'a\\'''; DELETE FROM t; --'", "backslash_string"),
    ("SELECT N'a\\'; DELETE FROM t; --'", "backslash_string"),
    ("this is not sql", "unparsable"),
    ("SELECT 'unterminated", "unparsable"),
    ("INSERT", "unparsable"),
];

#[test]
fn reads_are_reads() {
    for sql in READS {
        let v = verdict(sql);
        assert_eq!(v.access, Access::Read, "{sql}: {v:?}");
        assert!(v.functions.is_empty(), "{sql}: {v:?}");
        assert!(v.effects.is_empty(), "{sql}: {v:?}");
        assert!(!v.local_only, "{sql}");
    }
}

#[test]
fn writes_are_writes() {
    for (sql, reason) in WRITES {
        let v = verdict(sql);
        assert_eq!(v.access, Access::Write, "{sql}: {v:?}");
        assert_eq!(v.why.label(), *reason, "{sql}: {v:?}");
    }
}

/// Reads answered by the lexer alone must agree with the full parse.
#[test]
fn fast_path_agrees_with_the_parser() {
    let lists = functions::FunctionLists::new(&[], &[]);
    let mut fast = 0;
    for sql in READS.iter().chain(WRITES.iter().map(|(sql, _)| sql)) {
        let Ok(scanned) = fast::scan(sql) else {
            continue;
        };
        if fast::plain_select(sql, &scanned.tokens, &lists) {
            fast += 1;
            let full = statement::classify_parsed(sql, &lists);
            // A broken SELECT the lexer admits is only a syntax error on the
            // replica: nothing in it can run.
            let harmless = full.access == Access::Read || full.why.label() == "unparsable";
            assert!(harmless, "{sql}: {full:?}");
            assert!(full.functions.is_empty(), "{sql}");
        }
    }
    assert!(fast >= 10, "the fast path took only {fast}");
}

#[test]
fn fast_path_declines_what_it_cannot_prove() {
    let lists = functions::FunctionLists::new(&[], &[]);
    for sql in [
        "SELECT myfunc()",
        "SELECT s.f()",
        "SELECT \"lower\"('A')",
        "SELECT 1; SELECT 2",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * INTO n FROM t",
        "WITH d AS (DELETE FROM t) SELECT 1",
        "SELECT nextval('s')",
        "SELECT * FROM t x(a, b)",
        "INSERT INTO t VALUES (1)",
    ] {
        let scanned = fast::scan(sql).unwrap();
        assert!(!fast::plain_select(sql, &scanned.tokens, &lists), "{sql}");
    }
}
