//! Proving who a client is: the method (auth_type, or the first matching auth_hba_file line) and
//! its exchange (md5, SCRAM, clear-text password, certificate, peer credentials). Where the
//! secret comes from (auth_file, auth_query) is the caller's business; a missing secret still
//! runs the whole exchange, so that nobody can tell which users exist.

use super::{ClientConn, ClientError};
use crate::auth::md5::{salted_reply, stored_hash};
use crate::auth::scram::{ChannelBinding, ScramKeys, ServerExchange, DEFAULT_ITERATIONS};
use crate::auth::{constant_time_eq, random_nonce, Secret};
use crate::config::hba::{ClientCert, HbaMethod, HbaRequest};
use crate::config::{AuthType, Config};
use crate::protocol::backend;
use crate::protocol::frame::cstr;
use crate::protocol::ProtocolError;
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};

const SCRAM: &str = "SCRAM-SHA-256";
const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// How this client must prove who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Trust,
    /// md5, or SCRAM for a user whose secret is a SCRAM secret (as PostgreSQL does).
    Md5,
    Scram,
    /// The password in clear text.
    Password,
    /// The TLS client certificate's common name is the user name.
    Cert,
    /// The Unix-socket peer's operating-system user is the user name.
    Peer,
}

impl Method {
    /// Whether the exchange checks a stored secret.
    pub fn needs_secret(self) -> bool {
        matches!(self, Method::Md5 | Method::Scram | Method::Password)
    }
}

/// The method for this connection, or the refusal PostgreSQL gives for it (28000).
pub fn method_for(
    config: &Config,
    conn: &ClientConn,
    user: &str,
    database: &str,
) -> Result<Method, ClientError> {
    Ok(match config.general.auth_type {
        AuthType::Trust => Method::Trust,
        AuthType::Md5 => Method::Md5,
        AuthType::ScramSha256 => Method::Scram,
        AuthType::Plain => Method::Password,
        AuthType::Cert => Method::Cert,
        AuthType::Hba => {
            let request = HbaRequest {
                addr: conn.peer.ip(),
                tls: conn.stream.is_tls(),
                database,
                user,
            };
            let refusal = |rejected| ClientError::HbaRefused {
                rejected,
                host: conn.peer.ip().map_or("[local]".into(), |ip| ip.to_string()),
                user: user.to_owned(),
                database: database.to_owned(),
                tls: conn.stream.is_tls(),
            };
            let found = config
                .hba
                .as_ref()
                .and_then(|rules| rules.find_rule(&request));
            if let Some(rule) = &found {
                check_client_cert(conn, rule.client_cert, user)?;
            }
            match found.map(|rule| rule.method) {
                None => return Err(refusal(false)),
                Some(HbaMethod::Reject) => return Err(refusal(true)),
                Some(HbaMethod::Trust) => Method::Trust,
                Some(HbaMethod::Md5) => Method::Md5,
                Some(HbaMethod::ScramSha256) => Method::Scram,
                Some(HbaMethod::Password) => Method::Password,
                Some(HbaMethod::Cert) => Method::Cert,
                Some(HbaMethod::Peer) => Method::Peer,
            }
        }
    })
}

/// A hostssl line's `clientcert`: a verified client certificate, and for verify-full one
/// whose common name is the user.
fn check_client_cert(conn: &ClientConn, asked: ClientCert, user: &str) -> Result<(), ClientError> {
    // Only a certificate that chained to client_tls_ca_file leaves a common name here.
    let name = conn
        .tls
        .as_ref()
        .and_then(|t| t.peer_common_name.as_deref());
    match (asked, name) {
        (ClientCert::NotAsked, _) => Ok(()),
        (ClientCert::VerifyCa, Some(_)) => Ok(()),
        (ClientCert::VerifyFull, Some(cn)) if cn == user => Ok(()),
        _ => Err(ClientError::CertAuthFailed(user.to_owned())),
    }
}

