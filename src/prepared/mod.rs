//! Protocol-level named prepared statements across pooled servers, all of it: rewriting what
//! clients send (rewrite.rs), the statements and names themselves (statement.rs), and the reply
//! side (reply.rs): the tokens the tracker carries, pgmux's own answers, undoing what failed.
//!
//! A client's named statement is renamed to a pgmux-wide name (`PGMUX_<id>`) that stands for its
//! exact bytes (query text and parameter types); each server connection remembers, in an LRU,
//! which of those it has prepared. When a client's Bind or Describe reaches a server that lacks
//! the statement, the Parse is slipped in just before it, inside the client's own pipeline, and
//! its reply is hidden. The tracker keeps each reply's token in order without knowing what it
//! means. No I/O.

mod reply;
mod rewrite;
mod sql;
mod statement;

pub use reply::{apply_undone, put_answers, replacement, Answer, StatementTracker, Token};
pub use rewrite::{
    refuse, rewrite_candidate, rewrite_large, rewrite_message, Context, Counts, Large, Statements,
};
pub use sql::deallocate_target;
pub use statement::{
    ClientStatements, Registry, ServerStatements, Statement, Undo, SERVER_NAME_PREFIX,
};

/// Whether a CommandComplete body (tag and NUL) says the server dropped every prepared
/// statement of the session.
pub fn forgets_all_statements(command_complete: &[u8]) -> bool {
    matches!(command_complete, b"DISCARD ALL\0" | b"DEALLOCATE ALL\0")
}

#[cfg(test)]
mod tests;

/// Owned state behind a [`Context`], for tests of the rewriting and the relay.
#[cfg(test)]
#[derive(Default)]
pub struct Fixture {
    pub client: ClientStatements,
    pub server: ServerStatements,
    pub registry: Registry,
    pub counts: Counts,
}

#[cfg(test)]
impl Fixture {
    pub fn context(&mut self, capacity: usize) -> Context<'_> {
        Context {
            client: &mut self.client,
            server: &mut self.server,
            registry: &self.registry,
            capacity,
            counts: &mut self.counts,
        }
    }
}
