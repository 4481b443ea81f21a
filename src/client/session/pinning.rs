//! The session's side of pinning: asking the server what a client's session holds that only
//! it can, keeping the server for a pinned client, cleaning it when the client lets go, and
//! showing and logging each pin.

use super::Session;
use crate::client::ClientError;
use crate::pool::PooledServer;
use crate::registry::ClientState;
use crate::relay::{Linked, Prelude};
use crate::session_state::{self as state, PinChange};
use crate::tracker::Verdict;

impl Session<'_> {
    /// Asks the server what the client's session holds there that only it can (a statement
    /// may have made or dropped some), then keeps the server for the client if anything, and
    /// gives it back if nothing. A server that cannot answer is closed, and the client with
    /// it: what its session held there is gone, as when a session-mode server dies.
    pub(super) async fn check_pins(&mut self, mut server: PooledServer) -> Result<(), ClientError> {
        // A cancel the client sent for its own statement must not reach the check (it is
        // delivered first); a pinned client's is linked again below.
        if self.login.cancel.unlink().await {
            server.tracker.poison();
        }
        if server.tracker.verdict() == Verdict::Idle {
            let login_user = server
                .startup_params()
                .iter()
                .find(|(n, _)| n == "session_authorization")
                .map_or(self.login.pool.user.clone(), |(_, v)| v.clone());
            let sql = state::check_query(&login_user);
            // Boxed: only clients whose statements may pin run it.
            let pins = match Box::pin(server.own_query_row(&sql)).await {
                Ok(Some(row)) => state::read_check(&row),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "checking a client's session state failed; closing server");
                    None
                }
            };
            match pins {
                Some(pins) => self.state.checked(pins),
                None => server.tracker.poison(),
            }
        }
        if server.tracker.verdict() != Verdict::Idle {
            self.state.leave();
            self.note_pins();
            self.release(server).await;
            return Err(ClientError::ServerGone);
        }
        self.note_pins();
        match self.state.pinned() {
            true => self.link_again(server),
            false => self.release(server).await,
        }
        Ok(())
    }

    /// Keeps `server` linked to a pinned client: nothing to give it, it has the session.
    fn link_again(&mut self, server: PooledServer) {
        self.login.entry.set_state(ClientState::Active);
        self.login.cancel.link(server.cancel_key());
        let linked = Linked::new(
            server,
            self.login.mode,
            &Prelude::default(),
            &mut self.composed,
        );
        self.linked = Some(linked);
    }

    /// Shows a pin that started or ended in SHOW CLIENTS, and logs it where asked to.
    pub(super) fn note_pins(&mut self) {
        let Some(change) = self.state.take_change() else {
            return;
        };
        let entry = &self.login.entry;
        entry.set_pins(self.state.pins());
        if !self.log_pinning {
            return;
        }
        match change {
            PinChange::Pinned(pins) => {
                tracing::info!(user = %entry.user, database = %entry.database, reason = %pins.describe(), "client pinned to its server")
            }
            PinChange::Unpinned => {
                tracing::info!(user = %entry.user, database = %entry.database, "client unpinned from its server")
            }
        }
    }

    /// A pinned client is leaving its server: what it held there goes, with DISCARD ALL, so
    /// that the next client finds the server as new (or it is closed).
    pub(super) async fn discard(&mut self, server: &mut PooledServer) {
        if server.tracker.verdict() != Verdict::Idle {
            return;
        }
        server.params.forget_all();
        server.session = state::Held::default();
        if let Err(e) = Box::pin(server.run_own_query("DISCARD ALL")).await {
            tracing::warn!(error = %e, "discarding a pinned client's session failed; closing server");
            server.tracker.poison();
        }
    }
}
