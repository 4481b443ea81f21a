//! Wire format of protocol 3.0, and nothing else: framing of untrusted bytes, the startup
//! packets, builders for the messages pgmux itself sends, and SQLSTATE codes.
//! Owns no sockets and no state beyond a buffer it is handed, so every part can be fuzzed.

pub mod backend;
pub mod frame;
pub mod options;
pub mod params;
pub mod sqlstate;
pub mod startup;

use thiserror::Error;

/// Anything malformed a peer sent us.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message length {len} is invalid (minimum 4, maximum {max})")]
    BadLength { len: usize, max: usize },
    #[error("startup packet length {0} is invalid")]
    BadStartupLength(usize),
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("startup packet is malformed: {0}")]
    MalformedStartup(&'static str),
    #[error("message '{tag}' is malformed: {what}")]
    Malformed { tag: char, what: &'static str },
    #[error("expected message '{expected}', got '{got}'")]
    Unexpected { expected: char, got: char },
}
