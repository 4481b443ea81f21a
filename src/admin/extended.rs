//! The extended query protocol on the console: statements and portals by name, one console
//! command each, no parameters, text results. After an error, messages are skipped until Sync,
//! as PostgreSQL does.

use super::execute::{self, Outcome};
use super::Role;
use crate::connection::ClientError;
use crate::protocol::backend::{self, Severity};
use crate::protocol::frame::cstr;
use crate::protocol::sqlstate as code;
use crate::protocol::ProtocolError;
use crate::shared::Shared;
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;

/// Most statements or portals one console session may keep.
const MAX_NAMED: usize = 1000;

struct Portal {
    sql: String,
    formats: Vec<i16>,
    outcome: Option<Outcome>,
}

#[derive(Default)]
pub struct Extended {
    statements: HashMap<String, String>,
    /// Portal name -> statement text, result formats, and its outcome once run (Describe
    /// runs it).
    portals: HashMap<String, Portal>,
    /// An error happened: skip until Sync.
    failed: bool,
}

fn malformed(tag: u8, what: &'static str) -> ClientError {
    ProtocolError::Malformed {
        tag: tag as char,
        what,
    }
    .into()
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The result format codes at the end of a Bind.
fn result_formats(tag: u8, mut rest: &[u8]) -> Result<Vec<i16>, ClientError> {
    let bad = || malformed(tag, "truncated Bind");
    let n = i16_at(rest, 0).ok_or_else(bad)?.max(0) as usize;
    rest = rest.get(2 + 2 * n..).ok_or_else(bad)?;
    let params = i16_at(rest, 0).ok_or_else(bad)?.max(0) as usize;
    rest = &rest[2..];
    for _ in 0..params {
        let len = i32::from_be_bytes(
            rest.get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        rest = rest.get(4 + len.max(0) as usize..).ok_or_else(bad)?;
    }
    let n = i16_at(rest, 0).ok_or_else(bad)?.max(0) as usize;
    (0..n)
        .map(|i| i16_at(rest, 2 + 2 * i).ok_or_else(bad))
        .collect()
}

impl Extended {
    fn fail(&mut self, out: &mut BytesMut, code: &str, message: &str) {
        backend::error_response(out, Severity::Error, code, message);
        self.failed = true;
    }

    pub async fn message(
        &mut self,
        shared: &Shared,
        role: Role,
        tag: u8,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        if tag == b'S' {
            self.failed = false;
            self.portals.remove("");
            backend::ready_for_query(out, b'I');
            return Ok(());
        }
        if self.failed {
            return Ok(());
        }
        match tag {
            b'P' => {
                let (name, rest) = cstr(body).ok_or_else(|| malformed(tag, "no statement name"))?;
                let (sql, _) = cstr(rest).ok_or_else(|| malformed(tag, "no query"))?;
                if self.statements.len() >= MAX_NAMED && !self.statements.contains_key(name) {
                    self.fail(
                        out,
                        code::PROGRAM_LIMIT_EXCEEDED,
                        "too many prepared statements",
                    );
                    return Ok(());
                }
                self.statements.insert(name.to_owned(), sql.to_owned());
                backend::put_message(out, b'1', |_| {});
            }
            b'B' => {
                let (portal, rest) = cstr(body).ok_or_else(|| malformed(tag, "no portal name"))?;
                let (statement, rest) = cstr(rest).ok_or_else(|| malformed(tag, "no statement"))?;
                let Some(sql) = self.statements.get(statement).cloned() else {
                    let message = format!("prepared statement \"{statement}\" does not exist");
                    self.fail(out, code::INVALID_SQL_STATEMENT_NAME, &message);
                    return Ok(());
                };
                let formats = result_formats(tag, rest)?;
                if self.portals.len() >= MAX_NAMED && !self.portals.contains_key(portal) {
                    self.fail(out, code::PROGRAM_LIMIT_EXCEEDED, "too many portals");
                    return Ok(());
                }
                let portal_state = Portal {
                    sql,
                    formats,
                    outcome: None,
                };
                self.portals.insert(portal.to_owned(), portal_state);
                backend::put_message(out, b'2', |_| {});
            }
            b'D' => {
                let (&kind, rest) = body.split_first().ok_or_else(|| malformed(tag, "empty"))?;
                let (name, _) = cstr(rest).ok_or_else(|| malformed(tag, "no name"))?;
                match kind {
                    b'S' => {
                        let Some(sql) = self.statements.get(name) else {
                            let message = format!("prepared statement \"{name}\" does not exist");
                            self.fail(out, code::INVALID_SQL_STATEMENT_NAME, &message);
                            return Ok(());
                        };
                        backend::put_message(out, b't', |b| b.put_u16(0));
                        match execute::describe_statement(shared, sql) {
                            Some(columns) => backend::row_description(out, &columns),
                            None => backend::put_message(out, b'n', |_| {}),
                        }
                    }
                    b'P' => {
                        let Some(portal) = self.portals.get_mut(name) else {
                            let message = format!("portal \"{name}\" does not exist");
                            self.fail(out, code::INVALID_CURSOR_NAME, &message);
                            return Ok(());
                        };
                        let outcome = match &mut portal.outcome {
                            Some(o) => o,
                            slot => slot.insert(execute::execute(shared, role, &portal.sql).await),
                        };
                        if !outcome.describe(out, &portal.formats) {
                            backend::put_message(out, b'n', |_| {});
                        }
                    }
                    _ => return Err(malformed(tag, "Describe of neither S nor P")),
                }
            }
            b'E' => {
                let (name, _) = cstr(body).ok_or_else(|| malformed(tag, "no portal name"))?;
                let Some(portal) = self.portals.get_mut(name) else {
                    let message = format!("portal \"{name}\" does not exist");
                    self.fail(out, code::INVALID_CURSOR_NAME, &message);
                    return Ok(());
                };
                let outcome = match portal.outcome.take() {
                    Some(o) => o,
                    None => execute::execute(shared, role, &portal.sql).await,
                };
                if !outcome.write_result(out, &portal.formats) {
                    self.failed = true;
                }
            }
            b'C' => {
                let (&kind, rest) = body.split_first().ok_or_else(|| malformed(tag, "empty"))?;
                let (name, _) = cstr(rest).ok_or_else(|| malformed(tag, "no name"))?;
                match kind {
                    b'S' => self.statements.remove(name).map(|_| ()),
                    _ => self.portals.remove(name).map(|_| ()),
                };
                backend::put_message(out, b'3', |_| {});
            }
            other => {
                return Err(ProtocolError::Malformed {
                    tag: other as char,
                    what: "not a message the admin console accepts",
                }
                .into())
            }
        }
        Ok(())
    }
}
