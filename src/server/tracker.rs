//! The reply tracker: which replies a server connection still owes, and to whom.
//!
//! Fed the tag of every message that crosses the connection, it answers whether the server may go
//! back to the pool. It errs on the side of closing: a reply it cannot account for makes the
//! connection desynchronized for good. Pure; no I/O.

/// What the relay should do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Goes to the client.
    Forward,
    /// Reply to a statement pgmux sent in its own name; the client never sees it.
    Swallow,
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

/// Counts of replies owed, in the order the server will send them: pgmux's own first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// ReadyForQuery replies to pgmux's own queries, all of them ahead of the client's.
    swallowed: u32,
    /// ReadyForQuery replies owed to the client: one per Query, Sync and FunctionCall.
    owed: u32,
    /// Extended-protocol messages sent since the last Sync (a Flush-terminated batch included):
    /// the server holds state for this client until a Sync closes the batch.
    batch_open: bool,
    /// Transaction status of the last ReadyForQuery: b'I', b'T' or b'E'.
    status: u8,
    desync: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    /// A freshly logged-in connection: nothing owed, idle.
    pub fn new() -> Tracker {
        Tracker {
            swallowed: 0,
            owed: 0,
            batch_open: false,
            status: b'I',
            desync: false,
        }
    }

    /// pgmux sent a simple Query of its own; its replies are swallowed.
    pub fn own_query(&mut self) {
        self.swallowed += 1;
    }

    /// The client sent a message with this tag to the server.
    pub fn client_message(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => self.owed += 1,
            b'S' => {
                self.owed += 1;
                self.batch_open = false;
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => self.batch_open = true,
            // CopyData, CopyDone, CopyFail: part of a COPY whose reply is already owed.
            b'd' | b'c' | b'f' => {}
            // Terminate is never forwarded; anything else is not a message a client may send.
            _ => self.desync = true,
        }
    }

    /// The server sent a message with this tag; `first_byte` is the first byte of its body
    /// (the status of a ReadyForQuery).
    pub fn server_message(&mut self, tag: u8, first_byte: Option<u8>) -> Route {
        let route = if self.swallowed > 0 {
            Route::Swallow
        } else {
            Route::Forward
        };
        match tag {
            b'Z' => {
                match first_byte {
                    Some(s @ (b'I' | b'T' | b'E')) => self.status = s,
                    _ => self.desync = true,
                }
                if self.swallowed > 0 {
                    self.swallowed -= 1;
                } else if self.owed > 0 {
                    self.owed -= 1;
                } else {
                    self.desync = true;
                }
            }
            // Asynchronous messages may arrive at any time.
            b'N' | b'S' | b'A' => {}
            _ => {
                if self.swallowed == 0 && self.owed == 0 && !self.batch_open {
                    self.desync = true;
                }
            }
        }
        route
    }

    /// Whether the server still owes replies (the client is waiting on it).
    pub fn awaiting_reply(&self) -> bool {
        self.swallowed > 0 || self.owed > 0
    }

    /// Whether the client has a transaction or an extended-protocol batch open on this server.
    pub fn in_transaction(&self) -> bool {
        self.status != b'I' || self.batch_open
    }

    /// Status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Marks the connection as unusable (a broken socket, a vanished client mid-message).
    pub fn poison(&mut self) {
        self.desync = true;
    }

    pub fn verdict(&self) -> Verdict {
        if self.desync {
            Verdict::Desync
        } else if self.swallowed == 0 && self.owed == 0 && !self.batch_open && self.status == b'I' {
            Verdict::Idle
        } else {
            Verdict::Busy
        }
    }
}

#[cfg(test)]
mod tests;
