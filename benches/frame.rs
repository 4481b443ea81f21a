//! Frame scanning and relay bookkeeping over a pgbench-shaped reply buffer.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgmux::protocol::params::ParamSet;
use pgmux::relay::{scan_client, scan_server, Passthrough};
use pgmux::server::tracker::Tracker;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Replies to 64 pipelined `pgbench -S -M extended` transactions.
fn select_replies() -> Vec<u8> {
    let one = [
        msg(b'1', b""),
        msg(b'2', b""),
        msg(
            b'T',
            b"\0\x01abalance\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        ),
        msg(b'D', b"\0\x01\0\0\0\x04-123"),
        msg(b'C', b"SELECT 1\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    one.repeat(64)
}

fn select_requests() -> Vec<u8> {
    let one = [
        msg(
            b'P',
            b"\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\0",
        ),
        msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x0512345\0\0"),
        msg(b'D', b"P\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]
    .concat();
    one.repeat(64)
}

fn bench(c: &mut Criterion) {
    let replies = select_replies();
    let requests = select_requests();
    let mut group = c.benchmark_group("relay_scan");
    group.throughput(Throughput::Bytes(replies.len() as u64));
    group.bench_function("server_64_selects", |b| {
        b.iter(|| {
            let mut tracker = Tracker::new();
            for _ in 0..64 {
                tracker.client_message(b'S');
            }
            let (mut sp, mut cp) = (ParamSet::default(), ParamSet::default());
            let scan = scan_server(
                &replies,
                &mut Passthrough::default(),
                &mut tracker,
                &mut sp,
                &mut cp,
            )
            .unwrap();
            assert_eq!(scan.end, replies.len());
        })
    });
    group.throughput(Throughput::Bytes(requests.len() as u64));
    group.bench_function("client_64_selects", |b| {
        b.iter(|| {
            let mut tracker = Tracker::new();
            let scan = scan_client(&requests, &mut Passthrough::default(), &mut tracker).unwrap();
            assert_eq!(scan.forward, requests.len());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
