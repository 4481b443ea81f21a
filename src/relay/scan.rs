//! The hot path's bookkeeping: walk message headers in a direction's buffer, feed tags to the
//! tracker, and say which bytes to forward. Rows are never decoded; only ReadyForQuery,
//! ParameterStatus, CommandComplete and messages naming a prepared statement are looked inside.
//! Runs of messages that pass as they are go out in one write straight from the buffer; only when
//! something is rewritten, hidden or answered by pgmux is the output composed in a second buffer.
//!
//! Every message streams through in pieces as it arrives, except the few pgmux must read whole:
//! those it may rewrite for prepared statements (client side) and ReadyForQuery,
//! ParameterStatus, CommandComplete and ErrorResponse (server side). Those are held only up to
//! [`HELD_LIMIT`]; a larger one streams too, with only its head rewritten where it names a
//! prepared statement. So what a scan needs buffered is bounded, whatever a message's size.

use crate::prepared::{
    apply_undone, forgets_all_statements, put_answers, refuse, replacement, rewrite_candidate,
    rewrite_large, rewrite_message, Context, Large, StatementTracker as Tracker, Token,
};
use crate::protocol::backend;
use crate::protocol::frame::{self, cstr};
use crate::protocol::params::ParamSet;
use crate::protocol::{sqlstate, ProtocolError};
use crate::session_state::{Held, Outcome, SessionState, Stale};
use crate::tracker::{Handling, Reply, Route};
use bytes::BytesMut;

/// The largest message pgmux holds whole to read or rewrite it. 1 MiB: ample for the statement
/// texts of generated ORM queries (PgBouncer's prepared-statement support, too, reads a Parse
/// whole), while a client can make pgmux hold at most this much beyond its fixed buffers.
/// Larger messages stream through.
pub const HELD_LIMIT: usize = 1 << 20;

/// A client scan stops once this much composed output waits, so that slipped-in Parses cannot
/// make one scan's output grow past a small bound.
const COMPOSE_LIMIT: usize = 64 * 1024;

/// Per-direction state: the rest of a message already forwarded (or dropped) in part.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    /// At a message boundary.
    #[default]
    Between,
    /// This many bytes of a message partly forwarded are still to come, to be forwarded.
    Forwarding(usize),
    /// This many bytes of a message partly read are still to come, to be dropped.
    Dropping(usize),
}

impl Passthrough {
    pub fn mid_message(&self) -> bool {
        *self != Passthrough::Between
    }

    /// Consumes the tail of a message passing in pieces: returns the bytes taken from
    /// `available` and whether they are dropped rather than forwarded.
    fn continue_message(&mut self, available: usize) -> (usize, bool) {
        let (remaining, drop) = match *self {
            Passthrough::Between => return (0, false),
            Passthrough::Forwarding(n) => (n, false),
            Passthrough::Dropping(n) => (n, true),
        };
        let take = remaining.min(available);
        *self = match (remaining - take, drop) {
            (0, _) => Passthrough::Between,
            (left, false) => Passthrough::Forwarding(left),
            (left, true) => Passthrough::Dropping(left),
        };
        (take, drop)
    }
}

/// The output of a scan: either a slice of the input buffer, or composed in a second buffer.
#[derive(Debug, Default)]
struct Composer {
    composed: bool,
    /// Start of the run of input bytes not yet copied out.
    run_start: usize,
}

impl Composer {
    /// Switches to composing: the pending run up to `pos` is copied out first.
    fn flush(&mut self, buf: &[u8], pos: usize, out: &mut BytesMut) {
        if !self.composed {
            out.clear();
            self.composed = true;
        }
        out.extend_from_slice(&buf[self.run_start..pos]);
        self.run_start = pos;
    }

    /// Leaves out the message at `pos..end`: a leading one just moves the start.
    fn drop_message(&mut self, buf: &[u8], pos: usize, end: usize, out: &mut BytesMut) {
        if !self.composed && self.run_start == pos {
            self.run_start = end;
        } else {
            self.flush(buf, pos, out);
            self.run_start = end;
        }
    }

    /// Puts `with` (pgmux's own message, if any) in place of the input at `pos..end`.
    fn replace_message(
        &mut self,
        buf: &[u8],
        pos: usize,
        end: usize,
        with: Option<bytes::Bytes>,
        out: &mut BytesMut,
    ) {
        self.flush(buf, pos, out);
        if let Some(message) = with {
            out.extend_from_slice(&message);
        }
        self.run_start = end;
    }

    fn finish(&mut self, buf: &[u8], end: usize, out: &mut BytesMut) {
        if self.composed {
            out.extend_from_slice(&buf[self.run_start..end]);
        }
    }

