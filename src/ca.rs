//! The interception CA: loaded from `--cert`/`--key`, or generated under the spool on
//! first start and reused afterwards. The proxy signs per-host leaf certificates with it.
//!
//! Keys are accepted as PKCS#8, PKCS#1 (`RSA PRIVATE KEY`, as `openssl genrsa -traditional`
//! writes) or SEC1 (`EC PRIVATE KEY`) PEM. A certificate that does not belong to the key,
//! or a key that cannot sign, stops the daemon at start with a message naming the files.
//! The generated key file is created with mode 0600 and never widened.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File names of a generated CA inside its directory.
pub const GENERATED_CERT: &str = "fetchgate-ca.pem";
pub const GENERATED_KEY: &str = "fetchgate-ca.key.pem";

/// Why the CA could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the CA certificate {cert} does not belong to the private key {key}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot sign with the CA: {0}")]
    Sign(String),
}

/// A CA able to sign leaf certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
}

impl CertificateAuthority {
    /// Loads a CA from PEM files, checking that the certificate matches the key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = parse_key(&key_pem).map_err(|message| CaError::Invalid {
            path: key_path.into(),
            message,
        })?;
        let cert_der =
            pem_block(&cert_pem, &["CERTIFICATE"]).map_err(|message| CaError::Invalid {
                path: cert_path.into(),
                message,
            })?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::Invalid {
                path: cert_path.into(),
                message: format!("not an X.509 certificate: {e}"),
            })?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::Mismatch {
                cert: cert_path.into(),
                key: key_path.into(),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CaError::Invalid {
            path: cert_path.into(),
            message: format!("cannot use as an issuer: {e}"),
        })?;
        let ca = CertificateAuthority {
            issuer,
            cert_path: cert_path.into(),
        };
        // Prove now, not at the first CONNECT, that the key can sign.
        ca.mint_leaf("fetchgate-self-test.invalid")?;
        Ok(ca)
    }

    /// Loads the CA generated in `dir`, generating it first if it does not exist.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), CaError> {
        let cert_path = dir.join(GENERATED_CERT);
        let key_path = dir.join(GENERATED_KEY);
        if cert_path.exists() && key_path.exists() {
            return Ok((Self::load(&cert_path, &key_path)?, false));
        }
        fs::create_dir_all(dir).map_err(|source| CaError::Write {
            path: dir.into(),
            source,
        })?;
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "fetchgate CA");
        dn.push(DnType::OrganizationName, "fetchgate");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok((Self::load(&cert_path, &key_path)?, true))
    }

    /// The certificate file builders must trust.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Signs a leaf certificate for `host` (a DNS name or an IP literal) on a fresh
    /// EC P-256 key; returns the certificate and key as DER.
    pub fn mint_leaf(&self, host: &str) -> Result<(Vec<u8>, Vec<u8>), CaError> {
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.try_into()
                    .map_err(|e| CaError::Sign(format!("{host:?} is not a DNS name: {e}")))?,
            ),
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        params
            .distinguished_name
            .push(DnType::CommonName, host.to_owned());
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.into(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        path: path.into(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)?;
    // The umask may have narrowed the mode; never let it be wider than asked.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
}

/// The DER body of the first PEM block with one of the given labels.
fn pem_block(text: &str, labels: &[&str]) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
    blocks
        .into_iter()
        .find(|b| labels.contains(&b.tag()))
        .map(|b| b.into_contents())
        .ok_or_else(|| format!("no {} PEM block found", labels.join(" or ")))
}

/// Parses a private key in any of the PEM forms openssl writes, via PKCS#8.
fn parse_key(text: &str) -> Result<KeyPair, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or("no PRIVATE KEY PEM block found")?;
    let pkcs8 = match block.tag() {
        "PRIVATE KEY" => block.contents().to_vec(),
        "RSA PRIVATE KEY" => pkcs8::wrap_rsa(block.contents()),
        "EC PRIVATE KEY" => pkcs8::wrap_ec(block.contents())?,
        "ENCRYPTED PRIVATE KEY" => {
            return Err("encrypted keys are not supported; decrypt it with `openssl pkcs8`".into());
        }
        other => return Err(format!("unsupported key type {other:?}")),
    };
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| format!("unusable private key: {e}"))
}

/// Minimal DER wrapping of PKCS#1 and SEC1 keys into PKCS#8 (RFC 5208), since the
/// signing backend reads PKCS#8 only.
mod pkcs8 {
    const SEQUENCE: u8 = 0x30;
    const OCTET_STRING: u8 = 0x04;
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const EC_P256_ALGORITHM: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    const EC_P384_ALGORITHM: &[u8] = &[
        0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
        0x04, 0x00, 0x22,
    ];
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(body);
        out
    }

    fn wrap(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, 0x00]; // version 0
        body.extend_from_slice(algorithm);
        body.extend(tlv(OCTET_STRING, key));
        tlv(SEQUENCE, &body)
    }

    pub fn wrap_rsa(pkcs1: &[u8]) -> Vec<u8> {
        wrap(RSA_ALGORITHM, pkcs1)
    }

    /// SEC1 keys name their curve inside; find which one to label the wrapper with.
    pub fn wrap_ec(sec1: &[u8]) -> Result<Vec<u8>, String> {
        let has = |oid: &[u8]| sec1.windows(oid.len()).any(|w| w == oid);
        if has(P256_OID) {
            Ok(wrap(EC_P256_ALGORITHM, sec1))
        } else if has(P384_OID) {
            Ok(wrap(EC_P384_ALGORITHM, sec1))
        } else {
            Err("EC key on an unsupported curve (P-256 and P-384 are supported)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_is_reused_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let (_, created) = CertificateAuthority::load_or_generate(dir.path()).unwrap();
        assert!(created);
        let key_mode = fs::metadata(dir.path().join(GENERATED_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let cert_before = fs::read(dir.path().join(GENERATED_CERT)).unwrap();
        let (ca, created) = CertificateAuthority::load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(fs::read(ca.cert_path()).unwrap(), cert_before);
    }

    #[test]
    fn leaf_for_an_ip_literal_and_a_dns_name() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertificateAuthority::load_or_generate(dir.path()).unwrap();
        for host in ["127.0.0.1", "::1", "files.example.org"] {
            let (der, _) = ca.mint_leaf(host).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(san.value.general_names.len(), 1, "{host}");
        }
    }

    #[test]
    fn mismatched_cert_and_key_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_generate(a.path()).unwrap();
        CertificateAuthority::load_or_generate(b.path()).unwrap();
        let err = CertificateAuthority::load(
            &a.path().join(GENERATED_CERT),
            &b.path().join(GENERATED_KEY),
        )
        .err()
        .unwrap();
        assert!(matches!(err, CaError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn garbage_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_generate(dir.path()).unwrap();
        let bad = dir.path().join("bad.pem");
        fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = CertificateAuthority::load(&dir.path().join(GENERATED_CERT), &bad)
            .err()
            .unwrap();
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }
}
