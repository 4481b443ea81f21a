//! The admin console: the virtual database `pgmux` (also answering to `pgbouncer`, so existing
//! tools connect unchanged). Users in admin_users may run every command, users in stats_users
//! only SHOW. Reads snapshots and statistics; never touches the hot path.

mod control;
mod execute;
mod extended;
mod parse;
mod show;
mod sockets;

use crate::client::{ClientConn, ClientError};
use crate::protocol::backend;
use crate::protocol::frame;
use crate::Shared;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Names of the console database.
pub const DATABASES: [&str; 2] = ["pgmux", "pgbouncer"];

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

/// Serves a logged-in console user until Terminate or disconnect: the simple query protocol as
/// PgBouncer's console, and the extended one (Parse/Bind/Describe/Execute/Sync) that drivers such
/// as psycopg 3, JDBC and Npgsql use by default.
pub async fn run(
    conn: &mut ClientConn,
    role: Role,
    shared: &Arc<Shared>,
) -> Result<(), ClientError> {
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

fn help_text() -> String {
    format!(
        "Commands: SHOW {}; SHOW HELP; SELECT x is SHOW x; PAUSE [db]; RESUME [db]; \
         DISABLE db; ENABLE db; RECONNECT [db]; WAIT_CLOSE [db]; KILL [db]; KILL_CLIENT id; \
         RELOAD; SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]",
        show::SHOWS.join("|")
    )
}
