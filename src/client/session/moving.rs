//! The session's side of a takeover: whether its client can move, what it takes with it, and
//! how a session moved here starts again from that.
//!
//! A client moves only between transactions, holding no server, over a plain socket: TLS
//! state cannot leave rustls, a session-mode client's session lives on its server, and so
//! does a pinned one's. Those stay in the old process until they leave or its deadline.

use super::Session;
use crate::handover::{Handover, MovedClient};
use crate::prepared::Registry;
use crate::session_state::Held;
use crate::signal::Stop;
use crate::stream::Stream;
use bytes::Bytes;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a client moved from another process brings beyond its login.
pub struct Restored {
    /// Its named protocol-level statements: its name, the Parse body after it.
    pub statements: Vec<(Bytes, Bytes)>,
    /// Its session settings and SQL prepared statements.
    pub held: Held,
}

impl Restored {
    pub fn from_moved(moved: &mut MovedClient) -> Restored {
        let shared = |pairs: Vec<(String, String)>| {
            pairs
                .into_iter()
                .map(|(name, sql)| (name, Arc::from(sql)))
                .collect()
        };
        Restored {
            statements: std::mem::take(&mut moved.statements),
            held: Held {
                settings: shared(std::mem::take(&mut moved.settings)),
                prepared: shared(std::mem::take(&mut moved.prepared)),
            },
        }
    }
}

impl Session<'_> {
    /// Whether the client could move now, were a takeover to ask.
    pub(super) fn may_move(&self) -> bool {
        self.linked.is_none()
            && self.login.mode != crate::config::PoolMode::Session
            && matches!(self.client.stream, Stream::Plain(_) | Stream::Unix(_))
            && self.state.movable()
    }

    /// Offers the client to the new process. True when it is served there: this session
    /// then ends without a word to it. False when it stays here, for good in this takeover.
    pub(super) async fn hand_over(&mut self, handover: &Handover) -> bool {
        let socket = match &self.client.stream {
            Stream::Plain(tcp) => tcp.as_fd(),
            Stream::Unix(unix) => unix.as_fd(),
            _ => return self.stay("not a plain socket"),
        };
        // A statement too large to keep has no text to prepare it again with elsewhere.
        if self.statements.client.iter().any(|(_, s)| s.body.is_none()) {
            return self.stay("it holds a statement too large to move");
        }
        let client = self.moved_client();
        let entry = self.login.entry.clone();
        match handover.offer(client, socket, entry).await {
            Ok(()) => true,
            Err(why) => self.stay(&why),
        }
    }

    fn stay(&mut self, why: &str) -> bool {
        // One line per client that cannot move: the operator learns why the old process
        // waits for the deadline.
        tracing::info!(user = %self.login.entry.user, database = %self.login.entry.database, "client stays with this process: {why}");
        self.login.entry.signal.lower(Stop::Moving);
        false
    }

    fn moved_client(&self) -> MovedClient {
        let login = &self.login;
        let entry = &login.entry;
        let held = self.state.held();
        let owned = |pairs: &[(String, Arc<str>)]| {
            pairs
                .iter()
                .map(|(name, sql)| (name.clone(), sql.to_string()))
                .collect()
        };
        MovedClient {
            user: entry.user.clone(),
            database: entry.database.clone(),
            connect_time_us: entry
                .connect_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            cancel_key: login.cancel_key,
            params: login
                .params
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            // Only what a login taught the pool: the new process has its own config.
            credentials: match login.pool.settings().credentials {
                crate::server::ServerCredentials::None => login.pool.credentials(),
                _ => crate::server::ServerCredentials::None,
            },
            statements: self
                .statements
                .client
                .iter()
                .filter_map(|(name, s)| Some((name.clone(), s.body.clone()?)))
                .collect(),
            settings: owned(&held.settings),
            prepared: owned(&held.prepared),
            buffered: Bytes::copy_from_slice(&self.client.buf),
        }
    }

    /// Gives a client moved here its statements and session back.
    pub(super) fn restore(&mut self, restored: Restored, registry: &Registry) {
        if self.statements.capacity > 0 {
            for (name, body) in restored.statements {
                let statement = registry.intern(&body);
                self.statements.client.insert(name, statement);
            }
            let count = self.statements.client.len();
            self.login
                .entry
                .prepared_statements
                .store(count, Ordering::Relaxed);
        }
        self.state.restore(restored.held);
    }
}
