//! The read-write port, continued: hints, functions and relations settled
//! from the catalog, routines that may change settings, and which replica
//! serves a read.

use super::*;

fn w() -> World {
    World::rw()
}

#[test]
fn hints_never_send_a_write_to_a_replica() {
    run(vec![
        (
            "primary hint on a read",
            w(),
            vec![q("/* pgsplit:primary */ SELECT 1")],
            Want::Primary("hint"),
        ),
        (
            "replica hint on a read",
            w(),
            vec![q("/* pgsplit:replica */ SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "replica hint on a write",
            w(),
            vec![q("/* pgsplit:replica */ DELETE FROM t")],
            Want::Primary("write"),
        ),
        (
            "pgsplit.route = primary",
            w().did("SET pgsplit.route = 'primary'"),
            vec![q("SELECT 1")],
            Want::Primary("hint"),
        ),
        (
            "pgsplit.route = replica",
            w().did("SET pgsplit.route = 'replica'"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "pgsplit.route = replica, a write",
            w().did("SET pgsplit.route = 'replica'"),
            vec![q("INSERT INTO t VALUES (1)")],
            Want::Primary("write"),
        ),
        (
            "pgsplit.route back to auto",
            w().did("SET pgsplit.route = 'primary'")
                .did("SET pgsplit.route = 'auto'"),
            vec![q("SELECT 1")],
            Want::AnyReplica,
        ),
        (
            "SET pgsplit.route is answered",
            w(),
            vec![q("SET pgsplit.route = 'replica'")],
            Want::Answer("setting"),
        ),
        (
            "SET pgsplit.min_lsn is answered",
            w(),
            vec![q("SET pgsplit.min_lsn = '0/1'")],
            Want::Answer("setting"),
        ),
        (
            "a bad pgsplit.min_lsn",
            w(),
            vec![q("SET pgsplit.min_lsn = 'later'")],
            Want::Answer("bad_setting"),
        ),
        (
            "a retried read",
            World { retry: true, ..w() },
            vec![q("SELECT 1")],
            Want::Primary("retried"),
        ),
    ]);
}

#[test]
fn functions_and_relations_are_settled_from_the_catalog() {
    run(vec![
        (
            "an unknown function is looked up",
            w(),
            vec![q("SELECT mystery()")],
            Want::Lookup,
        ),
        (
            "a stable function reads",
            w().function("mystery", true, false),
            vec![q("SELECT mystery()")],
            Want::AnyReplica,
        ),
        (
            "a volatile function writes",
            w().function("mystery", false, false),
            vec![q("SELECT mystery()")],
            Want::Primary("function"),
        ),
        (
            "still unknown after the look-up: a write",
            World {
                looked_up: true,
                ..w()
            },
            vec![q("SELECT mystery()")],
            Want::Primary("function"),
        ),
        (
            "a configured read function",
            w(),
            vec![q("SELECT app_read()")],
            Want::AnyReplica,
        ),
        (
            "a configured write function",
            w(),
            vec![q("SELECT app_write()")],
            Want::Primary("function"),
        ),
        (
            "a routine that sets configuration pins and runs home",
            w().function("setter", true, true),
            vec![q("SELECT setter()")],
            Want::Primary("pinned"),
        ),
        (
            "a write calling such a routine",
            w().function("setter", false, true),
            vec![q("INSERT INTO t VALUES (setter())")],
            Want::Primary("write"),
        ),
        (
            "an unlogged table is the primary's",
            w().unlogged("scratch"),
            vec![q("SELECT * FROM scratch")],
            Want::Primary("unlogged"),
        ),
        (
            "an unlogged table by the extended protocol",
            w().unlogged("scratch"),
            ext("SELECT * FROM scratch WHERE a = $1"),
            Want::Primary("unlogged"),
        ),
        (
            "a logged table",
            w(),
            vec![q("SELECT * FROM ordinary")],
            Want::AnyReplica,
        ),
    ]);
}

#[test]
fn hidden_set_pins_are_reported_with_the_route() {
    let world = w().function("setter", true, true);
    match world.route(&[q("SELECT setter()")]) {
        Decision::Send(route) => assert_eq!(route.pin, Some(PinCause::HiddenSet)),
        other => panic!("{other:?}"),
    }
    match w().route(&[q("SELECT 1")]) {
        Decision::Send(route) => assert_eq!(route.pin, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn routines_that_may_change_settings_are_looked_up_even_in_writes() {
    let in_tx = |failed| Flow::InTransaction {
        on: On::Primary,
        failed,
    };
    run(vec![
        (
            "a CALL of an unknown procedure",
            w(),
            vec![q("CALL setter_proc()")],
            Want::Lookup,
        ),
        (
            "a CALL once known",
            w().function("setter_proc", false, false),
            vec![q("CALL setter_proc()")],
            Want::Primary("write"),
        ),
        (
            "a write calling an unknown function",
            w(),
            vec![q("INSERT INTO t VALUES (f())")],
            Want::Lookup,
        ),
        (
            "a plain write needs no look-up",
            w(),
            vec![q("UPDATE t SET a = 1")],
            Want::Primary("write"),
        ),
        (
            "in a transaction too",
            w().flow(in_tx(false)),
            vec![q("CALL setter_proc()")],
            Want::Lookup,
        ),
        (
            "not in a failed one (only its end runs)",
            w().flow(in_tx(true)),
            vec![q("CALL setter_proc()")],
            Want::Current("transaction"),
        ),
        (
            "known in a transaction",
            w().function("setter_proc", false, true).flow(in_tx(false)),
            vec![q("CALL setter_proc()")],
            Want::Current("transaction"),
        ),
    ]);
    let world = w()
        .function("setter_proc", false, true)
        .flow(Flow::InTransaction {
            on: On::Primary,
            failed: false,
        });
    match world.route(&[q("CALL setter_proc()")]) {
        Decision::Send(route) => assert_eq!(route.pin, Some(PinCause::HiddenSet)),
        other => panic!("{other:?}"),
    }
    match w()
        .function("setter_proc", false, true)
        .route(&[q("CALL setter_proc()")])
    {
        Decision::Send(route) => assert_eq!(
            (route.to, route.pin),
            (To::Primary, Some(PinCause::HiddenSet))
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_replica_means_the_primary() {
    run(vec![
        (
            "no replica in rotation",
            w().replicas(&[]),
            vec![q("SELECT 1")],
            Want::Primary("no_replica"),
        ),
        (
            "one replica left",
            w().replicas(&[PG3]),
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "writes are unaffected",
            w().replicas(&[]),
            vec![q("DELETE FROM t")],
            Want::Primary("write"),
        ),
    ]);
}

#[test]
fn the_schedule_and_the_sessions_replica() {
    run(vec![
        (
            "ticket 0",
            w(),
            vec![q("SELECT 1")],
            Want::Replica(PG2, "read"),
        ),
        (
            "ticket 1",
            World { ticket: 1, ..w() },
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "ticket 2 wraps",
            World { ticket: 2, ..w() },
            vec![q("SELECT 1")],
            Want::Replica(PG2, "read"),
        ),
        (
            "the session's replica first",
            World {
                preferred: Some(PG3),
                ..w()
            },
            vec![q("SELECT 1")],
            Want::Replica(PG3, "read"),
        ),
        (
            "its replica left rotation: the schedule",
            World {
                preferred: Some(PG3),
                ..w().replicas(&[PG2])
            },
            vec![q("SELECT 1")],
            Want::Replica(PG2, "read"),
        ),
    ]);
}
