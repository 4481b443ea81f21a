//! SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding: the server side pgmux runs for its
//! clients and the client side it runs against PostgreSQL. Nonces come from the caller so tests
//! are deterministic.

use super::{constant_time_eq, AuthError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Iterations pgmux uses when it derives keys from a plaintext password itself.
pub const DEFAULT_ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block: SaltedPassword.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// What a server stores: salt, iterations, StoredKey and ServerKey.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramKeys {
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// The ClientKey of `password`, if it is the password these keys were made from.
    pub fn client_key_of(&self, password: &str) -> Option<[u8; 32]> {
        let salted = salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        super::constant_time_eq(&sha256(&client_key), &self.stored_key).then_some(client_key)
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (pg_authid's form).
    pub fn parse_secret(s: &str) -> Result<ScramKeys, AuthError> {
        let bad = || AuthError::MalformedSecret;
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |k: &str| -> Result<[u8; 32], AuthError> {
            B64.decode(k)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(bad)
        };
        Ok(ScramKeys {
            iterations: iter.parse().ok().filter(|&i| i > 0).ok_or_else(bad)?,
            salt: B64.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// Splits `k=v,k=v` attributes, in order.
fn attributes(msg: &str) -> impl Iterator<Item = (u8, &str)> {
    msg.split(',').filter_map(|a| {
        let bytes = a.as_bytes();
        (bytes.len() >= 2 && bytes[1] == b'=').then(|| (bytes[0], &a[2..]))
    })
}

fn attribute(msg: &str, key: u8) -> Option<&str> {
    attributes(msg).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Channel binding on the server side of an exchange.
#[derive(Debug, Clone, Copy)]
pub enum ChannelBinding<'a> {
    /// The server offered only SCRAM-SHA-256 (no TLS).
    NotOffered,
    /// The server offered SCRAM-SHA-256-PLUS too, and the client chose SCRAM-SHA-256.
    Declined,
    /// The client chose SCRAM-SHA-256-PLUS: the tls-server-end-point data of this session.
    TlsServerEndPoint(&'a [u8]),
}

/// The server side after the client's first message: holds what the final check needs.
pub struct ServerExchange {
    keys: ScramKeys,
    /// What the client's `c=` must decode to: the GS2 header, then any channel-binding data.
    binding: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Takes client-first-message, returns the exchange and server-first-message.
    pub fn start(
        keys: ScramKeys,
        client_first: &[u8],
        server_nonce: &str,
        channel: ChannelBinding,
    ) -> Result<(ServerExchange, String), AuthError> {
        let msg = std::str::from_utf8(client_first)
            .map_err(|_| AuthError::MalformedScram("client-first is not UTF-8"))?;
        let (cb_flag, rest) = msg
            .split_once(',')
            .ok_or(AuthError::MalformedScram("missing gs2 header"))?;
        let binding_data: &[u8] = match (cb_flag, channel) {
            ("p=tls-server-end-point", ChannelBinding::TlsServerEndPoint(data)) => data,
            (f, ChannelBinding::TlsServerEndPoint(_)) if f.starts_with("p=") => {
                return Err(AuthError::ChannelBindingUnsupported)
            }
            (_, ChannelBinding::TlsServerEndPoint(_)) => {
                return Err(AuthError::MalformedScram(
                    "SCRAM-SHA-256-PLUS without channel binding",
                ))
            }
            // "y": the client could bind but believes the server cannot. Having offered PLUS,
            // the server must refuse, or a downgrade would pass unnoticed (RFC 5802).
            ("y", ChannelBinding::Declined) => {
                return Err(AuthError::MalformedScram("channel binding downgraded"))
            }
            ("n" | "y", _) => &[],
            (f, _) if f.starts_with("p=") => return Err(AuthError::ChannelBindingUnsupported),
            _ => return Err(AuthError::MalformedScram("bad channel-binding flag")),
        };
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(AuthError::MalformedScram("missing gs2 header"))?;
        if !authzid.is_empty() {
            return Err(AuthError::MalformedScram("authzid is not supported"));
        }
        if bare.starts_with("m=") {
            return Err(AuthError::MalformedScram(
                "mandatory extension is not supported",
            ));
        }
        let client_nonce = attribute(bare, b'r')
            .filter(|n| !n.is_empty())
            .ok_or(AuthError::MalformedScram("missing nonce"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let mut binding = format!("{cb_flag},{authzid},").into_bytes();
        binding.extend_from_slice(binding_data);
        Ok((
            ServerExchange {
                keys,
                binding,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks client-final-message. On success returns server-final-message and the ClientKey
    /// the client proved, which pgmux may reuse to log in to PostgreSQL with the same secret.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, [u8; 32]), AuthError> {
        let msg = std::str::from_utf8(client_final)
            .map_err(|_| AuthError::MalformedScram("client-final is not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(AuthError::MalformedScram("missing proof"))?;
        let binding = attribute(without_proof, b'c')
            .ok_or(AuthError::MalformedScram("missing channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.binding.as_slice()) {
            return Err(AuthError::MalformedScram("channel binding mismatch"));
        }
        if attribute(without_proof, b'r') != Some(self.nonce.as_str()) {
            return Err(AuthError::NonceMismatch);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(AuthError::MalformedScram("bad proof encoding"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.keys.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        if !constant_time_eq(&sha256(&client_key), &self.keys.stored_key) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(&self.keys.server_key, &[auth_message.as_bytes()]);
        Ok((format!("v={}", B64.encode(server_signature)), client_key))
    }
}

/// How pgmux proves itself to PostgreSQL.
#[derive(Clone)]
pub enum ClientCredentials {
    Password(String),
    /// ClientKey recovered from a client's proof, with the ServerKey of the same secret.
    Keys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
}

/// The client side of an exchange with PostgreSQL.
pub struct ClientExchange {
    credentials: ClientCredentials,
    client_first_bare: String,
    expected_server_signature: Option<[u8; 32]>,
}

impl ClientExchange {
    /// Returns the exchange and client-first-message (without channel binding).
    pub fn start(credentials: ClientCredentials, client_nonce: &str) -> (ClientExchange, String) {
        let bare = format!("n=,r={client_nonce}");
        let first = format!("n,,{bare}");
        (
            ClientExchange {
                credentials,
                client_first_bare: bare,
                expected_server_signature: None,
            },
            first,
        )
    }

    /// Takes server-first-message, returns client-final-message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, AuthError> {
        let msg = std::str::from_utf8(server_first)
            .map_err(|_| AuthError::MalformedScram("server-first is not UTF-8"))?;
        let nonce = attribute(msg, b'r').ok_or(AuthError::MalformedScram("missing nonce"))?;
        let own = attribute(&self.client_first_bare, b'r').unwrap_or_default();
        if !nonce.starts_with(own) || nonce.len() <= own.len() {
            return Err(AuthError::NonceMismatch);
        }
        let salt = attribute(msg, b's')
            .and_then(|s| B64.decode(s).ok())
            .ok_or(AuthError::MalformedScram("missing salt"))?;
        let iterations: u32 = attribute(msg, b'i')
            .and_then(|i| i.parse().ok())
            .filter(|&i| i > 0)
            .ok_or(AuthError::MalformedScram("missing iterations"))?;
        let (client_key, server_key) = match &self.credentials {
            ClientCredentials::Password(p) => {
                let salted = salted_password(p.as_bytes(), &salt, iterations);
                (
                    hmac(&salted, &[b"Client Key"]),
                    hmac(&salted, &[b"Server Key"]),
                )
            }
            ClientCredentials::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{},{}", self.client_first_bare, msg, without_proof);
        let signature = hmac(&sha256(&client_key), &[auth_message.as_bytes()]);
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = client_key[i] ^ signature[i];
        }
        self.expected_server_signature = Some(hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final-message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), AuthError> {
        let msg = std::str::from_utf8(server_final)
            .map_err(|_| AuthError::MalformedScram("server-final is not UTF-8"))?;
        let got = attribute(msg, b'v')
            .and_then(|v| B64.decode(v).ok())
            .ok_or(AuthError::MalformedScram("missing verifier"))?;
        match &self.expected_server_signature {
            Some(expected) if constant_time_eq(expected, &got) => Ok(()),
            _ => Err(AuthError::BadServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: ChannelBinding = ChannelBinding::NotOffered;

    // RFC 7677, section 3.
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_keys() -> ScramKeys {
        ScramKeys::from_password(
            "pencil",
            &B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        )
    }

    #[test]
    fn server_side_rfc7677_vector() {
        let (ex, server_first) = ServerExchange::start(
            rfc_keys(),
            RFC_CLIENT_FIRST.as_bytes(),
            RFC_SERVER_NONCE,
            NONE,
        )
        .unwrap();
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (server_final, client_key) = ex.finish(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(server_final, RFC_SERVER_FINAL);
        assert_eq!(sha256(&client_key), rfc_keys().stored_key);
    }

    #[test]
    fn wrong_password_is_refused() {
        let keys = ScramKeys::from_password("not pencil", &[1; 16], 4096);
        let (ex, _) =
            ServerExchange::start(keys, RFC_CLIENT_FIRST.as_bytes(), RFC_SERVER_NONCE, NONE)
                .unwrap();
        assert_eq!(
            ex.finish(RFC_CLIENT_FINAL.as_bytes()),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn tampered_nonce_is_refused() {
        let (ex, _) =
            ServerExchange::start(rfc_keys(), RFC_CLIENT_FIRST.as_bytes(), "other", NONE).unwrap();
        assert_eq!(
            ex.finish(RFC_CLIENT_FINAL.as_bytes()),
            Err(AuthError::NonceMismatch)
        );
    }

    #[test]
    fn malformed_client_first_is_refused() {
        for bad in ["", "x,,n=u,r=a", "n,a=z,n=u,r=a", "n,,m=x,r=a", "n,,n=u"] {
            assert!(
                ServerExchange::start(rfc_keys(), bad.as_bytes(), "s", NONE).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            ServerExchange::start(rfc_keys(), b"p=tls-server-end-point,,n=,r=a", "s", NONE).err(),
            Some(AuthError::ChannelBindingUnsupported)
        );
    }

    /// A SCRAM-SHA-256-PLUS client-final for `cb_data`, computed as a client would.
    fn plus_final(server_first: &str, client_first_bare: &str, cb_data: &[u8]) -> String {
        let nonce = attribute(server_first, b'r').unwrap();
        let mut binding = b"p=tls-server-end-point,,".to_vec();
        binding.extend_from_slice(cb_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(&binding));
        let keys = rfc_keys();
        let salted = salted_password(b"pencil", &keys.salt, keys.iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&sha256(&client_key), &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn channel_binding_to_the_tls_session() {
        let bare = "n=,r=abc";
        let first = format!("p=tls-server-end-point,,{bare}");
        let ours = [7u8; 32];
        let plus = ChannelBinding::TlsServerEndPoint(&ours);
        let (ex, server_first) =
            ServerExchange::start(rfc_keys(), first.as_bytes(), "s", plus).unwrap();
        let good = plus_final(&server_first, bare, &ours);
        assert!(ex.finish(good.as_bytes()).is_ok());
        // Another TLS session's certificate (a man in the middle) does not verify.
        let (ex, server_first) =
            ServerExchange::start(rfc_keys(), first.as_bytes(), "s", plus).unwrap();
        let forged = plus_final(&server_first, bare, &[8u8; 32]);
        assert!(ex.finish(forged.as_bytes()).is_err());
        // PLUS chosen, but no binding in the header.
        assert!(ServerExchange::start(rfc_keys(), b"n,,n=,r=a", "s", plus).is_err());
        assert!(ServerExchange::start(rfc_keys(), b"p=tls-unique,,n=,r=a", "s", plus).is_err());
    }

    #[test]
    fn a_downgrade_from_plus_is_refused() {
        let declined = ChannelBinding::Declined;
        assert!(ServerExchange::start(rfc_keys(), b"y,,n=,r=a", "s", declined).is_err());
        assert!(ServerExchange::start(rfc_keys(), b"n,,n=,r=a", "s", declined).is_ok());
        assert!(ServerExchange::start(rfc_keys(), b"y,,n=,r=a", "s", NONE).is_ok());
    }

    fn round_trip(credentials: ClientCredentials, keys: ScramKeys) -> Result<[u8; 32], AuthError> {
        let (mut client, first) = ClientExchange::start(credentials, "clientnonce");
        let (server, server_first) = ServerExchange::start(keys, first.as_bytes(), "srv", NONE)?;
        let client_final = client.respond(server_first.as_bytes())?;
        let (server_final, key) = server.finish(client_final.as_bytes())?;
        client.verify(server_final.as_bytes())?;
        Ok(key)
    }

    #[test]
    fn client_and_server_agree_with_password_and_recovered_key() {
        let keys = ScramKeys::from_password("secret", b"saltsaltsalt", 4096);
        let key = round_trip(ClientCredentials::Password("secret".into()), keys.clone()).unwrap();
        // A ClientKey proved once logs in again without the password.
        let again = ClientCredentials::Keys {
            client_key: key,
            server_key: keys.server_key,
        };
        assert_eq!(round_trip(again, keys.clone()).unwrap(), key);
        assert_eq!(
            round_trip(ClientCredentials::Password("wrong".into()), keys),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn secret_parses_like_pg_authid() {
        let keys = rfc_keys();
        let secret = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            keys.iterations,
            B64.encode(&keys.salt),
            B64.encode(keys.stored_key),
            B64.encode(keys.server_key)
        );
        assert!(ScramKeys::parse_secret(&secret).unwrap() == keys);
        assert!(ScramKeys::parse_secret("SCRAM-SHA-256$0:AA==$AA==:AA==").is_err());
    }

    #[test]
    fn client_rejects_forged_server_signature() {
        let (mut client, _) = ClientExchange::start(ClientCredentials::Password("p".into()), "abc");
        client.respond(b"r=abcdef,s=AAAA,i=1").unwrap();
        assert_eq!(
            client.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(AuthError::BadServerSignature)
        );
        let (mut other, _) = ClientExchange::start(ClientCredentials::Password("p".into()), "abc");
        assert_eq!(
            other.respond(b"r=xyz,s=AAAA,i=1"),
            Err(AuthError::NonceMismatch)
        );
    }
}
