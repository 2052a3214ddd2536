//! The statement table of `splitting.rs`: what runs through the read-write
//! port, and where it must have run.
//!
//! `{M}` in a statement stands for the case's marker comment; a statement
//! without `{M}` gets the marker prepended. Put `{M}` after a leading
//! `/* pgsplit:… */` hint (so the hint stays first) and before every
//! statement of a multi-statement message.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Primary,
    Replica,
    /// Tried on a replica, refused there as a standby, and run on the
    /// primary (the safety net).
    Retried,
}

#[derive(Clone, Copy, Debug)]
pub enum How {
    /// `simple_query`: one Query message (may hold several statements).
    Simple,
    /// `copy_out` (extended protocol), rows discarded.
    CopyOut,
    /// `copy_in` (extended protocol) with these rows.
    CopyIn(&'static str),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub category: &'static str,
    /// Messages sent first on the case's own session (unchecked).
    pub pre: &'static [&'static str],
    /// The checked statement(s).
    pub sql: &'static str,
    /// Messages sent afterwards (unchecked), e.g. `COMMIT`.
    pub post: &'static [&'static str],
    pub expect: Target,
    pub how: How,
    /// The checked statement is expected to fail (the server logs it with
    /// its marker anyway, which is how its placement is seen).
    pub fails: bool,
}

impl Case {
    pub fn pre(mut self, pre: &'static [&'static str]) -> Self {
        self.pre = pre;
        self
    }
    pub fn post(mut self, post: &'static [&'static str]) -> Self {
        self.post = post;
        self
    }
    pub fn copy_out(mut self) -> Self {
        self.how = How::CopyOut;
        self
    }
    pub fn copy_in(mut self, rows: &'static str) -> Self {
        self.how = How::CopyIn(rows);
        self
    }
    pub fn fails(mut self) -> Self {
        self.fails = true;
        self
    }
    /// `sql` carrying `marker`.
    pub fn marked(&self, marker: &str) -> String {
        if self.sql.contains("{M}") {
            self.sql.replace("{M}", marker)
        } else {
            format!("{marker} {}", self.sql)
        }
    }
}

fn case(category: &'static str, expect: Target, sql: &'static str) -> Case {
    Case {
        category,
        pre: &[],
        sql,
        post: &[],
        expect,
        how: How::Simple,
        fails: false,
    }
}

fn r(category: &'static str, sql: &'static str) -> Case {
    case(category, Target::Replica, sql)
}

fn p(category: &'static str, sql: &'static str) -> Case {
    case(category, Target::Primary, sql)
}

fn retried(category: &'static str, sql: &'static str) -> Case {
    case(category, Target::Retried, sql)
}

