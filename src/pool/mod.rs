//! Pools of server connections, one per (database, server user): checkout with FIFO waiting,
//! the guard that returns or closes a server on drop, and the registry of pools. Never holds a
//! lock across an `.await`.

mod caps;
mod guard;
mod janitor;
mod pools;
/// Public for the contention benchmark; the rest of pgmux uses it through [`Pool`].
pub mod queue;
mod settings;
mod snapshot;
mod waiter;

pub use guard::PooledServer;
pub use pools::{drop_unused_pools, PoolClient, Pools};
pub use settings::{server_credentials, server_target, Health, PoolSettings};
pub use snapshot::PoolSnapshot;
pub use waiter::{Waited, Waiter};

use crate::server::{ServerConn, ServerCredentials, ServerError};
use crate::sync::lock;
use caps::{Cap, CapKind};
use guard::ConnectSlot;
use queue::{Handoff, Queue, Take};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use waiter::Ticket;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("pool is shutting down")]
    Closed,
    /// The client waited query_wait_timeout for a server.
    #[error("no server became free within query_wait_timeout")]
    WaitTimedOut,
    /// Connecting or logging in failed, now or less than server_login_retry ago (then it is
    /// not tried again, and every client that needs a new server gets this error at once).
    #[error("{0}")]
    Login(Arc<ServerError>),
}

/// How a checkout treats a server that is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkout {
    /// A client logging in: get the error at once (PgBouncer's fail-fast during login retry).
    FailFast,
    /// A logged-in client starting a transaction: wait for the server to come back (bounded by
    /// query_wait_timeout), so only transactions in flight at an outage fail.
    Wait,
}

/// What a waiter is handed.
pub enum Grant {
    Conn(PooledServer),
    Slot(ConnectSlot),
    /// The janitor ended a wait longer than the waiter's query_wait_timeout.
    TimedOut,
}

/// Every ParameterStatus a fresh server reported, in order.
pub type Welcome = Arc<Vec<(String, String)>>;

pub struct Pool {
    /// The database name clients use.
    pub database: String,
    /// The user its servers log in as.
    pub user: String,
    /// Replaced whole on reload.
    settings: Mutex<Arc<PoolSettings>>,
    /// server_check_delay in microseconds, or u64::MAX without a server_check_query: read on
    /// every checkout, where locking `settings` would cost more than the rest.
    check_delay_us: AtomicU64,
    /// Bumped when a reload changes where or how servers log in, or on RECONNECT: older
    /// servers are closed as they are released.
    generation: AtomicU64,
    /// Open servers by the generation they were opened under: WAIT_CLOSE waits until none of
    /// an older one is left. Counted when a server opens and when it is retired, so connects
    /// that fail or start after a RECONNECT are never waited for.
    open_by_generation: Mutex<HashMap<u64, usize>>,
    queue: Mutex<Queue<Box<ServerConn>, Ticket>>,
    credentials: Mutex<ServerCredentials>,
    /// ParameterStatus values a fresh server reported, for clients' welcome.
    welcome: Mutex<Option<Welcome>>,
    /// Clients of this pool, counted from pool lookup at login until they leave (see
    /// [`PoolClient`]).
    pub clients: AtomicUsize,
    /// When the last client left (or the pool was made): pools unused long enough are dropped.
    last_client_left: Mutex<Instant>,
    /// Settings clients asked for at login that its servers accepted (see the login's check),
    /// so that a driver sending the same ones on every login is checked once.
    accepted_settings: Mutex<std::collections::HashSet<String>>,
    /// Clients waiting for a server right now.
    pub waiting: AtomicUsize,
    /// Servers pinned to clients by their session state, under max_pinned_servers.
    pub pinned: Arc<crate::session_state::PinSlots>,
    /// Servers being connected and logged in right now.
    connecting: AtomicUsize,
    pub stats: crate::stats::PoolStats,
    next_server_id: Arc<AtomicU64>,
    /// The last failed connect or login, while server_login_retry has not passed.
    last_failure: Mutex<Option<(Instant, Arc<ServerError>)>>,
    /// Caps shared with other pools (database-wide, user-wide).
    caps: Vec<Arc<Cap>>,
}

