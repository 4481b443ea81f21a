//! PostgreSQL's md5 password scheme: stored hash md5(password || user), and the salted reply.

use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The stored form: `md5` + hex(md5(password || user)).
pub fn stored_hash(password: &str, user: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    format!("md5{}", hex(&h.finalize()))
}

/// What a client sends for an md5 challenge, given the stored form of its password.
pub fn salted_reply(stored: &str, salt: [u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(stored.get(3..).unwrap_or("").as_bytes());
    h.update(salt);
    format!("md5{}", hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // md5("postgres" || "postgres"), as `SELECT rolpassword` shows it with md5 encryption.
        assert_eq!(
            stored_hash("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        let reply = salted_reply(&stored_hash("pw", "u"), [1, 2, 3, 4]);
        assert_eq!(reply.len(), 35);
        assert_ne!(reply, salted_reply(&stored_hash("pw", "u"), [1, 2, 3, 5]));
    }
}
