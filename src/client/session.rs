//! A logged-in client's session, the policy around the relay: read the client's messages while
//! it holds no server, borrow a server when a transaction starts, relay until the transaction
//! ends (transaction and statement mode) or the client leaves (session mode), and give the
//! server back. Client timeouts and stop signals are enforced here, around each relay step.

mod moving;
mod pinning;

pub use moving::Restored;

use super::startup::Login;
use super::timeouts::{Expiry, Phase, Timeouts};
use super::waits::{read_holding_no_buffer, wait_turn, Deadlines};
use super::{ClientConn, ClientError};
use crate::config::PoolMode;
use crate::pool::{PooledServer, Waiter};
use crate::prepared::{ClientStatements, Statements};
use crate::protocol::frame;
use crate::registry::{ClientEntry, ClientState};
use crate::relay::{self, ClientSide, Composed, Linked, Prelude, RelayError, Step, Tail};
use crate::session_state::{Replay, SessionState};
use crate::shared::Shared;
use crate::signal::Stop;
use crate::stats::{micros, Counter, Timing};
use crate::tracker::Verdict;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Keeps SHOW CLIENTS' count of the client's statements current (a scan may add, drop or
/// restore names).
fn note_statements(statements: &Statements, login: &Login) {
    if statements.capacity > 0 {
        login
            .entry
            .prepared_statements
            .store(statements.client.len(), Ordering::Relaxed);
    }
}

struct Session<'a> {
    client: &'a mut ClientConn,
    /// Boxed: it lives as long as the session, and inline it would sit in the task twice.
    login: Box<Login>,
    /// The server this client holds, and the relay's state with it.
    linked: Option<Linked>,
    /// This client's place in its pool's line, reused for every wait.
    waiter: Waiter,
    /// Output the relay composes when it is not the input as it came; reused.
    composed: Composed,
    statements: Statements<'a>,
    timeouts: Timeouts,
    phase: Phase,
    phase_since: Instant,
    /// When the open transaction began, while transaction_timeout is set, and how many had
    /// ended on the link then.
    transaction_since: Option<(Instant, u64)>,
    /// server_reset_query, where it runs on release in this session's mode.
    reset_query: Option<String>,
    /// What of its session the client keeps across servers, and what pins it to one.
    state: SessionState,
    /// log_pinning (or verbose): each pin and unpin is logged.
    log_pinning: bool,
    shared_control: &'a crate::control::Control,
}

/// How a session's serving ended without an error.
enum Ended {
    /// The client left (Terminate).
    Left,
    /// A takeover asks for the client, and it is between transactions and can move.
    Moving,
}