/// Runs `method`'s exchange against `secret`. Returns the ClientKey the client proved, when
/// its secret is a SCRAM secret and the exchange reveals it (SCRAM, or a clear-text password),
/// so that pgmux can log in to PostgreSQL with the same keys.
pub async fn prove(
    conn: &mut ClientConn,
    shared: &Shared,
    method: Method,
    user: &str,
    secret: Option<&Secret>,
    out: &mut BytesMut,
) -> Result<Option<[u8; 32]>, ClientError> {
    match (method, secret) {
        (Method::Trust, _) => Ok(None),
        (Method::Cert, _) => {
            let name = conn
                .tls
                .as_ref()
                .and_then(|t| t.peer_common_name.as_deref());
            match name {
                Some(cn) if cn == user => Ok(None),
                _ => Err(ClientError::CertAuthFailed(user.to_owned())),
            }
        }
        (Method::Peer, _) => match peer_user(&conn.stream) {
            Some(name) if name == user => Ok(None),
            _ => Err(ClientError::PeerAuthFailed(user.to_owned())),
        },
        (Method::Password, secret) => {
            let password = cleartext(conn, out).await?;
            match secret {
                // As PostgreSQL: an empty password never logs anyone in.
                Some(s) if !password.is_empty() && s.matches_password(user, &password) => {
                    Ok(match s {
                        Secret::Scram(keys) => keys.client_key_of(&password),
                        _ => None,
                    })
                }
                _ => Err(ClientError::AuthFailed(user.to_owned())),
            }
        }
        (Method::Md5 | Method::Scram, Some(Secret::Scram(keys))) => {
            scram(conn, keys.clone(), user, out).await.map(Some)
        }
        (Method::Scram, Some(Secret::Plain(p))) => {
            let keys = derived_keys(shared, user, p);
            // Keys made here are not PostgreSQL's: nothing to log in with.
            scram(conn, keys, user, out).await.map(|_| None)
        }
        (Method::Scram, other) => {
            if other.is_some() {
                tracing::warn!(%user, "an md5 secret cannot serve scram-sha-256 authentication");
            }
            scram(conn, mock_keys(shared, user), user, out).await?;
            Err(ClientError::AuthFailed(user.to_owned()))
        }
        (Method::Md5, secret) => {
            let stored = match secret {
                Some(Secret::Plain(p)) => Some(stored_hash(p, user)),
                Some(Secret::Md5(h)) => Some(h.clone()),
                _ => None,
            };
            md5(conn, stored.as_deref(), user, out).await.map(|()| None)
        }
    }
}

/// The operating-system user at the other end of a Unix socket.
fn peer_user(stream: &Stream) -> Option<String> {
    let Stream::Unix(socket) = stream else {
        return None;
    };
    user_name(socket.peer_cred().ok()?.uid())
}

/// The name of the user with id `uid`, from the system's user database.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to overwrite.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own, sized as passed; getpwuid_r writes the entry's
    // strings into `buf` and points `result` at `entry` on success.
    let rc = unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Asks for the password in clear text, and returns it.
async fn cleartext(conn: &mut ClientConn, out: &mut BytesMut) -> Result<String, ClientError> {
    backend::authentication_cleartext(out);
    conn.send(out).await?;
    let body = conn.read_login_message(b'p').await?;
    match cstr(&body) {
        Some((password, [])) => Ok(password.to_owned()),
        _ => Err(ProtocolError::Malformed {
            tag: 'p',
            what: "malformed password packet",
        }
        .into()),
    }
}

async fn md5(
    conn: &mut ClientConn,
    stored: Option<&str>,
    user: &str,
    out: &mut BytesMut,
) -> Result<(), ClientError> {
    let salt: [u8; 4] = rand::random();
    backend::authentication_md5(out, salt);
    conn.send(out).await?;
    let body = conn.read_login_message(b'p').await?;
    let (reply, rest) = cstr(&body).ok_or(ProtocolError::Malformed {
        tag: 'p',
        what: "password is not a string",
    })?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed {
            tag: 'p',
            what: "malformed password packet",
        }
        .into());
    }
    match stored {
        Some(stored)
            if constant_time_eq(salted_reply(stored, salt).as_bytes(), reply.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(ClientError::AuthFailed(user.to_owned())),
    }
}

