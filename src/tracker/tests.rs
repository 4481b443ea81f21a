use super::*;

/// Tokens in these tests are plain labels: the tracker only keeps them in order.
type Tracker = super::Tracker<&'static str>;

/// Runs a flow: lowercase-prefixed steps are `c:` client tags and `s:` server tags (with the
/// status byte after `Z`). Returns the routes of the server messages and the final verdict.
fn run(tracker: &mut Tracker, flow: &str) -> (Vec<Route>, Verdict) {
    let mut routes = Vec::new();
    for step in flow.split_whitespace() {
        let (side, rest) = step.split_at(2);
        let bytes = rest.as_bytes();
        match side {
            "c:" => tracker.client_message(bytes[0]),
            "s:" => routes.push(tracker.server_message(bytes[0], bytes.get(1).copied())),
            "o:" => tracker.own_query(),
            _ => panic!("bad step {step}"),
        }
    }
    (routes, tracker.verdict())
}

fn verdict(flow: &str) -> Verdict {
    run(&mut Tracker::new(), flow).1
}

#[test]
fn new_connection_is_idle() {
    assert_eq!(Tracker::new().verdict(), Verdict::Idle);
}

#[test]
fn simple_query_flow() {
    assert_eq!(verdict("c:Q"), Verdict::Busy);
    assert_eq!(verdict("c:Q s:T s:D s:D s:C"), Verdict::Busy);
    assert_eq!(verdict("c:Q s:T s:D s:C s:ZI"), Verdict::Idle);
    // Multi-statement query: several results, one ReadyForQuery.
    assert_eq!(verdict("c:Q s:C s:T s:D s:C s:C s:ZI"), Verdict::Idle);
    assert_eq!(verdict("c:Q s:I s:ZI"), Verdict::Idle);
}

#[test]
fn explicit_transactions_hold_the_server() {
    assert_eq!(verdict("c:Q s:C s:ZT"), Verdict::Busy);
    assert_eq!(verdict("c:Q s:C s:ZT c:Q s:E s:ZE"), Verdict::Busy);
    assert_eq!(
        verdict("c:Q s:C s:ZT c:Q s:E s:ZE c:Q s:C s:ZI"),
        Verdict::Idle
    );
}

#[test]
fn extended_protocol_batches() {
    assert_eq!(verdict("c:P c:B c:D c:E"), Verdict::Busy);
    assert_eq!(
        verdict("c:P c:B c:D c:E c:S s:1 s:2 s:T s:D s:C"),
        Verdict::Busy
    );
    assert_eq!(
        verdict("c:P c:B c:D c:E c:S s:1 s:2 s:T s:D s:C s:ZI"),
        Verdict::Idle
    );
}

#[test]
fn pipelines_with_an_error_in_the_middle() {
    let flow = "c:P c:B c:E c:S c:P c:B c:E c:S c:P c:B c:E c:S \
                s:1 s:2 s:C s:ZI s:E s:ZI";
    assert_eq!(verdict(flow), Verdict::Busy, "third Sync still owed");
    assert_eq!(verdict(&format!("{flow} s:1 s:2 s:C s:ZI")), Verdict::Idle);
}

#[test]
fn flush_terminated_batch_keeps_server_until_sync() {
    // asyncpg: Parse, Describe, Flush; replies come without ReadyForQuery.
    let mut t = Tracker::new();
    assert_eq!(run(&mut t, "c:P c:D c:H s:1 s:t s:T").1, Verdict::Busy);
    assert_eq!(run(&mut t, "c:B c:E c:S s:2 s:D s:C s:ZI").1, Verdict::Idle);
}

#[test]
fn copy_in_and_out() {
    assert_eq!(verdict("c:Q s:G c:d c:d c:c s:C s:ZI"), Verdict::Idle);
    assert_eq!(verdict("c:Q s:G c:d c:f s:E s:ZI"), Verdict::Idle);
    assert_eq!(verdict("c:Q s:H s:d s:d s:c s:C s:ZI"), Verdict::Idle);
    assert_eq!(verdict("c:Q s:H s:d"), Verdict::Busy);
    // Extended-protocol COPY: the server ignores the Sync sent before the data, so clients send
    // another after CopyDone.
    assert_eq!(
        verdict("c:P c:B c:E c:S s:1 s:2 s:G c:d c:c c:S s:C s:ZI"),
        Verdict::Idle
    );
}

