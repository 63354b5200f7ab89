//! OpenPGP signatures on apt Release files (rpgp): a keyring of trusted public keys,
//! clear-signed `InRelease` and detached `Release.gpg` verification.
//!
//! A signature is good when it verifies with a trusted primary key or with one of its
//! subkeys whose binding signature verifies, and that key is neither revoked nor expired
//! now (as gpgv, which apt uses, decides).

use std::io::BufReader;
use std::path::Path;

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Timestamp};

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
    #[error("signed by a trusted key that is expired or revoked")]
    KeyNotLive,
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

    /// Whether `sig` over `data` verifies with a trusted key or subkey that is live at
    /// `now` (seconds since the epoch).
    fn check(&self, sig: &Signature, data: &[u8], now: u64) -> Result<(), SignatureError> {
        let mut outcome = Err(SignatureError::Untrusted);
        for k in &self.keys {
            let self_sigs = k
                .details
                .users
                .iter()
                .flat_map(|u| &u.signatures)
                .chain(&k.details.direct_signatures);
            let primary_live = k.details.revocation_signatures.is_empty()
                && !expired(k.primary_key.created_at(), self_sigs, now);
            if sig.verify(&k.primary_key, data).is_ok() {
                if primary_live {
                    return Ok(());
                }
                outcome = Err(SignatureError::KeyNotLive);
            }
            for s in &k.public_subkeys {
                if s.verify_bindings(&k.primary_key).is_err() || sig.verify(&s.key, data).is_err() {
                    continue;
                }
                let revoked = s
                    .signatures
                    .iter()
                    .any(|b| b.typ() == Some(SignatureType::SubkeyRevocation));
                let bindings = s
                    .signatures
                    .iter()
                    .filter(|b| b.typ() == Some(SignatureType::SubkeyBinding));
                if primary_live && !revoked && !expired(s.key.created_at(), bindings, now) {
                    return Ok(());
                }
                outcome = Err(SignatureError::KeyNotLive);
            }
        }
        outcome
    }

    /// Ok if one of `sigs` is good; otherwise the most telling failure.
    fn any_good(&self, sigs: &[Signature], data: &[u8]) -> Result<(), SignatureError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut outcome = Err(SignatureError::Untrusted);
        for sig in sigs {
            match self.check(sig, data, now) {
                Ok(()) => return Ok(()),
                Err(SignatureError::KeyNotLive) => outcome = Err(SignatureError::KeyNotLive),
                Err(_) => {}
            }
        }
        outcome
    }

    /// Verifies a clear-signed message (`InRelease`); returns the signed text.
    pub fn verify_cleartext(&self, message: &str) -> Result<String, SignatureError> {
        let (msg, _) = CleartextSignedMessage::from_string(message)
            .map_err(|e| SignatureError::NotClearSigned(e.to_string()))?;
        let signed = msg.signed_text();
        self.any_good(msg.signatures(), signed.as_bytes())?;
        // What was signed, with the line ends the file uses.
        Ok(signed.replace("\r\n", "\n"))
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
        let sigs: Vec<Signature> = sigs.into_iter().map(|s| s.signature).collect();
        self.any_good(&sigs, data)
    }
}

/// Whether a key created at `created` has expired at `now`, by the key expiration time of
/// its newest self-signature among `sigs` (none, or zero: it never expires).
fn expired<'a>(created: Timestamp, sigs: impl Iterator<Item = &'a Signature>, now: u64) -> bool {
    let newest = sigs
        .filter_map(|s| Some((s.created()?.as_secs(), s)))
        .max_by_key(|(at, _)| *at);
    let Some(lifetime) = newest.and_then(|(_, s)| s.key_expiration_time()) else {
        return false;
    };
    let lifetime = u64::from(lifetime.as_secs());
    lifetime > 0 && u64::from(created.as_secs()) + lifetime <= now
}
