//! The client timeouts of a session: which one applies depends on what the session waits for.

use super::ClientError;
use std::time::Duration;

/// What the session is waiting for, which decides the timeout that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Outside a transaction, waiting for the client: client_idle_timeout.
    Idle,
    /// Inside a transaction, waiting for the client: idle_transaction_timeout.
    InTransaction,
    /// Waiting for the server's replies: query_timeout.
    AwaitingServer,
}

/// The client timeouts in force; None where the setting is 0.
pub(super) struct Timeouts {
    pub(super) client_idle: Option<Duration>,
    pub(super) idle_transaction: Option<Duration>,
    pub(super) query: Option<Duration>,
    pub(super) query_wait: Option<Duration>,
}

fn seconds(value: f64) -> Option<Duration> {
    (value > 0.0).then(|| Duration::from_secs_f64(value))
}

impl Timeouts {
    pub(super) fn from_config(g: &crate::config::General) -> Timeouts {
        Timeouts {
            client_idle: seconds(g.client_idle_timeout),
            idle_transaction: seconds(g.idle_transaction_timeout),
            query: seconds(g.query_timeout),
            query_wait: seconds(g.query_wait_timeout),
        }
    }

    /// Whether any timeout depends on the phase, so that a change of phase must re-arm it.
    pub(super) fn per_phase(&self) -> bool {
        self.client_idle.is_some() || self.idle_transaction.is_some() || self.query.is_some()
    }

    pub(super) fn for_phase(&self, phase: Phase) -> Option<Duration> {
        match phase {
            Phase::Idle => self.client_idle,
            Phase::InTransaction => self.idle_transaction,
            Phase::AwaitingServer => self.query,
        }
    }
}

impl Phase {
    pub(super) fn timeout_error(self) -> ClientError {
        match self {
            Phase::Idle => ClientError::ClientIdleTimeout,
            Phase::InTransaction => ClientError::IdleTransactionTimeout,
            Phase::AwaitingServer => ClientError::QueryTimeout,
        }
    }
}
