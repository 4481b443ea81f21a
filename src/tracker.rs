//! The reply tracker: which replies a server connection still owes, in order, and to whom.
//!
//! Every message that will draw a reply is queued with what that reply ends on and where it goes:
//! to the client, nowhere (pgmux's own statements, Parses pgmux slipped in), or replaced by an
//! answer of pgmux's own. The server answers in order, and after an error in an extended-protocol
//! batch it skips everything up to the next Sync; the queue does the same, and hands back the
//! tokens of the messages that never took effect. Fed the tag of every message that crosses the
//! connection, it answers whether the server may go back to the pool, erring on the side of
//! closing: a reply it cannot account for makes the connection desynchronized for good.
//!
//! A token is whatever the caller attaches to a reply it set up (what to undo, what to answer,
//! what error to send instead): the tracker only keeps it in order and hands it back. Pure; no I/O,
//! and nothing of pgmux above it.

use std::collections::VecDeque;

/// What the relay should do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Goes to the client.
    Forward,
    /// Reply to a message pgmux sent in its own name; the client never sees it.
    Swallow,
    /// An error pgmux provoked on purpose: the client gets [`Tracker::take_replacement`] instead.
    Replace,
}

/// Whether the connection can be handed to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing owed, last ReadyForQuery said idle: safe to pool.
    Idle,
    /// Replies still owed, an extended-protocol batch open, or a transaction open.
    Busy,
    /// Something happened that pgmux cannot account for: close, never pool.
    Desync,
}

/// The reply a message draws, by what ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Query or FunctionCall: everything through ReadyForQuery.
    Ready,
    /// Sync: through ReadyForQuery; ends the skipping after an error.
    Sync,
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// ParameterDescription (for a statement), then RowDescription or NoData.
    Describe,
    /// Rows (or COPY), then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// CloseComplete.
    Close,
    /// No reply: marks where the client ended a COPY (CopyDone or CopyFail), so that the Syncs
    /// it sent before, which the server ignores in COPY IN, can be told from those after.
    CopyEnd,
}

impl Reply {
    /// Extended-protocol messages: an ErrorResponse ends their reply and starts the skip to Sync.
    fn extended(self) -> bool {
        !matches!(self, Reply::Ready | Reply::Sync | Reply::CopyEnd)
    }

    fn ends_on(self, tag: u8) -> bool {
        match self {
            Reply::Ready | Reply::Sync => tag == b'Z',
            Reply::Parse => tag == b'1',
            Reply::Bind => tag == b'2',
            Reply::Describe => matches!(tag, b'T' | b'n'),
            Reply::Execute => matches!(tag, b'C' | b'I' | b's'),
            Reply::Close => tag == b'3',
            Reply::CopyEnd => false,
        }
    }
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// To the client.
    Forward,
    /// A message pgmux slipped into the client's pipeline: success is hidden, an error goes to the
    /// client in place of the reply to its next message (which the server then skips).
    Hide,
    /// pgmux's own query: all of it is swallowed.
    Own,
    /// The server was made to fail on purpose; the client gets what the token says instead.
    Replace,
    /// Nothing was sent; pgmux answers itself, from the token, when the reply's turn comes.
    Answer,
}

/// A transaction status, as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    /// In a transaction that failed: commands are ignored until its end.
    Failed,
}

