//! The linked state: one client and the server it borrowed, with bytes moving both ways at
//! once. Each direction has its own read, scan and write, and stops reading its source only
//! while what it already scanned has not been written: a full socket holds back only the side
//! that feeds it. So a client that writes a long pipeline while it reads the replies never
//! deadlocks against PostgreSQL, which stops reading once its own output is not drained.
//!
//! Memory per direction is the source's read buffer (a message held whole is at most
//! [`HELD_LIMIT`], everything else streams through in reads of [`CLIENT_READ`] and
//! [`READ_BUFFER`]) and, only when pgmux rewrites or answers something, a composed buffer of
//! about one scan's output. Timers and stop signals are the caller's: a step is cancel-safe,
//! since every byte read, scanned or written is recorded in `Linked` before it returns.

use super::outgoing::{drain, ClientSink, Outgoing, ServerSink};
use super::scan::{scan_client, scan_server, Passthrough, ServerSide, HELD_LIMIT};
use crate::config::PoolMode;
use crate::pool::PooledServer;
use crate::prepared::{Counts, StatementTracker, Statements, Token};
use crate::protocol::backend;
use crate::protocol::params::ParamSet;
use crate::protocol::ProtocolError;
use crate::server::{ServerConn, ServerError, READ_BUFFER};
use crate::session_state::SessionState;
use crate::stats::{micros, Counter, Timing};
use crate::stream::Stream;
use crate::tracker::Verdict;
use bytes::{Buf, BytesMut};
use std::task::{Context, Poll};
use thiserror::Error;
use tokio::time::Instant;

/// How much a read from the client asks for at least while linked.
pub const CLIENT_READ: usize = 8 * 1024;

/// A server read buffer grown past this for one large message is replaced when the server
/// goes back to the pool, so that an idle server keeps no more than a small one; likewise the
/// session's composed buffers when the link ends.
const BUFFER_KEPT: usize = 4 * READ_BUFFER;

/// Replies the server may owe before the client is read no further: a client that pipelines
/// without reading (or sends messages pgmux answers itself) is held back here, and what the
/// tracker keeps for it stays bounded (about 16 bytes an entry).
const OWED_LIMIT: usize = 16_384;

/// Why the relay stopped short.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("client connection: {0}")]
    Client(std::io::Error),
    #[error("client closed the connection")]
    ClientClosed,
    #[error("protocol violation: {0}")]
    ClientProtocol(ProtocolError),
    #[error("{0}")]
    Server(ServerError),
    #[error("transaction blocks not allowed in statement pooling mode")]
    TransactionInStatementMode,
    #[error("could not restore the client's session on a server: {0}")]
    SessionNotRestored(String),
}

/// What a step of the relay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bytes moved and what the session waits for changed (a query went out, the replies
    /// came): its timeout may differ now. Only when the session asked to watch for that.
    Progress,
    /// A transaction just ended and nothing is in flight: the server may go back now, with
    /// what the client is still owed handed over by [`Linked::unlink`].
    Idle,
    /// The client sent Terminate.
    Terminate,
}

/// What the relay touches of the client's while linked.
pub struct ClientSide<'a, 'r> {
    pub stream: &'a mut Stream,
    pub buf: &'a mut BytesMut,
    pub params: &'a mut ParamSet,
    pub statements: &'a mut Statements<'r>,
    pub composed: &'a mut Composed,
    pub state: &'a mut SessionState,
}

