//! Rewriting one client message that names a prepared statement: the client's name becomes the
//! pgmux-wide one, a Parse (and, past the limit, a Close of the least recently used statement) is
//! slipped in where the server lacks it, and what the server never sees is answered in turn.

use super::sql::deallocate_target;
use super::statement::{
    ClientStatements, Registry, ServerStatements, Statement, Undo, SERVER_NAME_PREFIX,
};
use crate::protocol::backend::{self, Severity};
use crate::server::tracker::{Answer, Handling, Reply, Tracker};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// A name pgmux never prepares: describing it makes the server fail, and skip to Sync, exactly
/// where PostgreSQL would have failed the client's message.
const NEVER_PREPARED: &[u8] = b"PGMUX_never\0";

/// A name pgmux parses a query under only to see whether it parses, and closes at once.
const SCRATCH: &[u8] = b"PGMUX_scratch\0";

/// What one scan may touch: the client's names, the server's LRU, the pgmux-wide registry.
pub struct Context<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    pub registry: &'a Registry,
    /// max_prepared_statements; 0 turns the rewriting off.
    pub capacity: usize,
    pub counts: &'a mut Counts,
}

/// Counters for SHOW STATS and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Named Parses from clients.
    pub client_parses: u64,
    /// Parses pgmux sent to servers: each one a cache miss.
    pub server_parses: u64,
    /// Binds of named statements.
    pub binds: u64,
    /// Named statements found already prepared on the server.
    pub hits: u64,
    /// Statements closed on a server to make room.
    pub evictions: u64,
}

