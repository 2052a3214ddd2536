//! What a standby cannot or must not do: reads that are the primary's
//! question, statements the read-only port refuses, the relations a read
//! names, and routines that change settings.

use super::*;

fn verdict(sql: &str) -> Verdict {
    Classifier::new(&[], &[], 0).classify_uncached(sql)
}

#[test]
fn questions_about_the_server_itself_are_the_primarys() {
    for sql in [
        "SELECT pg_is_in_recovery()",
        "SELECT pg_backend_pid()",
        "SELECT pg_current_wal_lsn()",
        "SELECT pg_catalog.pg_current_wal_insert_lsn()",
        "SELECT pg_walfile_name(pg_current_wal_lsn())",
        "SELECT pg_last_wal_replay_lsn()",
        "SELECT current_setting('transaction_read_only')",
        "SELECT current_setting('IN_HOT_STANDBY')",
        "SELECT 1 WHERE current_setting('transaction_read_only') = 'off'",
        "SHOW transaction_read_only",
        "SHOW in_hot_standby",
        "SHOW ALL",
        "SELECT * FROM pg_stat_activity",
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'",
        "SELECT gid FROM pg_prepared_xacts",
        "SELECT * FROM pg_catalog.pg_locks",
        "SELECT * FROM pg_stat_replication",
        "SELECT slot_name FROM pg_replication_slots",
        "SELECT * FROM pg_stat_user_tables",
        "SELECT * FROM pg_statio_user_tables",
        "SELECT setting FROM pg_settings WHERE name = 'transaction_read_only'",
        "SELECT pg_stat_get_numscans(1)",
        "SELECT pid FROM pg_stat_activity a JOIN t ON t.id = a.pid",
    ] {
        let v = verdict(sql);
        assert_eq!(v.access, Access::Read, "{sql}: {v:?}");
        assert!(v.primary_only, "{sql}: {v:?}");
        assert!(
            !v.replica_forbidden,
            "{sql}: a replica may answer it about itself"
        );
    }
    for sql in [
        "SELECT 1",
        "SELECT * FROM t WHERE id = 1",
        "SELECT current_setting('search_path')",
        "SELECT inet_server_port()",
        "SELECT pg_wal_lsn_diff('0/2', '0/1')",
        "SHOW search_path",
        "SELECT relname FROM pg_class",
        "SELECT version()",
    ] {
        let v = verdict(sql);
        assert_eq!(v.access, Access::Read, "{sql}: {v:?}");
        assert!(!v.primary_only, "{sql}: {v:?}");
    }
}

#[test]
fn the_cache_keeps_setting_names_apart() {
    let c = Classifier::new(&[], &[], 64);
    assert!(
        !c.classify("SELECT current_setting('search_path')")
            .primary_only
    );
    assert!(
        c.classify("SELECT current_setting('transaction_read_only')")
            .primary_only
    );
}

#[test]
fn primary_relations_are_configurable() {
    let c = Classifier::new(&[], &[], 0)
        .with_primary_relations(&["audit_*".to_string(), "Queue".to_string()]);
    assert!(c.classify_uncached("SELECT * FROM audit_log").primary_only);
    assert!(c.classify_uncached("SELECT * FROM queue").primary_only);
    // No longer the default list.
    assert!(
        !c.classify_uncached("SELECT * FROM pg_stat_activity")
            .primary_only
    );
}

#[test]
fn reads_name_their_relations() {
    let v = verdict("SELECT a.x FROM s.alpha a JOIN beta b ON a.id = b.id WHERE a.x = 1");
    for name in ["alpha", "beta"] {
        assert!(v.relations.iter().any(|r| &**r == name), "{name}: {v:?}");
    }
    let v = verdict("WITH c AS (SELECT * FROM gamma) SELECT * FROM c");
    assert!(v.relations.iter().any(|r| &**r == "gamma"), "{v:?}");
    let v = verdict("SELECT * FROM \"MixedCase\"");
    assert!(v.relations.iter().any(|r| &**r == "MixedCase"), "{v:?}");
}