    /// Where the output byte for input offset `pos` lands.
    fn output_offset(&self, pos: usize, out: &BytesMut) -> usize {
        match self.composed {
            true => out.len() + (pos - self.run_start),
            false => pos - self.run_start,
        }
    }
}

/// Result of scanning client bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientScan {
    /// Leading bytes of the buffer consumed.
    pub forward: usize,
    /// Leading bytes of those that are the rest of a message being dropped: not forwarded
    /// (when not composed).
    pub skip: usize,
    /// What goes to the server is in the composed buffer, not `skip..forward` of the input.
    pub composed: bool,
    /// The client sent Terminate right after those bytes.
    pub terminate: bool,
    /// Bytes still missing from an incomplete message that must be seen whole.
    pub want: usize,
    /// The scan stopped with whole messages left, to bound its output: scan again once it is
    /// written.
    pub more: bool,
}

/// Client messages that may name a prepared statement or carry a statement's text, and so are
/// held whole to be read or rewritten (up to [`HELD_LIMIT`]) when pgmux manages prepared
/// statements or follows session state.
fn may_read(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'C' | b'Q' | b'E')
}

/// Whether a client message of this tag and length is held until it is all there (`reading`:
/// pgmux manages prepared statements or follows session state), rather than forwarded in
/// pieces as it comes.
pub fn held_whole(tag: u8, total: usize, reading: bool) -> bool {
    reading && may_read(tag) && total <= HELD_LIMIT
}

/// Tells the tracker of a client message that goes as it is, with what its replies confirm.
#[inline]
fn forwarded(tag: u8, outcome: Outcome, tracker: &mut Tracker) {
    match (outcome, tag) {
        (Outcome::Follow(effects), b'Q') => tracker.expect(
            Reply::Ready,
            Handling::Forward,
            Some(Token::Session(effects)),
        ),
        (Outcome::Follow(effects), b'E') => tracker.expect(
            Reply::Execute,
            Handling::Forward,
            Some(Token::Session(effects)),
        ),
        _ => tracker.client_message(tag),
    }
}

/// Walks client messages at the front of `buf`, feeding each to `tracker`, rewriting those
/// that name prepared statements (when `statements.capacity` > 0) into `out`, and passing the
/// rest on as they come, in pieces where a message is not all there yet.
pub fn scan_client(
    buf: &[u8],
    pass: &mut Passthrough,
    tracker: &mut Tracker,
    statements: &mut Context,
    state: &mut SessionState,
    out: &mut BytesMut,
) -> Result<ClientScan, ProtocolError> {
    let rewriting = statements.capacity > 0;
    let reading = rewriting || state.enabled();
    let mut result = ClientScan::default();
    let mut composer = Composer::default();
    let (mut pos, dropped) = pass.continue_message(buf.len());
    if dropped {
        composer.drop_message(buf, 0, pos, out);
    }
    while let Some(h) = frame::header(&buf[pos..])? {
        if composer.composed && out.len() >= COMPOSE_LIMIT {
            result.more = true;
            break;
        }
        if h.tag == b'X' {
            result.terminate = true;
            break;
        }
        let available = buf.len() - pos;
        let whole = available >= h.total;
        if held_whole(h.tag, h.total, reading) {
            if !whole {
                result.want = h.total - available;
                break;
            }
            let msg = &buf[pos..pos + h.total];
            // Only what may carry or name a statement's text; and nothing when not followed.
            let outcome = match state.enabled() && matches!(h.tag, b'Q' | b'P' | b'B' | b'E' | b'C')
            {
                true => state.on_client(h.tag, &msg[5..]),
                false => Outcome::Pass,
            };
            if let Outcome::Refuse(message) = &outcome {
                composer.flush(buf, pos, out);
                let code = sqlstate::CONFIGURATION_LIMIT_EXCEEDED;
                refuse(h.tag, code, message, tracker, out);
                composer.run_start = pos + h.total;
            } else if rewriting && rewrite_candidate(h.tag, &msg[5..]) {
                composer.flush(buf, pos, out);
                if !rewrite_message(msg, statements, tracker, out) {
                    out.extend_from_slice(msg);
                    forwarded(h.tag, outcome, tracker);
                }
                composer.run_start = pos + h.total;
                apply_undone(tracker, statements);
            } else {
                forwarded(h.tag, outcome, tracker);
            }
            pos += h.total;
            continue;
        }
        let seen_end = pos + h.total.min(available);
        let outcome = match reading && matches!(h.tag, b'Q' | b'P' | b'B') {
            true => state.on_unread(h.tag, &buf[pos + 5..seen_end]),
            false => Outcome::Pass,
        };
        let large = match rewriting && matches!(h.tag, b'P' | b'B') {
            true => {
                // Too large to hold: only the names at its head are looked at. What pgmux
                // writes in its place goes to the composed output.
                composer.flush(buf, pos, out);
                let seen = &buf[pos + 5..seen_end];
                rewrite_large(h.tag, seen, h.body_len(), statements, tracker, out)
            }
            false => Large::AsItIs,
        };
        let drop = match large {
            Large::NeedMore => {
                result.want = 1;
                break;
            }
            Large::AsItIs => {
                forwarded(h.tag, outcome, tracker);
                false
            }
            Large::Rewritten { replaces } => {
                composer.run_start = pos + 5 + replaces;
                apply_undone(tracker, statements);
                false
            }
            Large::Dropped => {
                composer.run_start = seen_end;
                apply_undone(tracker, statements);
                true
            }
        };
        if !whole {
            let missing = h.total - available;
            *pass = match drop {
                true => Passthrough::Dropping(missing),
                false => Passthrough::Forwarding(missing),
            };
            pos = buf.len();
            break;
        }
        pos += h.total;
    }
    composer.finish(buf, pos, out);
    result.forward = pos;
    result.skip = match composer.composed {
        true => 0,
        false => composer.run_start,
    };
    result.composed = composer.composed;
    Ok(result)
}

