//! Who is connected: one entry per logged-in client, with what SHOW CLIENTS, SHOW SERVERS,
//! KILL and KILL_CLIENT need. A session updates its own entry with relaxed stores; nothing here
//! is shared between sessions on the hot path.

use crate::address::Address;
use crate::signal::{Signal, Stop};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A client's state as SHOW CLIENTS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    Idle = 0,
    Waiting = 1,
    Active = 2,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// The server a client holds, as SHOW SERVERS shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSummary {
    pub id: u64,
    pub addr: Address,
    pub local_addr: Option<Address>,
    pub connect_time: SystemTime,
    pub backend_pid: u32,
    /// Named statements prepared on it for clients.
    pub prepared_statements: usize,
}

pub struct ClientEntry {
    pub id: u64,
    pub user: String,
    pub database: String,
    /// The user its servers log in as (the pool's).
    pub server_user: String,
    pub addr: Address,
    pub local_addr: Option<Address>,
    pub connect_time: SystemTime,
    pub application_name: Mutex<String>,
    state: AtomicU8,
    /// Set while the client holds a server.
    pub server: Mutex<Option<ServerSummary>>,
    /// KILL, KILL_CLIENT and a draining shutdown stop the session through this.
    pub signal: Signal,
    /// Named prepared statements the client holds, for SHOW CLIENTS.
    pub prepared_statements: std::sync::atomic::AtomicUsize,
    /// TLS protocol and cipher suite, set once for a client that connected with TLS.
    pub tls: std::sync::OnceLock<String>,
}

impl ClientEntry {
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }
}

#[derive(Default)]
pub struct Registry {
    clients: Mutex<Clients>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Clients {
    by_id: BTreeMap<u64, Arc<ClientEntry>>,
    /// A draining shutdown has begun: clients added from now on start with it raised.
    draining: bool,
}

impl Registry {
    pub fn add(
        &self,
        user: &str,
        database: &str,
        server_user: &str,
        addr: Address,
        local_addr: Option<Address>,
        application_name: &str,
    ) -> Arc<ClientEntry> {
        let entry = Arc::new(ClientEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            user: user.to_owned(),
            database: database.to_owned(),
            server_user: server_user.to_owned(),
            addr,
            local_addr,
            connect_time: SystemTime::now(),
            application_name: Mutex::new(application_name.to_owned()),
            state: AtomicU8::new(ClientState::Idle as u8),
            server: Mutex::new(None),
            signal: Signal::default(),
            prepared_statements: Default::default(),
            tls: Default::default(),
        });
        let mut clients = lock(&self.clients);
        if clients.draining {
            entry.signal.raise(Stop::Draining);
        }
        clients.by_id.insert(entry.id, entry.clone());
        drop(clients);
        entry
    }

    pub fn remove(&self, id: u64) {
        lock(&self.clients).by_id.remove(&id);
    }

    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.clients).by_id.values().cloned().collect()
    }

    /// Ends one client (KILL_CLIENT); false if there is no such client.
    pub fn kill(&self, id: u64) -> bool {
        match lock(&self.clients).by_id.get(&id) {
            Some(entry) => {
                entry.signal.raise(Stop::Killed);
                true
            }
            None => false,
        }
    }

    /// A draining shutdown: every client, present and to come, stops when between
    /// transactions.
    pub fn drain_all(&self) {
        let mut clients = lock(&self.clients);
        clients.draining = true;
        for entry in clients.by_id.values() {
            entry.signal.raise(Stop::Draining);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer prints connection times.
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_format_like_pgbouncer() {
        assert_eq!(
            format_time(SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 UTC"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(format_time(t), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn entries_come_and_go_and_can_be_killed() {
        let r = Registry::default();
        let addr: Address = "127.0.0.1:5".parse().unwrap();
        let a = r.add("u", "d", "u", addr.clone(), None, "app");
        a.set_state(ClientState::Active);
        assert_eq!(r.all()[0].state(), ClientState::Active);
        assert!(r.kill(a.id));
        assert!(a.signal.is_raised(Stop::Killed));
        assert!(!r.kill(a.id + 100));
        r.drain_all();
        assert!(a.signal.is_raised(Stop::Draining));
        let late = r.add("u", "d", "u", addr, None, "app");
        assert!(late.signal.is_raised(Stop::Draining));
        r.remove(late.id);
        r.remove(a.id);
        assert!(r.all().is_empty());
    }
}
