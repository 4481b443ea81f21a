//! A logged-in client's session: read its messages, borrow a server when a transaction starts,
//! relay both ways, and give the server back when the tracker says it is idle (transaction and
//! statement mode) or when the client leaves (session mode).

use super::startup::Login;
use super::timeouts::{Phase, Timeouts};
use super::waits::{read_holding_no_buffer, wait_turn};
use super::{ClientConn, ClientError};
use crate::cancel::ServerKey;
use crate::config::PoolMode;
use crate::pool::{PooledServer, Waiter};
use crate::prepared::{ClientStatements, Context, Counts, Registry, ServerStatements};
use crate::protocol::backend;
use crate::protocol::frame;
use crate::registry::ClientState;
use crate::relay::{scan_client, scan_server, Passthrough, ServerSide};
use crate::server::tracker::Verdict;
use crate::signal::Stop;
use crate::stats::PoolStats;
use crate::Shared;
use bytes::{Buf, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// A message this large may start a transaction before it is complete (it will be streamed).
const STREAM_THRESHOLD: usize = 64 * 1024;

/// The client's named prepared statements and what rewriting them takes.
struct Statements<'a> {
    client: ClientStatements,
    /// The pgmux-wide registry behind them.
    registry: &'a Registry,
    /// max_prepared_statements when the session started; 0 passes statements through untouched.
    capacity: usize,
}

impl Statements<'_> {
    /// What one scan may touch, with this server's prepared statements.
    fn context<'b>(
        &'b mut self,
        server: &'b mut ServerStatements,
        counts: &'b mut Counts,
    ) -> Context<'b> {
        Context {
            client: &mut self.client,
            server,
            registry: self.registry,
            capacity: self.capacity,
            counts,
        }
    }

    /// Counts one scan's work in the pool's statistics, and keeps SHOW CLIENTS' count of the
    /// client's statements current (a scan may add, drop or restore names).
    fn note(&self, counts: &Counts, login: &Login) {
        if !counts.is_zero() {
            login.pool.stats.add_prepared(counts);
        }
        if self.capacity > 0 {
            login
                .entry
                .prepared_statements
                .store(self.client.len(), Ordering::Relaxed);
        }
    }
}

struct Session<'a> {
    client: &'a mut ClientConn,
    /// Boxed: it lives as long as the session, and inline it would sit in the task twice.
    login: Box<Login>,
    server: Option<PooledServer>,
    /// This client's place in its pool's line, reused for every wait.
    waiter: Waiter,
    client_pass: Passthrough,
    server_pass: Passthrough,
    /// Scratch buffer for pgmux's own statements, reused.
    own: BytesMut,
    /// Client bytes rewritten for the server, and server bytes composed for the client, when a
    /// batch is not forwarded as it came (prepared statements).
    to_server: BytesMut,
    to_client: BytesMut,
    statements: Statements<'a>,
    timeouts: Timeouts,
    phase: Phase,
    phase_since: Instant,
    /// When the current transaction and query began (for SHOW STATS times).
    transaction_started: Option<Instant>,
    query_started: Option<Instant>,
    /// server_reset_query, where it runs on release in this session's mode.
    reset_query: Option<String>,
    shared_control: &'a crate::control::Control,
}

pub async fn run(
    client: &mut ClientConn,
    login: Box<Login>,
    shared: &Arc<Shared>,
) -> Result<(), ClientError> {
    if shared.config().general.log_connections {
        tracing::info!(user = %login.entry.user, database = %login.entry.database, peer = %client.peer, "client connected");
    }
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
    let timeouts = Timeouts::from_config(general);
    let mut session = Session {
        client,
        login,
        server: None,
        waiter: Waiter::default(),
        client_pass: Passthrough::default(),
        server_pass: Passthrough::default(),
        own: BytesMut::new(),
        to_server: BytesMut::new(),
        to_client: BytesMut::new(),
        statements: Statements {
            client: ClientStatements::default(),
            registry: &shared.statements,
            capacity: statement_capacity,
        },
        timeouts,
        phase: Phase::Idle,
        phase_since: Instant::now(),
        transaction_started: None,
        query_started: None,
        reset_query,
        shared_control: &shared.control,
    };
    let result = session.serve().await;
    session.finish().await;
    shared.cancels.unregister(cancel_key);
    shared.registry.remove(session.login.entry.id);
    session.login.pool.clients.fetch_sub(1, Ordering::Relaxed);
    if shared.config().general.log_disconnections {
        let (login, peer) = (&session.login, session.client.peer);
        tracing::info!(user = %login.entry.user, database = %login.entry.database, %peer, "client disconnected");
    }
    result
}

