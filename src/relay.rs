//! The hot path's bookkeeping: walk message headers in a direction's buffer, feed tags to the
//! tracker, and say which bytes to forward. Rows are never decoded; only ReadyForQuery,
//! ParameterStatus, CommandComplete and messages naming a prepared statement are looked inside.
//! Runs of messages that pass as they are go out in one write straight from the buffer; only when
//! something is rewritten, hidden or answered by pgmux is the output composed in a second buffer.
//! Large DataRow, CopyData and Bind messages pass through in pieces, so buffers stay bounded
//! whatever a row's size.

use crate::prepared::{forgets_all_statements, rewrite_candidate, rewrite_message, Context};
use crate::protocol::backend::{self, Severity};
use crate::protocol::frame::{self, cstr};
use crate::protocol::params::ParamSet;
use crate::protocol::ProtocolError;
use crate::server::tracker::{Answer, Route, Tracker};
use bytes::BytesMut;

/// Per-direction state: how much of a message already forwarded in part is still to come.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Passthrough {
    pub remaining: usize,
}

impl Passthrough {
    pub fn mid_message(&self) -> bool {
        self.remaining > 0
    }

    /// Consumes the tail of a message forwarded in pieces; returns bytes taken from `available`.
    fn continue_message(&mut self, available: usize) -> usize {
        let take = self.remaining.min(available);
        self.remaining -= take;
        take
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
    /// What goes to the server is in the composed buffer, not the first `forward` input bytes.
    pub composed: bool,
    /// The client sent Terminate right after those bytes.
    pub terminate: bool,
    /// Bytes still missing from an incomplete message that must be seen whole.
    pub want: usize,
}

/// Client messages that may be forwarded before they are complete.
fn client_may_split(tag: u8, seen: &[u8], rewriting: bool) -> bool {
    match tag {
        b'd' => true,
        // A Bind naming a prepared statement is rewritten, so it must be seen whole.
        b'B' => !rewriting || unnamed_bind(seen),
        _ => false,
    }
}

/// Whether the start of a Bind body shows an unnamed statement.
fn unnamed_bind(body: &[u8]) -> bool {
    let Some(portal_end) = body.iter().position(|&b| b == 0) else {
        return false;
    };
    body.get(portal_end + 1) == Some(&0)
}

/// Walks whole client messages at the front of `buf`, feeding each to `tracker`, rewriting
/// those that name prepared statements (when `statements.capacity` > 0) into `out`.
pub fn scan_client(
    buf: &[u8],
    pass: &mut Passthrough,
    tracker: &mut Tracker,
    statements: &mut Context,
    out: &mut BytesMut,
) -> Result<ClientScan, ProtocolError> {
    let rewriting = statements.capacity > 0;
    let mut pos = pass.continue_message(buf.len());
    let mut result = ClientScan::default();
    let mut composer = Composer::default();
    while let Some(h) = frame::header(&buf[pos..])? {
        if h.tag == b'X' && !pass.mid_message() {
            result.terminate = true;
            break;
        }
        let available = buf.len() - pos;
        if available < h.total {
            if client_may_split(h.tag, &buf[pos + 5..], rewriting) {
                tracker.client_message(h.tag);
                pass.remaining = h.total - available;
                pos = buf.len();
            } else {
                result.want = h.total - available;
            }
            break;
        }
        let msg = &buf[pos..pos + h.total];
        if rewriting && rewrite_candidate(h.tag, &msg[5..]) {
            composer.flush(buf, pos, out);
            rewrite_message(msg, statements, tracker, out);
            composer.run_start = pos + h.total;
            apply_undone(tracker, statements);
        } else {
            tracker.client_message(h.tag);
        }
        pos += h.total;
    }
    composer.finish(buf, pos, out);
    result.forward = pos;
    result.composed = composer.composed;
    Ok(result)
}

fn apply_undone(tracker: &mut Tracker, statements: &mut Context) {
    if tracker.has_undone() {
        for undo in tracker.undone() {
            undo.apply(statements.client, statements.server);
        }
    }
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
}

fn server_may_split(tag: u8) -> bool {
    matches!(tag, b'D' | b'd')
}

/// Where the server's half of a scan records what it learns.
pub struct ServerSide<'a> {
    pub tracker: &'a mut Tracker,
    pub server_params: &'a mut ParamSet,
    pub client_params: &'a mut ParamSet,
}

/// Walks server messages at the front of `buf`: routes each through the tracker, records
/// ParameterStatus on the server's set and, when forwarded, on the client's; answers pgmux owes
/// the client go out in their turn.
pub fn scan_server(
    buf: &[u8],
    pass: &mut Passthrough,
    side: ServerSide,
    statements: &mut Context,
    out: &mut BytesMut,
) -> Result<ServerScan, ProtocolError> {
    let tracker = side.tracker;
    let mut pos = pass.continue_message(buf.len());
    let mut result = ServerScan::default();
    let mut composer = Composer::default();
    loop {
        while let Some(answer) = tracker.take_answer() {
            composer.flush(buf, pos, out);
            if put_answer(answer, tracker.status(), out) {
                result.queries_done += 1;
                result.transactions_done += u32::from(tracker.status() == b'I');
            }
            apply_undone(tracker, statements);
        }
        let Some(h) = frame::header(&buf[pos..])? else {
            break;
        };
        let available = buf.len() - pos;
        if available < h.total {
            if server_may_split(h.tag) && tracker.server_message(h.tag, None) == Route::Forward {
                pass.remaining = h.total - available;
                pos = buf.len();
            } else {
                result.want = h.total - available;
            }
            break;
        }
        let end = pos + h.total;
        let body = &buf[pos + 5..end];
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
                    }
                }
            }
            b'C' if forgets_all_statements(body) => {
                statements.server.clear();
                if route == Route::Forward {
                    statements.client.clear();
                }
            }
            b'E' if route == Route::Swallow => {
                let f = backend::parse_error_fields(body);
                tracing::warn!(code = %f.code, message = %f.message, "restoring client parameters failed");
            }
            _ => {}
        }
        match route {
            Route::Forward => {}
            Route::Swallow => composer.drop_message(buf, pos, end, out),
            Route::Replace => {
                composer.flush(buf, pos, out);
                if let Some(error) = tracker.take_replacement() {
                    out.extend_from_slice(&error);
                }
                composer.run_start = end;
            }
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

/// Writes an answer pgmux gives itself; returns whether it ended with a ReadyForQuery.
fn put_answer(answer: Answer, status: u8, out: &mut BytesMut) -> bool {
    match answer {
        Answer::ParseComplete => backend::put_message(out, b'1', |_| {}),
        Answer::CloseComplete => backend::put_message(out, b'3', |_| {}),
        Answer::Deallocate => {
            backend::command_complete(out, "DEALLOCATE");
            backend::ready_for_query(out, status);
            return true;
        }
        Answer::FailedTransaction => {
            backend::error_response(
                out,
                Severity::Error,
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
            backend::ready_for_query(out, status);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests;
