//! The read-only port: replicas only, sticky per session, and what it
//! refuses.

use super::*;

fn r() -> World {
    World::ro()
}

#[test]
fn reads_go_to_replicas_by_the_schedule() {
    run(vec![
        (
            "a read",
            r(),
            vec![q("SELECT 1")],
            Want::Replica(PG2, "listener"),
        ),
        (
            "the next ticket",
            World { ticket: 1, ..r() },
            vec![q("SELECT 1")],
            Want::Replica(PG3, "listener"),
        ),
        (
            "the session's replica",
            World {
                preferred: Some(PG3),
                ..r()
            },
            vec![q("SELECT 1")],
            Want::Replica(PG3, "listener"),
        ),
        ("an extended read", r(), ext("SELECT $1"), Want::AnyReplica),
        ("BEGIN is fine", r(), vec![q("BEGIN")], Want::AnyReplica),
        (
            "BEGIN READ ONLY",
            r(),
            vec![q("BEGIN READ ONLY")],
            Want::AnyReplica,
        ),
        (
            "SET",
            r(),
            vec![q("SET work_mem = '8MB'")],
            Want::AnyReplica,
        ),
        (
            "a volatile user function: the standby refuses its writes",
            r(),
            vec![q("SELECT mystery()")],
            Want::AnyReplica,
        ),
        (
            "no replica: the primary, read-only",
            r().replicas(&[]),
            vec![q("SELECT 1")],
            Want::ReadOnlyPrimary,
        ),
        (
            "no replica, and no_replica = error",
            World {
                policy: Policy {
                    no_replica: NoReplica::Error,
                    ..r().policy
                },
                ..r().replicas(&[])
            },
            vec![q("SELECT 1")],
            Want::Answer("no_replica"),
        ),
        (
            "inside a transaction",
            r().flow(Flow::InTransaction {
                on: On::Replica(PG3),
                failed: false,
            }),
            vec![q("SELECT 1")],
            Want::Current("listener"),
        ),
        (
            "pipelined",
            r().flow(Flow::Pipelined {
                on: On::Replica(PG3),
            }),
            vec![q("SELECT 1")],
            Want::Current("listener"),
        ),
        (
            "a pinned session stays",
            r().did("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            vec![q("SELECT 1")],
            Want::Current("pinned"),
        ),
        (
            "session mode stays",
            World {
                home: Some(On::Replica(PG3)),
                ..r()
            },
            vec![q("SELECT 1")],
            Want::Current("listener"),
        ),
        (
            "a causal token not met: the primary, read-only",
            r().did("SET pgsplit.min_lsn = '0/9'"),
            vec![q("SELECT 1")],
            Want::ReadOnlyPrimary,
        ),
        (
            "a causal token met",
            r().did("SET pgsplit.min_lsn = '0/9'")
                .check(PG3, Check::Has),
            vec![q("SELECT 1")],
            Want::Replica(PG3, "listener"),
        ),
        (
            "its own writes do not matter here",
            r().wrote(),
            vec![q("SELECT 1")],
            Want::Replica(PG2, "listener"),
        ),
    ]);
}

#[test]
fn what_must_not_run_on_a_replica_is_refused() {
    run(vec![
        (
            "insert",
            r(),
            vec![q("INSERT INTO t VALUES (1)")],
            Want::Refused,
        ),
        (
            "update by the extended protocol",
            r(),
            ext("UPDATE t SET a = $1"),
            Want::Refused,
        ),
        (
            "a Parse of a write alone",
            r(),
            vec![parse("s", "DELETE FROM t"), sync()],
            Want::Refused,
        ),
        (
            "merge that only does nothing",
            r(),
            vec![q(
                "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DO NOTHING",
            )],
            Want::Refused,
        ),
        (
            "copy from",
            r(),
            vec![q("COPY t FROM STDIN")],
            Want::Refused,
        ),
        ("ddl", r(), vec![q("CREATE TABLE n (a int)")], Want::Refused),
        (
            "temp table",
            r(),
            vec![q("CREATE TEMP TABLE n (a int)")],
            Want::Refused,
        ),
        (
            "a replication slot",
            r(),
            vec![q("SELECT pg_create_physical_replication_slot('s')")],
            Want::Refused,
        ),
        (
            "dropping one",
            r(),
            vec![q("SELECT pg_drop_replication_slot('s')")],
            Want::Refused,
        ),
        (
            "promotion",
            r(),
            vec![q("SELECT pg_promote()")],
            Want::Refused,
        ),
        (
            "replay control",
            r(),
            vec![q("SELECT pg_wal_replay_pause()")],
            Want::Refused,
        ),
        (
            "an advisory lock",
            r(),
            vec![q("SELECT pg_advisory_lock(1)")],
            Want::Refused,
        ),
        (
            "a signal",
            r(),
            vec![q("SELECT pg_terminate_backend(1)")],
            Want::Refused,
        ),
        ("checkpoint", r(), vec![q("CHECKPOINT")], Want::Refused),
        (
            "alter system",
            r(),
            vec![q("ALTER SYSTEM SET work_mem = '8MB'")],
            Want::Refused,
        ),
        (
            "a large object",
            r(),
            vec![q("SELECT lo_creat(-1)")],
            Want::Refused,
        ),
        (
            "do",
            r(),
            vec![q("DO $$BEGIN PERFORM 1; END$$")],
            Want::Refused,
        ),
        (
            "BEGIN READ WRITE",
            r(),
            vec![q("BEGIN READ WRITE")],
            Want::Refused,
        ),
        (
            "SET TRANSACTION READ WRITE",
            r(),
            vec![q("SET TRANSACTION READ WRITE")],
            Want::Refused,
        ),
        (
            "default_transaction_read_only off",
            r(),
            vec![q("SET default_transaction_read_only = off")],
            Want::Refused,
        ),
        (
            "EXECUTE of a prepared write",
            r().did("PREPARE w AS DELETE FROM t"),
            vec![q("EXECUTE w")],
            Want::Refused,
        ),
        (
            "a refusal behind requests in flight waits",
            r().flow(Flow::Pipelined {
                on: On::Replica(PG2),
            }),
            vec![q("DELETE FROM t")],
            Want::Hold,
        ),
        (
            "a write inside a transaction",
            r().flow(Flow::InTransaction {
                on: On::Replica(PG2),
                failed: false,
            }),
            vec![q("DELETE FROM t")],
            Want::Refused,
        ),
    ]);
}

#[test]
fn fastpath_calls_are_settled_by_oid() {
    let mut known = r();
    known.catalog.oids.insert(100, true);
    known.catalog.oids.insert(200, false);
    let mut known2 = r();
    known2.catalog.oids.insert(200, false);
    run(vec![
        ("unknown: look it up", r(), vec![fcall(100)], Want::Lookup),
        (
            "unknown after the look-up: refused",
            World {
                looked_up: true,
                ..r()
            },
            vec![fcall(100)],
            Want::Refused,
        ),
        (
            "a read",
            known,
            vec![fcall(100)],
            Want::Replica(PG2, "listener"),
        ),
        ("a write", known2, vec![fcall(200)], Want::Refused),
    ]);
}
