//! Shutdown modes, as PgBouncer names them, and the state every task watches.

use tokio::sync::watch;

/// How pgmux stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownMode {
    /// SIGTERM, `SHUTDOWN WAIT_FOR_CLIENTS`: refuse new clients, exit when the last one leaves.
    WaitForClients,
    /// SIGINT, `SHUTDOWN WAIT_FOR_SERVERS`: refuse new clients and new transactions, let the
    /// transactions in flight finish, then exit.
    WaitForServers,
    /// A second signal, SIGQUIT, or `SHUTDOWN`: exit now.
    Immediate,
}

/// The shutdown state: None while running. It only moves towards Immediate.
pub struct ShutdownState {
    tx: watch::Sender<Option<ShutdownMode>>,
}

impl Default for ShutdownState {
    fn default() -> Self {
        ShutdownState {
            tx: watch::channel(None).0,
        }
    }
}

impl ShutdownState {
    /// Starts (or hastens) a shutdown; a milder mode never replaces a stricter one.
    pub fn begin(&self, mode: ShutdownMode) {
        self.set(mode, true);
    }

    /// As [`ShutdownState::begin`], without telling the service manager that the service
    /// stops: for a process of a takeover, when the other process is the service.
    pub fn begin_quietly(&self, mode: ShutdownMode) {
        self.set(mode, false);
    }

    fn set(&self, mode: ShutdownMode, tell_the_service_manager: bool) {
        self.tx.send_if_modified(|current| {
            if current.is_none() && tell_the_service_manager {
                crate::notify::stopping();
            }
            if current.is_none_or(|c| mode > c) {
                *current = Some(mode);
                true
            } else {
                false
            }
        });
    }

    pub fn mode(&self) -> Option<ShutdownMode> {
        *self.tx.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<Option<ShutdownMode>> {
        self.tx.subscribe()
    }
}

/// Whether clients must stop starting transactions under `mode`.
pub fn draining(mode: Option<ShutdownMode>) -> bool {
    matches!(
        mode,
        Some(ShutdownMode::WaitForServers | ShutdownMode::Immediate)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_only_get_stricter() {
        let s = ShutdownState::default();
        assert_eq!(s.mode(), None);
        s.begin(ShutdownMode::WaitForServers);
        s.begin(ShutdownMode::WaitForClients);
        assert_eq!(s.mode(), Some(ShutdownMode::WaitForServers));
        s.begin(ShutdownMode::Immediate);
        assert_eq!(s.mode(), Some(ShutdownMode::Immediate));
        assert!(draining(s.mode()));
        assert!(!draining(Some(ShutdownMode::WaitForClients)));
    }
}