impl Session<'_> {
    async fn serve(&mut self) -> Result<(), ClientError> {
        loop {
            if !self.client.buf.is_empty() || self.client_pass.mid_message() {
                if self.server.is_none() && !self.ready_to_start()? {
                    let deadline = self.deadline();
                    self.read_client_idle(deadline).await?;
                    continue;
                }
                if self.server.is_none() {
                    if self.client.buf[0] == b'X' {
                        return Ok(());
                    }
                    self.acquire().await?;
                }
                if self.forward_client().await? {
                    return Ok(());
                }
            }
            let deadline = self.deadline();
            match self.server.is_some() {
                false => self.read_client_idle(deadline).await?,
                true => self.relay_once(deadline).await?,
            }
        }
    }

    /// The timeout in force now, if any: when it expires, and the phase it belongs to.
    fn deadline(&mut self) -> Option<(Instant, Phase)> {
        let phase = match &self.server {
            None => Phase::Idle,
            Some(s) if s.tracker.awaiting_reply() => Phase::AwaitingServer,
            Some(s) if s.tracker.in_transaction() => Phase::InTransaction,
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
        Some((self.phase_since + limit?, phase))
    }

    /// Whether buffered client bytes hold a message worth borrowing a server for.
    fn ready_to_start(&self) -> Result<bool, ClientError> {
        Ok(match frame::header(&self.client.buf)? {
            None => false,
            Some(h) => self.client.buf.len() >= h.total || h.total > STREAM_THRESHOLD,
        })
    }

    async fn read_client_idle(
        &mut self,
        deadline: Option<(Instant, Phase)>,
    ) -> Result<(), ClientError> {
        let read = read_holding_no_buffer(&mut self.client.stream, &mut self.client.buf);
        let read = async {
            match deadline {
                None => Ok(read.await?),
                Some((at, phase)) => match tokio::time::timeout_at(at, read).await {
                    Ok(n) => Ok(n?),
                    Err(_) => Err(phase.timeout_error()),
                },
            }
        };
        // An idle client holds no server: a draining shutdown ends it now.
        let n = tokio::select! {
            // Fixed order, reads first: no random start to draw, and a read that is ready is
            // taken without polling the rest.
            biased;
            n = read => n?,
            stop = self.login.entry.signal.stopped(true) => return Err(stopped(stop)),
        };
        if n == 0 {
            return Err(closed_by_client());
        }
        Ok(())
    }

    /// Borrows a server, links cancels to it and queues the SETs that give it the client's
    /// parameters; their replies are swallowed.
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
                self.login.pool.histograms.wait.record(Duration::ZERO);
                server
            }
            None => self.checkout().await?,
        };
        self.link(server).await
    }

    /// The slow path of [`Session::acquire`]: waits its turn (under query_wait_timeout and
    /// PAUSE), and may open a server or health-check one.
    async fn checkout(&mut self) -> Result<PooledServer, ClientError> {
        let pool = &self.login.pool;
        let waiting_since = Instant::now();
        pool.waiting.fetch_add(1, Ordering::Relaxed);
        let turn = wait_turn(
            pool,
            &mut self.waiter,
            self.shared_control,
            &self.login.entry.database,
            self.timeouts.query_wait.map(|limit| waiting_since + limit),
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
        PoolStats::add(&pool.stats.wait_time_us, micros(waited));
        pool.histograms.wait.record(waited);
        Ok(server)
    }

    /// Takes `server` for this client: links cancels to it and queues the SETs that give it
    /// the client's parameters; their replies are swallowed.
    async fn link(&mut self, mut server: PooledServer) -> Result<(), ClientError> {
        let pool = &self.login.pool;
        PoolStats::add(&pool.stats.server_assignment_count, 1);
        self.login.entry.set_state(ClientState::Active);
        *self
            .login
            .entry
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(server.summary());
        self.login.cancel.link(ServerKey {
            addr: server.addr,
            pid: server.backend_pid,
            secret: server.backend_secret,
        });
        if let Some(sql) = self.login.params.set_statements(&server.params) {
            self.own.clear();
            backend::query(&mut self.own, &sql);
            server.tracker.own_query();
            if let Err(e) = server.stream.send(&self.own).await {
                server.tracker.poison();
                return Err(server_failed(&self.login, e.into()));
            }
        }
        self.server = Some(server);
        Ok(())
    }

    /// Forwards whole client messages to the server, rewritten where they name prepared
    /// statements. Returns true if the client said Terminate.
    async fn forward_client(&mut self) -> Result<bool, ClientError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(false);
        };
        let server = &mut **server;
        let was_awaiting = server.tracker.awaiting_reply();
        let mut counts = Counts::default();
        let mut context = self.statements.context(&mut server.statements, &mut counts);
        let scan = scan_client(
            &self.client.buf,
            &mut self.client_pass,
            &mut server.tracker,
            &mut context,
            &mut self.to_server,
        )?;
        if scan.forward > 0 {
            let now = Instant::now();
            self.transaction_started.get_or_insert(now);
            if !was_awaiting {
                self.query_started.get_or_insert(now);
            }
            let out = match scan.composed {
                true => &self.to_server[..],
                false => &self.client.buf[..scan.forward],
            };
            PoolStats::add(&self.login.pool.stats.bytes_received, scan.forward as u64);
            if let Err(e) = server.stream.send(out).await {
                server.tracker.poison();
                return Err(server_failed(&self.login, e.into()));
            }
            self.client.buf.advance(scan.forward);
        }
        self.client.buf.reserve(scan.want);
        self.statements.note(&counts, &self.login);
        if server.tracker.answer_due() {
            // Answers pgmux gives itself go out now if nothing is owed ahead of them.
            self.forward_server().await?;
        }
        Ok(scan.terminate)
    }

    /// Waits for bytes from either side while a server is held, and handles them.
    async fn relay_once(&mut self, deadline: Option<(Instant, Phase)>) -> Result<(), ClientError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let server = &mut **server;
        // Made only if polled, and then only with a timeout in force: no timer entry, handle
        // or clock read otherwise.
        let expired = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Both reads are cancel-safe: read_buf either appends bytes or has read nothing.
        tokio::select! {
            // Fixed order: no random start to draw. The stop and the timer come before the
            // reads: a server that keeps sending must not starve them (reads and timers share
            // tokio's cooperative budget). The server comes before the client: its replies are
            // finite, while a client may stream (COPY IN) and must not hide a server's error.
            biased;
            // Only a kill stops a client holding a server. A draining shutdown waits for the
            // transaction's end, and in session mode for the client to leave, as PgBouncer's
            // WAIT_FOR_SERVERS waits for servers to be released.
            stop = self.login.entry.signal.stopped(false) => {
                server.tracker.poison();
                Err(stopped(stop))
            }
            _ = expired => {
                let error = deadline.map_or(ClientError::QueryTimeout, |(_, p)| p.timeout_error());
                if server.tracker.awaiting_reply() {
                    // Stop the query too, rather than leave it running on a closed connection.
                    tokio::spawn(crate::cancel::deliver(ServerKey {
                        addr: server.addr,
                        pid: server.backend_pid,
                        secret: server.backend_secret,
                    }));
                }
                server.tracker.poison();
                Err(error)
            }
            read = server.stream.read_buf(&mut server.buf) => match read {
                Ok(0) => {
                    server.tracker.poison();
                    Err(server_failed(&self.login, ClientError::ServerGone))
                }
                Ok(_) => self.forward_server().await,
                Err(e) => {
                    server.tracker.poison();
                    Err(server_failed(&self.login, e.into()))
                }
            },
            read = self.client.stream.read_buf(&mut self.client.buf) => {
                if read? == 0 {
                    return Err(closed_by_client());
                }
                Ok(())
            }
        }
    }

    /// Sends the server's whole messages to the client, releasing the server first when the
    /// batch ends its transaction.
    async fn forward_server(&mut self) -> Result<(), ClientError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let server = &mut **server;
        let mut counts = Counts::default();
        let mut context = self.statements.context(&mut server.statements, &mut counts);
        let side = ServerSide {
            tracker: &mut server.tracker,
            server_params: &mut server.params,
            client_params: &mut self.login.params,
        };
        let scan = scan_server(
            &server.buf,
            &mut self.server_pass,
            side,
            &mut context,
            &mut self.to_client,
        )?;
        self.statements.note(&counts, &self.login);
        let len = if scan.composed {
            // The composed output stands for all of the scanned input.
            server.buf.advance(scan.end);
            self.to_client.len()
        } else {
            server.buf.advance(scan.swallow);
            scan.end - scan.swallow
        };
        let stats = &self.login.pool.stats;
        PoolStats::add(&stats.bytes_sent, len as u64);
        if scan.queries_done > 0 {
            PoolStats::add(&stats.query_count, scan.queries_done as u64);
            if !server.tracker.awaiting_reply() {
                if let Some(started) = self.query_started.take() {
                    let took = started.elapsed();
                    PoolStats::add(&stats.query_time_us, micros(took));
                    self.login.pool.histograms.query.record(took);
                }
            }
        }
        if scan.transactions_done > 0 {
            PoolStats::add(&stats.xact_count, scan.transactions_done as u64);
            if let Some(started) = self.transaction_started.take() {
                let took = started.elapsed();
                PoolStats::add(&stats.xact_time_us, micros(took));
                self.login.pool.histograms.transaction.record(took);
            }
        }
        server.buf.reserve(scan.want);
        if let (PoolMode::Statement, Some(at)) = (self.login.mode, scan.transaction_opened_at) {
            // Everything before the ReadyForQuery that opened the transaction, then the error.
            let out = match scan.composed {
                true => &self.to_client[..at],
                false => &server.buf[..at],
            };
            self.client.stream.send(out).await?;
            server.tracker.poison();
            return Err(ClientError::TransactionInStatementMode);
        }
        let unread = if scan.composed { 0 } else { len };
        let done = self.login.mode != PoolMode::Session
            && server.tracker.verdict() == Verdict::Idle
            && !self.server_pass.mid_message()
            && !self.client_pass.mid_message()
            && server.buf.len() == unread;
        let between_transactions = server.tracker.verdict() == Verdict::Idle;
        if scan.composed {
            if done {
                self.release().await;
            }
            self.client.stream.send(&self.to_client).await?;
        } else if done {
            let data = server.buf.split_to(len);
            self.release().await;
            self.client.stream.send(&data).await?;
        } else if len > 0 {
            self.client.stream.send(&server.buf[..len]).await?;
            server.buf.advance(len);
        }
        // The transaction in flight has finished: a draining shutdown ends the client here.
        if between_transactions && self.login.entry.signal.is_raised(Stop::Draining) {
            return Err(ClientError::ShuttingDown);
        }
        Ok(())
    }

    /// Gives the server back: unlinks cancels (after any in flight are delivered), runs the
    /// reset query where configured, and drops the guard, which pools or closes it.
    async fn release(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        if !server.buf.is_empty()
            || self.client_pass.mid_message()
            || self.server_pass.mid_message()
        {
            // Bytes the client never got: never reset and pool such a server.
            server.tracker.poison();
        }
        let entry = &self.login.entry;
        entry.set_state(ClientState::Idle);
        *entry.server.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.login.cancel.unlink().await {
            server.tracker.poison();
        }
        if let (Some(reset), Verdict::Idle) = (&self.reset_query, server.tracker.verdict()) {
            // Boxed: only session mode (or server_reset_query_always) runs it, and inline it
            // would widen every client's task.
            if let Err(e) = Box::pin(server.run_own_query(reset)).await {
                tracing::warn!(error = %e, "server_reset_query failed; closing server");
                server.tracker.poison();
            }
        }
        drop(server);
    }

    /// At the end of the session: a server still held goes back if idle, else is closed.
    async fn finish(&mut self) {
        if let Some(server) = self.server.as_mut() {
            if self.client_pass.mid_message() || self.server_pass.mid_message() {
                server.tracker.poison();
            }
        }
        self.release().await;
    }
}

/// The server failed under this client: note it for the operator; the client is told.
fn server_failed(login: &Login, error: ClientError) -> ClientError {
    tracing::warn!(
        user = %login.entry.user,
        database = %login.entry.database,
        error = %error,
        "server connection failed during a client's transaction"
    );
    match error {
        ClientError::Io(_) => ClientError::ServerGone,
        other => other,
    }
}

fn stopped(stop: Stop) -> ClientError {
    match stop {
        Stop::Killed => ClientError::Killed,
        Stop::Draining => ClientError::ShuttingDown,
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn closed_by_client() -> ClientError {
    ClientError::Io(std::io::ErrorKind::UnexpectedEof.into())
}
