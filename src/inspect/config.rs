//! Trusted origins: the apt repositories (URL, suites, components, signing keys), the
//! Python package indexes, the cargo and the npm registries, the git hosts and the Go
//! module proxies whose files inspectors can verify. They come from
//! `inspectors.yaml` in the config directory (every session) and from a session's
//! `inspectors-configuration` (that session only); both have the same shape:
//!
//! ```yaml
//! apt:
//!   repositories:
//!     - url: http://deb.debian.org/debian
//!       suites: [bookworm, bookworm-updates]
//!       components: [main]            # optional; empty means any
//!       keys:                         # armored public keys or key file paths
//!         - /usr/share/keyrings/debian-archive-keyring.gpg
//! pip:
//!   indexes:                          # simple-API base URLs (PEP 503 / PEP 691)
//!     - https://pypi.org/simple
//! cargo:
//!   registries:                       # sparse index URLs (`sparse+` optional)
//!     - sparse+https://index.crates.io/
//! npm:
//!   registries:                       # registry base URLs
//!     - https://registry.npmjs.org/
//! git:
//!   hosts:                            # base URLs: every repository under one
//!     - https://github.com
//! go:
//!   proxies:                          # GOPROXY base URLs
//!     - https://proxy.golang.org
//!   imports:                          # import paths whose ?go-get=1 pages are trusted
//!     - https://golang.org/x
//! ```
//!
//! The text is parsed and checked by `fetchgate_config::inspectors` (URLs normalised,
//! suite and component names checked); this module loads the signing keys, reading key
//! files relative to the config directory, into parsed OpenPGP certificates.

use std::path::Path;
use std::sync::Arc;

use fetchgate_config::inspectors::{AptSource, Origins, OriginsError};

use super::openpgp::{KeyError, Keyring};

pub use fetchgate_config::inspectors::INSPECTORS_FILE;

/// Why a trusted-origins configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Origins(#[from] OriginsError),
    #[error("apt.repositories[{index}].keys[{key}]: {source}")]
    Key {
        index: usize,
        key: usize,
        source: KeyError,
    },
}

/// A trusted apt repository.
#[derive(Debug, Clone)]
pub struct AptRepository {
    /// Normalised base URL, `scheme://host:port/path` without a trailing slash.
    pub base: String,
    pub suites: Vec<String>,
    /// Empty: any component.
    pub components: Vec<String>,
    pub keys: Arc<Keyring>,
}

/// Everything a session's inspectors trust: the origins, the apt repositories with
/// their keys loaded.
pub type Trust = Origins<AptRepository>;

/// Loads `inspectors.yaml` from `dir`; no file means nothing is trusted.
/// (The error does not repeat the file's path: the caller names it.)
pub fn load(dir: &Path) -> Result<Trust, String> {
    let path = dir.join(INSPECTORS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Trust::default()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let origins = Origins::from_yaml(&text).map_err(|e| e.to_string())?;
    with_keys(origins, dir).map_err(|e| e.to_string())
}

/// Loads the apt repositories' keys (key file paths are relative to `key_dir`).
fn with_keys(origins: Origins, key_dir: &Path) -> Result<Trust, ConfigError> {
    origins.try_map_apt(|(i, r)| repository(i, r, key_dir))
}

/// A session's `inspectors-configuration`.
#[derive(Debug)]
pub struct SessionConfig(Trust);

impl SessionConfig {
    /// Parses and checks the JSON object (keys that are file paths are read now).
    ///
    /// Sections fetchgate does not know are ignored, with a warning: clients written
    /// for the reference may send sections of their own (the control API ignores
    /// unknown keys).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ConfigError> {
        let (origins, ignored) = Origins::from_session_json(value)?;
        for key in ignored {
            tracing::warn!(key = %key, "inspectors-configuration: ignoring a section fetchgate does not know");
        }
        with_keys(origins, Path::new("/")).map(SessionConfig)
    }

    /// [`Self::from_json`] from stored JSON text.
    pub fn from_json_text(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| OriginsError::Syntax(e.to_string()))?;
        Self::from_json(&value)
    }

    pub fn into_trust(self) -> Trust {
        self.0
    }
}

fn repository(index: usize, r: AptSource, key_dir: &Path) -> Result<AptRepository, ConfigError> {
    let mut keys = Keyring::default();
    for (k, text) in r.keys.iter().enumerate() {
        let loaded = if text.trim_start().starts_with("-----BEGIN") {
            Keyring::from_armored(text)
        } else {
            Keyring::from_file(&key_dir.join(text))
        };
        keys.extend(loaded.map_err(|source| ConfigError::Key {
            index,
            key: k,
            source,
        })?);
    }
    Ok(AptRepository {
        base: r.base,
        suites: r.suites,
        components: r.components,
        keys: Arc::new(keys),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_configuration_is_checked_then_its_keys_are_loaded() {
        let v = serde_json::json!({"conda": {"index": "x"}, "pip": {"indexes": ["https://PyPI.org/simple/"]}});
        let trust = SessionConfig::from_json(&v).unwrap().into_trust();
        assert_eq!(trust.pip, ["https://pypi.org:443/simple"]);
        let v = serde_json::json!({"apt": {"repositories": [{"url": "http://x/", "suites": [], "keys": []}]}});
        let e = SessionConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("repositories[0].suites"), "{e}");
        let v = serde_json::json!({"apt": {"repositories": [{"url": "http://x/", "suites": ["s"],
            "keys": ["-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n-----END PGP PUBLIC KEY BLOCK-----\n"]}]}});
        let e = SessionConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("repositories[0].keys[0]"), "{e}");
    }
}
