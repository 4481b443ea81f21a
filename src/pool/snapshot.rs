//! What a pool shows of itself: the figures of SHOW POOLS, SHOW SERVERS and the metrics,
//! read under the queue's lock, never on a client's path.

use super::{lock, Pool};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Figures for SHOW POOLS and the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub database: String,
    pub user: String,
    pub clients: usize,
    pub waiting: usize,
    pub servers: usize,
    pub idle: usize,
    /// Servers being connected and logged in.
    pub connecting: usize,
    /// How long the longest-waiting client has waited.
    pub max_wait: Duration,
    pub mode: &'static str,
    /// Clients pinned to their servers by session state.
    pub pinned: usize,
}

impl Pool {
    pub fn snapshot(&self) -> PoolSnapshot {
        let mut q = lock(&self.queue);
        q.forget_waiters(|w| w.is_closed());
        PoolSnapshot {
            database: self.database.clone(),
            user: self.user.clone(),
            clients: self.clients.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            servers: q.total(),
            idle: q.idle_count(),
            connecting: self.connecting.load(Ordering::Relaxed),
            max_wait: q.oldest_waiter().map(|t| t.elapsed()).unwrap_or_default(),
            mode: self.settings().mode.as_str(),
            pinned: self.pinned.taken(),
        }
    }

    /// The idle servers, for SHOW SERVERS.
    pub fn idle_servers(&self) -> Vec<crate::registry::ServerSummary> {
        lock(&self.queue)
            .idle()
            .iter()
            .map(|conn| conn.summary())
            .collect()
    }
}
