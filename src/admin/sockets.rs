//! SHOW CLIENTS and SHOW SERVERS: one row per connection, in PgBouncer's 21 columns and
//! pgmux's `pinned` after them.

use super::show::{Table, INT4, INT8, TEXT};
use crate::shared::Shared;
use std::sync::atomic::Ordering;

/// SHOW CLIENTS and SHOW SERVERS columns, PgBouncer's 21 in its order, then `pinned`: why the
/// client (or the client linked to the server) is pinned to its server, empty if it is not.
const SOCKET_COLUMNS: [(&str, u32); 22] = [
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("replication", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT4),
    ("local_addr", TEXT),
    ("local_port", INT4),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT4),
    ("wait_us", INT4),
    ("close_needed", INT4),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT4),
    ("tls", TEXT),
    ("application_name", TEXT),
    ("prepared_statements", INT4),
    ("id", INT8),
    ("pinned", TEXT),
];

/// What one SHOW CLIENTS / SHOW SERVERS row says.
struct SocketRow<'a> {
    kind: &'a str,
    user: &'a str,
    database: &'a str,
    state: &'a str,
    addr: &'a crate::address::Address,
    local: Option<&'a crate::address::Address>,
    connect_time: std::time::SystemTime,
    /// pgmux ids in hex (clients `c…`, servers `s…`), standing in for PgBouncer's pointers.
    ptr: String,
    link: String,
    remote_pid: u32,
    application_name: &'a str,
    tls: &'a str,
    prepared_statements: usize,
    id: u64,
    pinned: String,
}

impl SocketRow<'_> {
    fn cells(self) -> Vec<String> {
        let time = crate::registry::format_time(self.connect_time);
        vec![
            self.kind.into(),
            self.user.into(),
            self.database.into(),
            "none".into(),
            self.state.into(),
            self.addr.host_text(),
            self.addr.port().to_string(),
            self.local.map(|l| l.host_text()).unwrap_or_default(),
            self.local.map(|l| l.port().to_string()).unwrap_or_default(),
            time.clone(),
            time,
            "0".into(),
            "0".into(),
            "0".into(),
            self.ptr,
            self.link,
            self.remote_pid.to_string(),
            self.tls.into(),
            self.application_name.into(),
            self.prepared_statements.to_string(),
            self.id.to_string(),
            self.pinned,
        ]
    }
}

/// Pool clients and console sessions (the asking one too, as PgBouncer shows it), by id: the
/// order they logged in.
pub(super) fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(&SOCKET_COLUMNS);
    let mut clients = shared.registry.all();
    clients.extend(shared.registry.consoles());
    clients.sort_by_key(|c| c.id);
    for c in clients {
        let server = crate::sync::lock(&c.server).clone();
        let app = crate::sync::lock(&c.application_name).clone();
        t.row(
            SocketRow {
                kind: "C",
                user: &c.user,
                database: &c.database,
                state: c.state().as_str(),
                addr: &c.addr,
                local: c.local_addr.as_ref(),
                connect_time: c.connect_time,
                ptr: format!("c{:x}", c.id),
                link: server.map(|s| format!("s{:x}", s.id)).unwrap_or_default(),
                remote_pid: 0,
                application_name: &app,
                tls: c.tls.get().map_or("", String::as_str),
                prepared_statements: c.prepared_statements.load(Ordering::Relaxed),
                id: c.id,
                pinned: c.pins().describe(),
            }
            .cells(),
        );
    }
    t
}

pub(super) fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&SOCKET_COLUMNS);
    let pools = shared.pools.all();
    for c in shared.registry.all() {
        let server = crate::sync::lock(&c.server).clone();
        let Some(s) = server else { continue };
        let link = format!("c{:x}", c.id);
        let pinned = c.pins().describe();
        t.row(server_row(
            &s,
            &c.server_user,
            &c.database,
            "active",
            link,
            pinned,
        ));
    }
    for pool in &pools {
        for s in pool.idle_servers() {
            t.row(server_row(
                &s,
                &pool.user,
                &pool.database,
                "idle",
                String::new(),
                String::new(),
            ));
        }
    }
    t
}

/// One SHOW SERVERS row: a server of (`user`, `database`), linked to a client or not.
fn server_row(
    s: &crate::registry::ServerSummary,
    user: &str,
    database: &str,
    state: &str,
    link: String,
    pinned: String,
) -> Vec<String> {
    SocketRow {
        kind: "S",
        user,
        database,
        state,
        addr: &s.addr,
        local: s.local_addr.as_ref(),
        connect_time: s.connect_time,
        ptr: format!("s{:x}", s.id),
        link,
        remote_pid: s.backend_pid,
        application_name: "",
        tls: "",
        prepared_statements: s.prepared_statements,
        id: s.id,
        pinned,
    }
    .cells()
}
