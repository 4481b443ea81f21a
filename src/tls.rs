//! TLS configurations built from the settings: the acceptor for clients and the connector for
//! PostgreSQL. They are built at start, by `pgmux check` and on every reload (so new
//! certificate and key files take effect for new connections while open ones keep theirs).
//! Also what pgmux reads out of certificates: the tls-server-end-point channel-binding data of
//! its own (for SCRAM-SHA-256-PLUS) and a client certificate's common name (auth_type = cert).

mod der;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use der::{common_name, end_point_hash};

/// TLS modes, with libpq's and PgBouncer's names, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum SslMode {
    #[serde(rename = "disable")]
    Disable,
    #[serde(rename = "allow")]
    Allow,
    #[serde(rename = "prefer")]
    Prefer,
    #[serde(rename = "require")]
    Require,
    #[serde(rename = "verify-ca")]
    VerifyCa,
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl SslMode {
    /// Whether a certificate must be checked against a CA.
    pub fn verifies(self) -> bool {
        self >= SslMode::VerifyCa
    }
}

/// TLS versions named by a `*_tls_protocols` setting: (TLS 1.2, TLS 1.3).
pub fn parse_versions(value: &str) -> Result<(bool, bool), String> {
    let mut versions = (false, false);
    for word in value.split(',').map(|w| w.trim().to_ascii_lowercase()) {
        match word.as_str() {
            "secure" | "all" | "legacy" => versions = (true, true),
            "tlsv1.2" => versions.0 = true,
            "tlsv1.3" => versions.1 = true,
            "tlsv1.0" | "tlsv1.1" => {}
            _ => return Err(format!("unknown TLS version {word:?}")),
        }
    }
    match versions {
        (false, false) => Err("names no TLS version pgmux supports (TLS 1.2 and 1.3)".into()),
        v => Ok(v),
    }
}

/// What the settings of one side name: `client_tls_*` or `server_tls_*`, files resolved.
pub struct Side<'a> {
    pub mode: SslMode,
    pub key_file: Option<&'a Path>,
    pub cert_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
    pub protocols: &'a str,
}

/// ALPN protocol name PostgreSQL 17 clients send, and require for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// A TLS setting that cannot be put to use; `key` names the setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{message}")]
    Setup { key: &'static str, message: String },
}

impl TlsError {
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::Pem { key, .. }
            | TlsError::Setup { key, .. } => key,
        }
    }
}

/// TLS towards clients.
pub struct ClientTls {
    pub mode: SslMode,
    pub acceptor: TlsAcceptor,
    /// tls-server-end-point data of pgmux's certificate; None when its signature algorithm
    /// defines no hash for it (SCRAM-SHA-256-PLUS is then not offered).
    pub end_point: Option<Vec<u8>>,
}

/// TLS towards PostgreSQL.
pub struct ServerTls {
    pub mode: SslMode,
    pub connector: TlsConnector,
}

/// Servers opened under one mode serve on under another configuration of it: a reload that
/// only replaces certificate files applies to new connections and drops none.
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
    }
}

impl Eq for ServerTls {}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({:?})", self.mode)
    }
}

