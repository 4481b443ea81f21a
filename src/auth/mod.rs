//! Authentication math and state machines: SCRAM-SHA-256 (server side for clients, client side for
//! servers, from a password or from a ClientKey a client proved) and md5. Fed bytes, returns
//! bytes; never does I/O and never logs a secret.

pub mod md5;
pub mod scram;

use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("SCRAM message is malformed: {0}")]
    MalformedScram(&'static str),
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    #[error("password authentication failed")]
    WrongPassword,
    #[error("server signature did not verify")]
    BadServerSignature,
    #[error("SCRAM secret is malformed")]
    MalformedSecret,
    #[error("channel binding is not supported on this connection")]
    ChannelBindingUnsupported,
    #[error("no usable credentials for the method the server asked for ({0})")]
    NoCredentials(&'static str),
}

/// A stored credential: plaintext, PostgreSQL's md5 hash, or a SCRAM-SHA-256 secret.
/// Debug and Display never show the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// `md5` followed by 32 hex digits: md5(password || user).
    Md5(String),
    Scram(scram::ScramKeys),
}

impl Secret {
    /// Classifies a secret as PgBouncer's userlist.txt and PostgreSQL's pg_authid store them.
    pub fn parse(s: &str) -> Result<Secret, AuthError> {
        if s.starts_with("SCRAM-SHA-256$") {
            return scram::ScramKeys::parse_secret(s).map(Secret::Scram);
        }
        if s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Secret::Md5(s.to_ascii_lowercase()));
        }
        Ok(Secret::Plain(s.to_owned()))
    }

    /// Whether `password` (sent in clear text by `user`) is the one this secret stands for.
    pub fn matches_password(&self, user: &str, password: &str) -> bool {
        match self {
            Secret::Plain(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            Secret::Md5(h) => {
                constant_time_eq(md5::stored_hash(password, user).as_bytes(), h.as_bytes())
            }
            Secret::Scram(keys) => keys.client_key_of(password).is_some(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret::{}(<redacted>)", self.kind())
    }
}

/// Constant-time comparison, so a timing probe learns nothing about a secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh nonce for a SCRAM exchange: 18 random bytes, base64 (printable, no commas).
pub fn random_nonce() -> String {
    use base64::Engine;
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_classified_and_redacted() {
        assert!(matches!(
            Secret::parse("hunter2").unwrap(),
            Secret::Plain(_)
        ));
        let md5 = Secret::parse("md5e1ceb6e8a0e0a0c8b7c36b3ab4d1f5a1").unwrap();
        assert!(matches!(md5, Secret::Md5(_)));
        assert!(!format!("{md5:?}").contains("e1ceb6"));
        assert!(!format!("{:?}", Secret::Plain("hunter2".into())).contains("hunter2"));
        assert!(Secret::parse("SCRAM-SHA-256$nonsense").is_err());
    }
}
