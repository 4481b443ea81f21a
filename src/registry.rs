//! Who is connected: one entry per logged-in client, with what SHOW CLIENTS, SHOW SERVERS,
//! KILL and KILL_CLIENT need. A session updates its own entry with relaxed stores; nothing here
//! is shared between sessions on the hot path.
//!
//! Admin console sessions have entries too, kept apart from the pool clients': SHOW CLIENTS,
//! SHOW LISTS and KILL_CLIENT see them, while KILL, a draining shutdown, SHOW SERVERS and every
//! per-pool or per-database count pass them by, as PgBouncer's do its admin pool.

use crate::address::Address;
use crate::signal::{Signal, Stop};
use crate::sync::lock;
use std::collections::{BTreeMap, HashMap};
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
    /// Why the client is pinned to its server (session_state's pins), for SHOW CLIENTS.
    pinned: AtomicU8,
}

impl ClientEntry {
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn set_pins(&self, pins: crate::session_state::Pins) {
        self.pinned.store(pins.bits(), Ordering::Relaxed);
    }

    pub fn pins(&self) -> crate::session_state::Pins {
        crate::session_state::Pins::from_bits(self.pinned.load(Ordering::Relaxed))
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }
}

/// A client's place in the registry (and under the client caps), given up when this is
/// dropped, however its session ends.
pub struct Listed<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Listed<'_> {
    /// Keeps the place past this guard: another guard holds it from now on.
    pub fn pass_on(self) {
        std::mem::forget(self);
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// Who a new pool client is.
pub struct NewClient<'a> {
    pub user: &'a str,
    pub database: &'a str,
    /// The user its servers log in as.
    pub server_user: &'a str,
    pub addr: Address,
    pub local_addr: Option<Address>,
    pub application_name: &'a str,
    /// When it connected, if not now (a client another process took over).
    pub connect_time: Option<SystemTime>,
}

#[derive(Default)]
pub struct Registry {
    clients: Mutex<Clients>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Clients {
    by_id: BTreeMap<u64, Arc<ClientEntry>>,
    /// Admin console sessions, by id from the same sequence as the pool clients'.
    consoles: BTreeMap<u64, Arc<ClientEntry>>,
    /// A draining shutdown has begun: clients added from now on start with it raised.
    draining: bool,
    /// A takeover is handing clients over: clients added from now on are asked to move too.
    moving: bool,
    /// Pool clients per client database and per client user, for max_db_client_connections
    /// and max_user_client_connections.
    per_database: HashMap<String, usize>,
    per_user: HashMap<String, usize>,
}

/// The most clients of one database and of one user; 0 = no cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCaps {
    pub per_database: usize,
    pub per_user: usize,
}

/// Which client cap a login would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapReached {
    Database,
    User,
}

impl Clients {
    fn count(map: &mut HashMap<String, usize>, name: &str, up: bool) {
        match (map.get_mut(name), up) {
            (Some(n), true) => *n += 1,
            (None, true) => {
                map.insert(name.to_owned(), 1);
            }
            (Some(n), false) if *n > 1 => *n -= 1,
            (Some(_), false) => {
                map.remove(name);
            }
            (None, false) => {}
        }
    }
}

impl Registry {
    /// A pool client that has just logged in, unless that would exceed `caps`.
    pub fn add(
        &self,
        client: NewClient<'_>,
        caps: ClientCaps,
    ) -> Result<Arc<ClientEntry>, CapReached> {
        let reached =
            |cap: usize, count: Option<&usize>| cap > 0 && count.copied().unwrap_or(0) >= cap;
        let mut clients = lock(&self.clients);
        if reached(caps.per_database, clients.per_database.get(client.database)) {
            return Err(CapReached::Database);
        }
        if reached(caps.per_user, clients.per_user.get(client.user)) {
            return Err(CapReached::User);
        }
        let entry = self.entry(
            client.user,
            client.database,
            client.server_user,
            (client.addr, client.local_addr),
            client.application_name,
            client.connect_time.unwrap_or_else(SystemTime::now),
        );
        if clients.draining {
            entry.signal.raise(Stop::Draining);
        }
        if clients.moving {
            entry.signal.raise(Stop::Moving);
        }
        Clients::count(&mut clients.per_database, client.database, true);
        Clients::count(&mut clients.per_user, client.user, true);
        clients.by_id.insert(entry.id, entry.clone());
        drop(clients);
        Ok(entry)
    }

