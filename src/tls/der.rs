//! The two things pgmux reads out of an X.509 certificate, by walking its DER: the subject's
//! common name, and the hash its signature algorithm names (for tls-server-end-point channel
//! binding, RFC 5929). Bounded, allocation-free reads; anything unexpected gives None.

use sha2::{Digest, Sha256, Sha384, Sha512};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One TLV: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Contents of a TLV with the expected tag.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// (tbsCertificate contents, signatureAlgorithm contents).
fn certificate(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, rest) = expect(cert, SEQUENCE)?;
    let (algorithm, _) = expect(rest, SEQUENCE)?;
    Some((tbs, algorithm))
}

/// The subject's common name (the first one), as text.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (tbs, _) = certificate(der)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (mut subject, _) = expect(rest, SEQUENCE)?;
    while !subject.is_empty() {
        let (mut rdn, next) = expect(subject, SET)?;
        subject = next;
        while !rdn.is_empty() {
            let (attribute, next) = expect(rdn, SEQUENCE)?;
            rdn = next;
            let (oid, value) = expect(attribute, OID)?;
            if oid == COMMON_NAME {
                let (_, text, _) = tlv(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// tls-server-end-point data: the certificate hashed with its signature's hash, SHA-256 where
/// that is MD5 or SHA-1. None for algorithms that name no single hash (Ed25519, RSA-PSS).
pub fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    let (_, algorithm) = certificate(der)?;
    let (oid, _) = expect(algorithm, OID)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let bits = match oid {
        o if o == ECDSA_SHA1 => 256,
        [prefix @ .., last] if prefix == RSA => match last {
            4 | 5 | 11 | 14 => 256, // md5, sha1, sha256, sha224 -> SHA-256
            12 => 384,
            13 => 512,
            _ => return None,
        },
        [prefix @ .., last] if prefix == ECDSA_SHA2 => match last {
            1 | 2 => 256, // sha224, sha256
            3 => 384,
            4 => 512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match bits {
        256 => Sha256::digest(der).to_vec(),
        384 => Sha384::digest(der).to_vec(),
        _ => Sha512::digest(der).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "pgmux tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_is_found_after_other_attributes() {
        let der = cert("app_user", &rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(common_name(&der).as_deref(), Some("app_user"));
    }

    #[test]
    fn end_point_hash_follows_the_signature_hash() {
        let p256 = cert("a", &rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(end_point_hash(&p256), Some(Sha256::digest(&p256).to_vec()));
        let p384 = cert("a", &rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(end_point_hash(&p384), Some(Sha384::digest(&p384).to_vec()));
        let ed = cert("a", &rcgen::PKCS_ED25519);
        assert_eq!(end_point_hash(&ed), None, "Ed25519 names no hash");
    }

    #[test]
    fn garbage_gives_none() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x02\x01",
        ] {
            assert_eq!(common_name(bad), None);
            assert_eq!(end_point_hash(bad), None);
        }
        let der = cert("x", &rcgen::PKCS_ECDSA_P256_SHA256);
        for cut in [10, der.len() / 2, der.len() - 1] {
            assert_eq!(common_name(&der[..cut]), None);
        }
    }
}
