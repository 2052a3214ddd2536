//! Pins: what takes each one, what provably releases it, what a new one
//! reports, and which reads may see the session's temp objects.

use super::*;

#[test]
fn pins_are_taken_and_released_when_their_state_is_provably_gone() {
    use PinCause::*;
    let cases: Vec<(&str, Vec<Step>, Vec<PinCause>)> = vec![
        (
            "a temp table",
            vec![ok("CREATE TEMP TABLE t (a int)")],
            vec![TempObject],
        ),
        (
            "a temp table, DISCARD TEMP",
            vec![ok("CREATE TEMP TABLE t (a int)"), ok("DISCARD TEMP")],
            vec![],
        ),
        (
            "a temp table, DISCARD ALL",
            vec![ok("CREATE TEMP TABLE t (a int)"), ok("DISCARD ALL")],
            vec![],
        ),
        (
            "a temp table, DROP TABLE (other temp objects may remain)",
            vec![ok("CREATE TEMP TABLE t (a int)"), ok("DROP TABLE t")],
            vec![TempObject],
        ),
        (
            "a temp table dropped at commit pins nothing",
            vec![ok("CREATE TEMP TABLE t (a int) ON COMMIT DROP")],
            vec![],
        ),
        ("LISTEN", vec![ok("LISTEN a")], vec![Listen]),
        (
            "LISTEN, UNLISTEN *",
            vec![ok("LISTEN a"), ok("LISTEN b"), ok("UNLISTEN *")],
            vec![],
        ),
        (
            "LISTEN, UNLISTEN of the only channel",
            vec![ok("LISTEN a"), ok("UNLISTEN a")],
            vec![],
        ),
        (
            "LISTEN twice, UNLISTEN of one channel",
            vec![ok("LISTEN a"), ok("LISTEN b"), ok("UNLISTEN a")],
            vec![Listen],
        ),
        (
            "LISTEN twice, UNLISTEN of both channels",
            vec![
                ok("LISTEN a"),
                ok("LISTEN b"),
                ok("UNLISTEN a"),
                ok("UNLISTEN b"),
            ],
            vec![],
        ),
        (
            "LISTEN, UNLISTEN of a channel never listened to",
            vec![ok("LISTEN a"), ok("UNLISTEN b")],
            vec![Listen],
        ),
        (
            "LISTEN twice on one channel, UNLISTEN it once",
            vec![ok("LISTEN a"), ok("LISTEN a"), ok("UNLISTEN a")],
            vec![],
        ),
        (
            "an advisory lock",
            vec![ok("SELECT pg_advisory_lock(1)")],
            vec![AdvisoryLock],
        ),
        (
            "an advisory lock, pg_advisory_unlock_all()",
            vec![
                ok("SELECT pg_advisory_lock(1)"),
                ok("SELECT pg_advisory_unlock_all()"),
            ],
            vec![],
        ),
        (
            "an advisory lock, one unlock (others may be held)",
            vec![
                ok("SELECT pg_advisory_lock(1)"),
                ok("SELECT pg_advisory_unlock(1)"),
            ],
            vec![AdvisoryLock],
        ),
        (
            "a transaction-level advisory lock pins nothing",
            vec![ok("SELECT pg_advisory_xact_lock(1)")],
            vec![],
        ),
        (
            "a WITH HOLD cursor",
            vec![ok("DECLARE c CURSOR WITH HOLD FOR SELECT 1")],
            vec![HoldCursor],
        ),
        (
            "a WITH HOLD cursor, closed",
            vec![ok("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), ok("CLOSE c")],
            vec![],
        ),
        (
            "two WITH HOLD cursors, one closed",
            vec![
                ok("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
                ok("DECLARE d CURSOR WITH HOLD FOR SELECT 1"),
                ok("CLOSE c"),
            ],
            vec![HoldCursor],
        ),
        (
            "two WITH HOLD cursors, CLOSE ALL",
            vec![
                ok("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
                ok("DECLARE d CURSOR WITH HOLD FOR SELECT 1"),
                ok("CLOSE ALL"),
            ],
            vec![],
        ),
        (
            "a cursor without HOLD pins nothing",
            vec![
                open("BEGIN"),
                open("DECLARE c CURSOR FOR SELECT 1"),
                ok("COMMIT"),
            ],
            vec![],
        ),
        (
            "SET SESSION CHARACTERISTICS",
            vec![ok(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            )],
            vec![SessionCharacteristics],
        ),
        (
            "SET SESSION CHARACTERISTICS, DISCARD ALL",
            vec![
                ok("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
                ok("DISCARD ALL"),
            ],
            vec![],
        ),
        (
            "a DO block that sets configuration",
            vec![ok(
                "DO $$BEGIN PERFORM set_config('a.b', '1', false); END$$",
            )],
            vec![HiddenSet],
        ),
        (
            "set_config()",
            vec![ok("SELECT set_config('x.y', '1', false)")],
            vec![Other],
        ),
        ("LOAD", vec![ok("LOAD 'auto_explain'")], vec![Other]),
        (
            "everything at once, then DISCARD ALL",
            vec![
                ok("CREATE TEMP TABLE t (a int)"),
                ok("LISTEN a"),
                ok("SELECT pg_advisory_lock(1)"),
                ok("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
                ok("LOAD 'auto_explain'"),
                ok("DISCARD ALL"),
            ],
            vec![],
        ),
        (
            "a pin taken in a rolled-back transaction stays (erring towards pinned)",
            vec![open("BEGIN"), open("LISTEN a"), ok("ROLLBACK")],
            vec![Listen],
        ),
        (
            "a release in a rolled-back transaction releases nothing",
            vec![
                ok("LISTEN a"),
                open("BEGIN"),
                open("UNLISTEN *"),
                ok("ROLLBACK"),
            ],
            vec![Listen],
        ),
        (
            "a release in a failed request releases nothing",
            vec![ok("LISTEN a"), fails("UNLISTEN *; SELECT 1/0")],
            vec![Listen],
        ),
        (
            "a release waits for its transaction to commit",
            vec![ok("LISTEN a"), open("BEGIN"), open("UNLISTEN *")],
            vec![Listen],
        ),
        (
            "a release committed with its transaction",
            vec![
                ok("LISTEN a"),
                open("BEGIN"),
                open("UNLISTEN *"),
                ok("COMMIT"),
            ],
            vec![],
        ),
        (
            "DISCARD TEMP leaves other pins",
            vec![
                ok("CREATE TEMP TABLE t (a int)"),
                ok("LISTEN a"),
                ok("DISCARD TEMP"),
            ],
            vec![Listen],
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, steps, want) in cases {
        let got = Session::after(&steps).causes();
        if got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    check(failures, n);
}

/// In one request, a release followed by a new pin of the same kind runs
/// in that order on the server (LISTEN and UNLISTEN take effect at commit,
/// in order); the session pins at send and applies the release at
/// ReadyForQuery, so the release undoes the newer pin. (Checked on
/// PostgreSQL 15: after each of these queries the channel is listened to,
/// the temp table and the cursor exist.)
#[test]
fn a_pin_taken_after_its_release_in_one_request_stays() {
    let cases = [
        ("UNLISTEN *; LISTEN a", PinCause::Listen),
        (
            "DISCARD TEMP; CREATE TEMP TABLE t (a int)",
            PinCause::TempObject,
        ),
        (
            "CLOSE ALL; DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            PinCause::HoldCursor,
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (sql, cause) in cases {
        let s = Session::after(&[ok(sql)]);
        if !s.state.pins.has(cause) {
            failures.push(format!("{sql}: want {cause:?}, got {:?}", s.causes()));
        }
    }
    check(failures, n);
}

#[test]
fn a_pin_is_reported_when_it_is_new() {
    let mut s = Session::new();
    let (sent, _) = s.run(ok("LISTEN a"));
    assert_eq!(sent.new_pins, [PinCause::Listen]);
    let (sent, _) = s.run(ok("LISTEN b"));
    assert!(sent.new_pins.is_empty(), "already pinned: {sent:?}");
    let (sent, _) = s.run(ok("CREATE TEMP TABLE t (a int)"));
    assert_eq!(sent.new_pins, [PinCause::TempObject]);
    assert!(s.state.pin(PinCause::HiddenSet));
    assert!(!s.state.pin(PinCause::HiddenSet));
    assert_eq!(
        s.causes(),
        [PinCause::TempObject, PinCause::Listen, PinCause::HiddenSet],
        "in label order"
    );
}

#[test]
fn only_pins_that_change_nothing_a_read_sees_let_reads_go_to_replicas() {
    let mut failures = Vec::new();
    for cause in PinCause::ALL {
        let mut s = Session::new();
        s.state.pin(cause);
        let allowed = matches!(
            cause,
            PinCause::TempObject | PinCause::Listen | PinCause::AdvisoryLock | PinCause::HoldCursor
        );
        if s.state.pins.allow_replica_reads() != allowed {
            failures.push(format!("{cause:?}: want {allowed}"));
        }
        if !s.state.pins.is_pinned() || !s.state.pins.has(cause) {
            failures.push(format!("{cause:?}: not recorded"));
        }
    }
    check(failures, PinCause::ALL.len());
    assert!(Session::new().state.pins.allow_replica_reads());
}

#[test]
fn a_read_may_see_a_temp_object_it_names_or_pg_temp() {
    let temp = || Session::after(&[ok("CREATE TEMP TABLE tt (a int)")]);
    let cases: Vec<(&str, Session, &str, bool)> = vec![
        ("its name", temp(), "SELECT * FROM tt", true),
        ("its name, upper case", temp(), "SELECT * FROM TT", true),
        ("its name, quoted", temp(), "SELECT * FROM \"tt\"", true),
        (
            "its name, qualified",
            temp(),
            "SELECT * FROM pg_temp.x",
            true,
        ),
        ("its name at the end", temp(), "SELECT 1 FROM tt", true),
        ("its name at the start", temp(), "tt", true),
        ("another table", temp(), "SELECT * FROM orders", false),
        ("inside a longer name", temp(), "SELECT * FROM attt", false),
        ("as a prefix", temp(), "SELECT * FROM tt_archive", false),
        ("glued to digits", temp(), "SELECT * FROM tt2", false),
        (
            "pg_temp inside a longer name",
            temp(),
            "SELECT * FROM pg_temps",
            false,
        ),
        (
            "after DISCARD TEMP",
            Session::after(&[ok("CREATE TEMP TABLE tt (a int)"), ok("DISCARD TEMP")]),
            "SELECT * FROM tt",
            false,
        ),
        (
            "a temp table dropped at commit",
            Session::after(&[ok("CREATE TEMP TABLE tt (a int) ON COMMIT DROP")]),
            "SELECT * FROM tt",
            false,
        ),
        (
            "a temp function: pg_temp only",
            Session::after(&[ok(
                "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            )]),
            "SELECT pg_temp.f()",
            true,
        ),
        (
            "no temp objects",
            Session::new(),
            "SELECT * FROM pg_temp.x",
            false,
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, s, sql, want) in cases {
        if s.state.may_see_temp(sql.as_bytes()) != want {
            failures.push(format!("{name}: {sql:?} want {want}"));
        }
    }
    check(failures, n);
}