/// Result of scanning server bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerScan {
    /// Leading bytes that answer pgmux's own statements: dropped (when not composed).
    pub swallow: usize,
    /// End of the input bytes consumed.
    pub end: usize,
    /// What goes to the client is in the composed buffer, not `swallow..end` of the input.
    pub composed: bool,
    /// Bytes still missing from an incomplete message that must be seen whole.
    pub want: usize,
    /// Output offset of the first forwarded ReadyForQuery that reports an open transaction.
    pub transaction_opened_at: Option<usize>,
    /// Forwarded ReadyForQuery messages: queries (Query or Sync rounds) completed.
    pub queries_done: u32,
    /// Forwarded ReadyForQuery messages saying idle: transactions completed.
    pub transactions_done: u32,
    /// pgmux's own statements that give the server the client's session failed, with the
    /// server's message: the client's own must not run there.
    pub restore_failed: Option<String>,
}

/// Server messages pgmux reads whole: the ones it looks inside, and errors it may log.
/// PostgreSQL never sends the first three anywhere near [`HELD_LIMIT`].
fn server_held(tag: u8, total: usize) -> bool {
    match tag {
        b'Z' | b'S' | b'C' => true,
        b'E' => total <= HELD_LIMIT,
        _ => false,
    }
}

/// Where the server's half of a scan records what it learns.
pub struct ServerSide<'a> {
    pub tracker: &'a mut Tracker,
    pub server_params: &'a mut ParamSet,
    pub client_params: &'a mut ParamSet,
    pub state: &'a mut SessionState,
    /// What pgmux gave the server of clients' session state.
    pub server_held: &'a mut Held,
}

/// Follows the client's session state through a reply that may confirm it (CommandComplete,
/// ErrorResponse, ReadyForQuery), before the tracker routes it. Returns whether an error is
/// that of a PREPARE pgmux replayed, which costs only that statement.
fn follow_reply(tag: u8, body: &[u8], side: &mut ServerSide) -> bool {
    let state = &mut *side.state;
    match side.tracker.head_mut() {
        Some((Handling::Own, Some(Token::Replay(name)))) if tag == b'E' => {
            let fields = backend::parse_error_fields(body);
            if fields.code == sqlstate::DUPLICATE_PREPARED_STATEMENT {
                // The server holds a statement of that name pgmux knows nothing of.
                return false;
            }
            tracing::debug!(statement = %name, "a client's SQL prepared statement could not be prepared again");
            state.replay_failed(name);
            side.server_held
                .apply(&crate::session_state::Change::Deallocate(name.clone()));
            true
        }
        Some((Handling::Own, _)) => false,
        // The common case: a reply that confirms nothing, nothing staged.
        Some((_, None)) if !state.follows_replies() => false,
        Some((handling, token)) => {
            let effects = match token {
                Some(Token::Session(effects)) if handling == Handling::Forward => Some(effects),
                _ => None,
            };
            match tag {
                b'C' => match state.on_command_complete(effects, body, side.server_held) {
                    Some(Stale::One(name)) => side.server_params.forget(&name),
                    Some(Stale::All) => side.server_params.forget_all(),
                    None => {}
                },
                b's' => state.on_suspended(effects, side.server_held),
                b'E' => state.on_error(effects),
                _ => state.on_ready(
                    effects.as_deref(),
                    body.first() == Some(&b'I'),
                    side.server_held,
                ),
            }
            false
        }
        None => false,
    }
}

