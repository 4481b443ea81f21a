//! Helpers shared by the fuzz targets: reading a fuzz input as a few control bytes and a payload,
//! cutting the payload into pieces as reads off a socket would, and driving the relay's scans
//! over those pieces the way `relay::link` does.

use bytes::BytesMut;
use pgmux::prepared::{ClientStatements, Context, Counts, Registry, ServerStatements};
use pgmux::protocol::params::ParamSet;
use pgmux::relay::{scan_client, scan_server, Passthrough, ServerSide};
use pgmux::session_state::{Held, PinSlots, SessionState};

/// The reply tracker a server connection keeps, as the scans take it. The one place the fuzz
/// targets name its type: if pgmux renames it, change it here.
pub use pgmux::prepared::StatementTracker as Tracker;

/// Whether to print every scan (set PGMUX_FUZZ_DEBUG=1 when running one input by hand).
pub fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("PGMUX_FUZZ_DEBUG").is_some())
}

/// Reads control bytes off the front of a fuzz input; past the end it reads zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Splits `data` at the lengths in `cuts` (each piece as long as its cut byte, or what is
/// left); whatever remains after the last cut is the final piece.
pub fn pieces<'a>(cuts: &[u8], mut data: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    for &cut in cuts {
        let (head, rest) = data.split_at((cut as usize).min(data.len()));
        out.push(head);
        data = rest;
    }
    out.push(data);
    out
}

/// max_prepared_statements for a run, from two bits of a control byte: off, tiny (every new
/// statement evicts), small, and one that never evicts in a fuzz-sized input.
pub fn capacity(bits: u8) -> usize {
    [0, 1, 10, 1000][(bits & 3) as usize]
}

/// A client's session state, following it (transaction pooling with the feature on) when bit
/// 7 is set, with room for one pinned server.
pub fn session_state(bits: u8) -> SessionState {
    SessionState::new(bits & 0x80 != 0, std::sync::Arc::new(PinSlots::default()), 1)
}

/// Owned state behind a prepared-statement [`Context`], as a client session and a server
/// connection hold it.
#[derive(Default)]
pub struct Statements {
    pub client: ClientStatements,
    pub server: ServerStatements,
    pub registry: Registry,
    pub counts: Counts,
}

impl Statements {
    pub fn context(&mut self, capacity: usize) -> Context<'_> {
        Context {
            client: &mut self.client,
            server: &mut self.server,
            registry: &self.registry,
            capacity,
            counts: &mut self.counts,
        }
    }
}

/// Follows the framing of a byte stream as its receiver sees it: how much of the current
/// message is still to come. Every byte pgmux sends is either a whole message it composed or a
/// message (whole or streamed in pieces) it read from the other side, so the stream it writes
/// must frame, and where it says it is mid-message the stream must be mid-message by as much.
#[derive(Default)]
pub struct Framing {
    /// A header being gathered (fewer than 5 bytes seen).
    header: Vec<u8>,
    /// Bytes of the current message's body still to come.
    remaining: usize,
    /// Message headers the receiver has seen.
    pub messages: u64,
}

impl Framing {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(bytes.len());
                self.remaining -= take;
                bytes = &bytes[take..];
                continue;
            }
            let need = 5 - self.header.len();
            let take = need.min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == 5 {
                let h = &self.header;
                let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                assert!(
                    len >= 4,
                    "pgmux wrote a message with length field {len} (tag {:?})",
                    h[0] as char
                );
                self.remaining = len - 4;
                self.header.clear();
                self.messages += 1;
            }
        }
    }

    /// Bytes still to come of the message the receiver is in; a partial header counts as
    /// usize::MAX, since pgmux forwards a message only once its whole header is there.
    pub fn mid_message(&self) -> Option<usize> {
        match (self.header.is_empty(), self.remaining) {
            (true, 0) => None,
            (true, n) => Some(n),
            (false, _) => Some(usize::MAX),
        }
    }
}

/// Checks that what the receiver has seen agrees with where pgmux says it is in a message:
/// forwarding the rest of one exactly when the output stopped inside it, by as many bytes.
fn check_framing(framing: &Framing, pass: &Passthrough, side: &str) {
    match (*pass, framing.mid_message()) {
        (Passthrough::Forwarding(n), Some(m)) if n == m => {}
        (Passthrough::Forwarding(n), got) => panic!(
            "{side}: pgmux is forwarding a message with {n} bytes to come, but its output \
             is {got:?} bytes from a message boundary (None: at one)"
        ),
        (Passthrough::Between | Passthrough::Dropping(_), None) => {}
        (pass, Some(m)) => panic!(
            "{side}: pgmux is {pass:?}, but its output stopped mid-message with {m} bytes to \
             come (usize::MAX: inside a header)"
        ),
    }
}

/// How many of the `available` bytes at the front of a buffer belong to a message being
/// dropped, so must not reach the other side.
fn dropping(pass: &Passthrough, available: usize) -> usize {
    match *pass {
        Passthrough::Dropping(n) => n.min(available),
        _ => 0,
    }
}

