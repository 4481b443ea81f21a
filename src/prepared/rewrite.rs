//! Rewriting one client message that names a prepared statement: the client's name becomes the
//! pgmux-wide one, a Parse (and, past the limit, a Close of the least recently used statement) is
//! slipped in where the server lacks it, and what the server never sees is answered in turn.

use super::reply::{Answer, StatementTracker as Tracker, Token};
use super::sql::deallocate_target;
use super::statement::{
    ClientStatements, Registry, ServerStatements, Statement, Undo, SERVER_NAME_PREFIX,
};
use crate::protocol::backend::{self, Severity};
use crate::protocol::sqlstate as code;
use crate::tracker::{Handling, Reply, TxStatus};
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

/// One client's named prepared statements and what rewriting them takes, for its session.
pub struct Statements<'r> {
    pub client: ClientStatements,
    /// The pgmux-wide registry behind them.
    pub registry: &'r Registry,
    /// max_prepared_statements when the session started; 0 passes statements through untouched.
    pub capacity: usize,
}

impl Statements<'_> {
    /// What one scan may touch, with this server's prepared statements.
    pub fn context<'b>(
        &'b mut self,
        server: &'b mut ServerStatements,
        counts: &'b mut Counts,
    ) -> Context<'b> {
        Context {
            client: &mut self.client,
            server,
            registry: self.registry,
            capacity: self.capacity,
            counts,
        }
    }
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
/// `out`, rewritten, and tells the tracker what each part's reply is for; false when it goes
/// as it is (nothing was written, and the caller forwards it).
pub fn rewrite_message(
    msg: &[u8],
    ctx: &mut Context,
    tracker: &mut Tracker,
    out: &mut BytesMut,
) -> bool {
    let tag = msg[0];
    let body = &msg[5..];
    match tag {
        b'P' => parse(body, ctx, tracker, out),
        b'B' => bind(body, ctx, tracker, out),
        b'D' => describe(body, ctx, tracker, out),
        b'C' => close(body, ctx, tracker),
        b'Q' => deallocate(body, ctx, tracker),
        _ => false,
    }
}

fn already_exists(name: &[u8]) -> String {
    format!(
        "prepared statement \"{}\" already exists",
        String::from_utf8_lossy(name)
    )
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
        put_parse(out, SCRATCH, rest);
        tracker.expect(Reply::Parse, Handling::Hide, None);
        put_named(out, b'C', b'S', SCRATCH);
        tracker.expect(Reply::Close, Handling::Hide, None);
        fail_here(
            code::DUPLICATE_PREPARED_STATEMENT,
            &already_exists(name),
            tracker,
            out,
        );
        return true;
    }
    let statement = ctx.registry.intern(rest);
    let name = Bytes::copy_from_slice(name);
    ctx.client.insert(name.clone(), statement.clone());
    if tracker.status() == TxStatus::Failed && ctx.server.contains(statement.id) {
        // In a failed transaction PostgreSQL refuses a Parse (25P02) unless it is ROLLBACK or
        // the like: let the server decide on a scratch copy, whose reply is the client's.
        ctx.counts.hits += 1;
        put_parse(out, SCRATCH, rest);
        let undo = Undo::Parse {
            client_name: Some(name),
            server_id: None,
        };
        tracker.expect(Reply::Parse, Handling::Forward, Token::undo(undo));
        put_named(out, b'C', b'S', SCRATCH);
        tracker.expect(Reply::Close, Handling::Hide, None);
    } else if ctx.server.touch(statement.id) {
        ctx.counts.hits += 1;
        let undo = Undo::Parse {
            client_name: Some(name),
            server_id: None,
        };
        tracker.expect(
            Reply::Parse,
            Handling::Answer,
            Some(Token::Answer(Answer::ParseComplete, undo)),
        );
    } else {
        parse_for_client(&statement, name, rest.len(), ctx, tracker, out);
        out.put_slice(rest);
    }
    true
}