#[test]
fn syncs_sent_during_copy_in_draw_no_reply() {
    // tokio-postgres: Bind, Execute, Sync, then the data, CopyDone and another Sync.
    assert_eq!(
        verdict("c:B c:E c:S s:2 s:G c:d c:c c:S s:C s:ZI"),
        Verdict::Idle
    );
    // The same, all sent before the server's CopyInResponse arrives.
    assert_eq!(
        verdict("c:B c:E c:S c:d c:c c:S s:2 s:G s:C s:ZI"),
        Verdict::Idle
    );
    // libpq: Query, then the data and CopyDone, with a stray Sync in the middle.
    assert_eq!(verdict("c:Q s:G c:d c:S c:d c:c s:C s:ZI"), Verdict::Idle);
    // A CopyDone with no COPY behind it draws nothing.
    assert_eq!(verdict("c:c"), Verdict::Idle);
    assert_eq!(verdict("c:Q c:c s:C s:ZI"), Verdict::Idle);
}

#[test]
fn own_queries_are_swallowed_before_the_clients_replies() {
    let mut t = Tracker::new();
    let (routes, v) = run(&mut t, "o: c:Q s:S s:C s:ZI s:T s:D s:C s:ZI");
    use Route::*;
    assert_eq!(
        routes,
        [Swallow, Swallow, Swallow, Forward, Forward, Forward, Forward]
    );
    assert_eq!(v, Verdict::Idle);
    assert_eq!(verdict("o:"), Verdict::Busy);
}

#[test]
fn async_messages_are_forwarded_anytime() {
    let mut t = Tracker::new();
    let (routes, v) = run(&mut t, "s:N s:S s:A");
    assert_eq!(routes, [Route::Forward; 3]);
    assert_eq!(v, Verdict::Idle);
}

#[test]
fn unaccounted_replies_desync_for_good() {
    assert_eq!(verdict("s:ZI"), Verdict::Desync);
    assert_eq!(
        verdict("s:E"),
        Verdict::Desync,
        "a FATAL on an idle connection"
    );
    assert_eq!(verdict("s:D"), Verdict::Desync);
    assert_eq!(verdict("c:Q s:C s:ZI s:ZI"), Verdict::Desync);
    assert_eq!(verdict("c:Q s:Z"), Verdict::Desync, "missing status byte");
    assert_eq!(verdict("c:Q s:ZX"), Verdict::Desync, "bad status byte");
    assert_eq!(verdict("c:Y"), Verdict::Desync, "unknown client message");
    // Once desynchronized, nothing brings it back.
    assert_eq!(verdict("s:ZI c:Q s:C s:ZI"), Verdict::Desync);
}

#[test]
fn poison_closes() {
    let mut t = Tracker::new();
    t.poison();
    assert_eq!(t.verdict(), Verdict::Desync);
}

#[test]
fn function_call_owes_one_reply() {
    assert_eq!(verdict("c:F s:V s:ZI"), Verdict::Idle);
    assert_eq!(verdict("c:F s:V"), Verdict::Busy);
}

#[test]
fn status_reports_last_ready_for_query() {
    let mut t = Tracker::new();
    run(&mut t, "c:Q s:C s:ZT");
    assert_eq!(t.status(), TxStatus::InTransaction);
}

#[test]
fn awaiting_and_in_transaction_follow_the_flow() {
    let mut t = Tracker::new();
    assert!(!t.awaiting_reply() && !t.in_transaction());
    run(&mut t, "c:Q");
    assert!(t.awaiting_reply());
    run(&mut t, "s:C s:ZT");
    assert!(!t.awaiting_reply() && t.in_transaction());
    run(&mut t, "c:Q s:C s:ZI c:P c:D c:H");
    assert!(t.awaiting_reply(), "Parse and Describe replies owed");
    run(&mut t, "s:1 s:t s:T");
    assert!(
        !t.awaiting_reply() && t.in_transaction(),
        "Flush-terminated batch is open"
    );
}

#[test]
fn extended_errors_skip_to_the_next_sync() {
    // The Bind fails: Execute is skipped, the Sync still answers.
    assert_eq!(verdict("c:P c:B c:E c:S s:1 s:E s:ZI"), Verdict::Idle);
    // A ReadyForQuery where an extended reply is owed is a desync.
    assert_eq!(verdict("c:P c:B c:S s:ZI"), Verdict::Desync);
    // Replies each end on their own message.
    assert_eq!(verdict("c:P c:S s:2 s:ZI"), Verdict::Desync);
    // Describe of a statement: ParameterDescription, then RowDescription or NoData.
    assert_eq!(verdict("c:D c:S s:t s:n s:ZI"), Verdict::Idle);
}

#[test]
fn messages_after_an_error_without_sync_are_discarded_by_the_server() {
    let mut t = Tracker::new();
    run(&mut t, "c:P c:H s:E");
    assert_eq!(t.verdict(), Verdict::Busy);
    // The server ignores these until Sync: no replies are owed for them, not even the Query's.
    run(&mut t, "c:B c:E c:Q");
    assert!(!t.awaiting_reply());
    assert_eq!(run(&mut t, "c:S s:ZI").1, Verdict::Idle);
}

