//! Committed settings, their fingerprint and the SQL that syncs a
//! connection to them; how transactions, savepoints and errors decide what
//! a SET became; the default isolation; pgsplit's own settings.

use super::*;

#[test]
fn committed_settings_follow_each_request_and_its_transaction() {
    let cases: Vec<(&str, Vec<Step>, Vec<&str>)> = vec![
        (
            "an autocommit SET is kept",
            vec![ok("SET x.a = 1")],
            vec!["SET x.a = 1"],
        ),
        (
            "several settings keep the order they were first set in",
            vec![ok("SET x.b = 1"), ok("SET x.a = 1"), ok("SET x.b = 2")],
            vec!["SET x.b = 2", "SET x.a = 1"],
        ),
        (
            "RESET forgets one setting",
            vec![ok("SET x.a = 1"), ok("SET x.b = 1"), ok("RESET x.a")],
            vec!["SET x.b = 1"],
        ),
        (
            "RESET ALL forgets every setting",
            vec![
                ok("SET x.a = 1"),
                ok("SET work_mem = '8MB'"),
                ok("RESET ALL"),
            ],
            vec![],
        ),
        (
            "DISCARD ALL forgets every setting",
            vec![ok("SET x.a = 1"), ok("DISCARD ALL")],
            vec![],
        ),
        (
            "SET LOCAL is not kept",
            vec![ok("SET LOCAL x.a = 1")],
            vec![],
        ),
        (
            "a SET inside a committed transaction is kept",
            vec![open("BEGIN"), open("SET x.a = 1"), ok("COMMIT")],
            vec!["SET x.a = 1"],
        ),
        (
            "a SET inside a rolled-back transaction is forgotten",
            vec![open("BEGIN"), open("SET x.a = 1"), ok("ROLLBACK")],
            vec![],
        ),
        (
            "a RESET inside a rolled-back transaction is forgotten",
            vec![
                ok("SET x.a = 1"),
                open("BEGIN"),
                open("RESET x.a"),
                ok("ROLLBACK"),
            ],
            vec!["SET x.a = 1"],
        ),
        (
            "a SET before an error in a transaction is forgotten at ROLLBACK",
            vec![
                open("BEGIN"),
                open("SET x.a = 1"),
                aborts("SELECT 1/0"),
                ok("ROLLBACK"),
            ],
            vec![],
        ),
        (
            "COMMIT of a failed transaction rolls its SETs back",
            vec![
                open("BEGIN"),
                open("SET x.a = 1"),
                aborts("SELECT 1/0"),
                ok("COMMIT"),
            ],
            vec![],
        ),
        (
            "a SET in a request that fails is forgotten",
            vec![fails("SET x.a = 1; SELECT 1/0")],
            vec![],
        ),
        (
            "a whole transaction in one query, committed",
            vec![ok("BEGIN; SET x.a = 1; COMMIT")],
            vec!["SET x.a = 1"],
        ),
        (
            "a whole transaction in one query, rolled back",
            vec![ok("BEGIN; SET x.a = 1; ROLLBACK")],
            vec![],
        ),
        (
            "COMMIT AND CHAIN keeps what it committed",
            vec![open("BEGIN"), open("SET x.a = 1"), open("COMMIT AND CHAIN")],
            vec!["SET x.a = 1"],
        ),
        (
            "ROLLBACK AND CHAIN forgets what it rolled back",
            vec![
                open("BEGIN"),
                open("SET x.a = 1"),
                open("ROLLBACK AND CHAIN"),
                ok("COMMIT"),
            ],
            vec![],
        ),
        (
            "a SET after a rolled-back transaction is its own",
            vec![
                open("BEGIN"),
                open("SET x.a = 1"),
                ok("ROLLBACK"),
                ok("SET x.b = 1"),
            ],
            vec!["SET x.b = 1"],
        ),
        (
            "SET TIME ZONE, ROLE and SESSION AUTHORIZATION are settings too",
            vec![
                ok("SET TIME ZONE 'UTC'"),
                ok("SET ROLE r"),
                ok("SET SESSION AUTHORIZATION u"),
            ],
            vec![
                "SET TIME ZONE 'UTC'",
                "SET ROLE r",
                "SET SESSION AUTHORIZATION u",
            ],
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, steps, want) in cases {
        let s = Session::after(&steps);
        if s.settings() != want {
            failures.push(format!("{name}: want {want:?}, got {:?}", s.settings()));
        }
    }
    check(failures, n);
}

#[test]
fn settings_of_an_open_transaction_wait_for_its_end() {
    let mut s = Session::after(&[open("BEGIN"), open("SET x.a = 1")]);
    assert!(s.state.settings.is_empty(), "not committed yet");
    s.run(open("SELECT 1"));
    assert!(s.state.settings.is_empty(), "still not committed");
    s.run(ok("COMMIT"));
    assert_eq!(s.settings(), ["SET x.a = 1"]);
}

#[test]
fn a_connection_as_logged_in_has_fingerprint_zero() {
    let mut s = Session::new();
    assert_eq!(s.state.settings.fingerprint(), 0);
    s.run(ok("SET x.a = 1"));
    assert_ne!(s.state.settings.fingerprint(), 0);
    s.run(ok("RESET x.a"));
    assert_eq!(s.state.settings.fingerprint(), 0);
    assert!(s.state.settings.is_empty());
}

#[test]
fn equal_settings_have_equal_fingerprints_however_they_were_reached() {
    let direct = Session::after(&[ok("SET x.a = 1"), ok("SET x.b = 2")]);
    let roundabout = Session::after(&[
        ok("SET x.a = 3"),
        ok("SET x.b = 2"),
        open("BEGIN"),
        open("SET x.c = 1"),
        ok("ROLLBACK"),
        ok("SET x.a = 1"),
    ]);
    let other_value = Session::after(&[ok("SET x.a = 1"), ok("SET x.b = 3")]);
    let fingerprint = |s: &Session| s.state.settings.fingerprint();
    assert_eq!(fingerprint(&direct), fingerprint(&roundabout));
    assert_ne!(fingerprint(&direct), fingerprint(&other_value));
    assert_ne!(fingerprint(&other_value), 0);
}

#[test]
fn sync_sql_resets_the_connection_then_replays_each_setting_in_order() {
    let s = Session::after(&[ok("SET x.a = 1"), ok("SET search_path TO a, b")]);
    assert_eq!(
        s.state.settings.sync_sql(false),
        "RESET ALL; SET x.a = 1; SET search_path TO a, b"
    );
    assert_eq!(
        s.state.settings.sync_sql(true),
        "RESET ROLE; RESET SESSION AUTHORIZATION; RESET ALL; SET x.a = 1; SET search_path TO a, b"
    );
    assert_eq!(Settings::default().sync_sql(false), "RESET ALL");
}

#[test]
fn setting_the_role_or_the_session_user_is_noticed() {
    let cases = [
        ("SET ROLE", vec![ok("SET ROLE r")], true),
        (
            "SET SESSION AUTHORIZATION",
            vec![ok("SET SESSION AUTHORIZATION u")],
            true,
        ),
        ("another setting", vec![ok("SET search_path TO a")], false),
        (
            "RESET ROLE",
            vec![ok("SET ROLE r"), ok("RESET ROLE")],
            false,
        ),
        (
            "a rolled-back SET ROLE",
            vec![open("BEGIN"), open("SET ROLE r"), ok("ROLLBACK")],
            false,
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, steps, want) in cases {
        let got = Session::after(&steps).state.settings.sets_role();
        if got != want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
    }
    check(failures, n);
}

/// PostgreSQL's RESET ALL leaves `role` and `session_authorization` alone
/// (both are GUC_NO_RESET_ALL; DISCARD ALL runs `SET SESSION AUTHORIZATION
/// DEFAULT` before its RESET ALL for that reason). The session forgets its
/// SET ROLE anyway, so its fingerprint goes back to 0 while its connection
/// still runs as the role, and the next session with no settings takes that
/// connection without a sync. (Checked on PostgreSQL 15: `current_user` is
/// still the role after RESET ALL.)
#[test]
fn reset_all_keeps_the_role() {
    let s = Session::after(&[ok("SET ROLE r"), ok("SET x.a = 1"), ok("RESET ALL")]);
    assert_eq!(s.settings(), ["SET ROLE r"]);
    assert!(s.state.settings.sets_role());
    assert_ne!(s.state.settings.fingerprint(), 0);
}

#[test]
fn a_savepoint_rolled_back_after_a_set_pins_the_session() {
    let mut s = Session::after(&[
        open("BEGIN"),
        open("SAVEPOINT a"),
        open("SET x.a = 1"),
        open("ROLLBACK TO SAVEPOINT a"),
    ]);
    assert!(
        !s.state.pins.is_pinned(),
        "nothing is decided before the end"
    );
    let (_, pin) = s.run(ok("COMMIT"));
    assert_eq!(pin, Some(PinCause::SetInTransaction));
    assert!(
        s.state.settings.is_empty(),
        "its fate is unknown: not replayed"
    );
    assert!(!s.state.pins.allow_replica_reads());
}

#[test]
fn a_savepoint_rolled_back_without_a_set_does_not_pin() {
    let mut s = Session::after(&[
        open("BEGIN"),
        open("SAVEPOINT a"),
        open("INSERT INTO t VALUES (1)"),
        open("ROLLBACK TO SAVEPOINT a"),
        open("SET x.a = 1"),
    ]);
    let (_, pin) = s.run(ok("COMMIT"));
    assert_eq!(pin, None);
    assert_eq!(s.settings(), ["SET x.a = 1"]);
}

/// After a whole ROLLBACK every SET of the transaction is known to be gone,
/// savepoint or not; yet the session pins for good (SetInTransaction is
/// released only by DISCARD ALL), and its reads stay on the primary.
#[test]
fn a_transaction_rolled_back_whole_after_a_savepoint_rollback_does_not_pin() {
    let mut s = Session::after(&[
        open("BEGIN"),
        open("SAVEPOINT a"),
        open("SET x.a = 1"),
        open("ROLLBACK TO SAVEPOINT a"),
    ]);
    let (_, pin) = s.run(ok("ROLLBACK"));
    assert_eq!(pin, None);
    assert!(!s.state.pins.is_pinned());
}

#[test]
fn an_error_in_a_request_that_also_committed_pins_the_session() {
    let mut s = Session::new();
    let (_, pin) = s.run(fails("BEGIN; SET x.a = 1; COMMIT; SELECT 1/0"));
    assert_eq!(pin, Some(PinCause::SetInTransaction));
    assert!(s.state.settings.is_empty());
    let (_, again) = s.run(fails("BEGIN; SET x.b = 1; COMMIT; SELECT 1/0"));
    assert_eq!(again, None, "already pinned: not new");
}

#[test]
fn an_error_in_a_request_that_committed_no_setting_does_not_pin() {
    let mut s = Session::new();
    let (_, pin) = s.run(fails("BEGIN; INSERT INTO t VALUES (1); COMMIT; SELECT 1/0"));
    assert_eq!(pin, None);
    assert!(!s.state.pins.is_pinned());
}

#[test]
fn serializable_follows_the_session_default() {
    let cases: Vec<(&str, bool, Vec<Step>, bool)> = vec![
        ("read committed login", false, vec![], false),
        ("serializable login", true, vec![], true),
        (
            "SET serializable",
            false,
            vec![ok("SET default_transaction_isolation = 'serializable'")],
            true,
        ),
        (
            "SET TO serializable, unquoted",
            false,
            vec![ok("SET default_transaction_isolation TO serializable")],
            true,
        ),
        (
            "SET read committed over a serializable login",
            true,
            vec![ok("SET default_transaction_isolation = 'read committed'")],
            false,
        ),
        (
            "RESET goes back to the login",
            true,
            vec![
                ok("SET default_transaction_isolation = 'read committed'"),
                ok("RESET default_transaction_isolation"),
            ],
            true,
        ),
        (
            "SET TO DEFAULT goes back to the login",
            false,
            vec![
                ok("SET default_transaction_isolation = 'serializable'"),
                ok("SET default_transaction_isolation TO DEFAULT"),
            ],
            false,
        ),
        (
            "RESET ALL goes back to the login",
            false,
            vec![
                ok("SET default_transaction_isolation = 'serializable'"),
                ok("RESET ALL"),
            ],
            false,
        ),
        (
            "DISCARD ALL goes back to the login",
            true,
            vec![
                ok("SET default_transaction_isolation = 'read committed'"),
                ok("DISCARD ALL"),
            ],
            true,
        ),
        (
            "SET LOCAL lasts one transaction",
            false,
            vec![
                open("BEGIN"),
                open("SET LOCAL default_transaction_isolation = 'serializable'"),
                ok("COMMIT"),
            ],
            false,
        ),
        (
            "a rolled-back SET",
            false,
            vec![
                open("BEGIN"),
                open("SET default_transaction_isolation = 'serializable'"),
                ok("ROLLBACK"),
            ],
            false,
        ),
        (
            "a committed SET in a transaction",
            false,
            vec![
                open("BEGIN"),
                open("SET default_transaction_isolation = 'serializable'"),
                ok("COMMIT"),
            ],
            true,
        ),
        (
            "another setting leaves it",
            true,
            vec![ok("SET work_mem = '8MB'")],
            true,
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, login, steps, want) in cases {
        let mut s = Session::new();
        s.state.isolation.login_serializable = login;
        for step in steps {
            s.run(step);
        }
        if s.state.isolation.serializable() != want {
            failures.push(format!("{name}: want serializable = {want}"));
        }
    }
    check(failures, n);
}

#[test]
fn session_characteristics_pin_rather_than_change_the_default() {
    let mut s = Session::new();
    let (sent, _) = s.run(ok(
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ));
    assert_eq!(sent.new_pins, [PinCause::SessionCharacteristics]);
    assert!(!s.state.pins.allow_replica_reads(), "reads stay home");
    assert!(s.state.settings.is_empty(), "not a replayable setting");
}

#[test]
fn pgsplit_settings_apply_when_sent() {
    let mut s = Session::new();
    s.run(ok("SET pgsplit.route = 'replica'"));
    assert_eq!(s.state.route, Some(RouteMode::Replica));
    s.run(ok("SET pgsplit.route TO 'primary'"));
    assert_eq!(s.state.route, Some(RouteMode::Primary));
    s.run(ok("RESET pgsplit.route"));
    assert_eq!(s.state.route, None);
    s.run(ok("SET pgsplit.min_lsn = '0/20'"));
    s.run(ok("SET pgsplit.min_lsn = '0/10'"));
    assert_eq!(s.state.floor.lsn, Some(Lsn(0x20)), "the floor only rises");
    s.run(ok("SET pgsplit.min_lsn = 'nonsense'"));
    assert_eq!(s.state.floor.lsn, Some(Lsn(0x20)), "a bad LSN is ignored");
    s.run(ok("RESET pgsplit.min_lsn"));
    assert_eq!(s.state.floor.lsn, None);
    assert!(s.state.settings.is_empty(), "never replayed on a server");
    let mut rolled_back = Session::new();
    rolled_back.run(open("BEGIN"));
    rolled_back.run(open("SET pgsplit.route = 'primary'"));
    rolled_back.run(ok("ROLLBACK"));
    assert_eq!(rolled_back.state.route, Some(RouteMode::Primary), "local");
}

#[test]
fn a_status_byte_round_trips() {
    for (byte, status) in [(b'I', Idle), (b'T', InBlock), (b'E', Failed)] {
        assert_eq!(TxStatus::from_byte(byte), status);
        assert_eq!(status.byte(), byte);
    }
    assert_eq!(TxStatus::from_byte(b'?'), Idle);
}

#[test]
fn nothing_staged_is_empty() {
    let s = Session::new();
    let mut staged = Staged::default();
    assert!(staged.is_empty());
    let mut state = SessionState::default();
    state.send([&s.verdict("SELECT 1")], &mut staged);
    assert!(staged.is_empty(), "a plain read stages nothing");
    state.send([&s.verdict("SET x.a = 1")], &mut staged);
    assert!(!staged.is_empty());
}