/// The SASLInitialResponse's mechanism and data, checked as strictly as PostgreSQL checks
/// them: the inner length must be -1 (no data) or exactly what the message holds after it.
fn sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let malformed = |what| ProtocolError::Malformed { tag: 'p', what };
    let (mechanism, mut rest) = cstr(body).ok_or(malformed("missing SASL mechanism"))?;
    if rest.len() < 4 {
        return Err(malformed("missing SASL data length"));
    }
    let len = rest.get_i32();
    match len {
        -1 if rest.is_empty() => Ok((mechanism, rest)),
        n if n >= 0 && n as usize == rest.len() => Ok((mechanism, rest)),
        _ => Err(malformed("malformed SASLInitialResponse message")),
    }
}

async fn scram(
    conn: &mut ClientConn,
    keys: ScramKeys,
    user: &str,
    out: &mut BytesMut,
) -> Result<[u8; 32], ClientError> {
    // Over TLS, SCRAM-SHA-256-PLUS binds the exchange to pgmux's certificate.
    let end_point = conn.tls.as_ref().and_then(|t| t.end_point.clone());
    let mechanisms: &[&str] = match end_point {
        Some(_) => &[SCRAM_PLUS, SCRAM],
        None => &[SCRAM],
    };
    backend::authentication_sasl(out, mechanisms);
    conn.send(out).await?;
    let body = conn.read_login_message(b'p').await?;
    let malformed = |what| ProtocolError::Malformed { tag: 'p', what };
    let (mechanism, data) = sasl_initial(&body)?;
    let binding = match (mechanism, &end_point) {
        (SCRAM_PLUS, Some(data)) => ChannelBinding::TlsServerEndPoint(data),
        (SCRAM, Some(_)) => ChannelBinding::Declined,
        (SCRAM, None) => ChannelBinding::NotOffered,
        _ => {
            return Err(
                malformed("client selected an invalid SASL authentication mechanism").into(),
            )
        }
    };
    let (exchange, server_first) = ServerExchange::start(keys, data, &random_nonce(), binding)
        .map_err(|_| malformed("bad SCRAM client-first-message"))?;
    backend::authentication_sasl_continue(out, server_first.as_bytes());
    conn.send(out).await?;
    let client_final = conn.read_login_message(b'p').await?;
    match exchange.finish(&client_final) {
        Ok((server_final, client_key)) => {
            backend::authentication_sasl_final(out, server_final.as_bytes());
            Ok(client_key)
        }
        Err(_) => Err(ClientError::AuthFailed(user.to_owned())),
    }
}

/// SCRAM keys for a plaintext password, derived once per user and password.
fn derived_keys(shared: &Shared, user: &str, password: &str) -> ScramKeys {
    let mut cache = crate::sync::lock(&shared.derived_keys);
    if let Some((p, keys)) = cache.get(user) {
        if p == password {
            return keys.clone();
        }
    }
    let salt: [u8; 16] = rand::random();
    let keys = ScramKeys::from_password(password, &salt, DEFAULT_ITERATIONS);
    cache.insert(user.to_owned(), (password.to_owned(), keys.clone()));
    keys
}

/// Keys nobody can prove, with a salt that is stable per user name, as PostgreSQL's mock
/// authentication does, so that salts do not reveal which users exist.
fn mock_keys(shared: &Shared, user: &str) -> ScramKeys {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(shared.mock_salt_key)
        .chain_update(user.as_bytes())
        .finalize()
        .into();
    ScramKeys {
        salt: digest[..16].to_vec(),
        iterations: DEFAULT_ITERATIONS,
        stored_key: rand::random(),
        server_key: rand::random(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_initial_response_lengths_are_checked() {
        let message = |len: i32, data: &[u8]| {
            let mut m = b"SCRAM-SHA-256\0".to_vec();
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(data);
            m
        };
        assert_eq!(
            sasl_initial(&message(3, b"abc")).unwrap(),
            ("SCRAM-SHA-256", &b"abc"[..])
        );
        assert_eq!(sasl_initial(&message(-1, b"")).unwrap().1, b"");
        for bad in [
            message(2, b"abc"),
            message(4, b"abc"),
            message(-1, b"x"),
            message(-2, b""),
            b"SCRAM-SHA-256\0\0\0".to_vec(),
            b"SCRAM-SHA-256".to_vec(),
        ] {
            assert!(sasl_initial(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_current_user_has_a_name() {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert!(user_name(uid).is_some_and(|n| !n.is_empty()));
    }
}
