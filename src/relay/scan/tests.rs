use super::*;
use crate::prepared::Fixture;
use crate::session_state::{Held, SessionState};
use crate::tracker::Verdict;
use bytes::BytesMut;

/// scan_client with prepared statements off.
fn client(buf: &[u8], p: &mut Passthrough, t: &mut Tracker) -> Result<ClientScan, ProtocolError> {
    scan_client(
        buf,
        p,
        t,
        &mut Fixture::default().context(0),
        &mut SessionState::off(),
        &mut BytesMut::new(),
    )
}

/// scan_server with prepared statements off.
fn server(
    buf: &[u8],
    p: &mut Passthrough,
    t: &mut Tracker,
    sp: &mut ParamSet,
    cp: &mut ParamSet,
) -> Result<ServerScan, ProtocolError> {
    let (mut state, mut held) = (SessionState::off(), Held::default());
    let side = ServerSide {
        tracker: t,
        server_params: sp,
        client_params: cp,
        state: &mut state,
        server_held: &mut held,
    };
    scan_server(
        buf,
        p,
        side,
        &mut Fixture::default().context(0),
        &mut BytesMut::new(),
    )
}

/// scan_client with prepared statements managed (session state not followed).
fn prepared_scan(
    buf: &[u8],
    p: &mut Passthrough,
    t: &mut Tracker,
    ctx: &mut crate::prepared::Context,
    out: &mut BytesMut,
) -> Result<ClientScan, ProtocolError> {
    scan_client(buf, p, t, ctx, &mut SessionState::off(), out)
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn client_messages_stream_through_even_when_cut() {
    let q = msg(b'Q', b"select 1\0");
    let mut buf = concat(&[q.clone(), q.clone()]);
    buf.extend_from_slice(&q[..4]);
    let mut t = Tracker::new();
    let mut p = Passthrough::default();
    let s = client(&buf, &mut p, &mut t).unwrap();
    assert_eq!(s.forward, 2 * q.len());
    assert!(!s.terminate);
    assert_eq!(s.want, 0, "header incomplete: nothing known yet");
    let s = client(&q[..7], &mut p, &mut t).unwrap();
    assert_eq!(
        (s.forward, s.want),
        (7, 0),
        "the start of a Query goes at once"
    );
    assert_eq!(p, Passthrough::Forwarding(q.len() - 7));
    let s = client(&q[7..], &mut p, &mut t).unwrap();
    assert_eq!(s.forward, q.len() - 7);
    assert!(!p.mid_message());
}

#[test]
fn a_message_to_rewrite_waits_until_whole() {
    let parse = msg(b'P', b"s1\0select 1\0\0\0");
    let mut t = Tracker::new();
    let mut p = Passthrough::default();
    let mut f = Fixture::default();
    let mut out = BytesMut::new();
    let s = prepared_scan(&parse[..9], &mut p, &mut t, &mut f.context(10), &mut out).unwrap();
    assert_eq!((s.forward, s.want), (0, parse.len() - 9));
    assert!(!p.mid_message());
    let s = prepared_scan(&parse, &mut p, &mut t, &mut f.context(10), &mut out).unwrap();
    assert_eq!(s.forward, parse.len());
    assert!(s.composed, "renamed for the server");
}

#[test]
fn terminate_stops_the_scan() {
    let buf = concat(&[msg(b'Q', b"x\0"), msg(b'X', b""), msg(b'Q', b"y\0")]);
    let s = client(&buf, &mut Passthrough::default(), &mut Tracker::new()).unwrap();
    assert_eq!(s.forward, 7);
    assert!(s.terminate);
}

#[test]
fn large_copy_data_passes_through_in_pieces() {
    let data = msg(b'd', &[7u8; 1000]);
    let mut t = Tracker::new();
    t.client_message(b'Q');
    let mut p = Passthrough::default();
    let s = client(&data[..300], &mut p, &mut t).unwrap();
    assert_eq!(s.forward, 300);
    assert!(p.mid_message());
    let rest = concat(&[data[300..].to_vec(), msg(b'c', b"")]);
    let s = client(&rest, &mut p, &mut t).unwrap();
    assert_eq!(s.forward, rest.len());
    assert!(!p.mid_message());
}

#[test]
fn bad_client_length_is_a_protocol_error() {
    let buf = [b'Q', 0, 0, 0, 1];
    assert!(client(&buf, &mut Passthrough::default(), &mut Tracker::new()).is_err());
}

#[test]
fn own_replies_are_swallowed_and_params_recorded() {
    let mut t = Tracker::new();
    t.own_query();
    t.client_message(b'Q');
    let mut sp = ParamSet::default();
    let mut cp = ParamSet::default();
    let buf = concat(&[
        msg(b'S', b"TimeZone\0UTC\0"),
        msg(b'C', b"SET\0"),
        msg(b'Z', b"I"),
        msg(b'S', b"application_name\0app\0"),
        msg(b'C', b"SELECT 1\0"),
        msg(b'Z', b"I"),
    ]);
    let s = server(&buf, &mut Passthrough::default(), &mut t, &mut sp, &mut cp).unwrap();
    let swallowed = (5 + 13) + (5 + 4) + (5 + 1);
    assert_eq!(s.swallow, swallowed);
    assert_eq!(s.end, buf.len());
    assert_eq!(sp.get("TimeZone"), Some("UTC"));
    assert_eq!(cp.get("TimeZone"), None, "our own SET is not the client's");
    assert_eq!(cp.get("application_name"), Some("app"));
    assert_eq!(t.verdict(), Verdict::Idle);
    assert_eq!(
        (s.queries_done, s.transactions_done),
        (1, 1),
        "own replies are not counted"
    );
}

#[test]
fn big_rows_pass_through_and_ready_for_query_waits_whole() {
    let mut t = Tracker::new();
    t.client_message(b'Q');
    let row = msg(b'D', &[1u8; 500]);
    let (mut sp, mut cp) = (ParamSet::default(), ParamSet::default());
    let mut p = Passthrough::default();
    let s = server(&row[..100], &mut p, &mut t, &mut sp, &mut cp).unwrap();
    assert_eq!(s.end, 100);
    let mut rest = BytesMut::from(&row[100..]);
    rest.extend_from_slice(&msg(b'Z', b"I")[..5]);
    let s = server(&rest, &mut p, &mut t, &mut sp, &mut cp).unwrap();
    assert_eq!(s.end, row.len() - 100);
    assert_eq!(s.want, 1);
    assert_eq!(t.verdict(), Verdict::Busy);
}

#[test]
fn the_rest_of_a_dropped_message_is_never_forwarded() {
    // A second Parse of a taken name, too large to hold, is dropped (pgmux fails it itself):
    // the rest of it, read later, must not reach the server, whatever it looks like.
    let mut f = Fixture::default();
    let (mut t, mut p, mut out) = (Tracker::new(), Passthrough::default(), BytesMut::new());
    let first = msg(b'P', b"a\0select 1\0\0\0");
    let s = prepared_scan(&first, &mut p, &mut t, &mut f.context(10), &mut out).unwrap();
    assert_eq!(s.forward, first.len());
    let mut large = vec![b'P'];
    large.extend_from_slice(&((HELD_LIMIT as u32) * 2).to_be_bytes());
    large.extend_from_slice(b"a\0xx");
    let s = prepared_scan(&large, &mut p, &mut t, &mut f.context(10), &mut out).unwrap();
    assert_eq!(s.forward, large.len());
    assert!(matches!(p, Passthrough::Dropping(_)));
    let rest = msg(b'Q', b"y");
    let s = prepared_scan(&rest, &mut p, &mut t, &mut f.context(10), &mut out).unwrap();
    assert_eq!(s.forward, rest.len(), "consumed");
    let sent = match s.composed {
        true => &out[..],
        false => &rest[s.skip..s.forward],
    };
    assert!(
        sent.is_empty(),
        "the dropped bytes went to the server: {sent:?}"
    );
}

#[test]
fn answers_wait_for_a_message_passing_in_pieces_to_end() {
    // Describe of a statement, then a Parse of the same text that pgmux answers itself: the
    // answer is due once the Describe's RowDescription starts, but not inside it.
    let mut f = Fixture::default();
    let (mut t, mut out) = (Tracker::new(), BytesMut::new());
    let mut client_pass = Passthrough::default();
    let batch = concat(&[
        msg(b'P', b"s1\0select 1\0\0\0"),
        msg(b'D', b"Ss1\0"),
        msg(b'P', b"s2\0select 1\0\0\0"),
    ]);
    prepared_scan(
        &batch,
        &mut client_pass,
        &mut t,
        &mut f.context(10),
        &mut out,
    )
    .unwrap();
    let description = msg(b'T', &[7u8; 250]);
    let first = concat(&[
        msg(b'1', b""),
        msg(b't', &[0, 0]),
        description[..7].to_vec(),
    ]);
    let (mut sp, mut cp) = (ParamSet::default(), ParamSet::default());
    let mut p = Passthrough::default();
    let (mut state, mut held) = (SessionState::off(), Held::default());
    let mut reply = |buf: &[u8], p: &mut Passthrough, out: &mut BytesMut| {
        let side = ServerSide {
            tracker: &mut t,
            server_params: &mut sp,
            client_params: &mut cp,
            state: &mut state,
            server_held: &mut held,
        };
        let s = scan_server(buf, p, side, &mut f.context(10), out).unwrap();
        match s.composed {
            true => out.to_vec(),
            false => buf[s.swallow..s.end].to_vec(),
        }
    };
    let mut got = reply(&first, &mut p, &mut out);
    assert!(p.mid_message());
    got.extend(reply(&[], &mut p, &mut out));
    got.extend(reply(&description[7..], &mut p, &mut out));
    let want = concat(&[first, description[7..].to_vec(), msg(b'1', b"")]);
    assert_eq!(got, want, "ParseComplete after the whole RowDescription");
}

/// Both scans with session state followed: what the server is sent, what the client gets.
fn with_state(
    state: &mut SessionState,
    held: &mut Held,
    requests: &[u8],
    replies: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let mut f = Fixture::default();
    let mut t = Tracker::new();
    let mut out = BytesMut::new();
    let s = scan_client(
        requests,
        &mut Passthrough::default(),
        &mut t,
        &mut f.context(0),
        state,
        &mut out,
    )
    .unwrap();
    let sent = match s.composed {
        true => out.to_vec(),
        false => requests[s.skip..s.forward].to_vec(),
    };
    let (mut sp, mut cp) = (ParamSet::default(), ParamSet::default());
    let side = ServerSide {
        tracker: &mut t,
        server_params: &mut sp,
        client_params: &mut cp,
        state,
        server_held: held,
    };
    let mut out = BytesMut::new();
    let s = scan_server(
        replies,
        &mut Passthrough::default(),
        side,
        &mut f.context(0),
        &mut out,
    )
    .unwrap();
    let got = match s.composed {
        true => out.to_vec(),
        false => replies[s.swallow..s.end].to_vec(),
    };
    assert_eq!(t.verdict(), Verdict::Idle);
    (sent, got)
}

#[test]
fn a_statement_past_the_pin_cap_never_reaches_the_server() {
    let mut state = SessionState::new(true, Default::default(), 0);
    let mut held = Held::default();
    let query = msg(b'Q', b"CREATE TEMP TABLE t (x int)\0");
    let error = msg(b'E', b"SERROR\0C26000\0Mno such statement\0\0");
    let replies = concat(&[error, msg(b'Z', b"I")]);
    let (sent, got) = with_state(&mut state, &mut held, &query, &replies);
    assert_eq!(sent[0], b'D', "a Describe that fails goes in its place");
    assert_eq!(&sent[sent.len() - 5..], b"S\0\0\0\x04");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("C53400") && text.contains("max_pinned_servers"),
        "{text}"
    );
    assert_eq!(&got[got.len() - 6..], &msg(b'Z', b"I")[..]);
    assert!(!state.pinned());
}

#[test]
fn a_set_is_followed_through_both_scans() {
    let mut state = SessionState::new(true, Default::default(), 1);
    let mut held = Held::default();
    let query = msg(b'Q', b"SELECT 1; SET work_mem = '8MB'\0");
    let replies = concat(&[
        msg(
            b'T',
            b"\0\x01x\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        ),
        msg(b'D', b"\0\x01\0\0\0\x011"),
        msg(b'C', b"SELECT 1\0"),
        msg(b'C', b"SET\0"),
        msg(b'Z', b"I"),
    ]);
    let (sent, got) = with_state(&mut state, &mut held, &query, &replies);
    assert_eq!(sent, query);
    assert_eq!(got, replies);
    assert_eq!(state.held().settings.len(), 1);
    assert_eq!(held, *state.held(), "the server's record follows");
}
