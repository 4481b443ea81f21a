//! The one boundary where failures become what a client sees: every `ClientError` maps to an
//! ErrorResponse by an exhaustive match, so a new variant cannot compile without its SQLSTATE.

use crate::pool::PoolError;
use crate::protocol::backend::{self, Severity};
use crate::protocol::sqlstate as code;
use crate::protocol::ProtocolError;
use crate::server::ServerError;
use bytes::BytesMut;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("unsupported startup parameter: {0}")]
    UnsupportedParameter(String),
    #[error("{0}")]
    Options(#[from] crate::protocol::options::OptionsError),
    #[error("value of startup parameter {0} is too long (at most 4096 bytes)")]
    ParameterTooLong(String),
    /// A startup parameter's value PostgreSQL refused, with its own words and code.
    #[error("{}", .0.message)]
    BadParameter(crate::protocol::backend::ErrorFields),
    #[error("no user name in startup packet")]
    NoUser,
    #[error("no such database: {0}")]
    UnknownDatabase(String),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("user \"{0}\" is not allowed on the admin console (admin_users, stats_users)")]
    NotConsoleUser(String),
    #[error("database \"{0}\" is disabled (DISABLE on the admin console)")]
    DatabaseDisabled(String),
    #[error("no more connections allowed (max_client_conn)")]
    TooManyClients,
    /// max_db_client_connections or max_user_client_connections, named as PgBouncer does.
    #[error("no more connections allowed ({0})")]
    TooManyClientsOf(&'static str),
    #[error("client_login_timeout: login not completed in time")]
    LoginTimeout,
    #[error("TLS required (client_tls_sslmode): connect with sslmode=require or stronger")]
    TlsRequired,
    #[error("TLS handshake with the client failed: {0}")]
    TlsHandshake(std::io::Error),
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    #[error("certificate authentication failed for user \"{0}\"")]
    CertAuthFailed(String),
    #[error("Peer authentication failed for user \"{0}\"")]
    PeerAuthFailed(String),
    /// No auth_hba_file line matches (`rejected` false), or the one that does says reject.
    #[error(
        "{} for host \"{host}\", user \"{user}\", database \"{database}\", {}",
        if *.rejected { "pg_hba.conf rejects connection" } else { "no pg_hba.conf entry" },
        if *.tls { "SSL encryption" } else { "no encryption" }
    )]
    HbaRefused {
        rejected: bool,
        host: String,
        user: String,
        database: String,
        tls: bool,
    },
    /// auth_query could not run (auth_user cannot log in, the query fails); the reason is in
    /// pgmux's log, not told to a client that has not logged in.
    #[error("cannot authenticate user \"{0}\": the password lookup (auth_query) failed")]
    AuthLookupFailed(String),
    #[error("transaction blocks not allowed in statement pooling mode")]
    TransactionInStatementMode,
    #[error("server connection: {0}")]
    Server(Arc<ServerError>),
    #[error("server connection closed unexpectedly")]
    ServerGone,
    /// The settings of the client's session could not be given to a server (see
    /// session_state): the session cannot go on as it was.
    #[error("could not restore this session's settings on a server: {0}")]
    SessionNotRestored(String),
    #[error("pool is shutting down")]
    PoolClosed,
    #[error("pgmux is shutting down")]
    ShuttingDown,
    #[error("terminating connection due to administrator command (KILL on the admin console)")]
    Killed,
    #[error("canceling query due to query_wait_timeout: no server became free in time")]
    QueryWaitTimeout,
    #[error("terminating connection due to query_timeout")]
    QueryTimeout,
    #[error("terminating connection due to idle_transaction_timeout")]
    IdleTransactionTimeout,
    #[error("terminating connection due to transaction_timeout")]
    TransactionTimeout,
    #[error("terminating connection due to client_idle_timeout")]
    ClientIdleTimeout,
    /// The client's own socket failed; there is nobody to tell.
    #[error("client connection: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ServerError> for ClientError {
    fn from(e: ServerError) -> Self {
        ClientError::Server(Arc::new(e))
    }
}

impl From<PoolError> for ClientError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Login(s) => ClientError::Server(s),
            PoolError::Closed => ClientError::PoolClosed,
            PoolError::WaitTimedOut => ClientError::QueryWaitTimeout,
        }
    }
}

