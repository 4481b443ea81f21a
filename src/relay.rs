//! The hot path's bookkeeping: walk message headers in a direction's buffer, feed tags to the
//! tracker, and say how many bytes to forward in one write. Rows are never decoded; only
//! ReadyForQuery and ParameterStatus are looked inside. Large DataRow and CopyData messages pass
//! through in pieces, so buffers stay bounded whatever a row's size.

use crate::protocol::frame::{self, cstr};
use crate::protocol::params::ParamSet;
use crate::protocol::ProtocolError;
use crate::server::tracker::{Route, Tracker};

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

/// Result of scanning client bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientScan {
    /// Leading bytes to write to the server.
    pub forward: usize,
    /// The client sent Terminate right after those bytes.
    pub terminate: bool,
    /// Bytes still missing from an incomplete message that must be seen whole.
    pub want: usize,
}

/// Client messages that may be forwarded before they are complete.
fn client_may_split(tag: u8) -> bool {
    matches!(tag, b'd' | b'B')
}

/// Walks whole client messages at the front of `buf`, feeding each tag to `tracker`.
pub fn scan_client(
    buf: &[u8],
    pass: &mut Passthrough,
    tracker: &mut Tracker,
) -> Result<ClientScan, ProtocolError> {
    let mut pos = pass.continue_message(buf.len());
    let mut out = ClientScan::default();
    while let Some(h) = frame::header(&buf[pos..])? {
        if h.tag == b'X' && !pass.mid_message() {
            out.terminate = true;
            break;
        }
        let available = buf.len() - pos;
        if available < h.total {
            if client_may_split(h.tag) {
                tracker.client_message(h.tag);
                pass.remaining = h.total - available;
                pos = buf.len();
            } else {
                out.want = h.total - available;
            }
            break;
        }
        tracker.client_message(h.tag);
        pos += h.total;
    }
    out.forward = pos;
    Ok(out)
}

/// Result of scanning server bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerScan {
    /// Leading bytes that answer pgmux's own statements: dropped.
    pub swallow: usize,
    /// End of the bytes to forward to the client (they start at `swallow`).
    pub end: usize,
    /// Bytes still missing from an incomplete message that must be seen whole.
    pub want: usize,
    /// Offset of the first forwarded ReadyForQuery that reports an open transaction.
    pub transaction_opened_at: Option<usize>,
    /// Forwarded ReadyForQuery messages: queries (Query or Sync rounds) completed.
    pub queries_done: u32,
    /// Forwarded ReadyForQuery messages saying idle: transactions completed.
    pub transactions_done: u32,
}

fn server_may_split(tag: u8) -> bool {
    matches!(tag, b'D' | b'd')
}

/// Walks server messages at the front of `buf`: routes each through `tracker`, records
/// ParameterStatus on the server's set and, when forwarded, on the client's.
pub fn scan_server(
    buf: &[u8],
    pass: &mut Passthrough,
    tracker: &mut Tracker,
    server_params: &mut ParamSet,
    client_params: &mut ParamSet,
) -> Result<ServerScan, ProtocolError> {
    let mut pos = pass.continue_message(buf.len());
    let mut out = ServerScan::default();
    while let Some(h) = frame::header(&buf[pos..])? {
        let available = buf.len() - pos;
        if available < h.total {
            if server_may_split(h.tag) && tracker.server_message(h.tag, None) == Route::Forward {
                pass.remaining = h.total - available;
                pos = buf.len();
            } else {
                out.want = h.total - available;
            }
            break;
        }
        let body = &buf[pos + 5..pos + h.total];
        let route = tracker.server_message(h.tag, body.first().copied());
        if h.tag == b'Z' && route == Route::Forward {
            out.queries_done += 1;
            if body.first() == Some(&b'I') {
                out.transactions_done += 1;
            }
        }
        match h.tag {
            b'S' => {
                if let Some((name, value)) = cstr(body).and_then(|(n, r)| Some((n, cstr(r)?.0))) {
                    server_params.set(name, value);
                    if route == Route::Forward {
                        client_params.set(name, value);
                    }
                }
            }
            b'Z' if route == Route::Forward
                && body.first() != Some(&b'I')
                && out.transaction_opened_at.is_none() =>
            {
                out.transaction_opened_at = Some(pos);
            }
            b'E' if route == Route::Swallow => {
                let f = crate::protocol::backend::parse_error_fields(body);
                tracing::warn!(code = %f.code, message = %f.message, "restoring client parameters failed");
            }
            _ => {}
        }
        if route == Route::Swallow {
            if pos == out.swallow {
                out.swallow = pos + h.total;
            } else {
                // pgmux's own replies always come first; anything else is a desync.
                tracker.poison();
            }
        }
        pos += h.total;
    }
    out.end = pos;
    Ok(out)
}

#[cfg(test)]
mod tests;
