//! Relay bookkeeping over pgbench-shaped traffic: 64 pipelined `pgbench -S` transactions, client
//! side then server side, with unnamed statements (`-M extended`) and with a named statement
//! rewritten to pgmux's name (`-M prepared`).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgmux::prepared::{ClientStatements, Context, Counts, Registry, ServerStatements};
use pgmux::protocol::params::ParamSet;
use pgmux::relay::{scan_client, scan_server, Passthrough, ServerSide};
use pgmux::server::tracker::Tracker;
use pgmux::session_state::{Held, SessionState};

const QUERY: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\0";

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn replies(parse: bool) -> Vec<u8> {
    let mut one = Vec::new();
    if parse {
        one.extend(msg(b'1', b""));
    }
    for m in [
        msg(b'2', b""),
        msg(
            b'T',
            b"\0\x01abalance\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        ),
        msg(b'D', b"\0\x01\0\0\0\x04-123"),
        msg(b'C', b"SELECT 1\0"),
        msg(b'Z', b"I"),
    ] {
        one.extend(m);
    }
    one.repeat(64)
}

fn requests(statement: &str) -> Vec<u8> {
    let mut one = Vec::new();
    if statement.is_empty() {
        one.extend(msg(b'P', &[b"\0", QUERY].concat()));
    }
    let bind = [
        b"\0",
        statement.as_bytes(),
        b"\0\0\0\0\x01\0\0\0\x0512345\0\0",
    ]
    .concat();
    for m in [
        msg(b'B', &bind),
        msg(b'D', b"P\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ] {
        one.extend(m);
    }
    one.repeat(64)
}

/// One round trip of 64 transactions through both scans.
fn round_trip(requests: &[u8], replies: &[u8], ctx: &mut Context, out: &mut BytesMut) {
    let mut tracker = Tracker::new();
    let scan = scan_client(
        requests,
        &mut Passthrough::default(),
        &mut tracker,
        ctx,
        &mut SessionState::off(),
        out,
    )
    .unwrap();
    assert_eq!(scan.forward, requests.len());
    let (mut sp, mut cp) = (ParamSet::default(), ParamSet::default());
    let (mut state, mut held) = (SessionState::off(), Held::default());
    let side = ServerSide {
        tracker: &mut tracker,
        server_params: &mut sp,
        client_params: &mut cp,
        state: &mut state,
        server_held: &mut held,
    };
    let scan = scan_server(replies, &mut Passthrough::default(), side, ctx, out).unwrap();
    assert_eq!(scan.end, replies.len());
}

fn bench(c: &mut Criterion) {
    let registry = Registry::default();
    let mut client = ClientStatements::default();
    let mut server = ServerStatements::default();
    let statement = registry.intern(QUERY);
    client.insert("P0_1".into(), statement.clone());
    server.insert(statement);
    let mut counts = Counts::default();
    let mut ctx = Context {
        client: &mut client,
        server: &mut server,
        registry: &registry,
        capacity: 200,
        counts: &mut counts,
    };
    let mut out = BytesMut::new();
    let mut group = c.benchmark_group("relay_scan");
    let (unnamed, unnamed_replies) = (requests(""), replies(true));
    group.throughput(Throughput::Bytes(
        (unnamed.len() + unnamed_replies.len()) as u64,
    ));
    group.bench_function("unnamed_64_selects", |b| {
        b.iter(|| round_trip(&unnamed, &unnamed_replies, &mut ctx, &mut out))
    });
    let (named, named_replies) = (requests("P0_1"), replies(false));
    group.throughput(Throughput::Bytes(
        (named.len() + named_replies.len()) as u64,
    ));
    group.bench_function("prepared_64_selects", |b| {
        b.iter(|| round_trip(&named, &named_replies, &mut ctx, &mut out))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
