//! Guards that let `Drop` return resources: a checked-out server goes back to its pool only if
//! its tracker says Idle, else it is closed; an unused connect slot is released.

use super::Pool;
use crate::server::ServerConn;
use crate::tracker::Verdict;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A server checked out of a pool. The connection is boxed: it moves between the pool's idle
/// list and its client on every transaction, and a pointer moves cheaper than the whole.
pub struct PooledServer {
    conn: Option<Box<ServerConn>>,
    pool: Arc<Pool>,
}

impl PooledServer {
    pub(super) fn new(conn: Box<ServerConn>, pool: Arc<Pool>) -> PooledServer {
        PooledServer {
            conn: Some(conn),
            pool,
        }
    }

    pub(super) fn take_conn(&mut self) -> Box<ServerConn> {
        self.conn.take().expect("connection present until drop")
    }

    /// Closes this connection but keeps its place in the pool for a new one.
    pub(super) fn into_slot(mut self) -> ConnectSlot {
        let mut conn = self.take_conn();
        self.pool.retire(&mut conn);
        ConnectSlot::new(self.pool.clone())
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// `conn` as if checked out of a pool of its own, for tests of what runs over a server.
    #[cfg(test)]
    pub fn detached(conn: ServerConn) -> PooledServer {
        let text = "[pgmux]\n[databases.app]\nhost = \"127.0.0.1\"\n";
        let config = crate::config::Config::parse(text, std::path::Path::new("."))
            .expect("a minimal config");
        let settings = super::PoolSettings::from_config(&config, "app", "app")
            .expect("settings of the one database");
        let pool = Pool::new("app".into(), settings, Default::default(), Vec::new());
        // Counted as open, as a connect would have.
        let _room = super::lock(&pool.queue).take();
        PooledServer::new(Box::new(conn), Arc::new(pool))
    }
}

impl Deref for PooledServer {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledServer {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledServer {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let now = std::time::Instant::now();
        let expired = conn.expires_at.is_some_and(|at| at <= now)
            || conn.generation != self.pool.generation();
        match conn.tracker.verdict() {
            Verdict::Idle if conn.buf.is_empty() && !expired => {
                conn.last_used = now;
                self.pool.check_in(conn)
            }
            verdict => {
                let reason = if expired && verdict == Verdict::Idle {
                    "server_lifetime or config reloaded"
                } else {
                    "not idle at release"
                };
                tracing::debug!(server = conn.id(), ?verdict, reason, "closing server");
                self.pool.retire(&mut conn);
                drop(conn);
                self.pool.release_slot();
            }
        }
    }
}

/// The right to open one server connection in a pool; released on drop unless consumed.
pub struct ConnectSlot {
    pool: Arc<Pool>,
    armed: bool,
}

impl ConnectSlot {
    pub(super) fn new(pool: Arc<Pool>) -> ConnectSlot {
        ConnectSlot { pool, armed: true }
    }

    /// The slot became a connection (or was handed back by a failed send).
    pub(super) fn consume(mut self) {
        self.armed = false;
    }
}

impl Drop for ConnectSlot {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release_slot();
        }
    }
}
