//! The relay's I/O loop against the pure scans: random client and server message streams,
//! written into pipes in random pieces, through pipes of random small capacities (so sockets
//! fill up all the time) and read off in random pieces, must forward exactly the bytes the
//! scans produce when given each stream whole, and leave the tracker with the same verdict.

use super::*;
use crate::prepared::{Fixture, Registry};
use crate::protocol::params::ParamSet;
use crate::relay::scan::{scan_client, scan_server};
use crate::session_state::{Held, SessionState};
use futures_util::FutureExt;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn cstrs(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v
}

/// A size that is now and then past what pgmux holds whole.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        12 => 0usize..300,
        4 => 300usize..40_000,
        1 => (HELD_LIMIT - 16)..(HELD_LIMIT + 5000),
    ]
}

fn filler(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i + seed as usize) % 26) as u8)
        .collect()
}

/// One client message, as drivers send them; statement names s0..s2, so that they repeat.
fn client_message() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![Just(String::new()), (0u8..3).prop_map(|k| format!("s{k}"))];
    prop_oneof![
        (0u8..4).prop_map(|k| msg(b'Q', &cstrs(&[format!("SELECT {k}").as_bytes()]))),
        (0u8..3).prop_map(|k| msg(b'Q', &cstrs(&[format!("DEALLOCATE s{k}").as_bytes()]))),
        (name.clone(), size(), any::<u8>()).prop_map(|(n, len, seed)| {
            let mut text = b"SELECT '".to_vec();
            text.extend(filler(len, seed));
            text.push(b'\'');
            let mut body = cstrs(&[n.as_bytes(), &text]);
            body.extend_from_slice(&[0, 0]);
            msg(b'P', &body)
        }),
        (name.clone(), size(), any::<u8>()).prop_map(|(n, len, seed)| {
            let mut body = cstrs(&[b"", n.as_bytes()]);
            body.extend_from_slice(&[0, 0, 0, 1]);
            body.extend_from_slice(&(len as u32).to_be_bytes());
            body.extend(filler(len, seed));
            body.extend_from_slice(&[0, 0]);
            msg(b'B', &body)
        }),
        name.clone()
            .prop_map(|n| msg(b'D', &[b"S".as_slice(), &cstrs(&[n.as_bytes()])].concat())),
        Just(msg(b'D', b"P\0")),
        Just(msg(b'E', b"\0\0\0\0\0")),
        name.prop_map(|n| msg(b'C', &[b"S".as_slice(), &cstrs(&[n.as_bytes()])].concat())),
        Just(msg(b'S', b"")),
        Just(msg(b'H', b"")),
    ]
}

/// One server message of the kinds PostgreSQL sends while a client is linked.
fn server_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(msg(b'1', b"")),
        Just(msg(b'2', b"")),
        Just(msg(b'3', b"")),
        Just(msg(b'n', b"")),
        Just(msg(b't', &[0, 1, 0, 0, 0, 23])),
        Just(msg(b'T', &[&[0, 1][..], b"x\0", &[0; 18]].concat())),
        (size(), any::<u8>()).prop_map(|(len, seed)| {
            let mut body = vec![0, 1];
            body.extend_from_slice(&(len as u32).to_be_bytes());
            body.extend(filler(len, seed));
            msg(b'D', &body)
        }),
        Just(msg(b'C', b"SELECT 1\0")),
        Just(msg(b'C', b"DEALLOCATE ALL\0")),
        prop_oneof![Just(b'I'), Just(b'T'), Just(b'E')].prop_map(|s| msg(b'Z', &[s])),
        Just(msg(b'E', b"SERROR\0C42601\0Msyntax error\0\0")),
        Just(msg(b'S', b"TimeZone\0UTC\0")),
        Just(msg(b'N', b"SNOTICE\0C00000\0Mhello\0\0")),
        Just(msg(b's', b"")),
        Just(msg(b'I', b"")),
    ]
}

/// How the bytes travel: pipe capacities, and the seed of the pieces' sizes and pauses.
#[derive(Debug, Clone)]
struct Plan {
    client_pipe: usize,
    server_pipe: usize,
    seed: u64,
    capacity: usize,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        1usize..9000,
        1usize..9000,
        any::<u64>(),
        prop_oneof![Just(0usize), Just(2), Just(20)],
    )
        .prop_map(|(client_pipe, server_pipe, seed, capacity)| Plan {
            client_pipe,
            server_pipe,
            seed,
            capacity,
        })
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    verdict: Verdict,
}

