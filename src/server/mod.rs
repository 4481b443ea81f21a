//! Server connections: connect to PostgreSQL, log in, record its parameters and key, run pgmux's
//! own statements (reset). Never decides pooling; the tracker and the pool guard do.

mod conn;
mod lookup;

pub use conn::{ServerConn, ServerCredentials, ServerTarget, READ_BUFFER};

use crate::auth::AuthError;
use crate::protocol::backend::ErrorFields;
use crate::protocol::ProtocolError;
use thiserror::Error;

impl ServerError {
    /// Whether trying again later may succeed: the server is down, starting, stopping or full,
    /// rather than refusing this login for good (bad password, no such database).
    pub fn is_transient(&self) -> bool {
        match self {
            ServerError::Refused(fields) => {
                matches!(fields.code.as_str(), "57P01" | "57P02" | "57P03" | "53300")
            }
            ServerError::Connect { .. }
            | ServerError::Timeout(_)
            | ServerError::Io(_)
            | ServerError::Closed => true,
            ServerError::Auth(_)
            | ServerError::Protocol(_)
            | ServerError::Unexpected(_)
            | ServerError::UnsupportedAuth(_)
            | ServerError::Tls(_) => false,
        }
    }
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting and logging in to {0}")]
    Timeout(String),
    #[error("server connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("server refused: {} ({})", .0.message, .0.code)]
    Refused(ErrorFields),
    #[error("authentication with the server failed: {0}")]
    Auth(#[from] AuthError),
    #[error("server sent a malformed message: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("server sent unexpected message '{0}'")]
    Unexpected(char),
    #[error("server asked for unsupported authentication method {0}")]
    UnsupportedAuth(u32),
    #[error("TLS with the server failed: {0}")]
    Tls(String),
}