/// Output composed when it is not the input as it came (prepared statements rewritten,
/// answers of pgmux's own), one buffer per direction. Kept by the session and reused.
#[derive(Debug, Default)]
pub struct Composed {
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Composed {
    /// What is composed for the client and not yet written ([`Tail::Composed`]).
    pub fn to_client(&self) -> &[u8] {
        &self.to_client
    }

    /// Empties both, and gives back the room one grew to for a large message.
    pub fn clear(&mut self) {
        for buf in [&mut self.to_server, &mut self.to_client] {
            match buf.capacity() > BUFFER_KEPT {
                true => *buf = BytesMut::new(),
                false => buf.clear(),
            }
        }
    }
}

/// pgmux's own statements that go ahead of a client's on the server it was just given: the
/// tracked parameters and settings in one Query, then each SQL prepared statement in its own
/// (one that fails costs only itself).
#[derive(Debug, Default)]
pub struct Prelude {
    pub sql: Option<String>,
    pub prepares: Vec<(String, std::sync::Arc<str>)>,
    /// The client's own messages wait for the prelude's answers: it gives the server the
    /// client's settings, and should that fail, the client's statements must not run there.
    pub wait: bool,
}

/// Where the relay is with the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientInput {
    /// Bytes are buffered that were not scanned yet.
    Unscanned,
    /// Everything buffered was scanned: read more.
    Scanned,
    /// The client sent Terminate: what came before it goes out, then the relay stops.
    Terminated,
}

/// What the client is still owed when the server goes back to the pool.
#[derive(Debug)]
pub enum Tail {
    Nothing,
    /// Written, but TLS may still hold some of it.
    Flush,
    Bytes(BytesMut),
    /// In the session's composed buffer.
    Composed,
}

/// A client linked to a borrowed server.
pub struct Linked {
    server: PooledServer,
    mode: PoolMode,
    client_pass: Passthrough,
    server_pass: Passthrough,
    to_server: Outgoing,
    to_client: Outgoing,
    client_input: ClientInput,
    /// Server bytes buffered that were not scanned yet.
    server_unscanned: bool,
    /// Bytes still missing from a message each side must see whole.
    client_want: usize,
    server_want: usize,
    /// The relay fails with this once what precedes it has reached the client.
    closing: Option<RelayError>,
    transaction_started: Option<Instant>,
    query_started: Option<Instant>,
    /// Prepared-statement work of the scan under way; added to the pool's statistics when
    /// the scan ends, before what it queued is forwarded.
    counts: Counts,
    /// Transactions that ended on this link, for the session's transaction_timeout.
    transactions: u64,
    /// The client's messages wait until the prelude is answered (see [`Prelude::wait`]); set
    /// until the client is first scanned, so that the link is not at rest before then.
    prelude_pending: bool,
}

impl Linked {
    /// Links `server`; `prelude`, pgmux's own statements that give the server the client's
    /// session, goes first and its replies are swallowed.
    pub fn new(
        mut server: PooledServer,
        mode: PoolMode,
        prelude: &Prelude,
        composed: &mut Composed,
    ) -> Linked {
        composed.to_server.clear();
        if let Some(sql) = &prelude.sql {
            backend::query(&mut composed.to_server, sql);
            server.tracker.own_query();
        }
        for (name, sql) in &prelude.prepares {
            backend::query(&mut composed.to_server, sql);
            server.tracker.own_query_with(Token::Replay(name.clone()));
        }
        let to_server = match composed.to_server.is_empty() {
            true => Outgoing::Empty,
            false => Outgoing::Composed,
        };
        Linked {
            server,
            mode,
            client_pass: Passthrough::Between,
            server_pass: Passthrough::Between,
            to_server,
            to_client: Outgoing::Empty,
            client_input: ClientInput::Unscanned,
            server_unscanned: false,
            client_want: 0,
            server_want: 0,
            closing: None,
            transaction_started: None,
            query_started: None,
            counts: Counts::default(),
            transactions: 0,
            prelude_pending: prelude.wait,
        }
    }

    pub fn server(&self) -> &ServerConn {
        &self.server
    }

    pub fn tracker(&self) -> &StatementTracker {
        &self.server.tracker
    }

    /// The server cannot be trusted any more (a timeout or a kill cut its exchange short).
    pub fn poison(&mut self) {
        self.server.tracker.poison();
    }

    /// Moves bytes both ways until something happened; see [`Step`]. With `watch_phase`, it
    /// also returns once the client starts or stops waiting on the server, or a transaction
    /// opens or ends (the session's timeouts follow these); without it, it goes on until the
    /// transaction ends, which saves a round of polling per transaction.
    pub async fn step(
        &mut self,
        client: &mut ClientSide<'_, '_>,
        watch_phase: bool,
    ) -> Result<Step, RelayError> {
        let phase = self.phase();
        std::future::poll_fn(|cx| match self.poll_step(cx, client) {
            Poll::Ready(Ok(Step::Progress)) if !watch_phase || self.phase() == phase => {
                Poll::Pending
            }
            other => other,
        })
        .await
    }