/// What the scans make of each stream given whole: the client's first, then the server's.
fn delivered_whole(client: &[u8], server: &[u8], capacity: usize) -> Outcome {
    let mut f = Fixture::default();
    let mut tracker = crate::prepared::StatementTracker::new();
    let (mut pass, mut out) = (Passthrough::default(), BytesMut::new());
    let (mut to_server, mut pos) = (Vec::new(), 0);
    loop {
        let input = &client[pos..];
        let mut context = f.context(capacity);
        let mut state = SessionState::off();
        let scan = scan_client(
            input,
            &mut pass,
            &mut tracker,
            &mut context,
            &mut state,
            &mut out,
        )
        .unwrap();
        match scan.composed {
            true => to_server.extend_from_slice(&out),
            false => to_server.extend_from_slice(&input[scan.skip..scan.forward]),
        }
        pos += scan.forward;
        if !scan.more {
            break;
        }
    }
    assert_eq!(pos, client.len(), "every client message scanned");
    let (mut server_params, mut client_params) = (ParamSet::default(), ParamSet::default());
    let (mut state, mut held) = (SessionState::off(), Held::default());
    let side = ServerSide {
        tracker: &mut tracker,
        server_params: &mut server_params,
        client_params: &mut client_params,
        state: &mut state,
        server_held: &mut held,
    };
    let mut pass = Passthrough::default();
    let mut context = f.context(capacity);
    let scan = scan_server(server, &mut pass, side, &mut context, &mut out).unwrap();
    assert_eq!(scan.end, server.len(), "every server message scanned");
    let to_client = match scan.composed {
        true => out.to_vec(),
        false => server[scan.swallow..].to_vec(),
    };
    Outcome {
        to_server,
        to_client,
        verdict: tracker.verdict(),
    }
}

/// Writes `bytes` in random pieces with random pauses; then, if `close`, ends the stream.
async fn write_in_pieces(
    mut to: impl tokio::io::AsyncWrite + Unpin,
    bytes: Vec<u8>,
    seed: u64,
    close: bool,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pos = 0;
    while pos < bytes.len() {
        let piece = rng
            .gen_range(1..=bytes.len() - pos)
            .min(rng.gen_range(1..70_000));
        to.write_all(&bytes[pos..pos + piece]).await.unwrap();
        pos += piece;
        for _ in 0..rng.gen_range(0..3) {
            tokio::task::yield_now().await;
        }
    }
    if close {
        to.shutdown().await.unwrap();
    }
}

/// Reads everything that comes, in random pieces with random pauses, into `into`.
async fn read_in_pieces(
    mut from: impl tokio::io::AsyncRead + Unpin,
    into: Arc<Mutex<Vec<u8>>>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 70_000];
    loop {
        let want = rng.gen_range(1..buf.len());
        match from.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
        }
        for _ in 0..rng.gen_range(0..3) {
            tokio::task::yield_now().await;
        }
    }
}

/// The relay with a client and a server on in-memory pipes.
struct Rig<'r> {
    linked: Linked,
    /// Whether steps return on a change of phase too (as with timeouts set).
    watch_phase: bool,
    stream: Stream,
    buf: BytesMut,
    params: ParamSet,
    statements: Statements<'r>,
    composed: Composed,
    state: SessionState,
}

/// What one poll of a step came to.
enum Polled {
    Pending,
    Stepped,
    /// The client's end of its pipe was closed and the relay has read all it sent.
    ClientClosed,
}

impl Rig<'_> {
    /// Polls one step once, dropping it when pending (a step must be cancel-safe), then lets
    /// the pipes' other ends run.
    async fn poll_once(&mut self) -> Polled {
        let mut side = ClientSide {
            stream: &mut self.stream,
            buf: &mut self.buf,
            params: &mut self.params,
            statements: &mut self.statements,
            composed: &mut self.composed,
            state: &mut self.state,
        };
        let polled = match self.linked.step(&mut side, self.watch_phase).now_or_never() {
            None => Polled::Pending,
            Some(Ok(_)) => Polled::Stepped,
            Some(Err(RelayError::ClientClosed)) => Polled::ClientClosed,
            Some(Err(e)) => panic!("relay failed: {e}"),
        };
        tokio::task::yield_now().await;
        polled
    }
}

/// Reads what the other end of a pipe got so far.
fn got(bytes: &Mutex<Vec<u8>>) -> usize {
    bytes.lock().unwrap().len()
}

