//! What the session holds: pins, settings, SQL prepared statements,
//! pgsplit's own answers, read-your-writes floors, and a failover.

use super::*;

fn w() -> World {
    World::rw()
}

#[test]
fn pins_keep_what_needs_them_home_and_let_other_reads_go() {
    run(vec![
        (
            "temp table: a read of it",
            w().did("CREATE TEMP TABLE tt (a int)"),
            vec![q("SELECT * FROM tt")],
            Want::Primary("pinned"),
        ),
        (
            "temp table: pg_temp",
            w().did("CREATE TEMP TABLE tt (a int)"),
            vec![q("SELECT * FROM pg_temp.other")],
            Want::Primary("pinned"),
        ),
        (
            "temp table: another table",
            w().did("CREATE TEMP TABLE tt (a int)"),
            vec![q("SELECT * FROM orders")],
            Want::AnyReplica,
        ),
        (
            "temp table: a name inside a word is not it",
            w().did("CREATE TEMP TABLE tt (a int)"),
            vec![q("SELECT * FROM attt")],
            Want::AnyReplica,
        ),
        (
            "temp table: shadowing",
            w().did("CREATE TEMP TABLE orders (a int)"),
            vec![q("SELECT * FROM orders")],
            Want::Primary("pinned"),
        ),
        (
            "temp table: in a string",
            w().did("CREATE TEMP TABLE tt (a int)"),
            vec![q("SELECT 'tt'::regclass")],
            Want::Primary("pinned"),
        ),
        (
            "temp table: a user function may read it",
            w().did("CREATE TEMP TABLE tt (a int)")
                .function("f", true, false),
            vec![q("SELECT f()")],
            Want::Primary("pinned"),
        ),
        (
            "temp table: a prepared statement naming it",
            w().did("CREATE TEMP TABLE tt (a int)")
                .prepared("s1", "SELECT * FROM tt"),
            vec![bind("s1"), execute(), sync()],
            Want::Primary("pinned"),
        ),
        (
            "temp table dropped with DISCARD TEMP",
            w().did("CREATE TEMP TABLE tt (a int)").did("DISCARD TEMP"),
            vec![q("SELECT * FROM tt")],
            Want::AnyReplica,
        ),
        (
            "a temp table ON COMMIT DROP does not pin",
            w().did("CREATE TEMP TABLE d (a int) ON COMMIT DROP"),
            vec![q("SELECT * FROM d")],
            Want::AnyReplica,
        ),
        (
            "LISTEN: reads still offloaded",
            w().did("LISTEN ch"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "LISTEN: UNLISTEN goes home",
            w().did("LISTEN ch"),
            vec![q("UNLISTEN ch")],
            Want::Primary("utility"),
        ),
        (
            "advisory lock: reads offloaded",
            w().did("SELECT pg_advisory_lock(1)"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "advisory lock: unlock goes home",
            w().did("SELECT pg_advisory_lock(1)"),
            vec![q("SELECT pg_advisory_unlock_all()")],
            Want::Primary("function"),
        ),
        (
            "hold cursor: FETCH goes home",
            w().did("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            vec![q("FETCH 1 FROM c")],
            Want::Primary("pinned"),
        ),
        (
            "hold cursor: other reads offloaded",
            w().did("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "session characteristics keep reads home",
            w().pinned(PinCause::SessionCharacteristics),
            vec![q("SELECT 1")],
            Want::Primary("pinned"),
        ),
        (
            "a hidden SET keeps reads home",
            w().pinned(PinCause::HiddenSet),
            vec![q("SELECT 1")],
            Want::Primary("pinned"),
        ),
        (
            "other pins keep reads home",
            w().pinned(PinCause::Other),
            vec![q("SELECT 1")],
            Want::Primary("pinned"),
        ),
        (
            "SET of a pinned session goes home",
            w().pinned(PinCause::Listen),
            vec![q("SET work_mem = '8MB'")],
            Want::Primary("pinned"),
        ),
        (
            "SET of a free session may run anywhere",
            w(),
            vec![q("SET work_mem = '8MB'")],
            Want::AnyReplica,
        ),
        (
            "LISTEN itself",
            w(),
            vec![q("LISTEN ch")],
            Want::Primary("utility"),
        ),
        (
            "CREATE TEMP TABLE itself",
            w(),
            vec![q("CREATE TEMP TABLE tt (a int)")],
            Want::Primary("utility"),
        ),
        (
            "DECLARE WITH HOLD itself",
            w(),
            vec![q("DECLARE c CURSOR WITH HOLD FOR SELECT 1")],
            Want::Primary("pinned"),
        ),
        (
            "a plain cursor outside a transaction",
            w(),
            vec![q("DECLARE c CURSOR FOR SELECT 1")],
            Want::AnyReplica,
        ),
    ]);
}

#[test]
fn settings_that_forbid_standby_reads() {
    run(vec![
        (
            "default_transaction_isolation = serializable",
            w().did("SET default_transaction_isolation = 'serializable'"),
            vec![q("SELECT 1")],
            Want::Primary("serializable"),
        ),
        (
            "set back to read committed",
            w().did("SET default_transaction_isolation = 'serializable'")
                .did("SET default_transaction_isolation = 'read committed'"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "reset",
            w().did("SET default_transaction_isolation = 'serializable'")
                .did("RESET default_transaction_isolation"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "RESET ALL",
            w().did("SET default_transaction_isolation TO serializable")
                .did("RESET ALL"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "a serializable login (role default or startup parameter)",
            {
                let mut world = w();
                world.session.isolation.login_serializable = true;
                world
            },
            vec![q("SELECT 1")],
            Want::Primary("serializable"),
        ),
        (
            "a serializable login set back",
            {
                let mut world = w().did("SET default_transaction_isolation = 'read committed'");
                world.session.isolation.login_serializable = true;
                world
            },
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "writes are unaffected",
            w().did("SET default_transaction_isolation = 'serializable'"),
            vec![q("UPDATE t SET a = 1")],
            Want::Primary("write"),
        ),
    ]);
}

#[test]
fn sql_prepared_statements() {
    run(vec![
        (
            "PREPARE of a read may run anywhere",
            w(),
            vec![q("PREPARE p AS SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "EXECUTE of a read",
            w().did("PREPARE p AS SELECT 1"),
            vec![q("EXECUTE p")],
            Want::AnyReplica,
        ),
        (
            "EXECUTE of a write",
            w().did("PREPARE p AS DELETE FROM t"),
            vec![q("EXECUTE p")],
            Want::Primary("execute"),
        ),
        (
            "EXECUTE of an unknown name",
            w(),
            vec![q("EXECUTE nope")],
            Want::Primary("execute"),
        ),
        (
            "EXPLAIN EXECUTE of a write runs nothing",
            w().did("PREPARE p AS DELETE FROM t"),
            vec![q("EXPLAIN EXECUTE p")],
            Want::AnyReplica,
        ),
        (
            "EXPLAIN ANALYZE EXECUTE of a read",
            w().did("PREPARE p AS SELECT 1"),
            vec![q("EXPLAIN ANALYZE EXECUTE p")],
            Want::AnyReplica,
        ),
        (
            "EXPLAIN ANALYZE EXECUTE of a write",
            w().did("PREPARE p AS DELETE FROM t"),
            vec![q("EXPLAIN ANALYZE EXECUTE p")],
            Want::Primary("execute"),
        ),
        (
            "CREATE TABLE AS EXECUTE",
            w().did("PREPARE p AS SELECT 1"),
            vec![q("CREATE TABLE c AS EXECUTE p")],
            Want::Primary("write"),
        ),
        (
            "DEALLOCATE of a SQL statement",
            w().did("PREPARE p AS SELECT 1"),
            vec![q("DEALLOCATE p")],
            Want::Answer("deallocate"),
        ),
        (
            "DEALLOCATE of a protocol statement",
            w().prepared("_pg3_1", "SELECT 1"),
            vec![q("DEALLOCATE _pg3_1")],
            Want::Answer("deallocate"),
        ),
        (
            "DEALLOCATE PREPARE",
            w().did("PREPARE p AS SELECT 1"),
            vec![q("DEALLOCATE PREPARE p")],
            Want::Answer("deallocate"),
        ),
        (
            "DEALLOCATE of an unknown name",
            w(),
            vec![q("DEALLOCATE nope")],
            Want::Answer("no_such_statement"),
        ),
        (
            "DEALLOCATE ALL",
            w(),
            vec![q("DEALLOCATE ALL")],
            Want::Answer("deallocate"),
        ),
        (
            "DEALLOCATE inside a transaction",
            w().prepared("s1", "SELECT 1").flow(Flow::InTransaction {
                on: On::Primary,
                failed: false,
            }),
            vec![q("DEALLOCATE s1")],
            Want::Answer("deallocate"),
        ),
        (
            "DEALLOCATE inside a failed transaction",
            w().prepared("s1", "SELECT 1").flow(Flow::InTransaction {
                on: On::Primary,
                failed: true,
            }),
            vec![q("DEALLOCATE s1")],
            Want::Answer("aborted"),
        ),
        (
            "DEALLOCATE behind requests in flight waits",
            w().prepared("s1", "SELECT 1")
                .flow(Flow::Pipelined { on: On::Primary }),
            vec![q("DEALLOCATE s1")],
            Want::Hold,
        ),
        (
            "DEALLOCATE in a multi-statement query runs",
            w().did("PREPARE p AS SELECT 1"),
            vec![q("DEALLOCATE p; SELECT 1")],
            Want::Primary("session"),
        ),
        (
            "DISCARD ALL of a free session is answered",
            w(),
            vec![q("DISCARD ALL")],
            Want::Answer("discard_all"),
        ),
        (
            "DISCARD ALL of a pinned session runs home",
            w().pinned(PinCause::Listen),
            vec![q("DISCARD ALL")],
            Want::Primary("session"),
        ),
        (
            "RESET ALL may run anywhere",
            w(),
            vec![q("RESET ALL")],
            Want::Primary("session"),
        ),
    ]);
}

#[test]
fn read_your_writes_in_lsn_mode() {
    run(vec![
        (
            "no write: any replica",
            w(),
            vec![q("SELECT 1")],
            Want::Replica(PG2, "read"),
        ),
        (
            "a write not known anywhere: the primary",
            w().wrote(),
            vec![q("SELECT 1")],
            Want::Primary("consistency"),
        ),
        (
            "known on pg3: pg3",
            w().wrote().check(PG3, Check::Has),
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "known on pg2: pg2",
            w().wrote().check(PG2, Check::Has),
            vec![q("SELECT 1")],
            Want::Replica(PG2, "read"),
        ),
        (
            "pg2 behind, pg3 has it",
            w().wrote().check(PG2, Check::Behind).check(PG3, Check::Has),
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "both behind",
            w().wrote()
                .check(PG2, Check::Behind)
                .check(PG3, Check::Behind),
            vec![q("SELECT 1")],
            Want::Primary("consistency"),
        ),
        (
            "with max_wait_ms the read waits first",
            World {
                policy: Policy {
                    max_wait: Duration::from_millis(5),
                    ..w().policy
                },
                ..w().wrote()
            },
            vec![q("SELECT 1")],
            Want::Wait,
        ),
        (
            "after waiting, the primary",
            World {
                waited: true,
                policy: Policy {
                    max_wait: Duration::from_millis(5),
                    ..w().policy
                },
                ..w().wrote()
            },
            vec![q("SELECT 1")],
            Want::Primary("consistency"),
        ),
        (
            "after waiting, a replica that has it",
            World {
                waited: true,
                policy: Policy {
                    max_wait: Duration::from_millis(5),
                    ..w().policy
                },
                ..w().wrote().check(PG3, Check::Has)
            },
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "writes go to the primary anyway",
            w().wrote(),
            vec![q("DELETE FROM t")],
            Want::Primary("write"),
        ),
        (
            "a replica hint waives the floor",
            w().wrote(),
            vec![q("/* pgsplit:replica */ SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "pgsplit.route = replica waives it",
            w().wrote().did("SET pgsplit.route = 'replica'"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "a causal token holds though",
            w().did("SET pgsplit.min_lsn = '0/5'")
                .did("SET pgsplit.route = 'replica'"),
            vec![q("SELECT 1")],
            Want::Primary("consistency"),
        ),
        (
            "a token met by a replica",
            w().did("SET pgsplit.min_lsn = '0/5'")
                .check(PG2, Check::Has),
            vec![q("SELECT 1")],
            Want::Replica(PG2, "read"),
        ),
        (
            "the primary serving reads has everything",
            {
                let mut world = w().wrote().replicas(&[PG2, PG3]);
                world.snapshot.read_schedule = vec![PG1, PG2];
                world
            },
            vec![q("SELECT 1")],
            Want::Replica(PG1, "read"),
        ),
    ]);
}

#[test]
fn read_your_writes_in_other_modes() {
    run(vec![
        (
            "off: a write does not matter",
            w().mode(ConsistencyMode::Off).wrote(),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "off: a token still does",
            w().mode(ConsistencyMode::Off)
                .did("SET pgsplit.min_lsn = '0/5'"),
            vec![q("SELECT 1")],
            Want::Primary("consistency"),
        ),
        (
            "window: a recent write",
            w().mode(ConsistencyMode::Window).wrote(),
            vec![q("SELECT 1")],
            Want::Primary("consistency"),
        ),
        (
            "window: an old write",
            {
                let mut world = w().mode(ConsistencyMode::Window).wrote();
                world.now += Duration::from_secs(10);
                world
            },
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
    ]);
}

#[test]
fn after_a_failover() {
    let failed_over = || {
        let mut world = w();
        world.snapshot.primary = Some(PG2);
        world.snapshot.backends[PG1].role = Role::Unknown;
        world.snapshot.backends[PG2].role = Role::Primary;
        world.snapshot.read_schedule = vec![PG3];
        world.snapshot.routing_epoch = 2;
        world
    };
    run(vec![
        (
            "reads go to the replica left",
            failed_over(),
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "writes go to the primary (whichever it is now)",
            failed_over(),
            vec![q("DELETE FROM t")],
            Want::Primary("write"),
        ),
        (
            "the old replica preferred is gone",
            World {
                preferred: Some(PG2),
                ..failed_over()
            },
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "a floor not yet met on the new timeline",
            failed_over().wrote(),
            vec![q("SELECT 1")],
            Want::Primary("consistency"),
        ),
        (
            "a floor met",
            failed_over().wrote().check(PG3, Check::Has),
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "no primary known: reads still go to replicas",
            {
                let mut world = failed_over();
                world.snapshot.primary = None;
                world
            },
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "a transaction on the old primary stays there (the relay fences it)",
            failed_over().flow(Flow::InTransaction {
                on: On::Primary,
                failed: false,
            }),
            vec![q("SELECT 1")],
            Want::Current("transaction"),
        ),
    ]);
}

#[test]
fn session_bookkeeping_follows_transactions() {
    use crate::session::state::{Staged, TxStatus};
    let mut world = w();
    let run_in = |world: &mut World, sql: &str, before, after, error| {
        let verdict = world.verdict(sql);
        let mut staged = Staged::default();
        world.session.send([&verdict], &mut staged);
        world.session.on_ready(staged, before, after, error)
    };
    // A SET in a transaction that rolls back is forgotten.
    run_in(
        &mut world,
        "BEGIN",
        TxStatus::Idle,
        TxStatus::InBlock,
        false,
    );
    run_in(
        &mut world,
        "SET default_transaction_isolation = 'serializable'",
        TxStatus::InBlock,
        TxStatus::InBlock,
        false,
    );
    run_in(
        &mut world,
        "ROLLBACK",
        TxStatus::InBlock,
        TxStatus::Idle,
        false,
    );
    assert!(matches!(
        world.route(&[q("SELECT 1")]),
        Decision::Send(Route {
            to: To::Replica(_),
            ..
        })
    ));
    // One that commits is kept.
    run_in(
        &mut world,
        "BEGIN; SET default_transaction_isolation = 'serializable'; COMMIT",
        TxStatus::Idle,
        TxStatus::Idle,
        false,
    );
    assert!(matches!(
        world.route(&[q("SELECT 1")]),
        Decision::Send(Route {
            reason: Reason::Serializable,
            ..
        })
    ));
    // One in a failed autocommit query is dropped.
    let mut world = w();
    run_in(
        &mut world,
        "SET default_transaction_isolation = 'serializable'; SELECT 1/0",
        TxStatus::Idle,
        TxStatus::Idle,
        true,
    );
    assert!(!world.session.isolation.serializable());
    // A savepoint rolled back after a SET leaves it unknown: the session pins.
    let mut world = w();
    run_in(
        &mut world,
        "BEGIN",
        TxStatus::Idle,
        TxStatus::InBlock,
        false,
    );
    run_in(
        &mut world,
        "SAVEPOINT a",
        TxStatus::InBlock,
        TxStatus::InBlock,
        false,
    );
    run_in(
        &mut world,
        "SET search_path = x",
        TxStatus::InBlock,
        TxStatus::InBlock,
        false,
    );
    run_in(
        &mut world,
        "ROLLBACK TO SAVEPOINT a",
        TxStatus::InBlock,
        TxStatus::InBlock,
        false,
    );
    let pin = run_in(
        &mut world,
        "COMMIT",
        TxStatus::InBlock,
        TxStatus::Idle,
        false,
    );
    assert_eq!(pin, Some(PinCause::SetInTransaction));
    assert!(matches!(
        world.route(&[q("SELECT 1")]),
        Decision::Send(Route {
            to: To::Primary,
            ..
        })
    ));
    // Releases happen when they commit: UNLISTEN *, DISCARD TEMP.
    let mut world = w().did("LISTEN a").did("LISTEN b");
    assert!(world.session.pins.has(PinCause::Listen));
    world = world.did("UNLISTEN a");
    assert!(
        world.session.pins.has(PinCause::Listen),
        "still listening to b"
    );
    world = world.did("UNLISTEN *");
    assert!(!world.session.pins.is_pinned());
}

#[test]
fn lsn_tokens_are_parsed_by_the_session() {
    let world = w().did("SET pgsplit.min_lsn = '0/16B3748'");
    assert_eq!(world.session.floor.lsn, Some(Lsn(0x16B3748)));
    let world = world.did("RESET pgsplit.min_lsn");
    assert_eq!(world.session.floor.lsn, None);
}

#[test]
fn a_lone_parse_of_a_statement_servers_know_is_answered_between_transactions() {
    let select = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    run(vec![
        (
            "PQprepare of a known statement",
            w().known_parse(),
            vec![parse("P0_1", select), sync()],
            Want::Answer("parse"),
        ),
        (
            "a write's text too (nothing runs until it is bound)",
            w().known_parse(),
            vec![parse("P0_2", "UPDATE t SET a = $1"), sync()],
            Want::Answer("parse"),
        ),
        (
            "not yet parsed by a server: it goes to one",
            w(),
            vec![parse("P0_1", select), sync()],
            Want::AnyReplica,
        ),
        (
            "with a Describe the server's answer is needed",
            w().known_parse(),
            vec![parse("P0_1", select), describe("P0_1"), sync()],
            Want::AnyReplica,
        ),
        (
            "the unnamed statement",
            w().known_parse(),
            vec![parse("", select), sync()],
            Want::AnyReplica,
        ),
        (
            "inside a transaction it follows the transaction",
            w().known_parse().flow(Flow::InTransaction {
                on: On::Primary,
                failed: false,
            }),
            vec![parse("P0_1", select), sync()],
            Want::Current("transaction"),
        ),
        (
            "a session that keeps a connection sends it on (not answered)",
            w().known_parse().home(On::Primary),
            vec![parse("P0_1", select), sync()],
            Want::AnyReplica,
        ),
    ]);
}
