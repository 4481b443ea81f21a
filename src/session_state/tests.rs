use super::*;

fn state(cap: usize) -> SessionState {
    SessionState::new(true, Arc::new(PinSlots::default()), cap)
}

/// Sends `sql` as a Query and answers it as the server would: one CommandComplete per tag,
/// an error instead of the rest if `fails`, then ReadyForQuery with `idle`.
fn run(s: &mut SessionState, server: &mut Held, sql: &str, tags: &[&str], idle: bool) -> Outcome {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    let outcome = s.on_client(b'Q', &body);
    let mut effects = match &outcome {
        Outcome::Follow(e) => Some(e.clone()),
        _ => None,
    };
    for tag in tags {
        if *tag == "ERROR" {
            s.on_error(effects.as_mut());
            continue;
        }
        let mut t = tag.as_bytes().to_vec();
        t.push(0);
        s.on_command_complete(effects.as_mut(), &t, server);
    }
    s.on_ready(effects.as_ref(), idle, server);
    outcome
}

fn settings(held: &Held) -> Vec<&str> {
    held.settings.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn settings_stick_only_when_their_transaction_commits() {
    let (mut s, mut server) = (state(1), Held::default());
    run(&mut s, &mut server, "SET work_mem = '64MB'", &["SET"], true);
    assert_eq!(settings(s.held()), ["work_mem"]);
    assert_eq!(server, *s.held());
    run(&mut s, &mut server, "BEGIN", &["BEGIN"], false);
    run(&mut s, &mut server, "SET a.b = 1", &["SET"], false);
    run(&mut s, &mut server, "ROLLBACK", &["ROLLBACK"], true);
    assert_eq!(settings(s.held()), ["work_mem"]);
    run(&mut s, &mut server, "SET LOCAL a.c = 1", &["SET"], true);
    assert_eq!(settings(s.held()), ["work_mem"]);
    // An implicit transaction that fails takes its SET with it.
    run(
        &mut s,
        &mut server,
        "SET a.d = 1; SELECT 1/0",
        &["SET", "ERROR"],
        true,
    );
    assert_eq!(settings(s.held()), ["work_mem"]);
    // A failed transaction's COMMIT says ROLLBACK.
    run(
        &mut s,
        &mut server,
        "BEGIN; SET a.e = 1",
        &["BEGIN", "SET"],
        false,
    );
    run(&mut s, &mut server, "SELECT 1/0", &["ERROR"], false);
    run(&mut s, &mut server, "COMMIT", &["ROLLBACK"], true);
    assert_eq!(settings(s.held()), ["work_mem"]);
    run(
        &mut s,
        &mut server,
        "BEGIN; SET a.f = 1; COMMIT",
        &["BEGIN", "SET", "COMMIT"],
        true,
    );
    run(&mut s, &mut server, "RESET work_mem", &["RESET"], true);
    assert_eq!(settings(s.held()), ["a.f"]);
    run(&mut s, &mut server, "RESET ALL", &["RESET"], true);
    assert!(s.held().is_empty());
    assert!(!s.pinned());
}

#[test]
fn savepoints_keep_what_came_before_them() {
    let (mut s, mut server) = (state(1), Held::default());
    run(
        &mut s,
        &mut server,
        "BEGIN; SAVEPOINT early",
        &["BEGIN", "SAVEPOINT"],
        false,
    );
    run(
        &mut s,
        &mut server,
        "SET a.one = 1; SAVEPOINT sp",
        &["SET", "SAVEPOINT"],
        false,
    );
    run(&mut s, &mut server, "SET a.two = 1", &["SET"], false);
    run(&mut s, &mut server, "ROLLBACK TO sp", &["ROLLBACK"], false);
    run(
        &mut s,
        &mut server,
        "SAVEPOINT sp2; SET a.three = 1; RELEASE sp2",
        &["SAVEPOINT", "SET", "RELEASE"],
        false,
    );
    run(&mut s, &mut server, "COMMIT", &["COMMIT"], true);
    assert_eq!(settings(s.held()), ["a.one", "a.three"]);
    // Rolling back to a savepoint made before anything was staged drops it all.
    run(
        &mut s,
        &mut server,
        "BEGIN; SAVEPOINT first; SET a.four = 1",
        &["BEGIN", "SAVEPOINT", "SET"],
        false,
    );
    run(
        &mut s,
        &mut server,
        "ROLLBACK TO first; COMMIT",
        &["ROLLBACK", "COMMIT"],
        true,
    );
    assert_eq!(settings(s.held()), ["a.one", "a.three"]);
}

#[test]
fn prepared_statements_follow_and_discard_all_forgets() {
    let (mut s, mut server) = (state(1), Held::default());
    run(
        &mut s,
        &mut server,
        "PREPARE q AS SELECT 1",
        &["PREPARE"],
        true,
    );
    assert_eq!(s.held().prepared.len(), 1);
    run(&mut s, &mut server, "DEALLOCATE q", &["DEALLOCATE"], true);
    assert!(s.held().prepared.is_empty());
    run(
        &mut s,
        &mut server,
        "PREPARE q AS SELECT 1; SET a.b = 2",
        &["PREPARE", "SET"],
        true,
    );
    run(&mut s, &mut server, "DISCARD ALL", &["DISCARD ALL"], true);
    assert!(s.held().is_empty() && server.is_empty());
}

#[test]
fn pins_take_a_slot_and_the_cap_refuses() {
    let slots = Arc::new(PinSlots::default());
    let mut a = SessionState::new(true, slots.clone(), 1);
    let mut b = SessionState::new(true, slots.clone(), 1);
    let mut server = Held::default();
    let out = run(
        &mut a,
        &mut server,
        "CREATE TEMP TABLE t (x int)",
        &["CREATE TABLE"],
        true,
    );
    assert!(matches!(out, Outcome::Follow(_)));
    assert!(a.pinned() && a.check_due());
    a.checked(Pins::TEMP_TABLE);
    assert_eq!(a.take_change(), Some(PinChange::Pinned(Pins::TEMP_TABLE)));
    assert_eq!(slots.taken(), 1);
    let refused = run(&mut b, &mut server, "SELECT pg_advisory_lock(1)", &[], true);
    assert!(matches!(refused, Outcome::Refuse(_)), "{refused:?}");
    // A pinned client's statements need no new slot; one that may release asks for a check.
    run(&mut a, &mut server, "DROP TABLE t", &["DROP TABLE"], true);
    assert!(a.check_due());
    a.checked(Pins::NONE);
    assert_eq!(a.take_change(), Some(PinChange::Unpinned));
    assert_eq!(slots.taken(), 0);
    assert!(!a.pinned());
    // A statement that turned out to hold nothing gives its slot back.
    run(
        &mut b,
        &mut server,
        "SELECT pg_try_advisory_lock(1)",
        &["SELECT 1"],
        true,
    );
    b.checked(Pins::NONE);
    assert_eq!(b.take_change(), None);
    assert_eq!(slots.taken(), 0);
}

#[test]
fn unreadable_statements_pin_until_the_session_ends() {
    let slots = Arc::new(PinSlots::default());
    let mut s = SessionState::new(true, slots.clone(), 4);
    let mut server = Held::default();
    run(
        &mut s,
        &mut server,
        "SELECT set_config('a.b', current_user, false)",
        &["SELECT 1"],
        true,
    );
    assert!(s.pins().contains(Pins::UNREADABLE));
    assert_eq!(s.take_change(), Some(PinChange::Pinned(Pins::UNREADABLE)));
    s.checked(Pins::NONE);
    assert!(s.pinned());
    assert!(s.leave());
    assert_eq!(slots.taken(), 0);
    // Replies that do not match the statements one for one were not read right.
    let mut s = SessionState::new(true, slots.clone(), 4);
    run(&mut s, &mut server, "SET a.b = 1; SELECT 1", &["SET"], true);
    assert!(s.pins().contains(Pins::UNREADABLE));
}

#[test]
fn extended_protocol_follows_statements_to_their_execute() {
    let (mut s, mut server) = (state(1), Held::default());
    assert_eq!(
        s.on_client(b'P', b"s1\0SET work_mem = '8MB'\0\0\0"),
        Outcome::Pass
    );
    assert_eq!(s.on_client(b'B', b"\0s1\0\0\0\0\0\0\0"), Outcome::Pass);
    let Outcome::Follow(mut e) = s.on_client(b'E', b"\0\0\0\0\0") else {
        panic!("Execute of a SET is followed");
    };
    s.on_command_complete(Some(&mut e), b"SET\0", &mut server);
    s.on_ready(None, true, &mut server);
    assert_eq!(settings(s.held()), ["work_mem"]);
    s.on_client(b'C', b"Ss1\0");
    s.on_client(b'B', b"\0s1\0\0\0\0\0\0\0");
    assert_eq!(s.on_client(b'E', b"\0\0\0\0\0"), Outcome::Pass);
}

#[test]
fn off_means_nothing_is_followed() {
    let mut s = SessionState::new(false, Arc::new(PinSlots::default()), 0);
    assert_eq!(
        s.on_client(b'Q', b"CREATE TEMP TABLE t (x int)\0"),
        Outcome::Pass
    );
    assert!(!s.pinned());
}

#[test]
fn a_parse_of_a_name_in_use_changes_nothing() {
    let mut s = state(1);
    s.on_client(b'P', b"s1\0SELECT pg_advisory_lock($1)\0\0\0");
    // Refused by the server with 42P05: s1 is still the lock.
    s.on_client(b'P', b"s1\0SELECT 1\0\0\0");
    s.on_client(b'B', b"\0s1\0\0\0\0\0\0\0");
    assert!(matches!(
        s.on_client(b'E', b"\0\0\0\0\0"),
        Outcome::Follow(_)
    ));
    assert!(s.check_due());
}

#[test]
fn a_set_config_cut_short_by_a_row_limit_still_counts() {
    let (mut s, mut server) = (state(1), Held::default());
    s.on_client(b'P', b"\0SELECT set_config('app.t', $1, false)\0\0\0");
    s.on_client(b'B', b"\0\0\0\0\0\x01\0\0\0\x01a\0\0");
    let Outcome::Follow(mut e) = s.on_client(b'E', b"\0\0\0\0\x01") else {
        panic!("followed");
    };
    s.on_suspended(Some(&mut e), &mut server);
    s.on_ready(None, true, &mut server);
    assert_eq!(settings(s.held()), ["app.t"]);
}

#[test]
fn past_the_bounds_statements_are_refused() {
    let (mut s, mut server) = (state(1), Held::default());
    for i in 0..held::MAX_ENTRIES {
        let sql = format!("SET app.s{i} = 1");
        run(&mut s, &mut server, &sql, &["SET"], true);
    }
    let refused = run(&mut s, &mut server, "SET app.one_more = 1", &[], true);
    assert!(matches!(refused, Outcome::Refuse(_)), "{refused:?}");
    assert!(!s.pinned());
}

#[test]
fn while_standard_conforming_strings_changes_both_readings_must_agree() {
    let mut s = state(1);
    s.set_standard_strings(false);
    let _ = s.on_client(b'Q', b"SET standard_conforming_strings = on\0");
    // With backslashes escaping this is one string; without, a string, then SET ROLE.
    let out = s.on_client(b'Q', b"SELECT 'x\\'; SET ROLE admin; -- '\0");
    let Outcome::Follow(e) = out else {
        panic!("{out:?}");
    };
    assert!(matches!(e.kinds[0], Kind::Unreadable(_)), "{e:?}");
}