/// Both sides; None where the mode is disable.
#[derive(Default, Clone)]
pub struct TlsConfigs {
    pub client: Option<Arc<ClientTls>>,
    pub server: Option<Arc<ServerTls>>,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfigs")
            .field("client", &self.client.as_ref().map(|c| c.mode))
            .field("server", &self.server.as_ref().map(|s| s.mode))
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(
    key: &'static str,
    value: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let (v12, v13) = parse_versions(value).map_err(|message| TlsError::Setup { key, message })?;
    let mut out = Vec::new();
    if v13 {
        out.push(&rustls::version::TLS13);
    }
    if v12 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            key,
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key,
            path: path.to_owned(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| TlsError::Pem {
        key,
        path: path.to_owned(),
        message: format!("no usable private key: {e}"),
    })
}

fn roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, path)? {
        store.add(cert).map_err(|e| TlsError::Pem {
            key,
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(store)
}

fn required<'a>(key: &'static str, path: Option<&'a Path>) -> Result<&'a Path, TlsError> {
    path.ok_or(TlsError::Setup {
        key,
        message: "is required".into(),
    })
}

fn setup(key: &'static str) -> impl Fn(rustls::Error) -> TlsError {
    move |e| TlsError::Setup {
        key,
        message: e.to_string(),
    }
}

/// Reads the files the settings name and builds both sides' configurations.
pub fn build(clients: &Side, servers: &Side) -> Result<TlsConfigs, TlsError> {
    Ok(TlsConfigs {
        client: match clients.mode {
            SslMode::Disable => None,
            _ => Some(Arc::new(client_side(clients)?)),
        },
        server: match servers.mode {
            SslMode::Disable => None,
            _ => Some(Arc::new(server_side(servers)?)),
        },
    })
}

fn client_side(g: &Side) -> Result<ClientTls, TlsError> {
    let mode = g.mode;
    let provider = provider();
    let chain = certificates(
        "client_tls_cert_file",
        required("client_tls_cert_file", g.cert_file)?,
    )?;
    let key = private_key(
        "client_tls_key_file",
        required("client_tls_key_file", g.key_file)?,
    )?;
    let end_point = end_point_hash(&chain[0]);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions("client_tls_protocols", g.protocols)?)
        .map_err(setup("client_tls_protocols"))?;
    let builder = if mode.verifies() {
        let ca = required("client_tls_ca_file", g.ca_file)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots("client_tls_ca_file", ca)?),
            provider,
        )
        .build()
        .map_err(|e| TlsError::Setup {
            key: "client_tls_ca_file",
            message: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(setup("client_tls_key_file"))?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(ClientTls {
        mode,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}

fn server_side(g: &Side) -> Result<ServerTls, TlsError> {
    let mode = g.mode;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions("server_tls_protocols", g.protocols)?)
        .map_err(setup("server_tls_protocols"))?;
    let builder = match mode {
        SslMode::VerifyFull | SslMode::VerifyCa => {
            let ca = required("server_tls_ca_file", g.ca_file)?;
            let verifier = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots("server_tls_ca_file", ca)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsError::Setup {
                key: "server_tls_ca_file",
                message: e.to_string(),
            })?;
            let check_name = mode == SslMode::VerifyFull;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier::Chain {
                    inner: verifier,
                    check_name,
                }))
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier::Any(provider))),
    };
    let config = match (g.cert_file, g.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                certificates("server_tls_cert_file", cert)?,
                private_key("server_tls_key_file", key)?,
            )
            .map_err(setup("server_tls_key_file"))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(ServerTls {
        mode,
        connector: TlsConnector::from(Arc::new(config)),
    })
}

/// How PostgreSQL's certificate is checked: libpq's require (any certificate, though the
/// handshake still proves the server holds its key), verify-ca (a chain to the CA) or
/// verify-full (and the host's name).
#[derive(Debug)]
enum Verifier {
    Any(Arc<CryptoProvider>),
    Chain {
        inner: Arc<WebPkiServerVerifier>,
        check_name: bool,
    },
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self {
            Verifier::Any(_) => Ok(ServerCertVerified::assertion()),
            Verifier::Chain { inner, check_name } => {
                match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. },
                    )) if !check_name => Ok(ServerCertVerified::assertion()),
                    other => other,
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self {
            Verifier::Any(p) => rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &p.signature_verification_algorithms,
            ),
            Verifier::Chain { inner, .. } => inner.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self {
            Verifier::Any(p) => rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &p.signature_verification_algorithms,
            ),
            Verifier::Chain { inner, .. } => inner.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self {
            Verifier::Any(p) => p.signature_verification_algorithms.supported_schemes(),
            Verifier::Chain { inner, .. } => inner.supported_verify_schemes(),
        }
    }
}