/// Schema and data the table needs, created as `app` on the primary before
/// the run (and replicated before any case runs).
pub const FIXTURE: &str = r#"
CREATE TABLE t (id int PRIMARY KEY, v text, n int);
INSERT INTO t SELECT g, 'v' || g, g % 7 FROM generate_series(1, 100) g;
CREATE TABLE u (id int PRIMARY KEY, t_id int REFERENCES t, w text);
INSERT INTO u SELECT g, g, 'w' || g FROM generate_series(1, 50) g;
CREATE TABLE w (id serial PRIMARY KEY, v text);
CREATE TABLE m (id int PRIMARY KEY, v text);
INSERT INTO m VALUES (1, 'one');
CREATE TABLE tr (x int);
CREATE TABLE drop_me (x int);
CREATE TABLE alter_me (x int);
CREATE VIEW tv AS SELECT id, v FROM t;
CREATE MATERIALIZED VIEW mv AS SELECT n, count(*) AS c FROM t GROUP BY n;
CREATE SEQUENCE s;
CREATE FUNCTION my_volatile_fn() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
CREATE FUNCTION my_stable_fn() RETURNS int LANGUAGE sql STABLE AS 'SELECT count(*)::int FROM t';
CREATE FUNCTION my_immutable_fn(a int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a * 2';
CREATE FUNCTION my_stable_plpgsql() RETURNS int LANGUAGE plpgsql STABLE
    AS $$BEGIN RETURN (SELECT max(id) FROM t); END$$;
CREATE PROCEDURE my_proc(a int) LANGUAGE sql AS 'INSERT INTO w (v) VALUES (a::text)';
CREATE UNLOGGED TABLE ul (x int);
INSERT INTO ul VALUES (1);
CREATE VIEW ulv AS SELECT x FROM ul;
CREATE FUNCTION wal_pos() RETURNS pg_lsn LANGUAGE sql STABLE AS 'SELECT pg_current_wal_lsn()';
CREATE FUNCTION set_flag() RETURNS text LANGUAGE sql VOLATILE
    AS $$SELECT set_config('myapp.flag', 'from a function', false)$$;
CREATE PROCEDURE set_flag_proc() LANGUAGE plpgsql
    AS $$BEGIN PERFORM set_config('myapp.flag', 'from a procedure', false); END$$;
"#;

/// Every case, in run order. Each runs on a fresh connection, in
/// autocommit unless its `pre` opens a transaction.
pub fn all() -> Vec<Case> {
    const READ: &str = "plain read";
    const FUNC: &str = "read function";
    const LEX: &str = "lexical";
    const COPY: &str = "copy";
    const WRITE: &str = "write";
    const DDL: &str = "ddl/utility";
    const LOCK: &str = "row lock";
    const CTE: &str = "data-modifying cte";
    const SIDE: &str = "side-effect function";
    const UDF: &str = "user function";
    const HINT: &str = "hint";
    const MULTI: &str = "multi-statement";
    const TX: &str = "transaction";
    const SESS: &str = "session state";
    const PIN: &str = "session pin";
    const ROUTE: &str = "pgsplit.route";
    const BAD: &str = "error";
    const STANDBY: &str = "standby-only error";
    const PREP: &str = "sql prepared statement";
    const HIDDEN: &str = "setting set in a call";
    vec![
        // ---- plain reads -> replica
        r(READ, "SELECT 1"),
        r(READ, "SELECT 'hello'::text, 42"),
        r(READ, "SELECT * FROM t WHERE id = 1"),
        r(READ, "SELECT v FROM t ORDER BY id LIMIT 5"),
        r(READ, "SELECT t.id, u.w FROM t JOIN u ON u.t_id = t.id WHERE t.id < 10"),
        r(READ, "SELECT count(*) FROM t LEFT JOIN u ON u.t_id = t.id"),
        r(READ, "SELECT n, count(*), sum(id), avg(id) FROM t GROUP BY n HAVING count(*) > 1"),
        r(READ, "SELECT id, row_number() OVER (PARTITION BY n ORDER BY id) FROM t"),
        r(READ, "SELECT id, sum(id) OVER w FROM t WINDOW w AS (ORDER BY id ROWS 2 PRECEDING)"),
        r(READ, "SELECT * FROM t WHERE id IN (SELECT t_id FROM u WHERE w LIKE 'w1%')"),
        r(READ, "SELECT (SELECT max(id) FROM u), EXISTS (SELECT 1 FROM t WHERE n = 3)"),
        r(READ, "WITH x AS (SELECT id FROM t WHERE n = 1) SELECT count(*) FROM x"),
        r(READ, "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 10) SELECT sum(i) FROM r"),
        r(READ, "VALUES (1, 'a'), (2, 'b')"),
        r(READ, "TABLE u"),
        r(READ, "SHOW search_path"),
        r(READ, "SHOW server_version"),
        r(READ, "EXPLAIN SELECT * FROM t WHERE id = 5"),
        r(READ, "EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM t"),
        r(READ, "EXPLAIN ANALYZE SELECT * FROM t JOIN u ON u.t_id = t.id"),
        r(READ, "EXPLAIN (FORMAT JSON) SELECT 1"),
        r(READ, "SELECT * FROM tv WHERE id < 3"),
        r(READ, "SELECT * FROM mv ORDER BY n"),
        r(READ, "SELECT array_agg(id ORDER BY id) FROM t WHERE id < 5"),
        r(READ, "SELECT string_agg(v, ',') FROM t WHERE n = 2"),
        r(READ, "SELECT DISTINCT n FROM t ORDER BY n"),
        r(READ, "SELECT * FROM t UNION ALL SELECT * FROM t LIMIT 3"),
        r(READ, "SELECT id FROM t INTERSECT SELECT t_id FROM u"),
        r(READ, "SELECT * FROM t, LATERAL (SELECT w FROM u WHERE u.t_id = t.id) l LIMIT 3"),
        r(READ, "SELECT * FROM (VALUES (1), (2)) AS v(x) WHERE x > 1"),
        r(READ, "SELECT id FROM t ORDER BY id DESC FETCH FIRST 2 ROWS ONLY"),
        r(READ, "SELECT id FROM t WHERE id = ANY('{1,2,3}'::int[])"),
        r(READ, "SELECT CASE WHEN n > 3 THEN 'big' ELSE 'small' END FROM t LIMIT 2"),
        r(READ, "SELECT 'x' WHERE false"),
        r(READ, "SELECT relname FROM pg_class WHERE relname = 't'"),
        // A node's own runtime state: the primary's (routing.primary_relations).
        p(READ, "SELECT count(*) FROM pg_stat_activity"),
        p(READ, "SELECT gid FROM pg_prepared_xacts"),
        p(READ, "SELECT count(*) FROM pg_locks"),
        // ---- reads with built-in read functions -> replica
        r(FUNC, "SELECT now(), current_timestamp, clock_timestamp()"),
        r(FUNC, "SELECT count(*) FROM generate_series(1, 1000)"),
        r(FUNC, "SELECT lower('ABC'), upper(v), length(v) FROM t WHERE id = 2"),
        r(FUNC, "SELECT random() < 2"),
        // Questions about the session's own server: the primary's.
        p(FUNC, "SELECT pg_is_in_recovery()"),
        p(FUNC, "SELECT pg_backend_pid()"),
        p(FUNC, "SELECT current_setting('transaction_read_only')"),
        p(FUNC, "SHOW transaction_read_only"),
        p(FUNC, "SELECT pg_current_wal_lsn()"),
        r(FUNC, "SELECT current_setting('server_version_num')"),
        r(FUNC, "SELECT current_user, session_user, current_database(), version()"),
        r(FUNC, "SELECT json_build_object('a', 1)::text, jsonb_pretty('{\"a\": 1}')"),
        r(FUNC, "SELECT md5('x'), gen_random_uuid() IS NOT NULL"),
        r(FUNC, "SELECT to_char(now(), 'YYYY'), date_trunc('day', now())"),
        r(FUNC, "SELECT coalesce(NULL, 1), nullif(1, 1), greatest(1, 2)"),
        r(FUNC, "SELECT format('%s', 'x'), quote_ident('a b'), v ~ '^v1' FROM t LIMIT 2"),
        r(FUNC, "SELECT pg_database_size(current_database()) > 0"),
        r(FUNC, "SELECT has_table_privilege('t', 'SELECT')"),
        // ---- lexical traps -> replica
        r(LEX, "SELECT /* inner /* nested */ comment */ 1"),
        r(LEX, "{M} /* leading /* nested; DELETE FROM t */ comment */ SELECT 2"),
        r(LEX, "SELECT $$;DELETE FROM t$$ AS s"),
        r(LEX, "SELECT $tag$ it's ; DELETE FROM t; $tag$"),
        r(LEX, r"SELECT E'a\'; DELETE FROM t; --'"),
        r(LEX, "SELECT 'it''s; DELETE FROM t'"),
        r(LEX, "SELECT \"id\" FROM \"t\" WHERE \"v\" = 'v1'"),
        r(LEX, "SELECT 1 -- ; DELETE FROM t"),
        r(LEX, "SELECT 'INSERT INTO w VALUES (1)' AS looks_like_a_write"),
        // ---- COPY
        r(COPY, "COPY (SELECT id, v FROM t WHERE id < 10) TO STDOUT").copy_out(),
        r(COPY, "COPY t TO STDOUT").copy_out(),
        r(COPY, "COPY u (id, w) TO STDOUT WITH (FORMAT csv)").copy_out(),
        p(COPY, "COPY w (v) FROM STDIN").copy_in("copied-1\ncopied-2\n"),
        // ---- writes -> primary
        p(WRITE, "INSERT INTO w (v) VALUES ('a')"),
        p(WRITE, "INSERT INTO w (v) VALUES ('b') RETURNING id"),
        p(WRITE, "INSERT INTO w (v) SELECT v FROM t WHERE id < 3"),
        p(WRITE, "INSERT INTO w DEFAULT VALUES"),
        p(WRITE, "INSERT INTO m VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = excluded.v"),
        p(WRITE, "UPDATE t SET n = n WHERE id = 100"),
        p(WRITE, "UPDATE w SET v = 'c' WHERE id < 0 RETURNING *"),
        p(WRITE, "UPDATE t SET v = t.v FROM u WHERE u.t_id = t.id AND u.id = 1"),
        p(WRITE, "DELETE FROM w WHERE v = 'nothing'"),
        p(WRITE, "DELETE FROM w USING t WHERE w.v = t.v AND t.id = -1"),
        p(WRITE, "MERGE INTO m USING (VALUES (2, 'y')) s(id, v) ON m.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)"),
        // ---- DDL and utility -> primary
        p(DDL, "CREATE TABLE new_t (x int)"),
        p(DDL, "CREATE TABLE IF NOT EXISTS t (id int)"),
        p(DDL, "CREATE INDEX t_v_idx ON t (v)"),
        p(DDL, "CREATE VIEW v2 AS SELECT 1 AS x"),
        p(DDL, "CREATE TABLE t_ctas AS SELECT * FROM t WHERE id < 3"),
        p(DDL, "SELECT * INTO t_copy FROM t WHERE id < 5"),
        p(DDL, "ALTER TABLE alter_me ADD COLUMN y int"),
        p(DDL, "DROP TABLE drop_me"),
        p(DDL, "DROP VIEW IF EXISTS no_such_view"),
        p(DDL, "TRUNCATE tr"),
        p(DDL, "REFRESH MATERIALIZED VIEW mv"),
        p(DDL, "REINDEX TABLE tr"),
        p(DDL, "CALL my_proc(7)"),
        p(DDL, "DO $$BEGIN PERFORM 1; END$$"),
        p(DDL, "DO $$BEGIN INSERT INTO w (v) VALUES ('from do'); END$$"),
        p(DDL, "VACUUM w"),
        p(DDL, "VACUUM (ANALYZE) u"),
        p(DDL, "ANALYZE t"),
        p(DDL, "LOCK TABLE w IN SHARE ROW EXCLUSIVE MODE").pre(&["BEGIN"]).post(&["COMMIT"]),
        p(DDL, "GRANT SELECT ON t TO app_md5"),
        p(DDL, "REVOKE SELECT ON u FROM app_trust"),
        p(DDL, "COMMENT ON TABLE t IS 'the t table'"),
        p(DDL, "NOTIFY ch, 'x'"),
        p(DDL, "EXPLAIN ANALYZE INSERT INTO w (v) VALUES ('explained')"),
        p(DDL, "EXPLAIN ANALYZE DELETE FROM w WHERE v = 'nope'"),
        // ---- row locks -> primary
        p(LOCK, "SELECT * FROM t WHERE id = 1 FOR UPDATE"),
        p(LOCK, "SELECT * FROM t WHERE id = 1 FOR SHARE"),
        p(LOCK, "SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE"),
        p(LOCK, "SELECT * FROM t WHERE id = 1 FOR KEY SHARE"),
        p(LOCK, "SELECT * FROM t JOIN u ON u.t_id = t.id WHERE t.id = 2 FOR UPDATE OF t NOWAIT"),
        p(LOCK, "SELECT * FROM (SELECT * FROM t WHERE id = 2 FOR UPDATE) s"),
        p(LOCK, "SELECT count(*) FROM t WHERE id IN (SELECT t_id FROM u WHERE id = 1 FOR SHARE)"),
        // ---- data-modifying CTEs -> primary
        p(CTE, "WITH d AS (DELETE FROM w WHERE v = 'zzz' RETURNING *) SELECT count(*) FROM d"),
        p(CTE, "WITH x AS (SELECT 5 AS a) INSERT INTO w (v) SELECT a::text FROM x"),
        p(CTE, "WITH up AS (UPDATE m SET v = v WHERE id = 1 RETURNING id) SELECT * FROM up"),
        p(CTE, "WITH r AS (SELECT 1), i AS (INSERT INTO w (v) VALUES ('deep') RETURNING id) SELECT (SELECT count(*) FROM i)"),
        // ---- functions with side effects -> primary
        p(SIDE, "SELECT nextval('s')"),
        p(SIDE, "SELECT setval('s', 100)"),
        p(SIDE, "SELECT currval('s')").pre(&["SELECT nextval('s')"]),
        p(SIDE, "SELECT 1 WHERE nextval('s') > 0"),
        p(SIDE, "SELECT pg_advisory_xact_lock(42)"),
        p(SIDE, "SELECT txid_current()"),
        p(SIDE, "SELECT pg_current_xact_id()"),
        p(SIDE, "SELECT set_config('myapp.flag', 'on', false)"),
        p(SIDE, "SELECT pg_notify('ch', 'payload')"),
        p(SIDE, "SELECT lo_create(0)"),
        // ---- user-defined functions
        r(UDF, "SELECT my_stable_fn()"),
        r(UDF, "SELECT my_immutable_fn(21)"),
        r(UDF, "SELECT my_stable_fn() + my_immutable_fn(1)"),
        r(UDF, "SELECT * FROM t WHERE id = my_immutable_fn(2)"),
        r(UDF, "SELECT my_stable_plpgsql()"),
        p(UDF, "SELECT my_volatile_fn()"),
        p(UDF, "SELECT count(*) FROM t WHERE my_volatile_fn() = 1"),
        p(UDF, "SELECT my_stable_fn(), my_volatile_fn()"),
        // ---- comment hints
        r(HINT, "/* pgsplit:replica */ {M} SELECT * FROM t WHERE id = 3"),
        p(HINT, "/* pgsplit:primary */ {M} SELECT 1"),
        p(HINT, "/* pgsplit:primary */ {M} SELECT * FROM t WHERE id = 4"),
        p(HINT, "/* pgsplit:replica */ {M} INSERT INTO w (v) VALUES ('hinted')"),
        p(HINT, "/* pgsplit:replica */ {M} SELECT nextval('s')"),
        // ---- multi-statement messages: the whole message goes to one place
        r(MULTI, "{M} SELECT 1; {M} SELECT 2"),
        r(MULTI, "{M} SELECT count(*) FROM t; {M} SELECT count(*) FROM u"),
        p(MULTI, "{M} SELECT 1; {M} INSERT INTO w (v) VALUES ('multi')"),
        p(MULTI, "{M} INSERT INTO w (v) VALUES ('multi2'); {M} SELECT 2"),
        p(MULTI, "{M} SELECT 1; {M} SELECT nextval('s')"),
        // ---- transactions (separate messages)
        p(TX, "SELECT 1").pre(&["BEGIN"]).post(&["COMMIT"]),
        p(TX, "SELECT * FROM t WHERE id = 5").pre(&["BEGIN"]).post(&["COMMIT"]),
        p(TX, "SELECT count(*) FROM u").pre(&["START TRANSACTION"]).post(&["ROLLBACK"]),
        p(TX, "SELECT 1").pre(&["BEGIN READ WRITE"]).post(&["COMMIT"]),
        p(TX, "INSERT INTO w (v) VALUES ('in tx')").pre(&["BEGIN"]).post(&["COMMIT"]),
        p(TX, "SELECT 1").pre(&["BEGIN", "INSERT INTO w (v) VALUES ('tx first')"]).post(&["COMMIT"]),
        r(TX, "SELECT 1").pre(&["BEGIN READ ONLY"]).post(&["COMMIT"]),
        r(TX, "SELECT * FROM t WHERE id = 6").pre(&["START TRANSACTION READ ONLY"]).post(&["COMMIT"]),
        r(TX, "SELECT count(*) FROM t").pre(&["BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"]).post(&["COMMIT"]),
        r(TX, "SELECT 1").pre(&["BEGIN READ ONLY"]).post(&["ROLLBACK"]),
        p(TX, "SELECT 1").pre(&["START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY"]).post(&["COMMIT"]),
        p(TX, "SELECT 1").pre(&["BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"]).post(&["COMMIT"]),
        r(TX, "SELECT * FROM t WHERE id = 7").pre(&["BEGIN", "SET TRANSACTION READ ONLY"]).post(&["COMMIT"]),
        // ---- session state that does not pin -> replica
        r(SESS, "SELECT 1").pre(&["SET search_path TO public"]),
        r(SESS, "SELECT * FROM t WHERE id = 8").pre(&["SET search_path TO pg_catalog, public"]),
        r(SESS, "SELECT 1").pre(&["SET application_name = 'splitting'"]),
        r(SESS, "SELECT 1").pre(&["SET statement_timeout = '10s'"]),
        r(SESS, "SELECT now()").pre(&["SET TIME ZONE 'UTC'"]),
        // ---- session pins: what needs the pinned state runs where it is
        // (the primary); reads that cannot see it are still offloaded.
        p(PIN, "SELECT * FROM tmp_pin").pre(&["CREATE TEMP TABLE tmp_pin (x int)"]),
        p(PIN, "SELECT count(*) FROM pg_temp.tmp_pin3").pre(&["CREATE TEMP TABLE tmp_pin3 (x int)"]),
        // A temp table shadows a regular one of the same name.
        p(PIN, "SELECT count(*) FROM t").pre(&["CREATE TEMP TABLE t (x int)"]),
        p(PIN, "SELECT my_stable_fn()").pre(&["CREATE TEMP TABLE tmp_pin4 (x int)"]),
        r(PIN, "SELECT * FROM t WHERE id = 9").pre(&["CREATE TEMP TABLE tmp_pin2 (x int)"]),
        r(PIN, "SELECT 1").pre(&["LISTEN ch"]),
        r(PIN, "SELECT 1").pre(&["SELECT pg_advisory_lock(1)"]),
        r(PIN, "SELECT 1").pre(&["DECLARE held CURSOR WITH HOLD FOR SELECT * FROM t"]),
        p(PIN, "FETCH 1 FROM held2").pre(&["DECLARE held2 CURSOR WITH HOLD FOR SELECT * FROM t"]),
        p(PIN, "SELECT 1").pre(&["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"]),
        r(PIN, "SELECT 1").pre(&["CREATE TEMP TABLE tmp_gone (x int)", "DISCARD TEMP"]),
        // ---- what a standby refuses because it is one: known ones go to
        // the primary; the rest are retried there (the safety net)
        p(STANDBY, "SELECT count(*) FROM ul"),
        p(STANDBY, "SELECT x FROM public.ul WHERE x = 1"),
        p(STANDBY, "SELECT pg_current_wal_insert_lsn()"),
        p(STANDBY, "SELECT pg_walfile_name(pg_current_wal_lsn())"),
        retried(STANDBY, "SELECT count(*) FROM ulv"),
        retried(STANDBY, "SELECT wal_pos() IS NOT NULL"),
        // ---- serializable sessions cannot read on a standby
        p(SESS, "SELECT 1").pre(&["SET default_transaction_isolation = 'serializable'"]),
        p(SESS, "SELECT * FROM t WHERE id = 11").pre(&["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"]),
        r(SESS, "SELECT 1").pre(&["SET default_transaction_isolation = 'repeatable read'"]),
        r(SESS, "SELECT 1").pre(&["SET default_transaction_isolation = 'serializable'", "RESET default_transaction_isolation"]),
        // ---- a SET rolled back leaves nothing to pin; a committed one is
        // replayed
        r(SESS, "SELECT 1").pre(&["BEGIN", "SET work_mem = '8MB'", "ROLLBACK"]),
        r(SESS, "SELECT 1").pre(&["BEGIN", "SET work_mem = '8MB'", "COMMIT"]),
        // ---- SQL prepared statements, wherever EXECUTE appears
        r(PREP, "EXECUTE rd1").pre(&["PREPARE rd1 AS SELECT count(*) FROM t"]),
        r(PREP, "EXECUTE rd2(3)").pre(&["PREPARE rd2(int) AS SELECT * FROM t WHERE id = $1"]),
        p(PREP, "EXECUTE wr1").pre(&["PREPARE wr1 AS INSERT INTO w (v) VALUES ('prepared')"]),
        r(PREP, "EXPLAIN EXECUTE rd3").pre(&["PREPARE rd3 AS SELECT * FROM t WHERE id = 1"]),
        r(PREP, "EXPLAIN ANALYZE EXECUTE rd4").pre(&["PREPARE rd4 AS SELECT * FROM t WHERE id = 2"]),
        p(PREP, "EXPLAIN ANALYZE EXECUTE wr2").pre(&["PREPARE wr2 AS DELETE FROM w WHERE v = 'none'"]),
        p(PREP, "CREATE TABLE t_exec AS EXECUTE rd5").pre(&["PREPARE rd5 AS SELECT * FROM t WHERE id < 3"]),
        r(PREP, "SELECT 1").pre(&["PREPARE rd6 AS SELECT 2", "DEALLOCATE rd6", "PREPARE rd6 AS SELECT 3", "DEALLOCATE ALL"]),
        // ---- routines that change settings: what follows stays with them
        p(HIDDEN, "SELECT current_setting('myapp.flag')").pre(&["SELECT set_flag()"]),
        p(HIDDEN, "SELECT current_setting('myapp.flag')").pre(&["CALL set_flag_proc()"]),
        p(HIDDEN, "SELECT 1").pre(&["DO $$BEGIN PERFORM set_config('myapp.flag', 'from DO', false); END$$"]),
        // ---- SET pgsplit.route
        p(ROUTE, "SELECT 1").pre(&["SET pgsplit.route = 'primary'"]),
        p(ROUTE, "SELECT * FROM t WHERE id = 10").pre(&["SET pgsplit.route = 'primary'"]),
        r(ROUTE, "SELECT 1").pre(&["SET pgsplit.route = 'replica'"]),
        p(ROUTE, "INSERT INTO w (v) VALUES ('route replica')").pre(&["SET pgsplit.route = 'replica'"]),
        r(ROUTE, "SELECT 1").pre(&["SET pgsplit.route = 'primary'", "SET pgsplit.route = 'auto'"]),
        // ---- errors: unparsable text goes to the primary and fails there.
        // pg_stat_statements never records a failed statement; the server log
        // does (`STATEMENT: /* splitcase N */ …`), which is what places these.
        p(BAD, "SELEKT 1").fails(),
        p(BAD, "SELECT 1; DELET FROM w").fails(),
    ]
}
