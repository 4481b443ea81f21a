//! The server side of SCRAM-SHA-256: `auth::scram::ServerExchange::start` on an arbitrary
//! client-first-message, then `finish` on an arbitrary client-final-message; and
//! `auth::Secret::parse` (userlist.txt's secret forms) on an arbitrary secret, whose SCRAM keys,
//! when it parses as one, are the ones the exchange checks against.
//!
//! Input: one flags byte (bits 0-1: channel binding not offered, declined, or SCRAM-SHA-256-PLUS
//! with fixed tls-server-end-point data; bit 2: replace the client-final's proof by the right
//! one, so the fuzzer gets past the proof check), then the client-first, the client-final and
//! the secret, separated by NUL bytes. Without a secret that parses, the keys are those of
//! RFC 7677's example (password "pencil"); the server nonce is the RFC's too, so the RFC's
//! messages make a successful exchange.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use pgmux::auth::scram::{ChannelBinding, ScramKeys, ServerExchange};
use pgmux::auth::Secret;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const END_POINT: &[u8] = b"tls-server-end-point hash of a certificate, 32 B";

/// RFC 7677's keys, and the ClientKey behind them (derived once: it takes 4096 rounds).
fn rfc() -> &'static (ScramKeys, [u8; 32]) {
    static KEYS: OnceLock<(ScramKeys, [u8; 32])> = OnceLock::new();
    KEYS.get_or_init(|| {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ScramKeys::from_password("pencil", &salt, 4096);
        let salted = pgmux::auth::scram::salted_password(b"pencil", &salt, 4096);
        (keys, hmac(&salted, b"Client Key"))
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `client_final` with its proof replaced by the one the client key gives, when it has the
/// `,p=` the server looks for. Mirrors how the server splits the messages; if that differs,
/// the proof is simply wrong.
fn with_right_proof(
    client_first: &[u8],
    server_first: &str,
    client_final: &[u8],
    client_key: &[u8; 32],
    stored_key: &[u8; 32],
) -> Option<Vec<u8>> {
    let first = std::str::from_utf8(client_first).ok()?;
    let (_, rest) = first.split_once(',')?;
    let (_, bare) = rest.split_once(',')?;
    let last = std::str::from_utf8(client_final).ok()?;
    let (without_proof, _) = last.rsplit_once(",p=")?;
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
    Some(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let client_first = parts.next().unwrap_or_default();
    let client_final = parts.next().unwrap_or_default();
    let secret = parts.next().map(String::from_utf8_lossy);

    let (mut keys, mut client_key) = (rfc().0.clone(), Some(rfc().1));
    if let Some(secret) = &secret {
        match Secret::parse(secret) {
            Ok(Secret::Scram(parsed)) => {
                // Only a secret made from a password gives away its ClientKey; this one's
                // is unknown.
                keys = parsed;
                client_key = None;
            }
            Ok(Secret::Md5(hash)) => assert_eq!(hash.len(), 35, "md5 secret of odd length"),
            Ok(Secret::Plain(_)) | Err(_) => {}
        }
    }
    let channel = match flags & 3 {
        0 | 3 => ChannelBinding::NotOffered,
        1 => ChannelBinding::Declined,
        _ => ChannelBinding::TlsServerEndPoint(END_POINT),
    };
    let stored_key = keys.stored_key;
    let Ok((exchange, server_first)) =
        ServerExchange::start(keys, client_first, SERVER_NONCE, channel)
    else {
        return;
    };
    assert!(
        server_first.starts_with("r="),
        "server-first does not start with the nonce: {server_first:?}"
    );
    let fixed = match (flags & 4 != 0, &client_key) {
        (true, Some(key)) => {
            with_right_proof(client_first, &server_first, client_final, key, &stored_key)
        }
        _ => None,
    };
    let client_final = fixed.as_deref().unwrap_or(client_final);
    let finished = exchange.finish(client_final);
    if pgmux_fuzz::debug() {
        eprintln!("server-first {server_first:?}; finish: {:?}", finished.as_ref().map(|f| &f.0));
    }
    if let Ok((server_final, proved)) = finished {
        assert!(server_final.starts_with("v="), "server-final: {server_final:?}");
        let digest: [u8; 32] = Sha256::digest(proved).into();
        assert_eq!(digest, stored_key, "an exchange passed with a ClientKey that is not the secret's");
    }
});
