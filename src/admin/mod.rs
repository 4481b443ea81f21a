//! The admin console: the virtual database `pgmux` (also answering to `pgbouncer`, so existing
//! tools connect unchanged). Users in admin_users may run every command, users in stats_users
//! only SHOW. Reads snapshots and statistics; never touches the hot path.

mod control;
mod execute;
mod extended;
mod parse;
mod peers;
mod settings;
mod show;
mod sockets;

use crate::connection::{ClientConn, ClientError};
use crate::protocol::backend;
use crate::protocol::frame;
use crate::shared::Shared;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The database SHOW CLIENTS gives a console session, whichever of the
/// [`CONSOLE_DATABASES`](crate::config::CONSOLE_DATABASES) it asked for:
/// PgBouncer's name for its console, so that tools which tell console rows apart by
/// `database = 'pgbouncer'` (as exporters and dashboards written for PgBouncer do) find them.
pub const SHOWN_DATABASE: &str = "pgbouncer";

/// Longest console statement accepted.
const MAX_STATEMENT: usize = 64 * 1024;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Stats,
}

/// The role of `user` on the console, if any.
pub fn role(shared: &Shared, user: &str) -> Option<Role> {
    let config = shared.config();
    let g = &config.general;
    if g.admin_users.iter().any(|u| u == user) {
        Some(Role::Admin)
    } else if g.stats_users.iter().any(|u| u == user) {
        Some(Role::Stats)
    } else {
        None
    }
}

/// Parameters the console reports at login (PgBouncer's set).
pub fn welcome(out: &mut BytesMut) {
    let version = format!("{}/pgmux", env!("CARGO_PKG_VERSION"));
    for (k, v) in [
        ("server_version", version.as_str()),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
    ] {
        backend::parameter_status(out, k, v);
    }
}

/// Serves a logged-in console user from its login to its end: listed in SHOW CLIENTS and
/// KILL_CLIENT-able meanwhile, but in no pool and no database's or user's client count. It
/// stays among the connections open (`max_client_conn`, SHOW LISTS, SHOW MEM), as PgBouncer
/// counts its console clients there too.
pub async fn serve(
    conn: &mut ClientConn,
    user: &str,
    application_name: &str,
    role: Role,
    shared: &Arc<Shared>,
) -> Result<(), ClientError> {
    let (log_connections, listen_port) = {
        let config = shared.config();
        (config.general.log_connections, config.general.listen_port)
    };
    let entry = shared.registry.add_console(
        user,
        SHOWN_DATABASE,
        conn.peer.clone(),
        conn.stream.local_address(listen_port),
        application_name,
    );
    if let Some(tls) = &conn.tls {
        let _ = entry.tls.set(tls.description.clone());
    }
    // Forgets the session however it ends, a panic included.
    let _listed = shared.registry.listed(entry.id);
    if log_connections {
        tracing::info!(%user, ?role, peer = %conn.peer, id = entry.id, "admin console connected");
    }
    let result = tokio::select! {
        result = run(conn, role, shared) => result,
        // KILL_CLIENT of this session, even from itself: stop at once, in the middle of a
        // command if need be (a PAUSE waiting, say).
        _ = entry.signal.stopped(false) => Err(ClientError::Killed),
    };
    if shared.config().general.log_disconnections {
        tracing::info!(%user, peer = %conn.peer, "admin console disconnected");
    }
    result
}

/// Serves a logged-in console user until Terminate or disconnect: the simple query protocol as
/// PgBouncer's console, and the extended one (Parse/Bind/Describe/Execute/Sync) that drivers such
/// as psycopg 3, JDBC and Npgsql use by default.
async fn run(conn: &mut ClientConn, role: Role, shared: &Arc<Shared>) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
    let mut extended = extended::Extended::default();
    loop {
        let Some(h) = frame::header(&conn.buf)? else {
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                return Ok(());
            }
            continue;
        };
        if h.total > MAX_STATEMENT {
            return Err(crate::protocol::ProtocolError::BadLength {
                len: h.total,
                max: MAX_STATEMENT,
            }
            .into());
        }
        if conn.buf.len() < h.total {
            conn.buf.reserve(h.total - conn.buf.len());
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                return Ok(());
            }
            continue;
        }
        let msg = conn.buf.split_to(h.total);
        let body = &msg[5..];
        match h.tag {
            b'X' => return Ok(()),
            b'Q' => {
                let sql = frame::cstr(body).map(|(s, _)| s).unwrap_or("");
                let outcome = execute::execute(shared, role, sql).await;
                outcome.describe(&mut out, &[]);
                outcome.write_result(&mut out, &[]);
                backend::ready_for_query(&mut out, b'I');
            }
            b'H' => {}
            tag => extended.message(shared, role, tag, body, &mut out).await?,
        }
        // Flush at Sync, Flush and simple queries; extended replies before that may wait.
        if matches!(h.tag, b'Q' | b'S' | b'H') || out.len() > MAX_STATEMENT {
            conn.stream.send(&out).await?;
            out.clear();
        }
    }
}

/// SHOW HELP, one line per form, laid out as PgBouncer's: every command the console runs.
/// SUSPEND and SHOW FDS|SOCKETS|ACTIVE_SOCKETS are known by name but answered "not supported",
/// so they are not offered here.
const USAGE: [&str; 17] = [
    "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION",
    "SHOW LISTS|MEM|STATE|PEERS|PEER_POOLS",
    "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS",
    "SELECT <x> (the same as SHOW <x>)",
    "SET key = arg",
    "RELOAD",
    "PAUSE [<db>]",
    "RESUME [<db>]",
    "DISABLE <db>",
    "ENABLE <db>",
    "RECONNECT [<db>]",
    "KILL [<db>]",
    "KILL_CLIENT <client_id>",
    "SHUTDOWN",
    "SHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS",
    "WAIT_CLOSE [<db>]",
    "UPGRADE [<seconds>]",
];

/// SHOW HELP's NOTICE: PgBouncer's message, and the commands in its detail, one a line.
fn help_notice() -> execute::Notice {
    execute::Notice {
        message: "Console usage".into(),
        detail: Some(USAGE.iter().map(|l| format!("\n\t{l}")).collect()),
    }
}

/// The commands on one line, for error messages.
fn help_text() -> String {
    format!("Commands: {}", USAGE.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SHOW the console answers and every command it runs is in SHOW HELP, and nothing
    /// else is.
    #[test]
    fn help_lists_what_the_console_runs() {
        let mut shows: Vec<&str> = USAGE
            .iter()
            .filter_map(|l| l.strip_prefix("SHOW "))
            .flat_map(|l| l.split('|'))
            .filter(|s| *s != "HELP")
            .collect();
        shows.sort();
        let mut answered = show::SHOWS.to_vec();
        answered.sort();
        assert_eq!(shows, answered);
        let config = crate::config::Config::parse("[pgmux]\n", std::path::Path::new("."));
        let shared = Shared::new(config.unwrap());
        for what in show::SHOWS {
            assert!(show::show(&shared, what).is_some(), "SHOW {what}");
        }
        for command in parse::CONTROL_COMMANDS {
            let listed = USAGE.iter().any(|l| l.split(' ').next() == Some(command));
            assert_eq!(listed, command != "SUSPEND", "{command}");
        }
        let notice = help_notice();
        let detail = notice.detail.unwrap();
        assert!(detail.contains("\n\tSET key = arg\n"), "{detail}");
        assert!(help_text().contains("SET key = arg"));
    }
}
