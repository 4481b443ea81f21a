//! Client pipelines through the rewriting and the relay, at the message level: what reaches the
//! server, and what the client gets back for the server's replies.

use super::Fixture;
use crate::protocol::params::ParamSet;
use crate::relay::{scan_client, scan_server, Passthrough, ServerSide};
use crate::session_state::{Held, SessionState};
use crate::tracker::{Tracker, Verdict};
use bytes::{BufMut, BytesMut};

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.put_u32((body.len() + 4) as u32);
    v.extend_from_slice(body);
    v
}

fn parse(name: &str, query: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{query}\0\0\0").as_bytes())
}

fn bind(name: &str) -> Vec<u8> {
    msg(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes())
}

fn describe(name: &str) -> Vec<u8> {
    msg(b'D', format!("S{name}\0").as_bytes())
}

fn close(name: &str) -> Vec<u8> {
    msg(b'C', format!("S{name}\0").as_bytes())
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

/// Messages as `tag` or `tag:first-string` (the name a Parse, Bind, Describe or Close carries).
fn summary(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let (m, rest) = bytes.split_at(len + 1);
        let tag = m[0] as char;
        let body = &m[5..];
        let name = match tag {
            'P' => body.split(|&b| b == 0).next(),
            'B' => body.split(|&b| b == 0).nth(1),
            'D' | 'C' if body.first() == Some(&b'S') => body[1..].split(|&b| b == 0).next(),
            'E' => body
                .split(|&b| b == 0)
                .find(|f| f.first() == Some(&b'C'))
                .map(|f| &f[1..]),
            _ => None,
        };
        out.push(match name {
            Some(n) => format!("{tag}:{}", String::from_utf8_lossy(n)),
            None => tag.to_string(),
        });
        bytes = rest;
    }
    out
}

/// One client session's view of one server connection.
struct Wire {
    tracker: crate::prepared::StatementTracker,
    capacity: usize,
}

impl Wire {
    fn new(capacity: usize) -> Wire {
        Wire {
            tracker: Tracker::new(),
            capacity,
        }
    }

    /// What the server receives for these client messages (scanned again while a scan stops
    /// early to bound its output).
    fn send(&mut self, f: &mut Fixture, messages: &[Vec<u8>]) -> Vec<String> {
        let buf = messages.concat();
        let (mut sent, mut pos) = (Vec::new(), 0);
        let mut pass = Passthrough::default();
        loop {
            let mut out = BytesMut::new();
            let input = &buf[pos..];
            let scan = scan_client(
                input,
                &mut pass,
                &mut self.tracker,
                &mut f.context(self.capacity),
                &mut SessionState::off(),
                &mut out,
            )
            .unwrap();
            match scan.composed {
                true => sent.extend_from_slice(&out),
                false => sent.extend_from_slice(&input[scan.skip..scan.forward]),
            }
            pos += scan.forward;
            if !scan.more {
                break;
            }
        }
        assert_eq!(pos, buf.len());
        summary(&sent)
    }

    /// What the client receives for these server messages (and answers due before them).
    fn reply(&mut self, f: &mut Fixture, messages: &[Vec<u8>]) -> Vec<String> {
        let buf = messages.concat();
        let mut out = BytesMut::new();
        let (mut sp, mut cp) = (ParamSet::default(), ParamSet::default());
        let (mut state, mut held) = (SessionState::off(), Held::default());
        let side = ServerSide {
            tracker: &mut self.tracker,
            server_params: &mut sp,
            client_params: &mut cp,
            state: &mut state,
            server_held: &mut held,
        };
        let scan = scan_server(
            &buf,
            &mut Passthrough::default(),
            side,
            &mut f.context(self.capacity),
            &mut out,
        )
        .unwrap();
        assert_eq!(scan.end, buf.len());
        summary(match scan.composed {
            true => &out,
            false => &buf[scan.swallow..],
        })
    }
}

fn ok(tag: u8) -> Vec<u8> {
    msg(tag, b"")
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn error(code: &str) -> Vec<u8> {
    msg(b'E', format!("SERROR\0C{code}\0Mboom\0\0").as_bytes())
}

#[test]
fn named_statements_get_pgmux_names_and_unnamed_pass() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    let sent = w.send(
        &mut f,
        &[
            parse("s1", "select 1"),
            bind("s1"),
            parse("", "select 2"),
            bind(""),
            sync(),
        ],
    );
    assert_eq!(sent, ["P:PGMUX_1", "B:PGMUX_1", "P:", "B:", "S"]);
    let got = w.reply(&mut f, &[ok(b'1'), ok(b'2'), ok(b'1'), ok(b'2'), ready()]);
    assert_eq!(got, ["1", "2", "1", "2", "Z"]);
    assert_eq!(w.tracker.verdict(), Verdict::Idle);
    assert_eq!((f.counts.client_parses, f.counts.server_parses), (1, 1));
}