impl Counts {
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// Splits a NUL-terminated byte string off the front.
fn split_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// Whether a complete message may name a prepared statement and so must go through
/// [`rewrite_message`]. Cheap: no lookups.
pub fn rewrite_candidate(tag: u8, body: &[u8]) -> bool {
    match tag {
        b'P' => body.first().is_some_and(|&b| b != 0),
        b'B' => split_cstr(body).is_some_and(|(_, rest)| rest.first().is_some_and(|&b| b != 0)),
        b'D' | b'C' => body.first() == Some(&b'S') && body.get(1).is_some_and(|&b| b != 0),
        b'Q' => {
            let start = body.iter().position(|b| !b.is_ascii_whitespace());
            start.is_some_and(|i| body[i].eq_ignore_ascii_case(&b'd'))
        }
        _ => false,
    }
}

/// Writes what goes to the server for one whole client message (`msg`, header included) into
/// `out`, rewritten or as it was, and tells the tracker what each part's reply is for.
pub fn rewrite_message(msg: &[u8], ctx: &mut Context, tracker: &mut Tracker, out: &mut BytesMut) {
    let tag = msg[0];
    let body = &msg[5..];
    let handled = match tag {
        b'P' => parse(body, ctx, tracker, out),
        b'B' => bind(body, ctx, tracker, out),
        b'D' => describe(body, ctx, tracker, out),
        b'C' => close(body, ctx, tracker),
        b'Q' => deallocate(body, ctx, tracker),
        _ => false,
    };
    if !handled {
        out.extend_from_slice(msg);
        tracker.client_message(tag);
    }
}

/// Whether a Parse body after the name is well formed: query, NUL, count, that many type OIDs.
fn parse_body_ok(rest: &[u8]) -> bool {
    let Some((_, types)) = split_cstr(rest) else {
        return false;
    };
    match types {
        [hi, lo, oids @ ..] => {
            let n = i16::from_be_bytes([*hi, *lo]);
            n >= 0 && oids.len() == n as usize * 4
        }
        _ => false,
    }
}

fn parse(body: &[u8], ctx: &mut Context, tracker: &mut Tracker, out: &mut BytesMut) -> bool {
    let Some((name, rest)) = split_cstr(body) else {
        return false;
    };
    if name.is_empty() || !parse_body_ok(rest) {
        // Unnamed statements live and die within the transaction; a malformed Parse is the
        // server's to refuse.
        return false;
    }
    ctx.counts.client_parses += 1;
    if ctx.client.get(name).is_some() {
        // PostgreSQL parses the query before it finds the name taken, so a query that does not
        // parse reports its own error: parse it under a scratch name (closed at once), and
        // only if that works, fail where PostgreSQL fails on the name.
        let mut error = BytesMut::new();
        let message = format!(
            "prepared statement \"{}\" already exists",
            String::from_utf8_lossy(name)
        );
        backend::error_response(&mut error, Severity::Error, "42P05", &message);
        put_parse(out, SCRATCH, rest);
        tracker.expect(Reply::Parse, Handling::Hide, Undo::Nothing);
        put_named(out, b'C', b'S', SCRATCH);
        tracker.expect(Reply::Close, Handling::Hide, Undo::Nothing);
        put_named(out, b'D', b'S', NEVER_PREPARED);
        tracker.expect(
            Reply::Describe,
            Handling::ReplaceError(error.freeze()),
            Undo::Nothing,
        );
        return true;
    }
    let statement = ctx.registry.intern(rest);
    let name = Bytes::copy_from_slice(name);
    ctx.client.insert(name.clone(), statement.clone());
    if tracker.status() == b'E' && ctx.server.contains(statement.id) {
        // In a failed transaction PostgreSQL refuses a Parse (25P02) unless it is ROLLBACK or
        // the like: let the server decide on a scratch copy, whose reply is the client's.
        ctx.counts.hits += 1;
        put_parse(out, SCRATCH, rest);
        let undo = Undo::Parse {
            client_name: Some(name),
            server_id: None,
        };
        tracker.expect(Reply::Parse, Handling::Forward, undo);
        put_named(out, b'C', b'S', SCRATCH);
        tracker.expect(Reply::Close, Handling::Hide, Undo::Nothing);
    } else if ctx.server.touch(statement.id) {
        ctx.counts.hits += 1;
        let undo = Undo::Parse {
            client_name: Some(name),
            server_id: None,
        };
        tracker.expect(Reply::Parse, Handling::Answer(Answer::ParseComplete), undo);
    } else {
        make_room(ctx, tracker, out);
        put_parse(out, &statement.server_name, &statement.body);
        ctx.server.insert(statement.clone());
        ctx.counts.server_parses += 1;
        let undo = Undo::Parse {
            client_name: Some(name),
            server_id: Some(statement.id),
        };
        tracker.expect(Reply::Parse, Handling::Forward, undo);
    }
    true
}

fn bind(body: &[u8], ctx: &mut Context, tracker: &mut Tracker, out: &mut BytesMut) -> bool {
    let Some((portal, rest)) = split_cstr(body) else {
        return false;
    };
    let Some((name, after)) = split_cstr(rest) else {
        return false;
    };
    // A name the client never prepared goes as it is: the server says it does not exist.
    let Some(statement) = ctx.client.get(name).cloned() else {
        return false;
    };
    ctx.counts.binds += 1;
    prepare_on_server(&statement, ctx, tracker, out);
    let len = 4 + portal.len() + 1 + statement.server_name.len() + after.len();
    out.reserve(1 + len);
    out.put_u8(b'B');
    out.put_u32(len as u32);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(&statement.server_name);
    out.put_slice(after);
    tracker.expect(Reply::Bind, Handling::Forward, Undo::Nothing);
    true
}

fn describe(body: &[u8], ctx: &mut Context, tracker: &mut Tracker, out: &mut BytesMut) -> bool {
    let Some((b'S', rest)) = body.split_first() else {
        return false;
    };
    let Some((name, [])) = split_cstr(rest) else {
        return false;
    };
    let Some(statement) = ctx.client.get(name).cloned() else {
        return false;
    };
    prepare_on_server(&statement, ctx, tracker, out);
    put_named(out, b'D', b'S', &statement.server_name);
    tracker.expect(Reply::Describe, Handling::Forward, Undo::Nothing);
    true
}

/// A client's Close of its statement only drops its name: others may share the statement.
fn close(body: &[u8], ctx: &mut Context, tracker: &mut Tracker) -> bool {
    let Some((b'S', rest)) = body.split_first() else {
        return false;
    };
    let Some((name, [])) = split_cstr(rest) else {
        return false;
    };
    let undo = match ctx.client.remove(name) {
        Some(statement) => Undo::ClientClose {
            name: Bytes::copy_from_slice(name),
            statement,
        },
        // pgmux's own statements are not the client's to close.
        None if name.starts_with(SERVER_NAME_PREFIX) => Undo::Nothing,
        None => return false,
    };
    tracker.expect(Reply::Close, Handling::Answer(Answer::CloseComplete), undo);
    true
}

/// `DEALLOCATE name` of a statement the client prepared through the protocol.
fn deallocate(body: &[u8], ctx: &mut Context, tracker: &mut Tracker) -> bool {
    let query = body.strip_suffix(b"\0").unwrap_or(body);
    let Some(name) = deallocate_target(query) else {
        return false;
    };
    let Some(statement) = ctx.client.remove(&name) else {
        return false;
    };
    let undo = Undo::ClientClose {
        name: Bytes::from(name),
        statement,
    };
    tracker.expect(Reply::Ready, Handling::Answer(Answer::Deallocate), undo);
    true
}

/// Slips a Parse in ahead of a message that uses `statement`, unless the server has it.
fn prepare_on_server(
    statement: &Arc<Statement>,
    ctx: &mut Context,
    tracker: &mut Tracker,
    out: &mut BytesMut,
) {
    if ctx.server.touch(statement.id) {
        ctx.counts.hits += 1;
        return;
    }
    make_room(ctx, tracker, out);
    put_parse(out, &statement.server_name, &statement.body);
    ctx.server.insert(statement.clone());
    ctx.counts.server_parses += 1;
    let undo = Undo::Parse {
        client_name: None,
        server_id: Some(statement.id),
    };
    tracker.expect(Reply::Parse, Handling::Hide, undo);
}

/// Closes the server's least recently used statement if one more would pass the limit.
fn make_room(ctx: &mut Context, tracker: &mut Tracker, out: &mut BytesMut) {
    let Some(victim) = ctx.server.victim(ctx.capacity) else {
        return;
    };
    let Some(victim) = ctx.server.remove(victim) else {
        return;
    };
    put_named(out, b'C', b'S', &victim.server_name);
    ctx.counts.evictions += 1;
    tracker.expect(Reply::Close, Handling::Hide, Undo::ServerClose(victim));
}

/// Describe or Close: tag, kind byte, NUL-terminated name.
fn put_named(out: &mut BytesMut, tag: u8, kind: u8, name_nul: &[u8]) {
    out.put_u8(tag);
    out.put_u32((4 + 1 + name_nul.len()) as u32);
    out.put_u8(kind);
    out.put_slice(name_nul);
}

/// Parse of `body` (query, NUL, parameter types) under `name_nul`.
fn put_parse(out: &mut BytesMut, name_nul: &[u8], body: &[u8]) {
    let len = 4 + name_nul.len() + body.len();
    out.reserve(1 + len);
    out.put_u8(b'P');
    out.put_u32(len as u32);
    out.put_slice(name_nul);
    out.put_slice(body);
}
