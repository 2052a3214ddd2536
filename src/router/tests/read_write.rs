//! The read-write port: reads, writes, transactions, pipelining, what the
//! primary must answer (hints and look-ups: `read_write_lookups`).

use super::*;

fn w() -> World {
    World::rw()
}

#[test]
fn reads_go_to_replicas_and_writes_to_the_primary() {
    run(vec![
        (
            "select",
            w(),
            vec![q("SELECT 1")],
            Want::Replica(PG2, "read"),
        ),
        (
            "select a table",
            w(),
            vec![q("SELECT * FROM t WHERE id = 1")],
            Want::AnyReplica,
        ),
        ("values", w(), vec![q("VALUES (1)")], Want::AnyReplica),
        ("show", w(), vec![q("SHOW search_path")], Want::AnyReplica),
        (
            "explain",
            w(),
            vec![q("EXPLAIN SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "copy to stdout",
            w(),
            vec![q("COPY t TO STDOUT")],
            Want::AnyReplica,
        ),
        (
            "cte read",
            w(),
            vec![q("WITH x AS (SELECT 1) SELECT * FROM x")],
            Want::AnyReplica,
        ),
        (
            "two reads",
            w(),
            vec![q("SELECT 1; SELECT 2")],
            Want::AnyReplica,
        ),
        (
            "insert",
            w(),
            vec![q("INSERT INTO t VALUES (1)")],
            Want::Primary("write"),
        ),
        (
            "update",
            w(),
            vec![q("UPDATE t SET a = 1")],
            Want::Primary("write"),
        ),
        (
            "delete",
            w(),
            vec![q("DELETE FROM t")],
            Want::Primary("write"),
        ),
        (
            "merge",
            w(),
            vec![q(
                "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
            )],
            Want::Primary("write"),
        ),
        (
            "ddl",
            w(),
            vec![q("CREATE TABLE n (a int)")],
            Want::Primary("utility"),
        ),
        (
            "copy from",
            w(),
            vec![q("COPY t FROM STDIN")],
            Want::Primary("copy_from"),
        ),
        (
            "for update",
            w(),
            vec![q("SELECT * FROM t FOR UPDATE")],
            Want::Primary("locking"),
        ),
        (
            "cte write",
            w(),
            vec![q("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")],
            Want::Primary("cte_write"),
        ),
        (
            "select into",
            w(),
            vec![q("SELECT * INTO n FROM t")],
            Want::Primary("select_into"),
        ),
        (
            "nextval",
            w(),
            vec![q("SELECT nextval('s')")],
            Want::Primary("function"),
        ),
        (
            "read then write",
            w(),
            vec![q("SELECT 1; INSERT INTO t VALUES (1)")],
            Want::Primary("write"),
        ),
        (
            "unparsable",
            w(),
            vec![q("SELEKT 1")],
            Want::Primary("unparsable"),
        ),
        (
            "backslash",
            w(),
            vec![q("SELECT 'a\\'; DELETE FROM t; --'")],
            Want::Primary("backslash_string"),
        ),
        (
            "do",
            w(),
            vec![q("DO $$BEGIN PERFORM 1; END$$")],
            Want::Primary("utility"),
        ),
        (
            "call",
            w().function("p", false, false),
            vec![q("CALL p()")],
            Want::Primary("write"),
        ),
        ("vacuum", w(), vec![q("VACUUM t")], Want::Primary("utility")),
        ("notify", w(), vec![q("NOTIFY c")], Want::Primary("utility")),
        ("empty", w(), vec![q("")], Want::AnyReplica),
    ]);
}

#[test]
fn the_extended_protocol_routes_whole_batches() {
    run(vec![
        ("unnamed read", w(), ext("SELECT $1"), Want::AnyReplica),
        (
            "unnamed write",
            w(),
            ext("INSERT INTO t VALUES ($1)"),
            Want::Primary("write"),
        ),
        (
            "read and write in one batch",
            w(),
            vec![
                parse("", "SELECT 1"),
                bind(""),
                execute(),
                parse("", "DELETE FROM t"),
                bind(""),
                execute(),
                sync(),
            ],
            Want::Primary("write"),
        ),
        (
            "a batch open at a Flush is planned whole",
            w(),
            vec![parse("", "SELECT 1"), describe(""), flush()],
            Want::AnyReplica,
        ),
        (
            "a named statement parsed and bound",
            w(),
            vec![parse("s1", "SELECT $1"), bind("s1"), execute(), sync()],
            Want::AnyReplica,
        ),
        (
            "a named read bound later",
            w().prepared("s1", "SELECT * FROM t WHERE id = $1"),
            vec![bind("s1"), execute(), sync()],
            Want::AnyReplica,
        ),
        (
            "a named write bound later",
            w().prepared("s2", "UPDATE t SET a = $1"),
            vec![bind("s2"), execute(), sync()],
            Want::Primary("write"),
        ),
        (
            "an unknown statement name",
            w(),
            vec![bind("nope"), execute(), sync()],
            Want::Primary("write"),
        ),
        (
            "the unnamed statement of an earlier batch, a read",
            w().unnamed("SELECT 1"),
            vec![bind(""), execute(), sync()],
            Want::AnyReplica,
        ),
        (
            "the unnamed statement of an earlier batch, a write",
            w().unnamed("DELETE FROM t"),
            vec![bind(""), execute(), sync()],
            Want::Primary("write"),
        ),
        (
            "describe of a named read",
            w().prepared("s1", "SELECT 1"),
            vec![describe("s1"), sync()],
            Want::AnyReplica,
        ),
        (
            "close of a statement",
            w().prepared("s1", "SELECT 1"),
            vec![close("s1"), sync()],
            Want::AnyReplica,
        ),
        (
            "a fastpath call",
            w(),
            vec![fcall(1234)],
            Want::Primary("function_call"),
        ),
    ]);
}

#[test]
fn transactions_stay_where_they_started() {
    let in_tx = |on| Flow::InTransaction { on, failed: false };
    run(vec![
        (
            "a plain BEGIN is answered and deferred",
            w(),
            vec![q("BEGIN")],
            Want::Answer("begin"),
        ),
        (
            "START TRANSACTION too",
            w(),
            vec![q("START TRANSACTION")],
            Want::Answer("begin"),
        ),
        (
            "BEGIN READ WRITE goes to the primary",
            w(),
            vec![q("BEGIN READ WRITE")],
            Want::Primary("transaction"),
        ),
        (
            "BEGIN READ ONLY may use a replica",
            w(),
            vec![q("BEGIN READ ONLY")],
            Want::AnyReplica,
        ),
        (
            "a read-only serializable transaction is the primary's",
            w(),
            vec![q("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY")],
            Want::Primary("serializable"),
        ),
        (
            "BEGIN with a hint is sent as is",
            w(),
            vec![q("/* pgsplit:primary */ BEGIN")],
            Want::Primary("transaction"),
        ),
        (
            "the first statement after a deferred BEGIN: a read goes to the primary",
            w().flow(Flow::DeferredBegin),
            vec![q("SELECT 1")],
            Want::Primary("transaction"),
        ),
        (
            "SET TRANSACTION READ ONLY after a deferred BEGIN: a replica",
            w().flow(Flow::DeferredBegin),
            vec![q("SET TRANSACTION READ ONLY")],
            Want::AnyReplica,
        ),
        (
            "SET TRANSACTION READ ONLY, SERIALIZABLE: the primary",
            w().flow(Flow::DeferredBegin),
            vec![q("SET TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE")],
            Want::Primary("transaction"),
        ),
        (
            "COMMIT of a deferred BEGIN is answered",
            w().flow(Flow::DeferredBegin),
            vec![q("COMMIT")],
            Want::Answer("commit"),
        ),
        (
            "ROLLBACK of a deferred BEGIN is answered",
            w().flow(Flow::DeferredBegin),
            vec![q("ROLLBACK")],
            Want::Answer("rollback"),
        ),
        (
            "a write after a deferred BEGIN",
            w().flow(Flow::DeferredBegin),
            vec![q("INSERT INTO t VALUES (1)")],
            Want::Primary("transaction"),
        ),
        (
            "a read inside a transaction",
            w().flow(in_tx(On::Primary)),
            vec![q("SELECT 1")],
            Want::Current("transaction"),
        ),
        (
            "a write inside a transaction",
            w().flow(in_tx(On::Primary)),
            vec![q("DELETE FROM t")],
            Want::Current("transaction"),
        ),
        (
            "COMMIT",
            w().flow(in_tx(On::Primary)),
            vec![q("COMMIT")],
            Want::Current("transaction"),
        ),
        (
            "a read-only transaction on a replica",
            w().flow(in_tx(On::Replica(PG2))),
            vec![q("SELECT 1")],
            Want::Current("transaction"),
        ),
        (
            "a failed transaction",
            w().flow(Flow::InTransaction {
                on: On::Primary,
                failed: true,
            }),
            vec![q("SELECT 1")],
            Want::Current("transaction"),
        ),
        (
            "more of an open batch",
            w().flow(Flow::BatchOpen {
                on: On::Replica(PG3),
            }),
            vec![bind(""), execute(), sync()],
            Want::Current("batch"),
        ),
        (
            "copy data",
            w().flow(Flow::BatchOpen { on: On::Primary }),
            vec![msg(b'd', b"1\n"), msg(b'c', b"")],
            Want::Current("batch"),
        ),
        (
            "a transaction started in a multi-statement query",
            w(),
            vec![q("BEGIN; SELECT 1")],
            Want::Primary("transaction"),
        ),
    ]);
}

#[test]
fn pipelined_requests_follow_or_wait() {
    let pipelined = |on| Flow::Pipelined { on };
    run(vec![
        (
            "a read behind a read on a replica",
            w().flow(pipelined(On::Replica(PG2))),
            vec![q("SELECT 1")],
            Want::Current("read"),
        ),
        (
            "a write behind a read on a replica waits",
            w().flow(pipelined(On::Replica(PG2))),
            vec![q("DELETE FROM t")],
            Want::Hold,
        ),
        (
            "a write behind a write",
            w().flow(pipelined(On::Primary)),
            vec![q("DELETE FROM t")],
            Want::Current("write"),
        ),
        (
            "a read behind a write waits (it may need the write)",
            w().flow(pipelined(On::Primary)),
            vec![q("SELECT 1")],
            Want::Hold,
        ),
        (
            "a local answer waits for replies due",
            w().flow(pipelined(On::Primary)),
            vec![q("SET pgsplit.route = 'primary'")],
            Want::Hold,
        ),
        (
            "BEGIN behind a request waits",
            w().flow(pipelined(On::Replica(PG2))),
            vec![q("BEGIN")],
            Want::Hold,
        ),
        (
            "an extended read behind a read",
            w().flow(pipelined(On::Replica(PG3))),
            ext("SELECT $1"),
            Want::Current("read"),
        ),
        (
            "a read that needs a look-up waits",
            w().flow(pipelined(On::Replica(PG3))),
            vec![q("SELECT mystery()")],
            Want::Hold,
        ),
    ]);
}

#[test]
fn a_batch_that_only_described_may_move() {
    let described = |on| Flow::Described { on };
    run(vec![
        (
            "its read runs where it was described",
            w().unnamed("SELECT 1").flow(described(On::Replica(PG2))),
            vec![bind(""), execute(), sync()],
            Want::Current("read"),
        ),
        (
            "its write closes it first",
            w().unnamed("DELETE FROM t")
                .flow(described(On::Replica(PG2))),
            vec![bind(""), execute(), sync()],
            Want::Settle,
        ),
        // asyncpg describes a table's columns, then sends the COPY.
        (
            "a COPY after a description on a replica closes it first",
            w().flow(described(On::Replica(PG2))),
            vec![q("COPY t FROM STDIN")],
            Want::Settle,
        ),
        (
            "a write after a description on a replica closes it first",
            w().flow(described(On::Replica(PG3))),
            ext("INSERT INTO t VALUES ($1)"),
            Want::Settle,
        ),
        (
            "the primary runs what follows",
            w().flow(described(On::Primary)),
            vec![q("COPY t FROM STDIN")],
            Want::Current("batch"),
        ),
        (
            "a read that needs a look-up closes it first",
            w().flow(described(On::Replica(PG2))),
            vec![q("SELECT mystery()")],
            Want::Settle,
        ),
        (
            "a bound portal keeps the batch",
            w().flow(Flow::BatchOpen {
                on: On::Replica(PG2),
            }),
            vec![q("COPY t FROM STDIN")],
            Want::Current("batch"),
        ),
        (
            "DEALLOCATE waits for the batch to end",
            w().flow(described(On::Replica(PG2))),
            vec![q("DEALLOCATE x")],
            Want::Hold,
        ),
    ]);
}

#[test]
fn questions_about_the_server_itself_are_the_primarys() {
    run(vec![
        (
            "pg_is_in_recovery",
            w(),
            vec![q("SELECT pg_is_in_recovery()")],
            Want::Primary("primary_only"),
        ),
        (
            "pg_backend_pid",
            w(),
            vec![q("SELECT pg_backend_pid()")],
            Want::Primary("primary_only"),
        ),
        (
            "transaction_read_only",
            w(),
            vec![q("SHOW transaction_read_only")],
            Want::Primary("primary_only"),
        ),
        (
            "current_setting transaction_read_only",
            w(),
            ext("SELECT current_setting('transaction_read_only')"),
            Want::Primary("primary_only"),
        ),
        (
            "in_hot_standby",
            w(),
            vec![q("SHOW in_hot_standby")],
            Want::Primary("primary_only"),
        ),
        (
            "pg_stat_activity",
            w(),
            vec![q("SELECT * FROM pg_stat_activity")],
            Want::Primary("primary_only"),
        ),
        (
            "pg_prepared_xacts",
            w(),
            vec![q("SELECT gid FROM pg_prepared_xacts")],
            Want::Primary("primary_only"),
        ),
        (
            "pg_locks",
            w(),
            vec![q("SELECT * FROM pg_locks")],
            Want::Primary("primary_only"),
        ),
        (
            "pg_current_wal_lsn",
            w(),
            vec![q("SELECT pg_current_wal_lsn()")],
            Want::Primary("primary_only"),
        ),
        (
            "search_path is anyone's",
            w(),
            vec![q("SELECT current_setting('search_path')")],
            Want::AnyReplica,
        ),
        (
            "inet_server_port shows where it ran",
            w(),
            vec![q("SELECT inet_server_port()")],
            Want::AnyReplica,
        ),
    ]);
}