    /// What the session's timeouts depend on: whether replies are owed, whether a
    /// transaction is open, and how many ended (a pipeline may end one after another while
    /// replies are owed all along).
    fn phase(&self) -> (bool, bool, u64) {
        let tracker = &self.server.tracker;
        (
            tracker.awaiting_reply(),
            tracker.in_transaction(),
            self.transactions,
        )
    }

    /// Transactions that ended on this link.
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    /// Ends the link: the server, to go back to its pool (or be closed if anything is left
    /// in flight), and what the client is still owed, to be written after it went back.
    pub fn unlink(mut self) -> (PooledServer, Tail) {
        let tail = match self.to_client {
            Outgoing::Empty => Tail::Nothing,
            Outgoing::Flushing => Tail::Flush,
            Outgoing::Composed => Tail::Composed,
            Outgoing::Read(n) => Tail::Bytes(self.server.buf.split_to(n)),
        };
        let in_flight = self.client_pass.mid_message()
            || self.server_pass.mid_message()
            || self.to_server != Outgoing::Empty
            || !self.server.buf.is_empty();
        if in_flight {
            // A message cut in two, or bytes one side never got: never pool such a server.
            self.server.tracker.poison();
        } else if self.server.buf.capacity() > BUFFER_KEPT {
            self.server.buf = BytesMut::with_capacity(READ_BUFFER);
        }
        (self.server, tail)
    }

    /// Whether the server may go back: idle, nothing in flight either way.
    fn at_rest(&self) -> bool {
        let unsent = match self.to_client {
            Outgoing::Read(n) => n,
            _ => 0,
        };
        self.server.tracker.verdict() == Verdict::Idle
            && !self.prelude_pending
            && !self.client_pass.mid_message()
            && !self.server_pass.mid_message()
            && self.to_server == Outgoing::Empty
            && self.server.buf.len() == unsent
    }

    /// One round: scan what is buffered and write what was scanned, each direction on its own,
    /// then read more from each side whose output is all written; again while a read brought
    /// bytes or there is more to scan. Reads come last, so that a round polls each socket
    /// once: a read that finds nothing parks this task on it (and costs a lock in tokio).
    fn poll_step(
        &mut self,
        cx: &mut Context<'_>,
        c: &mut ClientSide<'_, '_>,
    ) -> Poll<Result<Step, RelayError>> {
        let mut progressed = false;
        loop {
            let client_open = self.client_open();
            if client_open && self.closing.is_none() {
                match self.client_input {
                    ClientInput::Terminated => return Poll::Ready(Ok(Step::Terminate)),
                    ClientInput::Unscanned => {
                        self.scan_client(c)?;
                        progressed = true;
                    }
                    ClientInput::Scanned => {}
                }
            }
            let mut maybe_idle = false;
            if let Poll::Ready(written) = self.poll_to_server(cx, c) {
                written?;
                progressed = true;
                // The client's last bytes may have been all that kept the server.
                maybe_idle = self.to_server == Outgoing::Empty;
            }
            if self.to_client == Outgoing::Empty && self.closing.is_none() && self.server_ready() {
                self.scan_server(c)?;
                progressed = true;
                maybe_idle = true;
            }
            if let Poll::Ready(written) = self.poll_to_client(cx, c) {
                written?;
                progressed = true;
            }
            if self.to_client == Outgoing::Empty {
                if let Some(error) = self.closing.take() {
                    return Poll::Ready(Err(error));
                }
            }
            if maybe_idle && self.at_rest() {
                return Poll::Ready(Ok(Step::Idle));
            }
            // Nothing more to do with what is here: read more, where the output is written.
            let mut read = false;
            if self.to_client == Outgoing::Empty && self.closing.is_none() && !self.server_ready() {
                if let Poll::Ready(result) = self.server.poll_read_more(cx, self.server_want) {
                    result.map_err(RelayError::Server)?;
                    self.server_unscanned = true;
                    read = true;
                }
            }
            let client_open = self.client_open();
            if client_open && self.closing.is_none() && self.client_input == ClientInput::Scanned {
                let want = self.client_want;
                if let Poll::Ready(result) = c.stream.poll_fill(cx, c.buf, want, CLIENT_READ) {
                    match result {
                        Ok(0) => return Poll::Ready(Err(RelayError::ClientClosed)),
                        Ok(_) => self.client_input = ClientInput::Unscanned,
                        Err(e) => return Poll::Ready(Err(RelayError::Client(e))),
                    }
                    read = true;
                }
            }
            let more_to_scan = (client_open && self.client_input != ClientInput::Scanned)
                || (self.to_client == Outgoing::Empty && self.server_ready())
                || (self.to_client == Outgoing::Empty && self.closing.is_some());
            if !read && !more_to_scan {
                break;
            }
            progressed = true;
        }
        // Every source that could make more progress was polled in the last round and
        // registered this task, so Pending is safe after progress too.
        match progressed {
            true => Poll::Ready(Ok(Step::Progress)),
            false => Poll::Pending,
        }
    }