/// Steps the relay may take before a case counts as stuck: enough for every byte to cross
/// the smaller pipe a few times over.
fn step_limit(client: &[u8], server: &[u8], plan: &Plan, whole: &Outcome) -> usize {
    let narrowest = plan.client_pipe.min(plan.server_pipe);
    let bytes = client.len() + server.len() + whole.to_server.len() + whole.to_client.len();
    10_000 + 8 * bytes / narrowest
}

/// What the relay's loop makes of the same streams, coming in pieces through small pipes. The
/// server side answers only once the relay has scanned everything the client sent, as in
/// [`delivered_whole`]: the client closes its end, and the relay says so once it has read
/// and scanned all of it.
async fn delivered_in_pieces(
    client: Vec<u8>,
    server: Vec<u8>,
    plan: Plan,
    whole: &Outcome,
) -> Outcome {
    let limit = step_limit(&client, &server, &plan, whole);
    let (relay_client, peer_client) = tokio::io::duplex(plan.client_pipe);
    let (relay_server, peer_server) = tokio::io::duplex(plan.server_pipe);
    let (peer_client_read, peer_client_write) = tokio::io::split(peer_client);
    let (peer_server_read, peer_server_write) = tokio::io::split(peer_server);
    let to_server: Arc<Mutex<Vec<u8>>> = Arc::default();
    let to_client: Arc<Mutex<Vec<u8>>> = Arc::default();
    tokio::spawn(read_in_pieces(
        peer_server_read,
        to_server.clone(),
        plan.seed ^ 1,
    ));
    tokio::spawn(read_in_pieces(
        peer_client_read,
        to_client.clone(),
        plan.seed ^ 2,
    ));
    tokio::spawn(write_in_pieces(peer_client_write, client, plan.seed, true));

    let registry = Registry::default();
    let mut composed = Composed::default();
    let server_conn = PooledServer::detached(ServerConn::over(Stream::Memory(relay_server)));
    let linked = Linked::new(
        server_conn,
        PoolMode::Session,
        &Prelude::default(),
        &mut composed,
    );
    let mut rig = Rig {
        linked,
        watch_phase: plan.seed % 2 == 0,
        stream: Stream::Memory(relay_client),
        buf: BytesMut::new(),
        params: ParamSet::default(),
        statements: Statements {
            client: Default::default(),
            registry: &registry,
            capacity: plan.capacity,
        },
        composed,
        state: SessionState::off(),
    };
    let mut steps = 0;
    while !matches!(rig.poll_once().await, Polled::ClientClosed) {
        steps += 1;
        assert!(
            steps < limit,
            "stuck reading the client: {} bytes to the server",
            got(&to_server)
        );
    }
    let writer = tokio::spawn(write_in_pieces(
        peer_server_write,
        server,
        plan.seed ^ 3,
        false,
    ));
    loop {
        rig.poll_once().await;
        let linked = &rig.linked;
        let quiet = writer.is_finished()
            && linked.server.buf.is_empty()
            && !linked.server_pass.mid_message()
            && linked.to_client == Outgoing::Empty
            && got(&to_client) >= whole.to_client.len()
            && got(&to_server) >= whole.to_server.len();
        if quiet {
            break;
        }
        steps += 1;
        assert!(
            steps < limit,
            "stuck: {} of {} bytes to the client, {} of {} to the server",
            got(&to_client),
            whole.to_client.len(),
            got(&to_server),
            whole.to_server.len()
        );
    }
    // Whatever more the relay would send reaches the pipes' ends, to be caught.
    for _ in 0..64 {
        rig.poll_once().await;
    }
    let to_server = to_server.lock().unwrap().clone();
    let to_client = to_client.lock().unwrap().clone();
    Outcome {
        to_server,
        to_client,
        verdict: rig.linked.tracker().verdict(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pieces_and_full_sockets_change_nothing(
        client in proptest::collection::vec(client_message(), 1..30),
        server in proptest::collection::vec(server_message(), 0..30),
        plan in plan(),
    ) {
        let (client, server) = (client.concat(), server.concat());
        let whole = delivered_whole(&client, &server, plan.capacity);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let pieces = runtime.block_on(delivered_in_pieces(client, server, plan, &whole));
        prop_assert_eq!(pieces.verdict, whole.verdict);
        prop_assert!(
            pieces.to_server == whole.to_server,
            "bytes to the server differ: {} in pieces, {} whole",
            pieces.to_server.len(),
            whole.to_server.len()
        );
        prop_assert!(
            pieces.to_client == whole.to_client,
            "bytes to the client differ: {} in pieces, {} whole",
            pieces.to_client.len(),
            whole.to_client.len()
        );
    }
}