#[test]
fn another_server_is_prepared_inside_the_pipeline_and_the_reply_hidden() {
    let mut f = Fixture::default();
    let mut first = Wire::new(10);
    first.send(&mut f, &[parse("s1", "select 1"), sync()]);
    first.reply(&mut f, &[ok(b'1'), ready()]);
    // The next transaction lands on a fresh server.
    f.server = Default::default();
    let mut second = Wire::new(10);
    let sent = second.send(&mut f, &[bind("s1"), msg(b'E', b"\0\0\0\0\0"), sync()]);
    assert_eq!(sent, ["P:PGMUX_1", "B:PGMUX_1", "E", "S"]);
    let got = second.reply(
        &mut f,
        &[ok(b'1'), ok(b'2'), msg(b'C', b"INSERT 0 1\0"), ready()],
    );
    assert_eq!(got, ["2", "C", "Z"], "ParseComplete hidden");
    // Describe too.
    f.server = Default::default();
    let mut third = Wire::new(10);
    let sent = third.send(&mut f, &[describe("s1"), sync()]);
    assert_eq!(sent, ["P:PGMUX_1", "D:PGMUX_1", "S"]);
}

#[test]
fn a_statement_the_server_has_is_answered_without_it() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    w.send(&mut f, &[parse("a", "select 1"), sync()]);
    w.reply(&mut f, &[ok(b'1'), ready()]);
    // Another client, same text, same server: no Parse goes out. The server's LRU keeps the
    // statement alive after the first client is gone.
    f.client = Default::default();
    let sent = w.send(&mut f, &[parse("b", "select 1"), bind("b"), sync()]);
    assert_eq!(sent, ["B:PGMUX_1", "S"]);
    let got = w.reply(&mut f, &[ok(b'2'), ready()]);
    assert_eq!(got, ["1", "2", "Z"], "ParseComplete answered in its turn");
    assert_eq!(f.counts.hits, 2);
}

#[test]
fn reusing_a_name_fails_like_postgres_and_skips_to_sync() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    w.send(&mut f, &[parse("a", "select 1"), sync()]);
    w.reply(&mut f, &[ok(b'1'), ready()]);
    let sent = w.send(&mut f, &[parse("a", "select 2"), bind("a"), sync()]);
    assert_eq!(
        sent,
        [
            "P:PGMUX_scratch",
            "C:PGMUX_scratch",
            "D:PGMUX_never",
            "B:PGMUX_1",
            "S"
        ]
    );
    let got = w.reply(&mut f, &[ok(b'1'), ok(b'3'), error("26000"), ready()]);
    assert_eq!(got, ["E:42P05", "Z"]);
    assert_eq!(f.client.get(b"a").map(|s| s.id), Some(1), "still the first");
    // A query that does not parse reports that first, as PostgreSQL does.
    w.send(&mut f, &[parse("a", "selec 2"), sync()]);
    let got = w.reply(&mut f, &[error("42601"), ready()]);
    assert_eq!(got, ["E:42601", "Z"]);
    assert_eq!(f.client.get(b"a").map(|s| s.id), Some(1));
}

#[test]
fn a_failed_parse_leaves_no_name_behind() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    w.send(&mut f, &[parse("a", "selec 1"), bind("a"), sync()]);
    let got = w.reply(&mut f, &[error("42601"), ready()]);
    assert_eq!(got, ["E:42601", "Z"]);
    assert!(f.client.get(b"a").is_none());
    assert!(f.server.is_empty());
    // The name is free again.
    let sent = w.send(&mut f, &[parse("a", "select 1"), sync()]);
    assert_eq!(sent, ["P:PGMUX_2", "S"]);
}

#[test]
fn messages_skipped_after_an_error_are_undone() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    w.send(&mut f, &[parse("a", "select 1"), sync()]);
    w.reply(&mut f, &[ok(b'1'), ready()]);
    // The first Bind fails; the Parse and Close after it never happen.
    w.send(
        &mut f,
        &[bind("nope"), parse("b", "select 2"), close("a"), sync()],
    );
    let got = w.reply(&mut f, &[error("26000"), ready()]);
    assert_eq!(got, ["E:26000", "Z"]);
    assert!(f.client.get(b"b").is_none(), "skipped Parse undone");
    assert!(f.client.get(b"a").is_some(), "skipped Close undone");
    assert!(!f.server.contains(2));
}

#[test]
fn close_drops_only_the_clients_name() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    w.send(&mut f, &[parse("a", "select 1"), sync()]);
    w.reply(&mut f, &[ok(b'1'), ready()]);
    let sent = w.send(&mut f, &[close("a"), sync()]);
    assert_eq!(sent, ["S"]);
    assert_eq!(w.reply(&mut f, &[ready()]), ["3", "Z"]);
    assert!(f.client.get(b"a").is_none());
    assert!(f.server.contains(1), "others may still use it");
    // pgmux's own names are not the client's to close.
    assert_eq!(w.send(&mut f, &[close("PGMUX_1"), sync()]), ["S"]);
}