impl ClientError {
    /// Severity, SQLSTATE and message for the client, or None when it cannot be told.
    pub fn response(&self) -> Option<(Severity, String, String)> {
        let fatal = |c: &str| Some((Severity::Fatal, c.to_owned(), self.to_string()));
        match self {
            ClientError::Protocol(_) => fatal(code::PROTOCOL_VIOLATION),
            ClientError::UnsupportedParameter(_) => fatal(code::PROTOCOL_VIOLATION),
            ClientError::Options(e) => fatal(e.sqlstate()),
            ClientError::ParameterTooLong(_) => fatal(code::PROGRAM_LIMIT_EXCEEDED),
            ClientError::BadParameter(f) => fatal(&f.code),
            ClientError::NoUser => fatal(code::INVALID_AUTHORIZATION),
            ClientError::UnknownDatabase(_) => fatal(code::INVALID_CATALOG_NAME),
            ClientError::AuthFailed(_) => fatal(code::INVALID_PASSWORD),
            ClientError::NotConsoleUser(_) => fatal(code::INVALID_AUTHORIZATION),
            ClientError::DatabaseDisabled(_) => fatal(code::CANNOT_CONNECT_NOW),
            ClientError::TooManyClients => fatal(code::TOO_MANY_CONNECTIONS),
            ClientError::TooManyClientsOf(_) => fatal(code::TOO_MANY_CONNECTIONS),
            ClientError::LoginTimeout => fatal(code::PROTOCOL_VIOLATION),
            ClientError::TlsRequired => fatal(code::INVALID_AUTHORIZATION),
            // The TLS session is broken: nothing can reach the client.
            ClientError::TlsHandshake(_) => None,
            ClientError::DataAfterSslRequest => fatal(code::PROTOCOL_VIOLATION),
            ClientError::CertAuthFailed(_) => fatal(code::INVALID_AUTHORIZATION),
            ClientError::PeerAuthFailed(_) => fatal(code::INVALID_AUTHORIZATION),
            ClientError::HbaRefused { .. } => fatal(code::INVALID_AUTHORIZATION),
            ClientError::AuthLookupFailed(_) => fatal(code::CONNECTION_FAILURE),
            ClientError::TransactionInStatementMode => fatal(code::FEATURE_NOT_SUPPORTED),
            // PostgreSQL's own refusal is passed on as it came.
            ClientError::Server(e) => match &**e {
                ServerError::Refused(f) => Some((
                    Severity::Fatal,
                    f.code.clone(),
                    format!("server login failed: {}", f.message),
                )),
                _ => fatal(code::CONNECTION_FAILURE),
            },
            ClientError::ServerGone => fatal(code::CONNECTION_FAILURE),
            ClientError::SessionNotRestored(_) => fatal(code::CONNECTION_FAILURE),
            ClientError::PoolClosed => fatal(code::ADMIN_SHUTDOWN),
            ClientError::ShuttingDown => fatal(code::ADMIN_SHUTDOWN),
            ClientError::Killed => fatal(code::ADMIN_SHUTDOWN),
            ClientError::QueryWaitTimeout => fatal(code::QUERY_CANCELED),
            ClientError::QueryTimeout => fatal(code::QUERY_CANCELED),
            ClientError::IdleTransactionTimeout => fatal(code::IDLE_IN_TRANSACTION_TIMEOUT),
            ClientError::TransactionTimeout => fatal(code::TRANSACTION_TIMEOUT),
            ClientError::ClientIdleTimeout => fatal(code::IDLE_SESSION_TIMEOUT),
            ClientError::Io(_) => None,
        }
    }

    /// Whether this is a failed login (wrong password, refused by auth_hba_file, ...), which
    /// is logged with the user, database and peer.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            ClientError::AuthFailed(_)
                | ClientError::CertAuthFailed(_)
                | ClientError::PeerAuthFailed(_)
                | ClientError::HbaRefused { .. }
        )
    }

    /// Appends the ErrorResponse for this error, if the client can be told.
    pub fn write_response(&self, out: &mut BytesMut) {
        if let Some((severity, code, message)) = self.response() {
            backend::error_response(out, severity, &code, &message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::ErrorFields;

    fn sqlstate(e: ClientError) -> Option<String> {
        e.response().map(|(_, c, _)| c)
    }

    #[test]
    fn each_error_has_postgresqls_sqlstate() {
        let cases: Vec<(ClientError, Option<&str>)> = vec![
            (ProtocolError::BadStartupLength(3).into(), Some("08P01")),
            (ClientError::UnsupportedParameter("x".into()), Some("08P01")),
            (
                crate::protocol::options::OptionsError::EmptyName.into(),
                Some("42704"),
            ),
            (ClientError::NoUser, Some("28000")),
            (ClientError::UnknownDatabase("d".into()), Some("3D000")),
            (ClientError::AuthFailed("u".into()), Some("28P01")),
            (ClientError::TooManyClients, Some("53300")),
            (
                ClientError::TooManyClientsOf("max_db_client_connections"),
                Some("53300"),
            ),
            (ClientError::DatabaseDisabled("d".into()), Some("57P03")),
            (ClientError::NotConsoleUser("u".into()), Some("28000")),
            (ClientError::LoginTimeout, Some("08P01")),
            (ClientError::TlsRequired, Some("28000")),
            (
                ClientError::TlsHandshake(std::io::ErrorKind::InvalidData.into()),
                None,
            ),
            (ClientError::DataAfterSslRequest, Some("08P01")),
            (ClientError::CertAuthFailed("u".into()), Some("28000")),
            (ClientError::PeerAuthFailed("u".into()), Some("28000")),
            (
                ClientError::HbaRefused {
                    rejected: true,
                    host: "[local]".into(),
                    user: "u".into(),
                    database: "d".into(),
                    tls: false,
                },
                Some("28000"),
            ),
            (ClientError::AuthLookupFailed("u".into()), Some("08006")),
            (ClientError::TransactionInStatementMode, Some("0A000")),
            (ServerError::Closed.into(), Some("08006")),
            (ClientError::ServerGone, Some("08006")),
            (ClientError::SessionNotRestored("x".into()), Some("08006")),
            (ClientError::PoolClosed, Some("57P01")),
            (ClientError::ShuttingDown, Some("57P01")),
            (ClientError::Killed, Some("57P01")),
            (ClientError::QueryWaitTimeout, Some("57014")),
            (ClientError::QueryTimeout, Some("57014")),
            (ClientError::IdleTransactionTimeout, Some("25P03")),
            (ClientError::TransactionTimeout, Some("25P04")),
            (ClientError::ClientIdleTimeout, Some("57P05")),
            (
                ServerError::Refused(ErrorFields {
                    severity: "FATAL".into(),
                    code: "28P01".into(),
                    message: "no".into(),
                })
                .into(),
                Some("28P01"),
            ),
            (std::io::Error::other("x").into(), None),
        ];
        for (error, expected) in cases {
            let label = error.to_string();
            assert_eq!(sqlstate(error).as_deref(), expected, "{label}");
        }
    }
}