/// The client half of a relay: bytes read from the client wait in `buf`; each scan forwards
/// (or composes) what it can and the rest waits for the next read.
#[derive(Default)]
pub struct ClientDriver {
    pub buf: Vec<u8>,
    pub pass: Passthrough,
    pub out: BytesMut,
    /// The stream to the server, as the server would frame it.
    pub framing: Framing,
    /// The scan failed or the client sent Terminate: the relay is over.
    pub stopped: bool,
}

impl ClientDriver {
    /// Appends one read's worth of client bytes and scans, as the relay does, until the scan
    /// no longer asks to be called again. Returns false once the relay would have ended.
    pub fn feed(
        &mut self,
        piece: &[u8],
        tracker: &mut Tracker,
        ctx: &mut Context,
        state: &mut SessionState,
    ) -> bool {
        if self.stopped {
            return false;
        }
        self.buf.extend_from_slice(piece);
        // Refusing a statement that would pin composes its error.
        let rewriting = ctx.capacity > 0 || state.enabled();
        loop {
            let dropping = dropping(&self.pass, self.buf.len());
            self.out.clear();
            let scan = match scan_client(&self.buf, &mut self.pass, tracker, ctx, state, &mut self.out) {
                Ok(scan) => scan,
                Err(_) => {
                    self.stopped = true;
                    return false;
                }
            };
            if debug() {
                eprintln!(
                    "scan_client over {:02x?}\n  -> {scan:?}, {:?}, out {:02x?}",
                    self.buf, self.pass, &self.out[..]
                );
            }
            assert!(
                scan.forward <= self.buf.len(),
                "scan_client consumed {} bytes of {}",
                scan.forward,
                self.buf.len()
            );
            assert!(
                rewriting || !scan.composed,
                "scan_client composed output with prepared statements off"
            );
            // Uncomposed, the relay sends `skip..forward` of the input as it is.
            assert!(
                scan.composed || scan.skip >= dropping.min(scan.forward),
                "scan_client: the first {dropping} bytes are the rest of a message it drops, \
                 yet it says to forward from byte {} (composed: false)",
                scan.skip
            );
            match scan.composed {
                true => self.framing.feed(&self.out),
                false => self.framing.feed(&self.buf[scan.skip..scan.forward]),
            }
            self.buf.drain(..scan.forward);
            if scan.terminate {
                self.stopped = true;
                return false;
            }
            check_framing(&self.framing, &self.pass, "client to server");
            if !scan.more {
                return true;
            }
            assert!(
                scan.forward > 0,
                "scan_client asked to be called again without consuming anything"
            );
        }
    }
}

/// The server half of a relay.
#[derive(Default)]
pub struct ServerDriver {
    pub buf: Vec<u8>,
    pub pass: Passthrough,
    pub out: BytesMut,
    pub server_params: ParamSet,
    pub client_params: ParamSet,
    pub held: Held,
    /// The stream to the client, as the client would frame it.
    pub framing: Framing,
    pub stopped: bool,
}

/// Most rescans one read may take for answers pgmux owes; each must make progress.
const MAX_RESCANS: usize = 10_000;

impl ServerDriver {
    /// Appends one read's worth of server bytes and scans, then scans again while the tracker
    /// says an answer of pgmux's own is due between messages, as the relay does.
    pub fn feed(
        &mut self,
        piece: &[u8],
        tracker: &mut Tracker,
        ctx: &mut Context,
        state: &mut SessionState,
    ) -> bool {
        if self.stopped {
            return false;
        }
        self.buf.extend_from_slice(piece);
        for _ in 0..MAX_RESCANS {
            let dropping = dropping(&self.pass, self.buf.len());
            self.out.clear();
            let side = ServerSide {
                tracker: &mut *tracker,
                server_params: &mut self.server_params,
                client_params: &mut self.client_params,
                state: &mut *state,
                server_held: &mut self.held,
            };
            let scan = match scan_server(&self.buf, &mut self.pass, side, ctx, &mut self.out) {
                Ok(scan) => scan,
                Err(_) => {
                    tracker.poison();
                    self.stopped = true;
                    return false;
                }
            };
            if debug() {
                eprintln!(
                    "scan_server over {:02x?}\n  -> {scan:?}, {:?}, out {:02x?}",
                    self.buf, self.pass, &self.out[..]
                );
            }
            assert!(
                scan.swallow <= scan.end && scan.end <= self.buf.len(),
                "scan_server: swallow {} end {} of {} bytes",
                scan.swallow,
                scan.end,
                self.buf.len()
            );
            // Uncomposed, the relay drops the first `swallow` bytes and sends the rest up to `end`.
            assert!(
                scan.composed || scan.swallow >= dropping || scan.end == scan.swallow,
                "scan_server: the first {dropping} bytes are the rest of a message it drops, \
                 yet it swallows only {} of them (composed: false, end {})",
                scan.swallow,
                scan.end
            );
            match scan.composed {
                true => self.framing.feed(&self.out),
                false => self.framing.feed(&self.buf[scan.swallow..scan.end]),
            }
            self.buf.drain(..scan.end);
            check_framing(&self.framing, &self.pass, "server to client");
            // As the relay: an answer waits for the message passing in pieces to end.
            if !tracker.answer_due() || self.pass.mid_message() {
                return true;
            }
        }
        panic!("scan_server left an answer due after {MAX_RESCANS} scans");
    }
}
