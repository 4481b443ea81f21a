//! Runs one console statement and says what it produced, so that the simple and the extended
//! query protocol can each write it their way.

use super::show::{self, Table};
use super::{control, help_notice, help_text, parse, Role};
use crate::protocol::backend::{self, Severity};
use crate::protocol::sqlstate as code;
use crate::shared::Shared;
use crate::shutdown::ShutdownMode;
use bytes::{BufMut, BytesMut};
use parse::Command;

/// A NOTICE sent before a command's CommandComplete.
pub struct Notice {
    pub message: String,
    /// psql prints it on its own `DETAIL:` line.
    pub detail: Option<String>,
}

impl Notice {
    /// NoticeResponse: severity, SQLSTATE 00000, message, and the detail if any.
    fn write(&self, out: &mut BytesMut) {
        backend::put_message(out, b'N', |b| {
            let mut field = |tag: u8, text: &str| {
                b.put_u8(tag);
                b.put_slice(text.as_bytes());
                b.put_u8(0);
            };
            field(b'S', "NOTICE");
            field(b'V', "NOTICE");
            field(b'C', "00000");
            field(b'M', &self.message);
            if let Some(detail) = &self.detail {
                field(b'D', detail);
            }
            b.put_u8(0);
        });
    }
}

/// What a statement produced.
pub enum Outcome {
    /// A SHOW's table.
    Rows(Table),
    /// A command done, with its tag and maybe a notice (SHOW HELP).
    Done {
        tag: String,
        notice: Option<Notice>,
    },
    Error {
        code: &'static str,
        message: String,
    },
}

fn error(code: &'static str, message: impl Into<String>) -> Outcome {
    Outcome::Error {
        code,
        message: message.into(),
    }
}

fn done(tag: &str) -> Outcome {
    Outcome::Done {
        tag: tag.to_owned(),
        notice: None,
    }
}

/// Result format codes from a Bind: none = all text, one = for every column, else per column.
pub fn is_binary(formats: &[i16], column: usize) -> bool {
    match formats {
        [] => false,
        [one] => *one == 1,
        many => many.get(column) == Some(&1),
    }
}

/// A console value in PostgreSQL's binary format for its column type.
fn binary_value(oid: u32, text: &str) -> Vec<u8> {
    match oid {
        show::INT4 => text.parse::<i32>().unwrap_or(0).to_be_bytes().to_vec(),
        show::NUMERIC => numeric_binary(text.parse::<u64>().unwrap_or(0)),
        _ => text.as_bytes().to_vec(),
    }
}

/// NUMERIC's binary form of a whole number: base-10000 digits, most significant first.
fn numeric_binary(mut n: u64) -> Vec<u8> {
    let mut groups = Vec::new();
    while n > 0 {
        groups.push((n % 10_000) as i16);
        n /= 10_000;
    }
    groups.reverse();
    let weight = groups.len().saturating_sub(1) as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

impl Outcome {
    /// RowDescription, or false for a statement that returns no rows.
    pub fn describe(&self, out: &mut BytesMut, formats: &[i16]) -> bool {
        match self {
            Outcome::Rows(table) => {
                backend::row_description_formats(out, &table.columns, |i| is_binary(formats, i));
                true
            }
            _ => false,
        }
    }

    /// Rows, notices, CommandComplete or the error; returns false on error.
    pub fn write_result(&self, out: &mut BytesMut, formats: &[i16]) -> bool {
        match self {
            Outcome::Rows(table) if formats.iter().all(|f| *f == 0) => {
                for row in &table.rows {
                    backend::data_row(out, row.iter().map(|v| v.as_deref()));
                }
                backend::command_complete(out, "SHOW");
            }
            Outcome::Rows(table) => {
                for row in &table.rows {
                    let values: Vec<Option<Vec<u8>>> = row
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let v = v.as_deref()?;
                            Some(if is_binary(formats, i) {
                                binary_value(table.columns[i].1, v)
                            } else {
                                v.as_bytes().to_vec()
                            })
                        })
                        .collect();
                    backend::data_row_bytes(out, values.iter().map(|v| v.as_deref()));
                }
                backend::command_complete(out, "SHOW");
            }
            Outcome::Done { tag, notice } => {
                if let Some(n) = notice {
                    n.write(out);
                }
                backend::command_complete(out, tag);
            }
            Outcome::Error { code, message } => {
                backend::error_response(out, Severity::Error, code, message);
                return false;
            }
        }
        true
    }
}

/// UPGRADE [seconds]: starts a new process of the binary at this one's path that takes its
/// sockets and clients over; clients in a transaction get `seconds` (30 by default) to finish.
fn upgrade(shared: &Shared, deadline: Option<&str>) -> Outcome {
    let deadline = match deadline.map(|s| s.parse().map(std::time::Duration::try_from_secs_f64)) {
        None => None,
        Some(Ok(Ok(seconds))) => Some(seconds),
        Some(_) => return error(code::SYNTAX_ERROR, "UPGRADE takes a number of seconds"),
    };
    let socket = shared.handover.unix_socket();
    match crate::takeover::successor::start(shared.config_path(), socket, deadline) {
        Ok(pid) => Outcome::Done {
            tag: "UPGRADE".into(),
            notice: Some(Notice {
                message: format!("pgmux process {pid} is taking over"),
                detail: Some("this process exits once the new one holds every client; the log tells how it went".into()),
            }),
        },
        Err(message) => error(code::OBJECT_NOT_IN_PREREQUISITE_STATE, message),
    }
}

