//! Server connections: connect to PostgreSQL, log in, record its parameters and key, run pgmux's
//! own statements (reset). Never decides pooling; the tracker and the pool guard do.

mod conn;
pub mod tracker;

pub use conn::{ServerConn, ServerCredentials, ServerTarget};

use crate::auth::AuthError;
use crate::protocol::backend::ErrorFields;
use crate::protocol::ProtocolError;
use thiserror::Error;

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
}