/// Sends a client's Parse on under pgmux's name for `statement`: writes its head, for a
/// message whose `after_len` bytes after the name follow (as the caller writes them, or as
/// they came), and what must go before it.
fn parse_for_client(
    statement: &Arc<Statement>,
    client_name: Bytes,
    after_len: usize,
    ctx: &mut Context,
    tracker: &mut Tracker,
    out: &mut BytesMut,
) {
    make_room(ctx, tracker, out);
    put_parse_head(out, &statement.server_name, after_len);
    ctx.server.insert(statement.clone());
    ctx.counts.server_parses += 1;
    let undo = Undo::Parse {
        client_name: Some(client_name),
        server_id: Some(statement.id),
    };
    tracker.expect(Reply::Parse, Handling::Forward, Token::undo(undo));
}

fn bind(body: &[u8], ctx: &mut Context, tracker: &mut Tracker, out: &mut BytesMut) -> bool {
    let Some((portal, rest)) = split_cstr(body) else {
        return false;
    };
    let Some((name, after)) = split_cstr(rest) else {
        return false;
    };
    if !bind_head(portal, name, after.len(), ctx, tracker, out) {
        return false;
    }
    out.put_slice(after);
    true
}

/// Writes a Bind's head (tag, length, portal, pgmux's name for the statement) for a message
/// whose `after_len` bytes after the names follow as they came, and what must go before it.
/// False, writing nothing, when the client never prepared `name`: then the Bind goes as it is
/// and the server says the statement does not exist.
fn bind_head(
    portal: &[u8],
    name: &[u8],
    after_len: usize,
    ctx: &mut Context,
    tracker: &mut Tracker,
    out: &mut BytesMut,
) -> bool {
    let Some(statement) = ctx.client.get(name).cloned() else {
        return false;
    };
    ctx.counts.binds += 1;
    prepare_on_server(&statement, name, ctx, tracker, out);
    let len = 4 + portal.len() + 1 + statement.server_name.len() + after_len;
    out.reserve(1 + len - after_len);
    out.put_u8(b'B');
    out.put_u32(len as u32);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(&statement.server_name);
    tracker.expect(Reply::Bind, Handling::Forward, None);
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
    prepare_on_server(&statement, name, ctx, tracker, out);
    put_named(out, b'D', b'S', &statement.server_name);
    tracker.expect(Reply::Describe, Handling::Forward, None);
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
    tracker.expect(
        Reply::Close,
        Handling::Answer,
        Some(Token::Answer(Answer::CloseComplete, undo)),
    );
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
    tracker.expect(
        Reply::Ready,
        Handling::Answer,
        Some(Token::Answer(Answer::Deallocate, undo)),
    );
    true
}

/// Slips a Parse in ahead of a message that uses `statement` (the client's `name`), unless the
/// server has it. A statement too large to keep cannot be prepared again: the message fails,
/// and the server skips to the next Sync, as PostgreSQL would for a statement it lacks.
fn prepare_on_server(
    statement: &Arc<Statement>,
    name: &[u8],
    ctx: &mut Context,
    tracker: &mut Tracker,
    out: &mut BytesMut,
) {
    if ctx.server.touch(statement.id) {
        ctx.counts.hits += 1;
        return;
    }
    let Some(body) = &statement.body else {
        let message = format!(
            "prepared statement \"{}\" is not on this server connection, and its text is too \
             large for pgmux to keep and prepare again: prepare it in the same transaction",
            String::from_utf8_lossy(name)
        );
        fail_here(code::INVALID_SQL_STATEMENT_NAME, &message, tracker, out);
        return;
    };
    make_room(ctx, tracker, out);
    put_parse(out, &statement.server_name, body);
    ctx.server.insert(statement.clone());
    ctx.counts.server_parses += 1;
    let undo = Undo::Parse {
        client_name: None,
        server_id: Some(statement.id),
    };
    tracker.expect(Reply::Parse, Handling::Hide, Token::undo(undo));
}

/// Refuses a client message (tag `tag`) where PostgreSQL would have failed it: a Query gets
/// the error and its ReadyForQuery, an extended-protocol message the error and the skip to Sync.
pub fn refuse(tag: u8, sqlstate: &str, message: &str, tracker: &mut Tracker, out: &mut BytesMut) {
    fail_here(sqlstate, message, tracker, out);
    if tag == b'Q' {
        backend::put_message(out, b'S', |_| {});
        tracker.expect(Reply::Sync, Handling::Forward, None);
    }
}