/// Serves a logged-in client until it leaves, or until a takeover moves it to the new
/// process; a client moved here from another process starts with what it `restored`.
pub async fn run(
    client: &mut ClientConn,
    login: Box<Login>,
    shared: &Arc<Shared>,
    restored: Option<Box<Restored>>,
) -> Result<(), ClientError> {
    if shared.config().general.log_connections && restored.is_none() {
        tracing::info!(user = %login.entry.user, database = %login.entry.database, peer = %client.peer, "client connected");
    }
    // However the session ends, a panic included, the client leaves the registry, and its
    // place under the client caps with it.
    let _listed = shared.registry.listed(login.entry.id);
    let cancel_key = login.cancel_key;
    let config = shared.config();
    let general = &config.general;
    // A session-mode client keeps its server, so its statements need no help; and there it
    // may mix protocol-level statements with SQL EXECUTE, which a renamed one would break.
    let statement_capacity = match login.mode {
        PoolMode::Session => 0,
        _ => general.max_prepared_statements,
    };
    let reset_query = (login.mode == PoolMode::Session || general.server_reset_query_always)
        .then(|| general.server_reset_query.clone())
        .filter(|q| !q.is_empty());
    let timeouts = Timeouts::for_client(&config, &login.entry.database, &login.entry.user);
    let follows = login.mode == PoolMode::Transaction && general.follow_session_state;
    let pin_cap = config.max_pinned_servers(&login.pool.database, &login.pool.user);
    let session_pins = login.pool.pinned.clone();
    let standard_strings = login.params.get("standard_conforming_strings") != Some("off");
    let log_pinning = general.log_pinning || general.verbose > 0;
    let mut session = Session {
        client,
        login,
        linked: None,
        waiter: Waiter::default(),
        composed: Composed::default(),
        statements: Statements {
            client: ClientStatements::default(),
            registry: &shared.statements,
            capacity: statement_capacity,
        },
        timeouts,
        phase: Phase::Idle,
        phase_since: Instant::now(),
        transaction_since: None,
        reset_query,
        // Made in place: a local would keep its room in every client's task for its whole life.
        state: SessionState::new(follows, session_pins, pin_cap),
        log_pinning,
        shared_control: &shared.control,
    };
    session.state.set_standard_strings(standard_strings);
    if let Some(restored) = restored {
        session.restore(*restored, &shared.statements);
    }
    let mut moved = false;
    let result = loop {
        match session.serve().await {
            Ok(Ended::Moving) => {
                // Boxed: a takeover is rare, and its state would otherwise keep room in
                // every client's task.
                if Box::pin(session.hand_over(&shared.handover)).await {
                    moved = true;
                    break Ok(());
                }
            }
            Ok(Ended::Left) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    session.finish().await;
    shared.cancels.unregister(cancel_key);
    if shared.config().general.log_disconnections && !moved {
        let (login, peer) = (&session.login, &session.client.peer);
        tracing::info!(user = %login.entry.user, database = %login.entry.database, %peer, "client disconnected");
    }
    result
}

impl Session<'_> {
    /// Borrow, relay, release, until the client leaves or moves.
    async fn serve(&mut self) -> Result<Ended, ClientError> {
        loop {
            let deadline = self.deadline();
            let Some(linked) = self.linked.as_mut() else {
                if self.login.entry.signal.is_raised(Stop::Moving) && self.may_move() {
                    return Ok(Ended::Moving);
                }
                if !self.ready_to_start()? {
                    self.read_client_idle(deadline).await?;
                } else if self.client.buf[0] == b'X' {
                    return Ok(Ended::Left);
                } else {
                    self.acquire().await?;
                }
                continue;
            };
            let mut side = ClientSide {
                stream: &mut self.client.stream,
                buf: &mut self.client.buf,
                params: &mut self.login.params,
                statements: &mut self.statements,
                composed: &mut self.composed,
                state: &mut self.state,
            };
            let watch_phase = self.timeouts.per_phase();
            let step = relay(linked, &mut side, &self.login.entry, deadline, watch_phase).await;
            note_statements(&self.statements, &self.login);
            self.note_pins();
            match step? {
                Step::Progress => {}
                Step::Terminate => return Ok(Ended::Left),
                Step::Idle => self.transaction_over().await?,
            }
        }
    }

    /// The timeout in force now, if any: when it expires, and what it enforces.
    fn deadline(&mut self) -> Option<(Instant, Expiry)> {
        let phase = match self.linked.as_ref().map(Linked::tracker) {
            None => Phase::Idle,
            Some(t) if t.awaiting_reply() => Phase::AwaitingServer,
            Some(t) if t.in_transaction() => Phase::InTransaction,
            Some(_) => Phase::Idle,
        };
        let limit = self.timeouts.for_phase(phase);
        if phase != self.phase {
            self.phase = phase;
            // Only a phase with a timeout needs its start; the clock is not free.
            if limit.is_some() {
                self.phase_since = Instant::now();
            }
        }
        let of_phase = limit.map(|l| (self.phase_since + l, Expiry::Phase(phase)));
        let Some(whole) = self.timeouts.transaction else {
            return of_phase;
        };
        let ended = self.linked.as_ref().map_or(0, Linked::transactions);
        if !phase.in_transaction() {
            self.transaction_since = None;
            return of_phase;
        }
        let since = match self.transaction_since {
            // The same transaction as before: its start stays.
            Some((since, seen)) if seen == ended => since,
            _ => {
                let now = Instant::now();
                self.transaction_since = Some((now, ended));
                now
            }
        };
        let of_transaction = (since + whole, Expiry::Transaction);
        Some(match of_phase {
            Some(p) if p.0 <= of_transaction.0 => p,
            _ => of_transaction,
        })
    }

    /// Whether buffered client bytes hold a message worth borrowing a server for: a whole one,
    /// or the start of one so large that it streams (one the relay would hold until it is all
    /// there must be all there first: a slow sender would hold a server for nothing).
    fn ready_to_start(&self) -> Result<bool, ClientError> {
        let reading = self.statements.capacity > 0 || self.state.enabled();
        Ok(match frame::header(&self.client.buf)? {
            None => false,
            Some(h) if self.client.buf.len() >= h.total => true,
            Some(h) => relay::streams(h.total) && !relay::held_whole(h.tag, h.total, reading),
        })
    }

    async fn read_client_idle(
        &mut self,
        deadline: Option<(Instant, Expiry)>,
    ) -> Result<(), ClientError> {
        let may_move = self.may_move();
        let read = read_holding_no_buffer(&mut self.client.stream, &mut self.client.buf);
        let read = async {
            match deadline {
                None => Ok(read.await?),
                Some((at, expiry)) => match tokio::time::timeout_at(at, read).await {
                    Ok(n) => Ok(n?),
                    Err(_) => Err(expiry.timeout_error()),
                },
            }
        };
        // An idle client holds no server: a draining shutdown ends it now, and a takeover
        // moves it now if it can move.
        let signal = &self.login.entry.signal;
        let stop = match may_move {
            true => signal.stopped_or_moving(),
            false => signal.stopped(true),
        };
        let n = tokio::select! {
            // Fixed order, reads first: no random start to draw, and a read that is ready is
            // taken without polling the rest.
            biased;
            n = read => n?,
            stop = stop => match stop {
                // Back to the session's loop, which hands the client over.
                Stop::Moving => return Ok(()),
                stop => return Err(stopped(stop)),
            },
        };
        if n == 0 {
            return Err(closed_by_client());
        }
        Ok(())
    }

    /// A transaction ended: in transaction and statement mode the server goes back now (unless
    /// session state pins the client to it), and a draining shutdown ends the client here (in
    /// session mode too).
    async fn transaction_over(&mut self) -> Result<(), ClientError> {
        let draining = self.login.entry.signal.is_raised(Stop::Draining);
        let keeps = self.login.mode == PoolMode::Session
            || (self.state.pinned() && !self.state.check_due());
        if draining || !keeps {
            // Unlinked in a statement of its own: the relay's state goes now, rather than
            // keep its room in the task across the awaits below.
            let unlinked = self.linked.take().map(Linked::unlink);
            if let Some((server, tail)) = unlinked {
                if self.state.check_due() && !draining {
                    // The client may have its ReadyForQuery already (the relay writes as it
                    // goes): its next statement waits in its socket until this is done.
                    if let Err(e) = self.write_tail(tail).await {
                        // Released, not dropped: a server that holds the session is cleaned.
                        self.release(server).await;
                        return Err(e);
                    }
                    self.check_pins(server).await?;
                } else {
                    self.release(server).await;
                    self.write_tail(tail).await?;
                }
            }
        }
        match draining {
            true => Err(ClientError::ShuttingDown),
            false => Ok(()),
        }
    }

    /// Writes what the client was still owed when its server went back. It holds no server
    /// now, so a kill or a draining shutdown ends a client that does not read.
    async fn write_tail(&mut self, tail: Tail) -> Result<(), ClientError> {
        let stream = &mut self.client.stream;
        let bytes: Option<&[u8]> = match &tail {
            Tail::Nothing => None,
            Tail::Flush => Some(&[]),
            Tail::Bytes(bytes) => Some(bytes),
            Tail::Composed => Some(self.composed.to_client()),
        };
        let sent = match bytes {
            None => Ok(()),
            Some(bytes) => tokio::select! {
                // The write first: it almost always completes at once, and then nothing else
                // is polled.
                biased;
                sent = stream.send(bytes) => sent.map_err(ClientError::Io),
                stop = self.login.entry.signal.stopped(true) => Err(stopped(stop)),
            },
        };
        self.composed.clear();
        sent
    }

    /// Borrows a server and links the relay to it, with the SETs that give it the client's
    /// parameters first.
    async fn acquire(&mut self) -> Result<(), ClientError> {
        // The fast path: an idle server, nothing paused, no stop raised.
        let quiet =
            !self.shared_control.any_paused() && self.login.entry.signal.pending(true).is_none();
        let ready = match quiet {
            true => self.login.pool.take_ready(),
            false => None,
        };
        let server = match ready {
            Some(server) => {
                self.login.pool.stats.record(Timing::Wait, Duration::ZERO);
                server
            }
            None => self.checkout().await?,
        };
        self.link(server);
        Ok(())
    }

    /// The slow path of [`Session::acquire`]: waits its turn (under query_wait_timeout and
    /// PAUSE), and may open a server or health-check one.
    async fn checkout(&mut self) -> Result<PooledServer, ClientError> {
        let pool = &self.login.pool;
        let waiting_since = Instant::now();
        pool.waiting.fetch_add(1, Ordering::Relaxed);
        let deadlines = Deadlines {
            fail: self.timeouts.query_wait.map(|limit| waiting_since + limit),
            notice: self
                .timeouts
                .query_wait_notify
                .map(|after| waiting_since + after),
        };
        let turn = wait_turn(
            pool,
            &mut self.waiter,
            self.shared_control,
            &self.login.entry.database,
            deadlines,
            &mut self.client.stream,
        );
        // No transaction has started yet: a draining shutdown ends the client instead.
        let entry = &self.login.entry;
        entry.set_state(ClientState::Waiting);
        let result = tokio::select! {
            // The stop first: a server free at once must not start a killed or draining
            // client's transaction.
            biased;
            stop = entry.signal.stopped(true) => Err(stopped(stop)),
            r = turn => r,
        };
        if result.is_err() {
            entry.set_state(ClientState::Idle);
        }
        pool.waiting.fetch_sub(1, Ordering::Relaxed);
        let server = result?;
        let waited = waiting_since.elapsed();
        pool.stats.add(Counter::WaitTimeUs, micros(waited));
        pool.stats.record(Timing::Wait, waited);
        Ok(server)
    }

    /// Takes `server` for this client: links cancels to it, and starts the relay with the SETs
    /// that give it the client's parameters (their replies are swallowed).
    fn link(&mut self, mut server: PooledServer) {
        let pool = &self.login.pool;
        pool.stats.add(Counter::ServerAssignments, 1);
        self.login.entry.set_state(ClientState::Active);
        *crate::sync::lock(&self.login.entry.server) = Some(server.summary());
        self.login.cancel.link(server.cancel_key());
        let prelude = self.prelude(&mut server);
        let linked = Linked::new(server, self.login.mode, &prelude, &mut self.composed);
        self.linked = Some(linked);
    }

    /// pgmux's own statements that give `server` this client's session: what another client
    /// left there undone, the tracked parameters, then the client's own settings and SQL
    /// prepared statements. Only what differs.
    fn prelude(&mut self, server: &mut PooledServer) -> Prelude {
        // Even a client that follows nothing (a reload may have turned the feature off) gets
        // what another client left undone.
        let replay = match server.session.is_empty() && self.state.held().is_empty() {
            true => Replay::default(),
            false => Replay::between(&server.session, self.state.held()),
        };
        if replay.is_empty() {
            let set_sql = self.login.params.set_statements(&server.params);
            if set_sql.is_some() {
                // What the server does not report itself (search_path before PostgreSQL 18) is
                // known from what was set; a failed SET closes the server (see the scan).
                self.login.params.applied_to(&mut server.params);
            }
            return Prelude {
                sql: set_sql,
                prepares: Vec::new(),
                wait: false,
            };
        }
        // The replay changes these; what pgmux knew of their values on this server is stale.
        for name in &replay.touched {
            server.params.forget(name);
        }
        let mut sql = replay.undo;
        if let Some(set) = self.login.params.set_statements(&server.params) {
            sql.push_str(&set);
            self.login.params.applied_to(&mut server.params);
        }
        sql.push_str(&replay.redo);
        for name in &replay.touched {
            server.params.forget(name);
        }
        server.session = self.state.held().clone();
        Prelude {
            sql: (!sql.is_empty()).then_some(sql),
            // Undoing another client's settings cannot fail; giving the server this client's
            // can, and then its statements must not run there.
            wait: !replay.redo.is_empty() || !replay.prepares.is_empty(),
            prepares: replay.prepares,
        }
    }

    /// Gives the server back: unlinks cancels (after any in flight are delivered), runs the
    /// reset query where configured, and drops the guard, which pools or closes it.
    async fn release(&mut self, mut server: PooledServer) {
        if self.state.pinned() {
            // The client lets go of a server that holds its session: only at its end, or in
            // a draining shutdown.
            self.discard(&mut server).await;
            self.state.leave();
            self.note_pins();
        }
        let entry = &self.login.entry;
        entry.set_state(ClientState::Idle);
        *crate::sync::lock(&entry.server) = None;
        if self.login.cancel.unlink().await {
            server.tracker.poison();
        }
        if let (Some(reset), Verdict::Idle) = (&self.reset_query, server.tracker.verdict()) {
            // Boxed: only session mode (or server_reset_query_always) runs it, and inline it
            // would widen every client's task.
            if let Err(e) = Box::pin(server.run_own_query(reset)).await {
                tracing::warn!(error = %e, "server_reset_query failed; closing server");
            }
        }
        drop(server);
    }

    /// At the end of the session: a server still held goes back if idle, else is closed.
    async fn finish(&mut self) {
        if let Some(linked) = self.linked.take() {
            let (server, _unsent) = linked.unlink();
            self.release(server).await;
        }
    }
}

/// One step of the relay, under the timeout of the phase and the stop signal.
async fn relay(
    linked: &mut Linked,
    side: &mut ClientSide<'_, '_>,
    entry: &ClientEntry,
    deadline: Option<(Instant, Expiry)>,
    watch_phase: bool,
) -> Result<Step, ClientError> {
    // Made only if polled, and then only with a timeout in force: no timer entry, handle
    // or clock read otherwise.
    let expired = async {
        match deadline {
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // Fixed order: no random start to draw. The stop and the timer come before the
        // relay: a server that keeps sending must not starve them (sockets and timers
        // share tokio's cooperative budget).
        biased;
        // Only a kill stops a client holding a server. A draining shutdown waits for the
        // transaction's end, and in session mode for the client to leave, as PgBouncer's
        // WAIT_FOR_SERVERS waits for servers to be released.
        stop = entry.signal.stopped(false) => {
            linked.poison();
            Err(stopped(stop))
        }
        _ = expired => {
            let error = deadline.map_or(ClientError::QueryTimeout, |(_, p)| p.timeout_error());
            let server = linked.server();
            if server.tracker.awaiting_reply() {
                // Stop the query too, rather than leave it running on a closed connection.
                tokio::spawn(crate::cancel::deliver(server.cancel_key()));
            }
            linked.poison();
            Err(error)
        }
        step = linked.step(side, watch_phase) => step.map_err(|e| relay_failed(entry, e)),
    }
}

/// The relay stopped short: the operator hears of a failed server; the client is told.
fn relay_failed(entry: &ClientEntry, error: RelayError) -> ClientError {
    match error {
        RelayError::Client(e) => ClientError::Io(e),
        RelayError::ClientClosed => closed_by_client(),
        RelayError::ClientProtocol(e) => ClientError::Protocol(e),
        RelayError::TransactionInStatementMode => ClientError::TransactionInStatementMode,
        RelayError::SessionNotRestored(message) => {
            tracing::warn!(user = %entry.user, database = %entry.database, error = %message, "could not restore a client's session on a server; closing the client");
            ClientError::SessionNotRestored(message)
        }
        RelayError::Server(e) => {
            tracing::warn!(
                user = %entry.user,
                database = %entry.database,
                error = %e,
                "server connection failed during a client's transaction"
            );
            ClientError::ServerGone
        }
    }
}

fn stopped(stop: Stop) -> ClientError {
    match stop {
        Stop::Killed => ClientError::Killed,
        // Moving never ends a session by itself; were it to, the client is told as if the
        // old process shut down.
        Stop::Draining | Stop::Moving => ClientError::ShuttingDown,
    }
}

fn closed_by_client() -> ClientError {
    ClientError::Io(std::io::ErrorKind::UnexpectedEof.into())
}
