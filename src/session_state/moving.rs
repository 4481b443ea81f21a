//! A session's state crossing to another pgmux process in a takeover: only when all of it is
//! in what the client holds (its settings and SQL prepared statements), none on its server.

use super::{Held, SessionState, Slot};

impl SessionState {
    /// Whether the whole session can move to another process: nothing pins it to its server,
    /// no transaction is open, and no statement is kept whose effects pgmux reads only when
    /// it runs (those are known by name here alone).
    pub fn movable(&self) -> bool {
        self.pins.is_empty()
            && self.slot == Slot::Free
            && !self.check_due
            && self.staged.is_empty()
            && !self.strings_changing
            && self.statements.is_empty()
            && self.portals.is_empty()
    }

    /// The settings and SQL prepared statements of a client moved here; they are replayed on
    /// the next server it gets, as for any client.
    pub fn restore(&mut self, held: Held) {
        if self.enabled {
            self.committed = held;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_state::PinSlots;
    use std::sync::Arc;

    fn state() -> SessionState {
        SessionState::new(true, Arc::new(PinSlots::default()), 1)
    }

    #[test]
    fn a_fresh_session_moves_and_takes_its_settings_along() {
        let mut s = state();
        assert!(s.movable());
        let held = Held {
            settings: vec![("work_mem".into(), Arc::from("SET work_mem = '8MB'"))],
            prepared: vec![("q".into(), Arc::from("PREPARE q AS SELECT 1"))],
        };
        s.restore(held.clone());
        assert_eq!(s.held(), &held);
        assert!(s.movable());
        let mut off = SessionState::off();
        off.restore(held);
        assert!(
            off.held().is_empty(),
            "with the feature off nothing follows the client"
        );
    }

    #[test]
    fn a_pinned_session_stays() {
        let mut s = state();
        s.pin_unreadable();
        assert!(!s.movable());
        s.leave();
        assert!(s.movable());
    }
}
