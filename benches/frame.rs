//! Relay bookkeeping over pgbench-shaped traffic: 64 pipelined `pgbench -S` transactions, client
//! side then server side, as simple Queries (`-M simple`), with unnamed statements (`-M
//! extended`) and with a named statement rewritten to pgmux's name (`-M prepared`); each with
//! session state followed (`_state`, transaction mode's default: every statement's text is
//! read) and not.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgmux::prepared::{ClientStatements, Context, Counts, Registry, ServerStatements};
use pgmux::protocol::params::ParamSet;
use pgmux::relay::{scan_client, scan_server, Passthrough, ServerSide};
use pgmux::session_state::{Held, SessionState};
use pgmux::tracker::Tracker;

const QUERY: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\0";

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Replies to 64 transactions: ParseComplete and BindComplete where `parse` and `bind` say,
/// then the row and ReadyForQuery.
fn replies(parse: bool, bind: bool) -> Vec<u8> {
    let mut one = Vec::new();
    if parse {
        one.extend(msg(b'1', b""));
    }
    if bind {
        one.extend(msg(b'2', b""));
    }
    for m in [
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

/// `pgbench -S -M simple`: the value is in the text.
fn simple_requests() -> Vec<u8> {
    msg(
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\0",
    )
    .repeat(64)
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
fn round_trip(
    requests: &[u8],
    replies: &[u8],
    ctx: &mut Context,
    state: &mut SessionState,
    out: &mut BytesMut,
) {
    let mut tracker = Tracker::new();
    let scan = scan_client(
        requests,
        &mut Passthrough::default(),
        &mut tracker,
        ctx,
        state,
        out,
    )
    .unwrap();
    assert_eq!(scan.forward, requests.len());
    let (mut sp, mut cp) = (ParamSet::default(), ParamSet::default());
    let mut held = Held::default();
    let side = ServerSide {
        tracker: &mut tracker,
        server_params: &mut sp,
        client_params: &mut cp,
        state,
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
    let workloads = [
        (
            "simple_64_selects",
            simple_requests(),
            replies(false, false),
        ),
        ("unnamed_64_selects", requests(""), replies(true, true)),
        (
            "prepared_64_selects",
            requests("P0_1"),
            replies(false, true),
        ),
    ];
    for (name, requests, replies) in &workloads {
        group.throughput(Throughput::Bytes((requests.len() + replies.len()) as u64));
        for follows in [false, true] {
            let mut state = match follows {
                true => SessionState::new(true, Default::default(), 1),
                false => SessionState::off(),
            };
            let id = match follows {
                true => format!("{name}_state"),
                false => name.to_string(),
            };
            group.bench_function(id, |b| {
                b.iter(|| round_trip(requests, replies, &mut ctx, &mut state, &mut out))
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("session_state");
    let query = b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
    group.bench_function("classify_pgbench_select", |b| {
        b.iter(|| pgmux::session_state::classify(std::hint::black_box(query), true))
    });
    let mut state = SessionState::new(true, Default::default(), 1);
    let body = b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\0";
    group.bench_function("query_message", |b| {
        b.iter(|| state.on_client(b'Q', std::hint::black_box(body)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