    /// Whether the client's messages may be read and sent: what was scanned is written, the
    /// server owes less than the limit, and no prelude the client waits for is unanswered.
    fn client_open(&self) -> bool {
        self.to_server == Outgoing::Empty
            && self.server.tracker.owed() < OWED_LIMIT
            && !(self.prelude_pending && self.server.tracker.owes_own())
    }

    /// Whether server bytes are buffered unscanned, or an answer of pgmux's own is due (between
    /// messages).
    fn server_ready(&self) -> bool {
        self.server_unscanned
            || (self.server.tracker.answer_due() && !self.server_pass.mid_message())
    }

    /// Writes what is owed to the client. Ready once something was written (or flushed) or it
    /// failed.
    fn poll_to_client(
        &mut self,
        cx: &mut Context<'_>,
        c: &mut ClientSide<'_, '_>,
    ) -> Poll<Result<(), RelayError>> {
        let mut sink = ClientSink(&mut *c.stream);
        let source = (&mut self.server.buf, &mut c.composed.to_client);
        drain(cx, &mut self.to_client, source, &mut sink)
    }

    /// Writes what is owed to the server. Ready once something was written (or flushed) or it
    /// failed.
    fn poll_to_server(
        &mut self,
        cx: &mut Context<'_>,
        c: &mut ClientSide<'_, '_>,
    ) -> Poll<Result<(), RelayError>> {
        let mut sink = ServerSink(&mut self.server);
        let source = (&mut *c.buf, &mut c.composed.to_server);
        drain(cx, &mut self.to_server, source, &mut sink)
    }

    /// Scans the client's buffered bytes and queues what goes to the server.
    fn scan_client(&mut self, c: &mut ClientSide<'_, '_>) -> Result<(), RelayError> {
        self.prelude_pending = false;
        let server = &mut *self.server;
        let was_awaiting = server.tracker.awaiting_reply();
        let mut context = c
            .statements
            .context(&mut server.statements, &mut self.counts);
        c.composed.to_server.clear();
        let scan = scan_client(
            c.buf,
            &mut self.client_pass,
            &mut server.tracker,
            &mut context,
            c.state,
            &mut c.composed.to_server,
        );
        self.count_statements();
        let scan = scan.map_err(RelayError::ClientProtocol)?;
        self.client_input = match (scan.terminate, scan.more) {
            (true, _) => ClientInput::Terminated,
            (false, true) => ClientInput::Unscanned,
            (false, false) => ClientInput::Scanned,
        };
        self.client_want = scan.want;
        if scan.forward > 0 {
            let now = Instant::now();
            self.transaction_started.get_or_insert(now);
            if !was_awaiting {
                self.query_started.get_or_insert(now);
            }
            let stats = &self.server.pool().stats;
            stats.add(Counter::BytesReceived, scan.forward as u64);
        }
        self.to_server = if scan.composed {
            c.buf.advance(scan.forward);
            match c.composed.to_server.is_empty() {
                true => Outgoing::Empty,
                false => Outgoing::Composed,
            }
        } else {
            c.buf.advance(scan.skip);
            match scan.forward - scan.skip {
                0 => Outgoing::Empty,
                n => Outgoing::Read(n),
            }
        };
        Ok(())
    }