#[test]
fn the_read_only_port_refuses_writes_by_kind() {
    for sql in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DO NOTHING",
        "MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED THEN DO NOTHING",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "COPY t FROM STDIN",
        "CREATE TABLE n (a int)",
        "CREATE TEMP TABLE n (a int)",
        "SELECT * INTO n FROM t",
        "CREATE TABLE n AS SELECT 1",
        "DROP TABLE t",
        "VACUUM t",
        "ANALYZE t",
        "CHECKPOINT",
        "ALTER SYSTEM SET work_mem = '8MB'",
        "NOTIFY c",
        "LISTEN c",
        "DO $$BEGIN PERFORM 1; END$$",
        "CALL p()",
        "PREPARE TRANSACTION 'x'",
        "COMMIT PREPARED 'x'",
        "SELECT nextval('s')",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_promote()",
        "SELECT pg_wal_replay_pause()",
        "SELECT pg_create_physical_replication_slot('s')",
        "SELECT pg_create_logical_replication_slot('s', 'pgoutput')",
        "SELECT pg_drop_replication_slot('s')",
        "SELECT pg_replication_slot_advance('s', '0/1')",
        "SELECT pg_terminate_backend(1)",
        "SELECT pg_cancel_backend(1)",
        "SELECT pg_reload_conf()",
        "SELECT pg_stat_reset()",
        "SELECT lo_creat(-1)",
        "SELECT dblink_exec('x', 'DELETE FROM t')",
        "SELECT 1; DELETE FROM t",
        "SELECT 'a\\'; DELETE FROM t; --'",
    ] {
        let v = verdict(sql);
        assert!(v.replica_forbidden, "{sql}: {v:?}");
    }
    // Reads, transaction control, session settings, cursors, prepared
    // statements and writes a standby refuses without effect pass.
    for sql in [
        "SELECT 1",
        "SELECT * FROM t FOR UPDATE",
        "BEGIN",
        "BEGIN READ ONLY",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT a",
        "SET search_path = x",
        "RESET ALL",
        "SHOW work_mem",
        "DISCARD ALL",
        "PREPARE p AS INSERT INTO t VALUES (1)",
        "EXECUTE p",
        "DEALLOCATE p",
        "DECLARE c CURSOR FOR SELECT 1",
        "FETCH 1 FROM c",
        "CLOSE c",
        "EXPLAIN INSERT INTO t VALUES (1)",
        "LOCK TABLE t IN ACCESS SHARE MODE",
        "UNLISTEN *",
        "SELECT set_config('a.b', '1', false)",
        "SELECT currval('s')",
        "SELECT myfunc()",
        "this is not sql",
    ] {
        let v = verdict(sql);
        assert!(!v.replica_forbidden, "{sql}: {v:?}");
    }
    // The statement a PREPARE names carries its refusal to EXECUTE.
    let v = verdict("PREPARE w AS DELETE FROM t");
    assert!(matches!(
        &v.effects[..],
        [Effect::Prepare {
            forbidden: true,
            read: false,
            ..
        }]
    ));
}

#[test]
fn routines_that_change_settings_are_recognised() {
    for body in [
        "BEGIN SET search_path = x; END",
        "begin\n  set work_mem = '1MB';\nend",
        "BEGIN PERFORM set_config('a.b', 'c', false); END",
        "BEGIN EXECUTE 'SET statement_timeout = 5'; END",
        "BEGIN IF true THEN SET x.y = 1; END IF; END",
        "SET role r",
    ] {
        assert!(body_sets_config(body), "{body}");
    }
    for body in [
        "BEGIN UPDATE t SET a = 1; END",
        "BEGIN PERFORM 1; END",
        "SELECT offset_value FROM t",
        "BEGIN SET LOCAL work_mem = '1MB'; END",
        "BEGIN SET TRANSACTION READ ONLY; END",
        "INSERT INTO settings VALUES (1)",
    ] {
        assert!(!body_sets_config(body), "{body}");
    }
}

#[test]
fn set_values_are_kept_for_the_settings_that_matter() {
    let v = verdict("SET default_transaction_isolation = 'SERIALIZABLE'");
    assert!(matches!(
        &v.effects[..],
        [Effect::Set { name, value: Some(value), .. }]
            if name == "default_transaction_isolation" && value == "serializable"
    ));
    let v = verdict("SET default_transaction_isolation TO serializable");
    assert!(matches!(
        &v.effects[..],
        [Effect::Set { value: Some(value), .. }] if value == "serializable"
    ));
}