/// Makes the server fail at this point of the pipeline, and skip to Sync, where PostgreSQL
/// would fail the client's message: the client gets this error in place of the server's.
fn fail_here(sqlstate: &str, message: &str, tracker: &mut Tracker, out: &mut BytesMut) {
    let mut error = BytesMut::new();
    backend::error_response(&mut error, Severity::Error, sqlstate, message);
    put_named(out, b'D', b'S', NEVER_PREPARED);
    tracker.expect(
        Reply::Describe,
        Handling::Replace,
        Some(Token::Replace(error.freeze())),
    );
}

/// What happens to a client message too large to hold whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Large {
    /// The names at its head are not all here yet.
    NeedMore,
    /// It goes as it is.
    AsItIs,
    /// Its head is written rewritten: it stands for the first `replaces` bytes of the body, and
    /// the rest follows as it came.
    Rewritten { replaces: usize },
    /// It is dropped; what was written stands for it.
    Dropped,
}

/// The longest head (portal and statement names) looked for at the start of a large message.
const HEAD_LIMIT: usize = 64 * 1024;

/// For a Parse or Bind too large to hold (`seen` is the start of its body, `body_len` its whole
/// length): rewrites only its head, the names, and lets the rest stream. A Parse gets a name
/// of its own, since sharing a statement needs its whole text.
pub fn rewrite_large(
    tag: u8,
    seen: &[u8],
    body_len: usize,
    ctx: &mut Context,
    tracker: &mut Tracker,
    out: &mut BytesMut,
) -> Large {
    let names = match tag {
        b'P' => 1,
        b'B' => 2,
        _ => return Large::AsItIs,
    };
    let Some(head) = names_end(seen, names) else {
        if seen.len() < HEAD_LIMIT.min(body_len) {
            return Large::NeedMore;
        }
        if tag == b'B' {
            // No statement of the client's has a name that long: the server will say so.
            return Large::AsItIs;
        }
        // A Parse must never reach a server under the client's own name, where pgmux would not
        // know of it and later clients could run it.
        let message = "prepared statement name is too long";
        fail_here(code::PROGRAM_LIMIT_EXCEEDED, message, tracker, out);
        return Large::Dropped;
    };
    let after_len = body_len - head;
    let handled = match tag {
        b'P' => return large_parse(&seen[..head - 1], after_len, ctx, tracker, out),
        _ => {
            let (portal, rest) = split_cstr(&seen[..head]).unwrap_or_default();
            let name = rest.strip_suffix(b"\0").unwrap_or(rest);
            bind_head(portal, name, after_len, ctx, tracker, out)
        }
    };
    match handled {
        true => Large::Rewritten { replaces: head },
        false => Large::AsItIs,
    }
}

/// Where the first `count` NUL-terminated strings of `buf` end.
fn names_end(buf: &[u8], count: usize) -> Option<usize> {
    let mut end = 0;
    for _ in 0..count {
        end += buf[end..].iter().position(|&b| b == 0)? + 1;
    }
    Some(end)
}

fn large_parse(
    name: &[u8],
    after_len: usize,
    ctx: &mut Context,
    tracker: &mut Tracker,
    out: &mut BytesMut,
) -> Large {
    if name.is_empty() {
        return Large::AsItIs;
    }
    ctx.counts.client_parses += 1;
    if ctx.client.get(name).is_some() {
        // PostgreSQL parses the text before it finds the name taken; a text this large is not
        // held to be parsed aside, so this fails on the name at once.
        fail_here(
            code::DUPLICATE_PREPARED_STATEMENT,
            &already_exists(name),
            tracker,
            out,
        );
        return Large::Dropped;
    }
    let replaces = name.len() + 1;
    let statement = ctx.registry.unshared();
    let name = Bytes::copy_from_slice(name);
    ctx.client.insert(name.clone(), statement.clone());
    parse_for_client(&statement, name, after_len, ctx, tracker, out);
    Large::Rewritten { replaces }
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
    tracker.expect(
        Reply::Close,
        Handling::Hide,
        Token::undo(Undo::ServerClose(victim)),
    );
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
    out.reserve(5 + name_nul.len() + body.len());
    put_parse_head(out, name_nul, body.len());
    out.put_slice(body);
}

/// The head of a Parse under `name_nul` whose `body_len` bytes follow it.
fn put_parse_head(out: &mut BytesMut, name_nul: &[u8], body_len: usize) {
    out.put_u8(b'P');
    out.put_u32((4 + name_nul.len() + body_len) as u32);
    out.put_slice(name_nul);
}
