//! Certificates made for a test: a CA, certificates it signs for pgmux and PostgreSQL (valid
//! for localhost and 127.0.0.1) and for clients (by common name), and an unrelated CA. Written
//! as PEM files into a temp dir that lives as long as the value.

use super::TempDir;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::PathBuf;

pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// (certificate PEM, key PEM) for `common_name`, valid for localhost and 127.0.0.1, for
    /// servers and clients alike.
    pub fn issue(&self, common_name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The files a TLS test points pgmux and clients at.
pub struct Certs {
    pub dir: TempDir,
    pub ca: Ca,
}

impl Certs {
    pub fn new() -> Certs {
        let certs = Certs {
            dir: TempDir::new("certs"),
            ca: Ca::new("pgmux test CA"),
        };
        certs.write("ca.pem", &certs.ca.pem());
        certs.write("other-ca.pem", &Ca::new("someone else's CA").pem());
        certs
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    }

    /// Issues a certificate for `common_name` into `<stem>.pem` and `<stem>.key`.
    pub fn issue(&self, stem: &str, common_name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.ca.issue(common_name);
        let key_path = self.write(&format!("{stem}.key"), &key);
        std::fs::set_permissions(
            &key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod key");
        (self.write(&format!("{stem}.pem"), &cert), key_path)
    }
}

/// A rustls client configuration trusting the CA in `ca` (a PEM file), offering ALPN
/// `postgresql` if `alpn`.
pub fn rustls_client(ca: &std::path::Path, alpn: bool) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    config
}