#[test]
fn hidden_messages_swallow_success_and_forward_errors() {
    let mut t = Tracker::new();
    t.expect(Reply::Parse, Handling::Hide, Some("parse 7"));
    t.client_message(b'B');
    t.client_message(b'S');
    assert_eq!(t.server_message(b'1', None), Route::Swallow);
    assert_eq!(t.server_message(b'2', None), Route::Forward);
    assert_eq!(t.server_message(b'Z', Some(b'I')), Route::Forward);
    assert!(!t.has_undone());
    t.expect(Reply::Parse, Handling::Hide, Some("parse 8"));
    t.client_message(b'B');
    t.client_message(b'S');
    assert_eq!(
        t.server_message(b'E', None),
        Route::Forward,
        "error stands in"
    );
    let undone: Vec<_> = t.undone().collect();
    assert_eq!(undone, ["parse 8"], "the skipped Bind had no token");
    assert_eq!(t.server_message(b'Z', Some(b'I')), Route::Forward);
    assert_eq!(t.verdict(), Verdict::Idle);
}

#[test]
fn skipped_messages_are_undone_newest_first() {
    let mut t = Tracker::new();
    t.expect(Reply::Bind, Handling::Forward, Some("bind"));
    t.expect(Reply::Parse, Handling::Forward, Some("parse 1"));
    t.expect(Reply::Parse, Handling::Hide, Some("parse 2"));
    t.client_message(b'S');
    assert_eq!(t.server_message(b'E', None), Route::Forward);
    let undone: Vec<_> = t.undone().collect();
    assert_eq!(undone, ["parse 2", "parse 1", "bind"]);
}

#[test]
fn messages_sent_while_skipping_are_undone_at_once() {
    let mut t = Tracker::new();
    run(&mut t, "c:P c:H s:E");
    t.expect(Reply::Parse, Handling::Hide, Some("late parse"));
    assert_eq!(t.undone().collect::<Vec<_>>(), ["late parse"]);
}

#[test]
fn answers_wait_their_turn() {
    let mut t = Tracker::new();
    t.client_message(b'B');
    t.expect(Reply::Close, Handling::Answer, Some("close complete"));
    t.client_message(b'S');
    assert_eq!(t.take_answer(), None, "BindComplete first");
    assert_eq!(t.server_message(b'2', None), Route::Forward);
    assert!(t.answer_due());
    assert_eq!(t.take_answer(), Some("close complete"));
    assert_eq!(t.server_message(b'Z', Some(b'I')), Route::Forward);
    assert_eq!(t.verdict(), Verdict::Idle);
}

#[test]
fn an_answer_the_server_replies_to_is_a_desync() {
    let mut t = Tracker::new();
    t.expect(Reply::Parse, Handling::Answer, Some("parse complete"));
    t.server_message(b'1', None);
    assert_eq!(t.verdict(), Verdict::Desync);
}

#[test]
fn an_answer_without_a_token_is_a_desync() {
    let mut t = Tracker::new();
    t.expect(Reply::Parse, Handling::Answer, None);
    assert_eq!(t.take_answer(), None);
    assert_eq!(t.verdict(), Verdict::Desync);
}

#[test]
fn provoked_errors_are_replaced() {
    let mut t = Tracker::new();
    t.expect(Reply::Describe, Handling::Replace, Some("the real error"));
    t.client_message(b'S');
    assert_eq!(t.server_message(b'E', None), Route::Replace);
    assert_eq!(t.take_replacement(), Some("the real error"));
    assert!(
        !t.has_undone(),
        "a replaced error's token is used, not undone"
    );
    assert_eq!(t.server_message(b'Z', Some(b'I')), Route::Forward);
    assert_eq!(t.verdict(), Verdict::Idle);
}

#[test]
fn status_bytes_round_trip() {
    for byte in [b'I', b'T', b'E'] {
        assert_eq!(TxStatus::from_byte(byte).map(TxStatus::byte), Some(byte));
    }
    assert_eq!(TxStatus::from_byte(b'X'), None);
}

#[test]
fn a_copy_in_the_server_failed_holds_the_server_until_the_client_ends_it() {
    let mut t = Tracker::new();
    // The server fails a row and is done with the COPY, but the client is still sending.
    run(&mut t, "c:Q s:G c:d s:E s:ZI");
    assert_eq!(
        t.verdict(),
        Verdict::Busy,
        "the client's CopyDone is still to come"
    );
    assert!(t.in_transaction());
    run(&mut t, "c:d c:c");
    assert_eq!(t.verdict(), Verdict::Idle);
}
