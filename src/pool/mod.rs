//! Pools of server connections, one per (database, server user): checkout with FIFO waiting,
//! the guard that returns or closes a server on drop, and the registry of pools. Never holds a
//! lock across an `.await`.

mod guard;
mod queue;

pub use guard::PooledServer;

use crate::config::PoolMode;
use crate::server::{ServerConn, ServerCredentials, ServerError, ServerTarget};
use guard::ConnectSlot;
use queue::{Handoff, Queue, Take};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::oneshot;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("pool is shutting down")]
    Closed,
}

/// What a waiter is handed.
enum Grant {
    Conn(Box<PooledServer>),
    Slot(ConnectSlot),
}

type Waiter = oneshot::Sender<Grant>;

/// Every ParameterStatus a fresh server reported, in order.
pub type Welcome = Arc<Vec<(String, String)>>;

/// Settings a pool is built with.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub target: ServerTarget,
    pub mode: PoolMode,
    pub size: usize,
    pub connect_timeout: Duration,
    pub credentials: ServerCredentials,
}

/// Figures for SHOW POOLS and the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub database: String,
    pub user: String,
    pub clients: usize,
    pub waiting: usize,
    pub servers: usize,
    pub idle: usize,
    pub mode: &'static str,
}

pub struct Pool {
    /// The database name clients use.
    pub database: String,
    pub settings: PoolSettings,
    queue: Mutex<Queue<ServerConn, Waiter>>,
    credentials: Mutex<ServerCredentials>,
    /// ParameterStatus values a fresh server reported, for clients' welcome.
    welcome: Mutex<Option<Welcome>>,
    /// Clients logged in to this pool.
    pub clients: AtomicUsize,
    next_server_id: Arc<AtomicU64>,
}

impl Pool {
    fn new(database: String, settings: PoolSettings, ids: Arc<AtomicU64>) -> Pool {
        Pool {
            database,
            queue: Mutex::new(Queue::new(settings.size)),
            credentials: Mutex::new(settings.credentials.clone()),
            settings,
            welcome: Mutex::new(None),
            clients: AtomicUsize::new(0),
            next_server_id: ids,
        }
    }

    /// Learns credentials at run time (a SCRAM ClientKey a client just proved).
    pub fn set_credentials(&self, credentials: ServerCredentials) {
        *lock(&self.credentials) = credentials;
    }

    pub fn has_credentials(&self) -> bool {
        !matches!(*lock(&self.credentials), ServerCredentials::None)
    }

    pub fn welcome(&self) -> Option<Welcome> {
        lock(&self.welcome).clone()
    }

    /// A server for this client: idle, new, or after waiting its turn.
    pub async fn checkout(self: &Arc<Self>) -> Result<PooledServer, PoolError> {
        let step = {
            let mut q = lock(&self.queue);
            match q.take() {
                Take::Idle(conn) => {
                    Ok(Grant::Conn(Box::new(PooledServer::new(conn, self.clone()))))
                }
                Take::Connect => Ok(Grant::Slot(ConnectSlot::new(self.clone()))),
                Take::Full => {
                    let (tx, rx) = oneshot::channel();
                    q.wait(tx);
                    Err(rx)
                }
            }
        };
        let grant = match step {
            Ok(grant) => grant,
            Err(rx) => rx.await.map_err(|_| PoolError::Closed)?,
        };
        let slot = match grant {
            Grant::Conn(mut server) => {
                if server.looks_alive() {
                    return Ok(*server);
                }
                tracing::debug!(server = server.id, "closing server: found dead at checkout");
                (*server).into_slot()
            }
            Grant::Slot(slot) => slot,
        };
        self.connect(slot).await
    }

    async fn connect(self: &Arc<Self>, slot: ConnectSlot) -> Result<PooledServer, PoolError> {
        let credentials = lock(&self.credentials).clone();
        let id = self.next_server_id.fetch_add(1, Ordering::Relaxed);
        let s = &self.settings;
        let conn = ServerConn::connect(&s.target, &credentials, s.connect_timeout, id).await?;
        tracing::debug!(
            server = id,
            database = %self.database,
            user = %s.target.user,
            "opened server connection"
        );
        lock(&self.welcome).get_or_insert_with(|| Arc::new(conn.startup_params.clone()));
        slot.consume();
        Ok(PooledServer::new(conn, self.clone()))
    }

    /// A server comes back healthy: to the longest waiter, or to the idle list.
    fn check_in(self: &Arc<Self>, mut conn: ServerConn) {
        loop {
            let handoff = lock(&self.queue).put_back(conn);
            match handoff {
                None => return,
                Some(Handoff::Conn(waiter, c)) => {
                    match waiter.send(Grant::Conn(Box::new(PooledServer::new(c, self.clone())))) {
                        Ok(()) => return,
                        Err(Grant::Conn(mut back)) => conn = back.take_conn(),
                        Err(Grant::Slot(_)) => unreachable!("sent a connection"),
                    }
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
                None => return,
                Some(Handoff::Slot(waiter)) => {
                    match waiter.send(Grant::Slot(ConnectSlot::new(self.clone()))) {
                        Ok(()) => return,
                        Err(Grant::Slot(back)) => back.consume(),
                        Err(Grant::Conn(_)) => unreachable!("sent a slot"),
                    }
                }
                Some(Handoff::Conn(..)) => unreachable!("release_slot hands over slots"),
            }
        }
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let mut q = lock(&self.queue);
        q.forget_waiters(|w| w.is_closed());
        PoolSnapshot {
            database: self.database.clone(),
            user: self.settings.target.user.clone(),
            clients: self.clients.load(Ordering::Relaxed),
            waiting: q.waiting(),
            servers: q.total(),
            idle: q.idle_count(),
            mode: self.settings.mode.as_str(),
        }
    }

    /// Closes every idle server (used on shutdown).
    pub fn close_idle(&self) {
        let idle = lock(&self.queue).drain_idle();
        for mut conn in idle {
            conn.terminate();
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here leaves the data consistent before anything that can panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry of pools, keyed by (client database, server user).
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<(String, String), Arc<Pool>>>,
    next_server_id: Arc<AtomicU64>,
}

impl Pools {
    /// The pool for this key, created from `settings` if it does not exist yet.
    pub fn get_or_create(
        &self,
        database: &str,
        settings: impl FnOnce() -> PoolSettings,
    ) -> Arc<Pool> {
        let mut map = lock(&self.map);
        let settings = settings();
        let key = (database.to_owned(), settings.target.user.clone());
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Pool::new(
                    database.to_owned(),
                    settings,
                    self.next_server_id.clone(),
                ))
            })
            .clone()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<_> = lock(&self.map).values().cloned().collect();
        pools.sort_by(|a, b| {
            (&a.database, &a.settings.target.user).cmp(&(&b.database, &b.settings.target.user))
        });
        pools
    }
}