/// Runs one console statement.
pub async fn execute(shared: &Shared, role: Role, sql: &str) -> Outcome {
    let command = match parse::parse(sql) {
        Ok(c) => c,
        Err(message) => {
            // PgBouncer's "invalid command '…', use SHOW HELP;" already ends a sentence.
            let end = if message.ends_with(';') { "" } else { "." };
            return error(
                code::SYNTAX_ERROR,
                format!("{message}{end} {}", help_text()),
            );
        }
    };
    match command {
        Command::Show(what) if what == "HELP" => Outcome::Done {
            tag: "SHOW".into(),
            notice: Some(help_notice()),
        },
        Command::Show(what) => match show::show(shared, &what) {
            Some(table) => Outcome::Rows(table),
            None if show::NOT_YET.contains(&what.as_str()) => error(
                code::FEATURE_NOT_SUPPORTED,
                format!("SHOW {what} is not supported by pgmux yet"),
            ),
            None => error(
                code::SYNTAX_ERROR,
                format!("unknown SHOW {what}. {}", help_text()),
            ),
        },
        Command::Control { name, .. } if role == Role::Stats => error(
            code::INSUFFICIENT_PRIVILEGE,
            format!("{name} needs a user in admin_users"),
        ),
        Command::Set { .. } if role == Role::Stats => error(
            code::INSUFFICIENT_PRIVILEGE,
            "SET needs a user in admin_users",
        ),
        Command::Control { name, arg } if name == "SHUTDOWN" => {
            let mode = match arg.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None => ShutdownMode::Immediate,
                Some("WAIT_FOR_SERVERS") => ShutdownMode::WaitForServers,
                Some("WAIT_FOR_CLIENTS") => ShutdownMode::WaitForClients,
                Some(_) => {
                    return error(
                        code::SYNTAX_ERROR,
                        "SHUTDOWN takes WAIT_FOR_SERVERS, WAIT_FOR_CLIENTS or nothing",
                    )
                }
            };
            tracing::info!(?mode, "shutdown requested from the admin console");
            shared.begin_shutdown(mode);
            done("SHUTDOWN")
        }
        Command::Control { name, arg } if control::COMMANDS.contains(&name.as_str()) => {
            match control::run(shared, &name, arg.as_deref()).await {
                Ok(()) => done(&name),
                Err(message) => error(code::OBJECT_NOT_IN_PREREQUISITE_STATE, message),
            }
        }
        Command::Control { name, arg } if name == "UPGRADE" => upgrade(shared, arg.as_deref()),
        Command::Control { name, .. } if name == "RELOAD" => match shared.reload_from_file() {
            Ok(()) => done("RELOAD"),
            Err(problems) => error(
                code::CONFIG_FILE_ERROR,
                format!("reload refused: {problems}"),
            ),
        },
        Command::Control { name, .. } => error(
            code::FEATURE_NOT_SUPPORTED,
            format!("{name} is not supported by pgmux yet"),
        ),
        Command::Set { key, value } => {
            if crate::config::RESTART_ONLY.contains(&key.as_str()) {
                return error(
                    code::CANT_CHANGE_RUNTIME_PARAM,
                    format!("{key} can only change with a restart"),
                );
            }
            match shared.config().with_setting(&key, &value) {
                Ok(config) => {
                    tracing::info!(setting = %key, "changed from the admin console");
                    shared.reload(config);
                    done("SET")
                }
                Err(problems) => {
                    let list: Vec<String> = problems
                        .iter()
                        .map(|p| format!("{}: {}", p.key, p.message))
                        .collect();
                    error(code::INVALID_PARAMETER_VALUE, list.join("; "))
                }
            }
        }
    }
}

/// Columns a statement would return, without running a control command.
pub fn describe_statement(shared: &Shared, sql: &str) -> Option<Vec<(&'static str, u32)>> {
    match parse::parse(sql) {
        Ok(Command::Show(what)) => show::show(shared, &what).map(|t| t.columns),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_binary_matches_postgresql() {
        // 0: no digits.
        assert_eq!(numeric_binary(0), [0, 0, 0, 0, 0, 0, 0, 0]);
        // 12345 = 1 * 10000 + 2345: two digits, weight 1.
        assert_eq!(
            numeric_binary(12345),
            [0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0x09, 0x29]
        );
        // 20000: trailing zero digit dropped, weight kept.
        assert_eq!(numeric_binary(20000), [0, 1, 0, 1, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn result_formats_apply_like_bind_says() {
        assert!(!is_binary(&[], 3));
        assert!(is_binary(&[1], 3));
        assert!(is_binary(&[0, 1], 1) && !is_binary(&[0, 1], 0));
    }
}
