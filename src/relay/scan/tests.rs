use super::*;
use crate::prepared::Fixture;
use crate::server::tracker::Verdict;
use bytes::BytesMut;

/// scan_client with prepared statements off.
fn client(buf: &[u8], p: &mut Passthrough, t: &mut Tracker) -> Result<ClientScan, ProtocolError> {
    scan_client(
        buf,
        p,
        t,
        &mut Fixture::default().context(0),
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
    let side = ServerSide {
        tracker: t,
        server_params: sp,
        client_params: cp,
    };
    scan_server(
        buf,
        p,
        side,
        &mut Fixture::default().context(0),
        &mut BytesMut::new(),
    )
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
    let s = scan_client(&parse[..9], &mut p, &mut t, &mut f.context(10), &mut out).unwrap();
    assert_eq!((s.forward, s.want), (0, parse.len() - 9));
    assert!(!p.mid_message());
    let s = scan_client(&parse, &mut p, &mut t, &mut f.context(10), &mut out).unwrap();
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
