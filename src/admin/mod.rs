//! The admin console: the virtual database `pgmux` (also answering to `pgbouncer`, so existing
//! tools connect unchanged). Users in admin_users may run every command, users in stats_users
//! only SHOW. Reads snapshots and statistics; never touches the hot path.

mod control;
mod parse;
mod show;

use crate::client::{ClientConn, ClientError};
use crate::protocol::backend::{self, Severity};
use crate::protocol::frame;
use crate::protocol::sqlstate as code;
use crate::shutdown::ShutdownMode;
use crate::Shared;
use bytes::BytesMut;
use parse::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Serves a logged-in console user until Terminate or disconnect.
pub async fn run(
    conn: &mut ClientConn,
    role: Role,
    shared: &Arc<Shared>,
) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
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
        match h.tag {
            b'X' => return Ok(()),
            b'Q' => {
                let sql = frame::cstr(&msg[5..]).map(|(s, _)| s).unwrap_or("");
                execute(shared, role, sql, &mut out).await;
                backend::ready_for_query(&mut out, b'I');
            }
            _ => {
                backend::error_response(
                    &mut out,
                    Severity::Fatal,
                    code::FEATURE_NOT_SUPPORTED,
                    "the admin console speaks the simple query protocol only",
                );
                conn.stream.write_all(&out).await?;
                return Ok(());
            }
        }
        conn.stream.write_all(&out).await?;
        out.clear();
    }
}

/// Runs one console statement, appending its reply (without ReadyForQuery).
async fn execute(shared: &Shared, role: Role, sql: &str, out: &mut BytesMut) {
    let error = |out: &mut BytesMut, code: &str, message: &str| {
        backend::error_response(out, Severity::Error, code, message);
    };
    match parse::parse(sql) {
        Err(message) => error(
            out,
            code::SYNTAX_ERROR,
            &format!("{message}. {}", help_text()),
        ),
        Ok(Command::Show(what)) if what == "HELP" => {
            backend::error_response(out, Severity::Notice, "00000", &help_text());
            backend::command_complete(out, "SHOW");
        }
        Ok(Command::Show(what)) => match show::show(shared, &what) {
            Some(table) => {
                let columns: Vec<(&str, u32)> = table.columns.clone();
                backend::row_description(out, &columns);
                for row in &table.rows {
                    backend::data_row(out, row.iter().map(|v| v.as_deref()));
                }
                backend::command_complete(out, "SHOW");
            }
            None if show::NOT_YET.contains(&what.as_str()) => error(
                out,
                code::FEATURE_NOT_SUPPORTED,
                &format!("SHOW {what} is not supported by pgmux yet"),
            ),
            None => error(
                out,
                code::SYNTAX_ERROR,
                &format!("unknown SHOW {what}. {}", help_text()),
            ),
        },
        Ok(Command::Control { name, .. }) if role == Role::Stats => error(
            out,
            code::INSUFFICIENT_PRIVILEGE,
            &format!("{name} needs a user in admin_users"),
        ),
        Ok(Command::Set { .. }) if role == Role::Stats => error(
            out,
            code::INSUFFICIENT_PRIVILEGE,
            "SET needs a user in admin_users",
        ),
        Ok(Command::Control { name, arg }) if name == "SHUTDOWN" => {
            let mode = match arg.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None => Some(ShutdownMode::Immediate),
                Some("WAIT_FOR_SERVERS") => Some(ShutdownMode::WaitForServers),
                Some("WAIT_FOR_CLIENTS") => Some(ShutdownMode::WaitForClients),
                Some(_) => None,
            };
            match mode {
                Some(mode) => {
                    tracing::info!(?mode, "shutdown requested from the admin console");
                    shared.shutdown.begin(mode);
                    backend::command_complete(out, "SHUTDOWN");
                }
                None => error(
                    out,
                    code::SYNTAX_ERROR,
                    "SHUTDOWN takes WAIT_FOR_SERVERS, WAIT_FOR_CLIENTS or nothing",
                ),
            }
        }
        Ok(Command::Control { name, arg })
            if [
                "PAUSE",
                "RESUME",
                "DISABLE",
                "ENABLE",
                "RECONNECT",
                "WAIT_CLOSE",
            ]
            .contains(&name.as_str()) =>
        {
            match control::run(shared, &name, arg.as_deref()).await {
                Ok(()) => backend::command_complete(out, &name),
                Err(message) => error(out, code::OBJECT_NOT_IN_PREREQUISITE_STATE, &message),
            }
        }
        Ok(Command::Control { name, .. }) if name == "RELOAD" => match shared.reload_from_file() {
            Ok(()) => backend::command_complete(out, "RELOAD"),
            Err(problems) => error(
                out,
                code::CONFIG_FILE_ERROR,
                &format!("reload refused: {problems}"),
            ),
        },
        Ok(Command::Control { name, .. }) => error(
            out,
            code::FEATURE_NOT_SUPPORTED,
            &format!("{name} is not supported by pgmux yet"),
        ),
        Ok(Command::Set { key, .. }) => error(
            out,
            code::FEATURE_NOT_SUPPORTED,
            &format!("changing {key} at run time is not supported by pgmux yet"),
        ),
    }
}

fn help_text() -> String {
    format!(
        "Commands: SHOW {}; also SHOW HELP. SELECT x is SHOW x.",
        show::SHOWS.join("|")
    )
}
