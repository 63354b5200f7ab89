//! OpenPGP signatures on apt Release files (rpgp): a keyring of trusted public keys,
//! clear-signed `InRelease` and detached `Release.gpg` verification.
//!
//! A signature is good when it verifies with a trusted primary key or with one of its
//! subkeys whose binding signature verifies. Key expiry and revocation are not checked.

use std::io::BufReader;
use std::path::Path;

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::Signature;

/// The largest key file read.
const MAX_KEY_FILE: u64 = 4 << 20;

/// Why key material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not an OpenPGP public key: {0}")]
    Parse(String),
    #[error("no public key in it")]
    Empty,
}

/// Why a signature does not vouch for a text.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("not a clear-signed message: {0}")]
    NotClearSigned(String),
    #[error("not an OpenPGP signature: {0}")]
    NotASignature(String),
    #[error("no signature by a trusted key")]
    Untrusted,
}

/// Trusted public keys.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Every public key of an armored block (or several).
    pub fn from_armored(text: &str) -> Result<Self, KeyError> {
        let (keys, _) =
            SignedPublicKey::from_string_many(text).map_err(|e| KeyError::Parse(e.to_string()))?;
        Self::collect(keys)
    }

    /// A key file: armored, or binary (an apt `.gpg` keyring).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_KEY_FILE), &mut bytes)
            .map_err(read_err)?;
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            return Self::from_armored(&String::from_utf8_lossy(&bytes));
        }
        let keys = SignedPublicKey::from_bytes_many(BufReader::new(&bytes[..]))
            .map_err(|e| KeyError::Parse(e.to_string()))?;
        Self::collect(keys)
    }

    fn collect(
        keys: impl Iterator<Item = pgp::errors::Result<SignedPublicKey>>,
    ) -> Result<Self, KeyError> {
        let mut out = Vec::new();
        for key in keys {
            let key = key.map_err(|e| KeyError::Parse(e.to_string()))?;
            key.verify_bindings()
                .map_err(|e| KeyError::Parse(format!("self-signatures do not verify: {e}")))?;
            out.push(key);
        }
        if out.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Keyring { keys: out })
    }

    /// Adds another keyring's keys.
    pub fn extend(&mut self, other: Keyring) {
        self.keys.extend(other.keys);
    }

    /// Whether `sig` over `data` verifies with a trusted key or subkey.
    fn verifies(&self, sig: &Signature, data: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            sig.verify(&k.primary_key, data).is_ok()
                || k.public_subkeys.iter().any(|s| {
                    s.verify_bindings(&k.primary_key).is_ok() && sig.verify(&s.key, data).is_ok()
                })
        })
    }

    /// Verifies a clear-signed message (`InRelease`); returns the signed text.
    pub fn verify_cleartext(&self, message: &str) -> Result<String, SignatureError> {
        let (msg, _) = CleartextSignedMessage::from_string(message)
            .map_err(|e| SignatureError::NotClearSigned(e.to_string()))?;
        let signed = msg.signed_text();
        if msg
            .signatures()
            .iter()
            .any(|s| self.verifies(s, signed.as_bytes()))
        {
            // What was signed, with the line ends the file uses.
            Ok(signed.replace("\r\n", "\n"))
        } else {
            Err(SignatureError::Untrusted)
        }
    }

    /// Verifies a detached signature (`Release.gpg`, armored or binary) over `data`.
    pub fn verify_detached(&self, data: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let parse_err = |e: pgp::errors::Error| SignatureError::NotASignature(e.to_string());
        let sigs: Vec<DetachedSignature> =
            if signature.trim_ascii_start().starts_with(b"-----BEGIN") {
                let (sigs, _) = DetachedSignature::from_armor_many(signature).map_err(parse_err)?;
                sigs.collect::<Result<_, _>>().map_err(parse_err)?
            } else {
                DetachedSignature::from_bytes_many(signature)
                    .map_err(parse_err)?
                    .collect::<Result<_, _>>()
                    .map_err(parse_err)?
            };
        if sigs.iter().any(|s| self.verifies(&s.signature, data)) {
            Ok(())
        } else {
            Err(SignatureError::Untrusted)
        }
    }
}
