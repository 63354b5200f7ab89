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
use pgp::types::{KeyDetails, Tag, Timestamp};

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
    keys: Vec<TrustedKey>,
}

/// A trusted key with what its own signatures say about its life.
#[derive(Debug)]
struct TrustedKey {
    key: SignedPublicKey,
    /// Seconds since the epoch from which it is expired; `None`: never.
    expires: Option<u64>,
    /// It carries a revocation issued by itself.
    revoked: bool,
}

impl TrustedKey {
    /// Checks the key's self-signatures (third-party certifications on its user IDs are
    /// ignored: real archive keyrings carry them); `None` when none verifies.
    fn new(key: SignedPublicKey) -> Option<Self> {
        let primary = &key.primary_key;
        let self_sigs: Vec<&Signature> = key
            .details
            .users
            .iter()
            .flat_map(|u| {
                u.signatures
                    .iter()
                    .filter(|s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
            })
            .collect();
        if self_sigs.is_empty() {
            return None;
        }
        let (own_id, own_fp) = (primary.legacy_key_id(), primary.fingerprint());
        let revoked = key.details.revocation_signatures.iter().any(|s| {
            let (ids, fps) = (s.issuer_key_id(), s.issuer_fingerprint());
            (ids.is_empty() && fps.is_empty()) || ids.contains(&&own_id) || fps.contains(&&own_fp)
        });
        Some(TrustedKey {
            expires: expiry(primary.created_at(), self_sigs.into_iter()),
            revoked,
            key,
        })
    }

    fn live(&self, now: u64) -> bool {
        !self.revoked && self.expires.is_none_or(|e| now < e)
    }
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
            let id = key.primary_key.legacy_key_id();
            match TrustedKey::new(key) {
                Some(k) => out.push(k),
                None => tracing::warn!(key = ?id, "skipping a key with no valid self-signature"),
            }
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
        for trusted in &self.keys {
            let k = &trusted.key;
            let primary_live = trusted.live(now);
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
                let expired = expiry(s.key.created_at(), bindings).is_some_and(|e| now >= e);
                if primary_live && !revoked && !expired {
                    return Ok(());
                }
                outcome = Err(SignatureError::KeyNotLive);
            }
        }
        outcome
    }

    /// Ok if one of `sigs` is good; otherwise the most telling failure.
    fn any_good(&self, sigs: &[Signature], data: &[u8], now: u64) -> Result<(), SignatureError> {
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
        self.verify_cleartext_at(message, unix_now())
    }

    /// [`Self::verify_cleartext`] with keys judged live or not at `now`.
    fn verify_cleartext_at(&self, message: &str, now: u64) -> Result<String, SignatureError> {
        let (msg, _) = CleartextSignedMessage::from_string(message)
            .map_err(|e| SignatureError::NotClearSigned(e.to_string()))?;
        let signed = msg.signed_text();
        self.any_good(msg.signatures(), signed.as_bytes(), now)?;
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
        self.any_good(&sigs, data, unix_now())
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When a key created at `created` expires, by the key expiration time of its newest
/// self-signature among `sigs` (none, or zero: never).
fn expiry<'a>(created: Timestamp, sigs: impl Iterator<Item = &'a Signature>) -> Option<u64> {
    let newest = sigs
        .filter_map(|s| Some((s.created()?.as_secs(), s)))
        .max_by_key(|(at, _)| *at)?;
    let lifetime = u64::from(newest.1.key_expiration_time()?.as_secs());
    (lifetime > 0).then(|| u64::from(created.as_secs()) + lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real Debian data (tests/fixtures/debian): the bookworm-security InRelease of
    /// 2026-11-21, and Debian's archive keyrings (RSA keys carrying third-party
    /// certifications).
    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/debian")
            .join(name)
    }

    /// When that InRelease was signed (2026-11-21).
    const SIGNED_AT: u64 = 1_795_222_382;

    fn in_release() -> String {
        std::fs::read_to_string(fixture("bookworm-security_InRelease")).unwrap()
    }

    #[test]
    fn debians_keyrings_load_and_verify_a_real_inrelease() {
        for keys in [
            "debian-archive-keyring.gpg",
            "debian-archive-bookworm-security-automatic.gpg",
        ] {
            let ring = Keyring::from_file(&fixture(keys)).unwrap();
            let text = ring.verify_cleartext_at(&in_release(), SIGNED_AT).unwrap();
            assert!(
                text.starts_with("Origin: Debian\nLabel: Debian-Security\n"),
                "{keys}"
            );
        }
    }

    #[test]
    fn the_signed_text_of_a_real_inrelease_parses_as_its_suites_release() {
        let ring = Keyring::from_file(&fixture("debian-archive-keyring.gpg")).unwrap();
        let text = ring.verify_cleartext_at(&in_release(), SIGNED_AT).unwrap();
        let at = time::OffsetDateTime::from_unix_timestamp(SIGNED_AT as i64).unwrap();
        let index = fetchgate_formats::apt::parse_release(text.as_bytes(), "bookworm-security", at)
            .unwrap();
        assert!(index.get("main/binary-amd64/Packages.xz").is_some());
        // Valid for a week: a replay a month later is refused.
        let later = at + time::Duration::days(30);
        assert!(
            fetchgate_formats::apt::parse_release(text.as_bytes(), "bookworm-security", later)
                .is_err()
        );
    }

    #[test]
    fn another_debian_key_or_a_changed_text_does_not_verify() {
        let other = Keyring::from_file(&fixture("debian-archive-bookworm-automatic.gpg")).unwrap();
        assert!(matches!(
            other.verify_cleartext_at(&in_release(), SIGNED_AT),
            Err(SignatureError::Untrusted)
        ));
        let ring = Keyring::from_file(&fixture("debian-archive-keyring.gpg")).unwrap();
        let changed = in_release().replacen(
            "Codename: bookworm-security",
            "Codename: bookworm-insecure",
            1,
        );
        assert!(matches!(
            ring.verify_cleartext_at(&changed, SIGNED_AT),
            Err(SignatureError::Untrusted)
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let ring = Keyring::from_file(&fixture("debian-archive-keyring.gpg")).unwrap();
        for text in ["", "-----BEGIN PGP SIGNED MESSAGE-----\n\nx", "\u{0}\u{1}"] {
            assert!(ring.verify_cleartext(text).is_err());
        }
        assert!(
            ring.verify_detached(b"data", b"-----BEGIN PGP SIGNATURE-----\n\n!!\n")
                .is_err()
        );
        assert!(ring.verify_detached(b"data", &[0x88, 0xff, 0x00]).is_err());
        assert!(Keyring::from_armored("nonsense").is_err());
        assert!(matches!(
            Keyring::from_file(Path::new("/nonexistent")),
            Err(KeyError::Read { .. })
        ));
    }
}