    /// Scans the server's buffered bytes (and answers pgmux owes) and queues what goes to the
    /// client, counting finished queries and transactions.
    fn scan_server(&mut self, c: &mut ClientSide<'_, '_>) -> Result<(), RelayError> {
        let server = &mut *self.server;
        let mut context = c
            .statements
            .context(&mut server.statements, &mut self.counts);
        let side = ServerSide {
            tracker: &mut server.tracker,
            server_params: &mut server.params,
            client_params: c.params,
            state: c.state,
            server_held: &mut server.session,
        };
        c.composed.to_client.clear();
        let scan = scan_server(
            &server.buf,
            &mut self.server_pass,
            side,
            &mut context,
            &mut c.composed.to_client,
        );
        let scan = match scan {
            Ok(scan) => scan,
            Err(e) => {
                server.tracker.poison();
                self.count_statements();
                return Err(RelayError::Server(ServerError::Protocol(e)));
            }
        };
        self.server_unscanned = false;
        self.server_want = scan.want;
        if let Some(message) = scan.restore_failed {
            self.closing = Some(RelayError::SessionNotRestored(message));
        }
        let len = if scan.composed {
            // The composed output stands for all of the scanned input.
            server.buf.advance(scan.end);
            c.composed.to_client.len()
        } else {
            server.buf.advance(scan.swallow);
            scan.end - scan.swallow
        };
        self.to_client = match (len, scan.composed) {
            (0, _) => Outgoing::Empty,
            (_, true) => Outgoing::Composed,
            (n, false) => Outgoing::Read(n),
        };
        self.count_statements();
        self.count(scan.queries_done, scan.transactions_done, len);
        if let (PoolMode::Statement, Some(at)) = (self.mode, scan.transaction_opened_at) {
            // Everything before the ReadyForQuery that opened the transaction, then the error.
            self.server.tracker.poison();
            self.to_client = match self.to_client {
                Outgoing::Composed => {
                    c.composed.to_client.truncate(at);
                    Outgoing::Composed
                }
                _ => Outgoing::Read(at),
            };
            if at == 0 {
                self.to_client = Outgoing::Empty;
            }
            self.closing = Some(RelayError::TransactionInStatementMode);
        }
        Ok(())
    }

    /// Adds the prepared-statement work of the scan just ended to the pool's statistics: before
    /// the scan's output goes anywhere, so a client that has its reply finds it counted.
    fn count_statements(&mut self) {
        if !self.counts.is_zero() {
            self.server.pool().stats.add_prepared(&self.counts);
            self.counts = Counts::default();
        }
    }

    fn count(&mut self, queries_done: u32, transactions_done: u32, bytes_sent: usize) {
        let stats = &self.server.pool().stats;
        stats.add(Counter::BytesSent, bytes_sent as u64);
        if queries_done > 0 {
            stats.add(Counter::Queries, queries_done as u64);
            if !self.server.tracker.awaiting_reply() {
                if let Some(started) = self.query_started.take() {
                    let took = started.elapsed();
                    stats.add(Counter::QueryTimeUs, micros(took));
                    stats.record(Timing::Query, took);
                }
            }
        }
        if transactions_done > 0 {
            self.transactions += u64::from(transactions_done);
            stats.add(Counter::Transactions, transactions_done as u64);
            if let Some(started) = self.transaction_started.take() {
                let took = started.elapsed();
                stats.add(Counter::TransactionTimeUs, micros(took));
                stats.record(Timing::Transaction, took);
            }
        }
    }
}

/// Whether a message this large may start a transaction before it is all there: it would be
/// streamed anyway, and waiting for all of it would hold it whole.
pub fn streams(message_len: usize) -> bool {
    message_len > STREAM_START
}

/// Messages larger than this start a transaction as soon as their header is in.
const STREAM_START: usize = 64 * 1024;

const _: () = assert!(STREAM_START < HELD_LIMIT);

#[cfg(test)]
mod tests;
