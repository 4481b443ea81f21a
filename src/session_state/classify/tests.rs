use super::*;
use crate::session_state::classify::read;

fn one(sql: &str) -> Kind {
    match classify(sql.as_bytes(), true) {
        None => Kind::Plain,
        Some(kinds) => {
            assert_eq!(kinds.len(), 1, "{sql}: {kinds:?}");
            kinds.into_iter().next().unwrap()
        }
    }
}

fn set(name: &str, sql: &str) -> Kind {
    Kind::Set(vec![Setting {
        name: name.into(),
        sql: sql.into(),
    }])
}

#[test]
fn ordinary_statements_allocate_nothing() {
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        "INSERT INTO t VALUES (1); SELECT 2",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SET LOCAL work_mem = '1MB'",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SELECT set_config('a.b', 'c', true)",
        "SELECT temp FROM weather",
        "SELECT pg_advisory_xact_lock(1)",
        "SHOW search_path",
        "",
        "  ;  ",
    ] {
        assert_eq!(classify(sql.as_bytes(), true), None, "{sql}");
    }
}

#[test]
fn session_settings_and_their_replay() {
    assert_eq!(
        one("SET work_mem = '64MB'"),
        set("work_mem", "SET work_mem = '64MB'")
    );
    assert_eq!(
        one("set SESSION Search_Path TO a, \"B\""),
        set("search_path", "SET Search_Path TO a, \"B\"")
    );
    assert_eq!(
        one("SET TIME ZONE 'UTC'"),
        set("timezone", "SET TIME ZONE 'UTC'")
    );
    assert_eq!(one("SET SCHEMA 'x'"), set("search_path", "SET SCHEMA 'x'"));
    assert_eq!(
        one("SET myapp.tenant = 42"),
        set("myapp.tenant", "SET myapp.tenant = 42")
    );
    assert_eq!(
        one("SET statement_timeout TO DEFAULT"),
        Kind::Reset("statement_timeout".into())
    );
    assert_eq!(one("SET TIME ZONE LOCAL"), Kind::Reset("timezone".into()));
    assert_eq!(
        one("RESET enable_seqscan"),
        Kind::Reset("enable_seqscan".into())
    );
    assert_eq!(one("RESET ALL"), Kind::ResetAll);
    assert_eq!(
        one("SELECT pg_catalog.set_config('app.user', 'it''s', false)"),
        set(
            "app.user",
            "SELECT pg_catalog.set_config(E'app.user', E'it''s', false)"
        )
    );
    assert!(matches!(
        one("SELECT set_config('app.user', $1, false)"),
        Kind::SetBound(_)
    ));
    assert!(matches!(
        one("SELECT set_config('app.user', current_user, false)"),
        Kind::Unreadable(_)
    ));
    assert!(matches!(
        one("SELECT x, set_config('a.b', 'c', false) FROM t"),
        Kind::Unreadable(_)
    ));
    assert!(matches!(
        one("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        Kind::Unreadable(_)
    ));
    assert!(matches!(one("SET work_mem"), Kind::Unreadable(_)));
}

#[test]
fn state_only_a_server_holds() {
    for sql in [
        "CREATE TEMP TABLE t (x int)",
        "create global temporary table t (x int)",
        "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
        "CREATE TABLE pg_temp.t (x int)",
        "SELECT * INTO TEMP t FROM s",
        "DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT 1",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_catalog.pg_try_advisory_lock(1, 2)",
        "LISTEN ch",
        "SET ROLE admin",
        "SET SESSION AUTHORIZATION bob",
        "SET role = 'x'",
    ] {
        assert_eq!(one(sql), Kind::Holds, "{sql}");
    }
    for sql in [
        "DROP TABLE t",
        "DISCARD TEMP",
        "CLOSE c",
        "CLOSE ALL",
        "UNLISTEN *",
        "SELECT pg_advisory_unlock(1)",
        "SELECT pg_advisory_unlock_all()",
        "RESET ROLE",
        "SET ROLE NONE",
        "RESET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION DEFAULT",
    ] {
        assert_eq!(one(sql), Kind::Releases, "{sql}");
    }
    assert_eq!(one("DECLARE c CURSOR FOR SELECT 1"), Kind::Plain);
    assert_eq!(one("CREATE TABLE temp (x int)"), Kind::Plain);
}

#[test]
fn prepared_statements_and_savepoints() {
    assert_eq!(
        one("PREPARE Q1 (int) AS SELECT $1"),
        Kind::Prepare {
            name: "q1".into(),
            sql: "PREPARE Q1 (int) AS SELECT $1".into()
        }
    );
    assert!(matches!(
        one("PREPARE q AS SELECT pg_advisory_lock(1)"),
        Kind::Unreadable(_)
    ));
    assert_eq!(one("PREPARE TRANSACTION 'x'"), Kind::Plain);
    assert_eq!(one("DEALLOCATE q1"), Kind::Deallocate("q1".into()));
    assert_eq!(
        one("DEALLOCATE PREPARE \"Q\""),
        Kind::Deallocate("Q".into())
    );
    assert_eq!(one("DEALLOCATE ALL"), Kind::DeallocateAll);
    assert_eq!(one("DISCARD ALL"), Kind::DiscardAll);
    assert_eq!(one("SAVEPOINT s1"), Kind::Savepoint("s1".into()));
    assert_eq!(one("RELEASE SAVEPOINT s1"), Kind::Release("s1".into()));
    assert_eq!(one("RELEASE s1"), Kind::Release("s1".into()));
    assert_eq!(one("ROLLBACK TO s1"), Kind::RollbackTo("s1".into()));
    assert_eq!(
        one("ROLLBACK WORK TO SAVEPOINT s1"),
        Kind::RollbackTo("s1".into())
    );
}

#[test]
fn do_blocks_and_unreadable_text() {
    assert_eq!(one("DO $$BEGIN PERFORM 1; END$$"), Kind::Plain);
    assert_eq!(
        one("DO $$BEGIN CREATE TEMP TABLE t(x int); END$$"),
        Kind::Holds
    );
    assert!(matches!(
        one("DO $$BEGIN SET work_mem = '1MB'; END$$"),
        Kind::Unreadable(_)
    ));
    assert!(matches!(
        one("DO $$BEGIN EXECUTE 'SELECT 1'; END$$"),
        Kind::Unreadable(_)
    ));
    assert_eq!(one("SET a.b = 'unterminated"), Kind::Broken);
    // The glance passes it as plain: one statement, no word that matters. Read, it is broken,
    // and the server refuses it whole.
    assert_eq!(one("SELECT 'unterminated"), Kind::Plain);
    assert_eq!(
        read(b"SELECT 'unterminated", true),
        Some(vec![Kind::Broken])
    );
}

#[test]
fn several_statements_keep_their_places() {
    let kinds = classify(b"SELECT 1; SET a.b = 1; SELECT 2; RESET a.b", true).unwrap();
    assert_eq!(
        kinds,
        [
            Kind::Plain,
            set("a.b", "SET a.b = 1"),
            Kind::Plain,
            Kind::Reset("a.b".into())
        ]
    );
}

#[test]
fn backslashes_under_nonstandard_strings_are_not_replayed() {
    let kinds = classify(br"SET myapp.x = 'a\b'", false).unwrap();
    assert!(matches!(kinds[0], Kind::Unreadable(_)), "{kinds:?}");
    let kinds = classify(br"SET myapp.x = E'a\b'", false).unwrap();
    assert!(matches!(kinds[0], Kind::Set(_)), "{kinds:?}");
    let kinds = classify(br"SET myapp.x = 'a'", true).unwrap();
    assert!(matches!(kinds[0], Kind::Set(_)), "{kinds:?}");
}

#[test]
fn the_glance_is_sure_only_of_plain() {
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        "UPDATE t SET x = 1",
        "  insert into t values (1);  ",
    ] {
        assert!(plain_at_a_glance(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "SELECT 1; SET a.b = 1",
        "SET work_mem = 1",
        "set work_mem = 1",
        "SELECT * INTO TEMP t FROM s",
        "SELECT PG_ADVISORY_LOCK(1)",
        "SELECT \"pg_try_advisory_lock\"(1)",
        "SELECT Set_Config('a', 'b', false)",
        "/* c */ SET a = 1",
        "(SELECT 1)",
        "do $$ begin end $$",
        "CREATE TABLE x (y int)",
        "SELECT ';'",
        "",
    ] {
        assert!(!plain_at_a_glance(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn the_glance_finds_each_word_in_any_case() {
    for word in GLANCED {
        let word = std::str::from_utf8(word).unwrap();
        for text in [
            word.to_string(),
            word.to_ascii_uppercase(),
            format!("x{word}y"),
        ] {
            assert!(mentions_glanced(text.as_bytes()), "{text}");
        }
    }
    assert!(!mentions_glanced(
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"
    ));
    assert!(!mentions_glanced(b"SELECT 1 ;  "));
    assert!(mentions_glanced(
        br#"SELECT U&"\0070g_\0061dvisory_lock"(1)"#
    ));
    assert!(!mentions_glanced(b"SELECT a & b"));
    assert!(mentions_glanced(b"SELECT 1; SELECT 2"));
    assert_eq!(one("SELECT \"pg_advisory_lock\"(1)"), Kind::Holds);
}

#[test]
fn what_the_text_hides_is_found_or_unreadable() {
    for sql in [
        "SELECT * INTO LOCAL TEMP t FROM s",
        "SELECT * INTO GLOBAL TEMPORARY t FROM s",
        "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
        "CREATE FUNCTION pg_temp.f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
        "DO $$BEGIN PERFORM \"pg_advisory_lock\"(1); END$$",
    ] {
        assert_eq!(one(sql), Kind::Holds, "{sql}");
    }
    for sql in [
        "SELECT U&\"pg_advisory_lock\"(1)",
        "DO LANGUAGE plperl $$ spi_exec_query('SET a.b = 1') $$",
        "DO $$BEGIN PERFORM \"set_config\"('a.b', 'c', false); END$$",
        "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'",
        "LOAD 'auto_explain'",
        "SET search_path = pg_temp, public",
        "SELECT dblink_connect('c', 'dbname=x')",
    ] {
        assert!(
            matches!(one(sql), Kind::Unreadable(_)),
            "{sql}: {:?}",
            one(sql)
        );
    }
    assert_eq!(
        one("DO LANGUAGE plpgsql $$BEGIN PERFORM 1; END$$"),
        Kind::Plain
    );
    assert_eq!(one("SELECT * FROM pg_settings"), Kind::Plain);
    let kinds = classify(b"1; SET a.b = 1", true).unwrap();
    assert_eq!(kinds[0], Kind::Broken);
}

#[test]
fn setting_names_fold_quoted_or_not() {
    assert_eq!(
        one("SET \"TimeZone\" = 'UTC'"),
        set("timezone", "SET \"TimeZone\" = 'UTC'")
    );
    assert_eq!(one("RESET \"WORK_MEM\""), Kind::Reset("work_mem".into()));
}