impl TxStatus {
    pub fn from_byte(byte: u8) -> Option<TxStatus> {
        match byte {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    /// The byte ReadyForQuery carries.
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

#[derive(Debug)]
struct Pending<T> {
    reply: Reply,
    handling: Handling,
    /// The caller's token, for the few messages that are not a client's own forwarded as it
    /// was. Boxed: the queue holds an entry per message in flight, and a pipelining client can
    /// have many.
    token: Option<Box<T>>,
}

/// Queue capacity kept once empty: room for ordinary pipelines without reallocating.
const QUEUE_KEPT: usize = 64;

/// Replies owed, in the order the server will send them, each with the caller's token `T`.
#[derive(Debug)]
pub struct Tracker<T> {
    pending: VecDeque<Pending<T>>,
    /// Extended-protocol messages sent since the last Sync (a Flush-terminated batch included):
    /// the server holds state for this client until a Sync closes the batch.
    batch_open: bool,
    /// An extended-protocol error arrived and no Sync has been sent since: the server discards
    /// every message until the client's next Sync.
    skipping: bool,
    /// The server is in COPY IN and the client has not yet sent CopyDone or CopyFail: the server
    /// ignores Sync and Flush until then.
    copy_in: bool,
    /// Transaction status of the last ReadyForQuery.
    status: TxStatus,
    desync: bool,
    /// Tokens of messages that never took effect, in the order to undo them.
    undone: Vec<T>,
    /// The token of the reply just routed [`Route::Replace`].
    replacement: Option<T>,
}

impl<T> Default for Tracker<T> {
    fn default() -> Self {
        Tracker::new()
    }
}

impl<T> Tracker<T> {
    /// A freshly logged-in connection: nothing owed, idle.
    pub fn new() -> Tracker<T> {
        Tracker {
            pending: VecDeque::new(),
            batch_open: false,
            skipping: false,
            copy_in: false,
            status: TxStatus::Idle,
            desync: false,
            undone: Vec::new(),
            replacement: None,
        }
    }

    /// pgmux sent a simple Query of its own; its replies are swallowed.
    pub fn own_query(&mut self) {
        self.expect(Reply::Ready, Handling::Own, None);
    }

    /// Like [`Tracker::own_query`], with a token to find it by when it fails.
    pub fn own_query_with(&mut self, token: T) {
        self.expect(Reply::Ready, Handling::Own, Some(token));
    }

    /// The client sent a message with this tag to the server, as it was.
    pub fn client_message(&mut self, tag: u8) {
        let reply = match tag {
            // In COPY IN the server ignores Sync and Flush (libpq and others send them anyway).
            b'S' | b'H' if self.copy_in => return,
            b'c' | b'f' if self.copy_in => {
                self.copy_in = false;
                return;
            }
            b'c' | b'f' => Reply::CopyEnd,
            b'Q' | b'F' => Reply::Ready,
            b'S' => Reply::Sync,
            b'P' => Reply::Parse,
            b'B' => Reply::Bind,
            b'D' => Reply::Describe,
            b'E' => Reply::Execute,
            b'C' => Reply::Close,
            b'H' => {
                self.batch_open = true;
                return;
            }
            // CopyData: part of a COPY whose reply is already owed.
            b'd' => return,
            // Terminate is never forwarded; anything else is not a message a client may send.
            _ => {
                self.desync = true;
                return;
            }
        };
        self.expect(reply, Handling::Forward, None);
    }

    /// A message went to the server (or was answered by pgmux) that draws `reply`. An
    /// [`Handling::Answer`] or [`Handling::Replace`] needs a token to answer or replace from.
    pub fn expect(&mut self, reply: Reply, handling: Handling, token: Option<T>) {
        match reply {
            Reply::Sync => {
                self.batch_open = false;
                self.skipping = false;
            }
            Reply::Ready => {}
            // A COPY end nothing is waiting for draws no reply and marks nothing.
            Reply::CopyEnd if self.pending.is_empty() || self.skipping => return,
            Reply::CopyEnd => {}
            _ => self.batch_open = true,
        }
        if self.skipping {
            // The server discards it unanswered, as it will everything up to the next Sync.
            self.undone.extend(token);
            return;
        }
        self.pending.push_back(Pending {
            reply,
            handling,
            token: token.map(Box::new),
        });
    }

    /// The server sent a message with this tag; `first_byte` is the first byte of its body
    /// (the status of a ReadyForQuery).
    pub fn server_message(&mut self, tag: u8, first_byte: Option<u8>) -> Route {
        let asynchronous = matches!(tag, b'N' | b'S' | b'A');
        self.drop_copy_end_markers();
        let Some(head) = self.pending.front_mut() else {
            if !asynchronous {
                self.desync = true;
            }
            return Route::Forward;
        };
        if asynchronous {
            return match head.handling {
                Handling::Own => Route::Swallow,
                _ => Route::Forward,
            };
        }
        let failed = tag == b'E' && head.reply.extended();
        if tag == b'Z' {
            match first_byte.and_then(TxStatus::from_byte) {
                Some(s) if !head.reply.extended() => self.status = s,
                _ => self.desync = true,
            }
        }
        let route = match head.handling {
            Handling::Forward => Route::Forward,
            Handling::Own => Route::Swallow,
            Handling::Hide if failed => Route::Forward,
            Handling::Hide => Route::Swallow,
            Handling::Replace if failed => {
                self.replacement = head.token.take().map(|t| *t);
                Route::Replace
            }
            Handling::Replace | Handling::Answer => {
                // The server answered a message it should have failed on, or never saw.
                self.desync = true;
                Route::Forward
            }
        };
        let ends = failed || head.reply.ends_on(tag);
        if tag == b'G' {
            self.start_copy_in();
        }
        if ends {
            if let Some(done) = self.pending.pop_front() {
                if failed {
                    self.skip_to_sync(done.token);
                }
            }
            self.drop_copy_end_markers();
            if self.pending.is_empty() && self.pending.capacity() > QUEUE_KEPT {
                // A burst of pipelined messages is over; give the memory back.
                self.pending.shrink_to(QUEUE_KEPT);
            }
        }
        route
    }

    /// The message at the head started COPY IN: Syncs the client sent after it and before its
    /// CopyDone or CopyFail are ignored by the server, so no ReadyForQuery comes for them.
    fn start_copy_in(&mut self) {
        let mut i = 1;
        while i < self.pending.len() {
            match self.pending[i].reply {
                Reply::CopyEnd => {
                    self.pending.remove(i);
                    return;
                }
                Reply::Sync => {
                    self.pending.remove(i);
                }
                _ => i += 1,
            }
        }
        // The client is still sending data: its Syncs are ignored until it ends the COPY.
        self.copy_in = true;
    }

    /// A COPY end marker at the head belongs to no COPY the server started; it draws nothing.
    fn drop_copy_end_markers(&mut self) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.reply == Reply::CopyEnd)
        {
            self.pending.pop_front();
        }
    }

    /// After an extended-protocol error: the server skips every message up to the next Sync,
    /// so none of them took effect. Their tokens go out newest first, the failed one's last.
    fn skip_to_sync(&mut self, failed: Option<Box<T>>) {
        let first_skipped = self.undone.len();
        while self.pending.front().is_some_and(|p| p.reply != Reply::Sync) {
            if let Some(skipped) = self.pending.pop_front() {
                self.undone.extend(skipped.token.map(|t| *t));
            }
        }
        self.undone[first_skipped..].reverse();
        self.undone.extend(failed.map(|t| *t));
        if self.pending.is_empty() {
            self.skipping = true;
        }
    }

    /// How the reply now arriving is handled, and its token: looked at before the message
    /// that may end it is routed.
    pub fn head_mut(&mut self) -> Option<(Handling, Option<&mut T>)> {
        self.drop_copy_end_markers();
        let head = self.pending.front_mut()?;
        Some((head.handling, head.token.as_deref_mut()))
    }

    /// The token of the answer pgmux owes now, if its turn has come (everything ahead of it is
    /// answered).
    pub fn take_answer(&mut self) -> Option<T> {
        if self.pending.front()?.handling != Handling::Answer {
            return None;
        }
        match self.pending.pop_front()?.token {
            Some(token) => Some(*token),
            None => {
                // An answer with nothing to answer from: what the client gets would be wrong.
                self.desync = true;
                None
            }
        }
    }

    /// Whether the reply now owed answers one of pgmux's own statements.
    pub fn owes_own(&self) -> bool {
        self.pending
            .front()
            .is_some_and(|p| p.handling == Handling::Own)
    }

    /// Whether an answer of pgmux's own is due now.
    pub fn answer_due(&self) -> bool {
        self.pending
            .front()
            .is_some_and(|p| p.handling == Handling::Answer)
    }

    /// The token of the reply just routed [`Route::Replace`].
    pub fn take_replacement(&mut self) -> Option<T> {
        self.replacement.take()
    }

    /// Tokens of messages that never took effect, in the order to undo them.
    pub fn undone(&mut self) -> std::vec::Drain<'_, T> {
        self.undone.drain(..)
    }

    pub fn has_undone(&self) -> bool {
        !self.undone.is_empty()
    }

    /// How many replies the server still owes.
    pub fn owed(&self) -> usize {
        self.pending.len()
    }

    /// Whether the server still owes replies (the client is waiting on it).
    pub fn awaiting_reply(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the client has a transaction, an extended-protocol batch or a COPY IN open on
    /// this server.
    pub fn in_transaction(&self) -> bool {
        self.status != TxStatus::Idle || self.batch_open || self.copy_in
    }

    /// Status of the last ReadyForQuery.
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// Marks the connection as unusable (a broken socket, a vanished client mid-message).
    pub fn poison(&mut self) {
        self.desync = true;
    }

    pub fn verdict(&self) -> Verdict {
        if self.desync {
            Verdict::Desync
        } else if self.pending.is_empty()
            && !self.batch_open
            && !self.copy_in
            && self.status == TxStatus::Idle
        {
            Verdict::Idle
        } else {
            Verdict::Busy
        }
    }
}

#[cfg(test)]
mod tests;
