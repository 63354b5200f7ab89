//! TLS for both ends of the harness, on rustls with the ring provider: the origin's own
//! test CA (generated with rcgen, optionally kept in a directory so a proxy configured
//! once can trust it across runs), the origin's server configuration, and the builders'
//! client configuration trusting exactly the CA files they are given (never the system
//! roots, never `SSL_CERT_FILE` and friends).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// File names of the origin CA inside its directory.
pub const ORIGIN_CA_CERT: &str = "origin-ca.pem";
pub const ORIGIN_CA_KEY: &str = "origin-ca.key.pem";

/// A TLS setup problem, naming the file or step that failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no usable PEM certificate ({reason})")]
    BadPem { path: PathBuf, reason: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The origin's test CA and the loopback leaf it signed.
pub struct OriginPki {
    ca_cert_path: PathBuf,
    server: Arc<ServerConfig>,
}

impl OriginPki {
    /// Loads the CA kept in `dir`, generating (and writing) it first if it is not there,
    /// and signs a fresh leaf for `127.0.0.1`, `::1` and `localhost`.
    pub fn load_or_generate(dir: &Path) -> Result<OriginPki, TlsError> {
        let cert_path = dir.join(ORIGIN_CA_CERT);
        let key_path = dir.join(ORIGIN_CA_KEY);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        if !(cert_path.exists() && key_path.exists()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "fetchgate-loadtest origin CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key)?;
            // The key stays private to whoever runs the harness; a proxy only needs the cert.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&key_path)
                .and_then(|mut f| f.write_all(key.serialize_pem().as_bytes()))
                .map_err(io(&key_path))?;
            std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem)?)?;

        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            SanType::DnsName("localhost".try_into()?),
        ];
        let leaf_key = KeyPair::generate()?;
        let leaf = params.signed_by(&leaf_key, &issuer)?;
        let ca_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::BadPem {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca_der],
                PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )?;
        Ok(OriginPki {
            ca_cert_path: cert_path,
            server: Arc::new(server),
        })
    }

    /// The CA certificate file a proxy must trust to reach the origin over TLS.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert_path
    }

    /// The origin's server configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }
}

/// A client configuration trusting exactly the certificates in `ca_files`.
pub fn client_config(ca_files: &[&Path]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in ca_files {
        let bad = |reason: String| TlsError::BadPem {
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("the file holds no certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
