//! The reply side of prepared statements: the token the tracker carries for each reply pgmux set
//! up (opaque to it), the answers pgmux gives in a reply's turn, and taking back what a message
//! that never took effect had changed.

use super::rewrite::Context;
use super::statement::Undo;
use crate::protocol::backend::{self, Severity};
use crate::protocol::sqlstate as code;
use crate::tracker::{Tracker, TxStatus};
use bytes::{Bytes, BytesMut};

/// What pgmux must do about one reply it set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// The message goes to the server; this is taken back if it never takes effect.
    Undo(Undo),
    /// The server never sees the message: pgmux answers it in its turn (and takes this back
    /// if the answer is a refusal).
    Answer(Answer, Undo),
    /// The server is made to fail here on purpose: the client gets this ErrorResponse instead.
    Replace(Bytes),
    /// The client's session state its replies confirm (see `session_state`).
    Session(crate::session_state::Effects),
    /// pgmux's own PREPARE of a client's SQL prepared statement, by name: if it fails, only
    /// that statement is lost.
    Replay(String),
}

/// An answer pgmux gives itself, for a message the server never saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    ParseComplete,
    CloseComplete,
    /// CommandComplete `DEALLOCATE`, then ReadyForQuery; in a failed transaction, what
    /// PostgreSQL says there (25P02), then ReadyForQuery.
    Deallocate,
}

/// The tracker of a server connection whose prepared statements pgmux manages.
pub type StatementTracker = Tracker<Token>;

impl Token {
    /// A token for `undo`, or none when there is nothing to take back.
    pub fn undo(undo: Undo) -> Option<Token> {
        (undo != Undo::Nothing).then_some(Token::Undo(undo))
    }

    fn into_undo(self) -> Undo {
        match self {
            Token::Undo(undo) | Token::Answer(_, undo) => undo,
            Token::Replace(_) | Token::Session(_) | Token::Replay(_) => Undo::Nothing,
        }
    }
}

/// Writes every answer now due, in turn; returns how many ended with a ReadyForQuery, and how
/// many of those said idle.
pub fn put_answers(
    tracker: &mut StatementTracker,
    ctx: &mut Context,
    out: &mut BytesMut,
) -> (u32, u32) {
    let (mut queries, mut transactions) = (0, 0);
    while let Some(token) = tracker.take_answer() {
        let Token::Answer(answer, undo) = token else {
            // Nothing to answer from: what the client would get cannot be right.
            tracker.poison();
            continue;
        };
        let status = tracker.status();
        match answer {
            Answer::ParseComplete => backend::put_message(out, b'1', |_| {}),
            Answer::CloseComplete => backend::put_message(out, b'3', |_| {}),
            Answer::Deallocate => {
                if status == TxStatus::Failed {
                    undo.apply(ctx.client, ctx.server);
                    backend::error_response(
                        out,
                        Severity::Error,
                        code::IN_FAILED_SQL_TRANSACTION,
                        "current transaction is aborted, commands ignored until end of transaction block",
                    );
                } else {
                    backend::command_complete(out, "DEALLOCATE");
                }
                backend::ready_for_query(out, status.byte());
                queries += 1;
                transactions += u32::from(status == TxStatus::Idle);
            }
        }
        apply_undone(tracker, ctx);
    }
    (queries, transactions)
}

/// Takes back what every message that never took effect had changed.
pub fn apply_undone(tracker: &mut StatementTracker, ctx: &mut Context) {
    if tracker.has_undone() {
        for token in tracker.undone() {
            token.into_undo().apply(ctx.client, ctx.server);
        }
    }
}

/// The ErrorResponse to send in place of the server's, for the reply just routed Replace.
pub fn replacement(tracker: &mut StatementTracker) -> Option<Bytes> {
    match tracker.take_replacement() {
        Some(Token::Replace(error)) => Some(error),
        _ => {
            // An error provoked with nothing to put in its place: the client's stream is off.
            tracker.poison();
            None
        }
    }
}
