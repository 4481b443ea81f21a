//! The client timeouts of a session: which one applies depends on what the session waits for,
//! and transaction_timeout bounds a whole transaction besides. Each setting is the user's, else
//! the database's, else the global one, as in PgBouncer.

use super::ClientError;
use crate::config::Config;
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

impl Phase {
    /// Whether a transaction is open: one the client began, or a statement running.
    pub(super) fn in_transaction(self) -> bool {
        self != Phase::Idle
    }
}

/// Which limit a deadline enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    Phase(Phase),
    /// transaction_timeout.
    Transaction,
}

/// The client timeouts in force; None where the setting is 0.
pub(super) struct Timeouts {
    pub(super) client_idle: Option<Duration>,
    pub(super) idle_transaction: Option<Duration>,
    pub(super) query: Option<Duration>,
    pub(super) query_wait: Option<Duration>,
    pub(super) transaction: Option<Duration>,
    /// query_wait_notify: when a client waiting for a server is told so.
    pub(super) query_wait_notify: Option<Duration>,
}

fn seconds(value: f64) -> Option<Duration> {
    (value > 0.0).then(|| Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX))
}

impl Timeouts {
    /// The timeouts of a client of `database` logged in as `user`.
    pub(super) fn for_client(config: &Config, database: &str, user: &str) -> Timeouts {
        let g = &config.general;
        let u = config.users.get(user);
        let d = config.database(database);
        let pick = |of_user: Option<f64>, of_db: Option<f64>, global: f64| {
            seconds(of_user.or(of_db).unwrap_or(global))
        };
        Timeouts {
            client_idle: pick(
                u.and_then(|u| u.client_idle_timeout),
                None,
                g.client_idle_timeout,
            ),
            idle_transaction: pick(
                u.and_then(|u| u.idle_transaction_timeout),
                d.and_then(|d| d.idle_transaction_timeout),
                g.idle_transaction_timeout,
            ),
            query: pick(u.and_then(|u| u.query_timeout), None, g.query_timeout),
            query_wait: pick(
                u.and_then(|u| u.query_wait_timeout),
                d.and_then(|d| d.query_wait_timeout),
                g.query_wait_timeout,
            ),
            transaction: pick(
                u.and_then(|u| u.transaction_timeout),
                d.and_then(|d| d.transaction_timeout),
                g.transaction_timeout,
            ),
            query_wait_notify: seconds(g.query_wait_notify),
        }
    }

    /// Whether any timeout depends on the phase, so that a change of phase must re-arm it.
    pub(super) fn per_phase(&self) -> bool {
        self.client_idle.is_some()
            || self.idle_transaction.is_some()
            || self.query.is_some()
            || self.transaction.is_some()
    }

    pub(super) fn for_phase(&self, phase: Phase) -> Option<Duration> {
        match phase {
            Phase::Idle => self.client_idle,
            Phase::InTransaction => self.idle_transaction,
            Phase::AwaitingServer => self.query,
        }
    }
}

impl Expiry {
    pub(super) fn timeout_error(self) -> ClientError {
        match self {
            Expiry::Phase(Phase::Idle) => ClientError::ClientIdleTimeout,
            Expiry::Phase(Phase::InTransaction) => ClientError::IdleTransactionTimeout,
            Expiry::Phase(Phase::AwaitingServer) => ClientError::QueryTimeout,
            Expiry::Transaction => ClientError::TransactionTimeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_overrides_the_database_overrides_the_global_setting() {
        let config = Config::parse(
            "[pgmux]\nquery_wait_timeout = 30\ntransaction_timeout = 9\n\
             [databases.a]\nhost = \"h\"\nquery_wait_timeout = 20\nidle_transaction_timeout = 4\n\
             [users.u]\nquery_wait_timeout = 10\nquery_timeout = 3\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let secs = Duration::from_secs;
        let t = Timeouts::for_client(&config, "a", "u");
        assert_eq!(t.query_wait, Some(secs(10)));
        assert_eq!(t.query, Some(secs(3)));
        assert_eq!(t.idle_transaction, Some(secs(4)));
        assert_eq!(t.transaction, Some(secs(9)));
        let t = Timeouts::for_client(&config, "a", "other");
        assert_eq!(t.query_wait, Some(secs(20)));
        assert_eq!(t.query, None);
        let t = Timeouts::for_client(&config, "b", "other");
        assert_eq!(t.query_wait, Some(secs(30)));
        assert_eq!(t.idle_transaction, None);
    }
}