/// Walks server messages at the front of `buf`: routes each through the tracker, records
/// ParameterStatus on the server's set and, when forwarded, on the client's; answers pgmux owes
/// the client go out in their turn.
pub fn scan_server(
    buf: &[u8],
    pass: &mut Passthrough,
    mut side: ServerSide,
    statements: &mut Context,
    out: &mut BytesMut,
) -> Result<ServerScan, ProtocolError> {
    let mut result = ServerScan::default();
    let mut composer = Composer::default();
    let (mut pos, dropped) = pass.continue_message(buf.len());
    if dropped {
        composer.drop_message(buf, 0, pos, out);
    }
    loop {
        let tracker = &mut *side.tracker;
        // An answer goes between messages, never into one still passing in pieces.
        if tracker.answer_due() && !pass.mid_message() {
            composer.flush(buf, pos, out);
            let (queries, transactions) = put_answers(tracker, statements, out);
            result.queries_done += queries;
            result.transactions_done += transactions;
        }
        let Some(h) = frame::header(&buf[pos..])? else {
            break;
        };
        let available = buf.len() - pos;
        if available < h.total {
            if server_held(h.tag, h.total) {
                if h.total > HELD_LIMIT {
                    return Err(ProtocolError::Malformed {
                        tag: h.tag as char,
                        what: "far longer than PostgreSQL sends",
                    });
                }
                result.want = h.total - available;
                break;
            }
            let missing = h.total - available;
            if h.tag == b'E' && side.state.enabled() {
                // An error too large to hold fails the client's transaction all the same.
                follow_reply(h.tag, &[], &mut side);
            }
            let tracker = &mut *side.tracker;
            *pass = match tracker.server_message(h.tag, None) {
                Route::Forward => Passthrough::Forwarding(missing),
                Route::Swallow => {
                    composer.drop_message(buf, pos, buf.len(), out);
                    Passthrough::Dropping(missing)
                }
                Route::Replace => {
                    composer.replace_message(buf, pos, buf.len(), replacement(tracker), out);
                    Passthrough::Dropping(missing)
                }
            };
            apply_undone(tracker, statements);
            pos = buf.len();
            break;
        }
        let end = pos + h.total;
        let body = &buf[pos + 5..end];
        let replay_failed = side.state.enabled()
            && matches!(h.tag, b'C' | b'E' | b'Z' | b's')
            && follow_reply(h.tag, body, &mut side);
        let tracker = &mut *side.tracker;
        let route = tracker.server_message(h.tag, body.first().copied());
        match h.tag {
            b'Z' if route == Route::Forward => {
                result.queries_done += 1;
                if body.first() == Some(&b'I') {
                    result.transactions_done += 1;
                } else if result.transaction_opened_at.is_none() {
                    result.transaction_opened_at = Some(composer.output_offset(pos, out));
                }
            }
            b'S' => {
                if let Some((name, value)) = cstr(body).and_then(|(n, r)| Some((n, cstr(r)?.0))) {
                    side.server_params.set(name, value);
                    if route == Route::Forward {
                        side.client_params.set(name, value);
                        if name.eq_ignore_ascii_case("standard_conforming_strings") {
                            side.state.set_standard_strings(value == "on");
                        }
                    }
                }
            }
            b'C' if forgets_all_statements(body) => {
                statements.server.clear();
                if route == Route::Forward {
                    statements.client.clear();
                }
            }
            b'E' if route == Route::Swallow && !replay_failed => {
                let f = backend::parse_error_fields(body);
                tracing::warn!(code = %f.code, message = %f.message, "restoring a client's session failed; the server will be closed");
                // Its settings are not what pgmux believes: no other client may get it.
                tracker.poison();
                result.restore_failed.get_or_insert(f.message);
            }
            _ => {}
        }
        match route {
            Route::Forward => {}
            Route::Swallow => composer.drop_message(buf, pos, end, out),
            Route::Replace => composer.replace_message(buf, pos, end, replacement(tracker), out),
        }
        apply_undone(tracker, statements);
        pos = end;
    }
    composer.finish(buf, pos, out);
    result.swallow = if composer.composed {
        0
    } else {
        composer.run_start
    };
    result.end = pos;
    result.composed = composer.composed;
    Ok(result)
}

#[cfg(test)]
mod tests;