impl Pool {
    fn new(
        database: String,
        settings: PoolSettings,
        ids: Arc<AtomicU64>,
        caps: Vec<Arc<Cap>>,
    ) -> Pool {
        Pool {
            database,
            user: settings.target.user.clone(),
            queue: Mutex::new({
                let mut queue = Queue::new(settings.size);
                queue.set_reserve(settings.health.reserve_size);
                queue
            }),
            credentials: Mutex::new(settings.credentials.clone()),
            check_delay_us: AtomicU64::new(check_delay_us(&settings.health)),
            settings: Mutex::new(Arc::new(settings)),
            generation: AtomicU64::new(0),
            open_by_generation: Mutex::default(),
            welcome: Mutex::new(None),
            clients: AtomicUsize::new(0),
            last_client_left: Mutex::new(Instant::now()),
            accepted_settings: Mutex::default(),
            waiting: AtomicUsize::new(0),
            pinned: Default::default(),
            connecting: AtomicUsize::new(0),
            stats: Default::default(),
            next_server_id: ids,
            last_failure: Mutex::new(None),
            caps,
        }
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        lock(&self.settings).clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks every open server for closing as it is released (RECONNECT).
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Servers left open from before the last RECONNECT or login change.
    pub fn stale_servers(&self) -> usize {
        let current = self.generation();
        lock(&self.open_by_generation)
            .iter()
            .filter(|(generation, _)| **generation != current)
            .map(|(_, n)| n)
            .sum()
    }

    /// Closes a server's connection (its slot is released by the caller).
    fn retire(&self, conn: &mut ServerConn) {
        let mut open = lock(&self.open_by_generation);
        if let Some(n) = open.get_mut(&conn.generation) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&conn.generation);
            }
        }
        drop(open);
        conn.terminate();
    }

    /// Applies settings from a reloaded config. Clients and transactions carry on: a bigger
    /// size serves waiters at once, a smaller one shrinks as servers come back; if the server
    /// address, database or credentials changed, servers are replaced as they are released.
    pub fn apply(self: &Arc<Self>, new: PoolSettings) {
        let old = self.settings();
        let relogin =
            old.target != new.target || !same_credentials(&old.credentials, &new.credentials);
        if relogin {
            self.reconnect();
            if !matches!(new.credentials, ServerCredentials::None) {
                *lock(&self.credentials) = new.credentials.clone();
            }
            lock(&self.last_failure).take();
        }
        let mut queue = lock(&self.queue);
        queue.set_max(new.size);
        queue.set_reserve(new.health.reserve_size);
        drop(queue);
        for cap in &self.caps {
            match cap.kind {
                CapKind::Database => cap.set_max(new.max_db_connections),
                CapKind::User => cap.set_max(new.max_user_connections),
            }
        }
        self.check_delay_us
            .store(check_delay_us(&new.health), Ordering::Relaxed);
        *lock(&self.settings) = Arc::new(new);
        while self.serve_waiter_with_room() {}
    }

    /// Learns credentials at run time (a SCRAM ClientKey a client just proved).
    pub fn set_credentials(&self, credentials: ServerCredentials) {
        *lock(&self.credentials) = credentials;
    }

    pub fn has_credentials(&self) -> bool {
        !matches!(*lock(&self.credentials), ServerCredentials::None)
    }

    /// How it logs in now, what a login may have taught it included: what a takeover carries
    /// so that the new process can log in as this pool's clients too.
    pub fn credentials(&self) -> ServerCredentials {
        lock(&self.credentials).clone()
    }

    pub fn welcome(&self) -> Option<Welcome> {
        lock(&self.welcome).clone()
    }

    /// A server for a client logging in: idle, new, or after waiting its turn.
    pub async fn checkout(self: &Arc<Self>, mode: Checkout) -> Result<PooledServer, PoolError> {
        let mut waiter = Waiter::default();
        // No notice was asked for, so only a grant ends this wait.
        let mut waited = self.take_or_wait(&mut waiter, None, None).await;
        let grant = loop {
            match waited {
                Waited::Granted(grant) => break grant,
                Waited::Notice => waited = self.wait_on(&waiter).await,
            }
        };
        match self.ready(grant) {
            Ok(server) => Ok(server),
            Err(grant) => self.finish(grant, mode).await,
        }
    }

    /// An idle server, room to open one, or (after waiting in line) whichever frees up first;
    /// a wait in line fails at `deadline` (Grant::TimedOut), and stops at `notice_at` for the
    /// client to be told it waits (then [`Pool::wait_on`]). Small and allocation-free, so a
    /// client may wait here for every transaction.
    pub async fn take_or_wait(
        self: &Arc<Self>,
        waiter: &mut Waiter,
        deadline: Option<Instant>,
        notice_at: Option<Instant>,
    ) -> Waited {
        let mut step = self.try_take(waiter, deadline, notice_at);
        if let Err(false) = step {
            // Room in this pool but a shared cap is full: close another pool's idle server
            // if one exists, else wait like everyone else.
            step = if self.evict_for_caps() {
                self.try_take(waiter, deadline, notice_at)
            } else {
                Err(false)
            };
        }
        match step {
            Ok(grant) => return Waited::Granted(grant),
            Err(true) => {}
            Err(false) => {
                let ticket = waiter.ticket(deadline, notice_at);
                lock(&self.queue).wait(ticket, Instant::now())
            }
        }
        waiter.turn().await
    }

    /// Waits on in line after a [`Waited::Notice`].
    pub async fn wait_on(&self, waiter: &Waiter) -> Waited {
        waiter.turn().await
    }

    /// A granted idle server that may be used as it is: still open, of the current
    /// generation, and not due for server_check_query. Anything else is given back for
    /// [`Pool::finish`].
    pub fn ready(&self, grant: Grant) -> Result<PooledServer, Grant> {
        let Grant::Conn(mut server) = grant else {
            return Err(grant);
        };
        match self.usable_as_is(&server) && server.looks_alive() {
            true => Ok(server),
            false => Err(Grant::Conn(server)),
        }
    }

    /// The rest of a checkout that [`Pool::ready`] could not finish: a health check, or a
    /// new connection (which may wait out server_login_retry in `Wait` mode).
    pub async fn finish(
        self: &Arc<Self>,
        grant: Grant,
        mode: Checkout,
    ) -> Result<PooledServer, PoolError> {
        let slot = match grant {
            Grant::Conn(mut server) => match self.healthy(&mut server).await {
                Ok(()) => return Ok(server),
                Err(reason) => {
                    tracing::debug!(server = server.id(), reason, "closing server");
                    server.into_slot()
                }
            },
            Grant::Slot(slot) => slot,
            Grant::TimedOut => return Err(PoolError::WaitTimedOut),
        };
        self.connect(slot, mode).await
    }

    /// The fast path of a checkout: an idle server that may be handed out at once, with no
    /// waiting, no health query and no timer; None sends the caller down [`Pool::checkout`].
    pub fn take_ready(self: &Arc<Self>) -> Option<PooledServer> {
        let conn = {
            let mut q = lock(&self.queue);
            let ready = q.idle().last().is_some_and(|c| self.usable_as_is(c));
            if !ready {
                return None;
            }
            q.take_idle()?
        };
        let mut server = PooledServer::new(conn, self.clone());
        if !server.looks_alive() {
            tracing::debug!(
                server = server.id(),
                reason = "found dead at checkout",
                "closing server"
            );
            drop(server.into_slot());
            return None;
        }
        Some(server)
    }

    /// One attempt at a server: Ok(grant), Err(true) when queued behind others (`waiter`'s
    /// turn will come), Err(false) when only a shared cap stands in the way.
    fn try_take(
        self: &Arc<Self>,
        waiter: &mut Waiter,
        deadline: Option<Instant>,
        notice_at: Option<Instant>,
    ) -> Result<Grant, bool> {
        let mut q = lock(&self.queue);
        match q.take() {
            Take::Idle(conn) => Ok(Grant::Conn(PooledServer::new(conn, self.clone()))),
            Take::Connect if self.take_caps() => Ok(Grant::Slot(ConnectSlot::new(self.clone()))),
            Take::Connect => {
                q.cancel_connect();
                Err(false)
            }
            Take::Full => {
                q.wait(waiter.ticket(deadline, notice_at), Instant::now());
                Err(true)
            }
        }
    }

    /// Whether an idle server may be handed out without a health query: opened under the
    /// current generation and not due for server_check_query. (That it is still open is for
    /// the caller to find out, once it holds the server.)
    fn usable_as_is(&self, conn: &ServerConn) -> bool {
        conn.generation == self.generation() && !self.check_due(conn.last_used)
    }

    /// Whether a server idle since `last_used` must pass server_check_query before use.
    fn check_due(&self, last_used: Instant) -> bool {
        match self.check_delay_us.load(Ordering::Relaxed) {
            u64::MAX => false,
            delay => last_used.elapsed() >= Duration::from_micros(delay),
        }
    }

    /// Whether an idle server may be handed out: still connected, and passing
    /// server_check_query if it sat idle for server_check_delay.
    async fn healthy(&self, server: &mut PooledServer) -> Result<(), &'static str> {
        if server.generation != self.generation() {
            return Err("opened before RECONNECT or a login change");
        }
        if !server.looks_alive() {
            return Err("found dead at checkout");
        }
        if !self.check_due(server.last_used) {
            return Ok(());
        }
        let settings = self.settings();
        let health = &settings.health;
        let check = server.run_own_query(&health.check_query);
        match tokio::time::timeout(settings.connect_timeout, check).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                server.tracker.poison();
                Err("failed server_check_query")
            }
        }
    }

    /// Opens a server with `slot`. While logins fail, tries again only every
    /// server_login_retry: a `FailFast` caller gets the last error at once; a `Wait` caller
    /// sleeps until the next try, unless PostgreSQL refused the login for good (then it gets
    /// PostgreSQL's own error at once, too).
    async fn connect(
        self: &Arc<Self>,
        slot: ConnectSlot,
        mode: Checkout,
    ) -> Result<PooledServer, PoolError> {
        loop {
            let failure = lock(&self.last_failure).clone();
            if let Some((at, error)) = failure {
                let retry_at = at + self.settings().health.login_retry;
                if Instant::now() < retry_at {
                    if mode == Checkout::FailFast || !error.is_transient() {
                        return Err(PoolError::Login(error));
                    }
                    tokio::time::sleep_until(retry_at.into()).await;
                    continue;
                }
            }
            match self.try_connect().await {
                Ok(conn) => {
                    slot.consume();
                    return Ok(PooledServer::new(Box::new(conn), self.clone()));
                }
                Err(e) if mode == Checkout::Wait && e.is_transient() => continue,
                Err(e) => return Err(PoolError::Login(e)),
            }
        }
    }

    /// One connect and login; a failure is remembered for server_login_retry.
    async fn try_connect(&self) -> Result<ServerConn, Arc<ServerError>> {
        let s = self.settings();
        let generation = self.generation();
        let credentials = lock(&self.credentials).clone();
        let id = self.next_server_id.fetch_add(1, Ordering::Relaxed);
        let connecting = Counted::new(&self.connecting);
        let result = ServerConn::connect(&s.target, &credentials, s.connect_timeout, id).await;
        drop(connecting);
        let mut conn = match result {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(
                    database = %self.database,
                    user = %s.target.user,
                    error = %e,
                    "server connect or login failed"
                );
                let e = Arc::new(e);
                *lock(&self.last_failure) = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        lock(&self.last_failure).take();
        conn.expires_at = s
            .health
            .lifetime
            .map(|l| conn.created() + janitor::spread(l));
        conn.generation = generation;
        *lock(&self.open_by_generation)
            .entry(generation)
            .or_default() += 1;
        tracing::debug!(
            server = id,
            database = %self.database,
            user = %s.target.user,
            "opened server connection"
        );
        lock(&self.welcome).get_or_insert_with(|| Arc::new(conn.startup_params().to_vec()));
        Ok(conn)
    }

    /// A server comes back healthy (its last_used set): to the longest waiter, or to the idle
    /// list.
    fn check_in(self: &Arc<Self>, mut conn: Box<ServerConn>) {
        loop {
            let handoff = lock(&self.queue).put_back(conn);
            match handoff {
                None => return,
                Some(Handoff::Conn(waiter, c)) => {
                    match waiter.send(Grant::Conn(PooledServer::new(c, self.clone()))) {
                        Ok(()) => return,
                        Err(Grant::Conn(mut back)) => conn = back.take_conn(),
                        Err(_) => unreachable!("sent a connection"),
                    }
                }
                Some(Handoff::Surplus(mut c)) => {
                    tracing::debug!(server = c.id(), "closing server: pool over its size");
                    self.retire(&mut c);
                    return self.return_caps(1);
                }
                Some(Handoff::Slot(_)) => unreachable!("put_back hands over connections"),
            }
        }
    }

    /// A server was closed or a connect failed: the slot goes to the longest waiter.
    fn release_slot(self: &Arc<Self>) {
        loop {
            let handoff = lock(&self.queue).release_slot();
            match handoff {
                None => return self.return_caps(1),
                Some(Handoff::Slot(waiter)) => {
                    match waiter.send(Grant::Slot(ConnectSlot::new(self.clone()))) {
                        Ok(()) => return,
                        Err(Grant::Slot(back)) => back.consume(),
                        Err(_) => unreachable!("sent a slot"),
                    }
                }
                Some(Handoff::Conn(..) | Handoff::Surplus(_)) => {
                    unreachable!("release_slot hands over slots")
                }
            }
        }
    }

    /// Whether `settings` (the statements that apply them) were accepted by a server already.
    pub fn accepted(&self, settings: &str) -> bool {
        lock(&self.accepted_settings).contains(settings)
    }

    /// Remembers that a server accepted `settings`, up to a few hundred different ones.
    pub fn accept(&self, settings: String) {
        let mut accepted = lock(&self.accepted_settings);
        if accepted.len() < ACCEPTED_SETTINGS_KEPT {
            accepted.insert(settings);
        }
    }

    /// How long the pool has had no client; zero while it has one.
    pub fn unused_for(&self) -> Duration {
        match self.clients.load(Ordering::Relaxed) {
            0 => lock(&self.last_client_left).elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// Closes every idle server (used on shutdown).
    pub fn close_idle(&self) {
        let idle = lock(&self.queue).drain_idle();
        self.return_caps(idle.len());
        for mut conn in idle {
            self.retire(&mut conn);
        }
    }
}

/// Different sets of login settings a pool remembers as accepted.
const ACCEPTED_SETTINGS_KEPT: usize = 256;

/// server_check_delay as [`Pool::check_due`] reads it: u64::MAX when no check query is set.
fn check_delay_us(health: &Health) -> u64 {
    match health.check_query.is_empty() {
        true => u64::MAX,
        false => u64::try_from(health.check_delay.as_micros()).unwrap_or(u64::MAX - 1),
    }
}

/// Whether servers logged in with `a` may stay when the config now says `b`.
fn same_credentials(a: &ServerCredentials, b: &ServerCredentials) -> bool {
    use ServerCredentials::*;
    match (a, b) {
        (Password(x), Password(y)) | (Md5(x), Md5(y)) => x == y,
        // Learned keys stay valid while the config still names no secret of its own.
        (None | ScramKeys { .. }, None) => true,
        _ => false,
    }
}

/// Counts one in-progress thing for as long as it lives, so a future dropped half-way (its
/// client gone) is uncounted too.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Counted<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