#[test]
fn the_least_recently_used_statement_makes_room() {
    let mut f = Fixture::default();
    let mut w = Wire::new(2);
    w.send(
        &mut f,
        &[parse("a", "select 1"), parse("b", "select 2"), sync()],
    );
    w.reply(&mut f, &[ok(b'1'), ok(b'1'), ready()]);
    w.send(&mut f, &[bind("a"), sync()]);
    w.reply(&mut f, &[ok(b'2'), ready()]);
    let sent = w.send(&mut f, &[parse("c", "select 3"), sync()]);
    assert_eq!(
        sent,
        ["C:PGMUX_2", "P:PGMUX_3", "S"],
        "b was used least recently"
    );
    let got = w.reply(&mut f, &[ok(b'3'), ok(b'1'), ready()]);
    assert_eq!(got, ["1", "Z"], "CloseComplete hidden");
    assert_eq!(f.counts.evictions, 1);
    // b is prepared again, transparently, when next used.
    let sent = w.send(&mut f, &[bind("b"), sync()]);
    assert_eq!(sent, ["C:PGMUX_1", "P:PGMUX_2", "B:PGMUX_2", "S"]);
}

#[test]
fn deallocate_is_answered_by_pgmux_and_all_is_learned_from_the_server() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    w.send(
        &mut f,
        &[parse("a", "select 1"), parse("b", "select 2"), sync()],
    );
    w.reply(&mut f, &[ok(b'1'), ok(b'1'), ready()]);
    assert!(w.send(&mut f, &[query("DEALLOCATE a")]).is_empty());
    assert_eq!(w.reply(&mut f, &[]), ["C", "Z"]);
    assert!(f.client.get(b"a").is_none());
    assert_eq!(w.tracker.verdict(), Verdict::Idle);
    // Unknown names and DEALLOCATE ALL go to the server.
    assert_eq!(w.send(&mut f, &[query("DEALLOCATE zz")]), ["Q"]);
    w.reply(&mut f, &[error("26000"), ready()]);
    assert_eq!(w.send(&mut f, &[query("DEALLOCATE ALL")]), ["Q"]);
    w.reply(&mut f, &[msg(b'C', b"DEALLOCATE ALL\0"), ready()]);
    assert!(f.client.is_empty() && f.server.is_empty());
}

#[test]
fn capacity_zero_passes_everything_through() {
    let mut f = Fixture::default();
    let mut w = Wire::new(0);
    let sent = w.send(&mut f, &[parse("a", "select 1"), bind("a"), sync()]);
    assert_eq!(sent, ["P:a", "B:a", "S"]);
    assert!(f.client.is_empty());
}

#[test]
fn statements_are_shared_by_exact_bytes() {
    let r = super::Registry::default();
    let a = r.intern(b"select 1\0\0\0");
    let b = r.intern(b"select 1\0\0\0");
    let c = r.intern(b"select 1 \0\0\0");
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    assert_eq!(&*a.server_name, b"PGMUX_1\0");
    drop((a, b, c));
    assert_eq!(r.live(), 0);
}

#[test]
fn deallocate_in_a_failed_transaction_is_refused_and_keeps_the_name() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    w.send(&mut f, &[parse("a", "select 1"), sync()]);
    w.reply(&mut f, &[ok(b'1'), ready()]);
    assert_eq!(w.send(&mut f, &[query("SELECT 1/0")]), ["Q"]);
    w.reply(&mut f, &[error("22012"), msg(b'Z', b"E")]);
    assert!(w.send(&mut f, &[query("DEALLOCATE a")]).is_empty());
    assert_eq!(w.reply(&mut f, &[]), ["E:25P02", "Z"]);
    assert!(
        f.client.get(b"a").is_some(),
        "the refused DEALLOCATE took nothing away"
    );
}

#[test]
fn a_statement_too_large_to_keep_is_refused_on_another_server() {
    let mut f = Fixture::default();
    let mut w = Wire::new(10);
    let text = format!("select '{}'", "x".repeat(crate::relay::HELD_LIMIT));
    let sent = w.send(&mut f, &[parse("big", &text), bind("big"), sync()]);
    assert_eq!(
        sent,
        ["P:PGMUX_1", "B:PGMUX_1", "S"],
        "streamed under a name of its own"
    );
    assert_eq!(
        w.reply(&mut f, &[ok(b'1'), ok(b'2'), ready()]),
        ["1", "2", "Z"]
    );
    assert!(f.registry.live() == 0, "not shared through the registry");
    // Another server connection lacks it, and pgmux has no text to prepare it with: the
    // server is made to fail where the Bind stands, and skips the Bind.
    f.server = Default::default();
    let mut other = Wire::new(10);
    let sent = other.send(&mut f, &[bind("big"), sync()]);
    assert_eq!(sent, ["D:PGMUX_never", "B:PGMUX_1", "S"]);
    let got = other.reply(&mut f, &[error("XX000"), ready()]);
    assert_eq!(
        got,
        ["E:26000", "Z"],
        "pgmux's own error in place of the server's"
    );
    assert_eq!(other.tracker.verdict(), Verdict::Idle);
}