    /// A guard that forgets client `id` when dropped.
    pub fn listed(&self, id: u64) -> Listed<'_> {
        Listed { registry: self, id }
    }

    /// Pool clients connected now.
    pub fn pool_clients(&self) -> usize {
        lock(&self.clients).by_id.len()
    }

    /// Admin console sessions connected now.
    pub fn console_count(&self) -> usize {
        lock(&self.clients).consoles.len()
    }

    /// Pool clients of `database` connected now.
    pub fn clients_of_database(&self, database: &str) -> usize {
        lock(&self.clients)
            .per_database
            .get(database)
            .copied()
            .unwrap_or(0)
    }

    /// Pool clients logged in as `user` connected now.
    pub fn clients_of_user(&self, user: &str) -> usize {
        lock(&self.clients).per_user.get(user).copied().unwrap_or(0)
    }

    /// An admin console session that has just logged in. It is `active` for as long as it
    /// stays, as PgBouncer shows its console clients, and holds no server.
    pub fn add_console(
        &self,
        user: &str,
        database: &str,
        addr: Address,
        local_addr: Option<Address>,
        application_name: &str,
    ) -> Arc<ClientEntry> {
        let addrs = (addr, local_addr);
        let entry = self.entry(
            user,
            database,
            "",
            addrs,
            application_name,
            SystemTime::now(),
        );
        entry.set_state(ClientState::Active);
        lock(&self.clients).consoles.insert(entry.id, entry.clone());
        entry
    }

    fn entry(
        &self,
        user: &str,
        database: &str,
        server_user: &str,
        (addr, local_addr): (Address, Option<Address>),
        application_name: &str,
        connect_time: SystemTime,
    ) -> Arc<ClientEntry> {
        Arc::new(ClientEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            user: user.to_owned(),
            database: database.to_owned(),
            server_user: server_user.to_owned(),
            addr,
            local_addr,
            connect_time,
            application_name: Mutex::new(application_name.to_owned()),
            state: AtomicU8::new(ClientState::Idle as u8),
            server: Mutex::new(None),
            signal: Signal::default(),
            prepared_statements: Default::default(),
            pinned: AtomicU8::new(0),
            tls: Default::default(),
        })
    }

    /// Forgets a pool client or a console session.
    pub fn remove(&self, id: u64) {
        let mut clients = lock(&self.clients);
        match clients.by_id.remove(&id) {
            Some(entry) => {
                Clients::count(&mut clients.per_database, &entry.database, false);
                Clients::count(&mut clients.per_user, &entry.user, false);
            }
            None => {
                clients.consoles.remove(&id);
            }
        }
    }

    /// The pool clients, by id.
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.clients).by_id.values().cloned().collect()
    }

    /// The admin console sessions, by id.
    pub fn consoles(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.clients).consoles.values().cloned().collect()
    }

    /// Whether a pool client or console session with this id is still connected.
    pub fn contains(&self, id: u64) -> bool {
        let clients = lock(&self.clients);
        clients.by_id.contains_key(&id) || clients.consoles.contains_key(&id)
    }

    /// Ends one client (KILL_CLIENT), a pool client or a console session as in PgBouncer;
    /// false if there is no such client.
    pub fn kill(&self, id: u64) -> bool {
        let clients = lock(&self.clients);
        match clients.by_id.get(&id).or_else(|| clients.consoles.get(&id)) {
            Some(entry) => {
                entry.signal.raise(Stop::Killed);
                true
            }
            None => false,
        }
    }

    /// A takeover: every pool client, present and to come, moves to the new process when
    /// between transactions (if it can).
    pub fn move_all(&self) {
        let mut clients = lock(&self.clients);
        clients.moving = true;
        for entry in clients.by_id.values() {
            entry.signal.raise(Stop::Moving);
        }
    }

    /// The takeover failed: every client stays.
    pub fn stop_moving(&self) {
        let mut clients = lock(&self.clients);
        clients.moving = false;
        for entry in clients.by_id.values() {
            entry.signal.lower(Stop::Moving);
        }
    }

    /// A draining shutdown: every pool client, present and to come, stops when between
    /// transactions. Console sessions stay, so that an operator can watch the drain.
    pub fn drain_all(&self) {
        let mut clients = lock(&self.clients);
        clients.draining = true;
        for entry in clients.by_id.values() {
            entry.signal.raise(Stop::Draining);
        }
    }
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

    fn client<'a>(user: &'a str, database: &'a str) -> NewClient<'a> {
        NewClient {
            user,
            database,
            server_user: user,
            addr: "127.0.0.1:5".parse().unwrap(),
            local_addr: None,
            application_name: "app",
            connect_time: None,
        }
    }

    fn add(r: &Registry, user: &str, database: &str) -> Arc<ClientEntry> {
        r.add(client(user, database), ClientCaps::default())
            .unwrap()
    }

    #[test]
    fn a_takeover_asks_present_and_later_clients_to_move_until_it_fails() {
        let r = Registry::default();
        let before = add(&r, "a", "db");
        r.move_all();
        let after = add(&r, "b", "db");
        assert!(before.signal.is_raised(Stop::Moving));
        assert!(after.signal.is_raised(Stop::Moving));
        assert_eq!(r.pool_clients(), 2);
        r.stop_moving();
        assert!(!before.signal.is_raised(Stop::Moving));
        assert!(!after.signal.is_raised(Stop::Moving));
        assert!(!add(&r, "c", "db").signal.is_raised(Stop::Moving));
    }

    #[test]
    fn client_caps_count_per_database_and_per_user() {
        let r = Registry::default();
        let caps = ClientCaps {
            per_database: 2,
            per_user: 2,
        };
        let a = r.add(client("u", "d"), caps).unwrap();
        let _b = r.add(client("v", "d"), caps).unwrap();
        assert_eq!(
            r.add(client("w", "d"), caps).err(),
            Some(CapReached::Database)
        );
        let _c = r.add(client("u", "e"), caps).unwrap();
        assert_eq!(r.add(client("u", "f"), caps).err(), Some(CapReached::User));
        assert_eq!((r.clients_of_database("d"), r.clients_of_user("u")), (2, 2));
        r.remove(a.id);
        assert_eq!((r.clients_of_database("d"), r.clients_of_user("u")), (1, 1));
        assert!(r.add(client("w", "d"), caps).is_ok());
    }

    #[test]
    fn entries_come_and_go_and_can_be_killed() {
        let r = Registry::default();
        let a = add(&r, "u", "d");
        a.set_state(ClientState::Active);
        assert_eq!(r.all()[0].state(), ClientState::Active);
        assert!(r.kill(a.id));
        assert!(a.signal.is_raised(Stop::Killed));
        assert!(!r.kill(a.id + 100));
        r.drain_all();
        assert!(a.signal.is_raised(Stop::Draining));
        let late = add(&r, "u", "d");
        assert!(late.signal.is_raised(Stop::Draining));
        r.remove(late.id);
        r.remove(a.id);
        assert!(r.all().is_empty());
    }

    #[test]
    fn consoles_are_listed_apart_and_can_be_killed() {
        let r = Registry::default();
        let addr: Address = "127.0.0.1:5".parse().unwrap();
        let pool_client = add(&r, "u", "d");
        let console = r.add_console("admin", "pgbouncer", addr, None, "psql");
        assert_ne!(console.id, pool_client.id, "one id sequence for both");
        assert_eq!(console.state(), ClientState::Active);
        assert_eq!(
            r.all().len(),
            1,
            "KILL and SHOW SERVERS see pool clients only"
        );
        assert_eq!(r.consoles()[0].id, console.id);
        r.drain_all();
        assert!(!console.signal.is_raised(Stop::Draining));
        assert!(r.contains(console.id));
        assert!(r.kill(console.id));
        assert!(console.signal.is_raised(Stop::Killed));
        r.remove(console.id);
        assert!(!r.contains(console.id) && r.contains(pool_client.id));
        assert!(r.consoles().is_empty());
    }
}
