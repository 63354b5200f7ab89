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
//! ```
//!
//! Parsed once at the edge into typed values; keys are parsed OpenPGP certificates.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::openpgp::{KeyError, Keyring};

/// The optional inspectors configuration inside the config directory.
pub const INSPECTORS_FILE: &str = "inspectors.yaml";

/// Why a trusted-origins configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("apt.repositories[{index}].url {url:?}: {reason}")]
    Url {
        index: usize,
        url: String,
        reason: &'static str,
    },
    #[error("apt.repositories[{index}].suites: at least one suite is needed")]
    NoSuite { index: usize },
    #[error("apt.repositories[{index}].{field} {value:?}: {reason}")]
    Name {
        index: usize,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("apt.repositories[{index}].keys[{key}]: {source}")]
    Key {
        index: usize,
        key: usize,
        source: KeyError,
    },
    #[error("apt.repositories[{index}].keys: at least one signing key is needed")]
    NoKey { index: usize },
    #[error("{section}[{index}] {url:?}: {reason}")]
    Origin {
        section: &'static str,
        index: usize,
        url: String,
        reason: &'static str,
    },
}

/// The sections of the file (and of a session's `inspectors-configuration`).
const SECTIONS: [&str; 6] = ["apt", "pip", "cargo", "npm", "git", "go"];

/// The file / JSON shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    apt: AptSection,
    #[serde(default)]
    pip: PipSection,
    #[serde(default)]
    cargo: RegistrySection,
    #[serde(default)]
    npm: RegistrySection,
    #[serde(default)]
    git: GitSection,
    #[serde(default)]
    go: GoSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoSection {
    #[serde(default)]
    proxies: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitSection {
    #[serde(default)]
    hosts: Vec<String>,
}

/// A list of registries (the `cargo` and `npm` sections).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySection {
    #[serde(default)]
    registries: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipSection {
    #[serde(default)]
    indexes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AptSection {
    #[serde(default)]
    repositories: Vec<RepositoryEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryEntry {
    url: String,
    #[serde(default)]
    suites: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
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

/// Everything a session's inspectors trust.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub apt: Vec<AptRepository>,
    /// Python package indexes: normalised simple-API base URLs.
    pub pip: Vec<String>,
    /// Cargo registries: normalised sparse index base URLs (without `sparse+`).
    pub cargo: Vec<String>,
    /// npm registries: normalised base URLs.
    pub npm: Vec<String>,
    /// git hosts: normalised base URLs of the repositories fetched over smart HTTP.
    pub git: Vec<String>,
    /// Go module proxies: normalised GOPROXY base URLs.
    pub go: Vec<String>,
}

impl Trust {
    /// Loads `inspectors.yaml` from `dir`; no file means nothing is trusted.
    /// (The error does not repeat the file's path: the caller names it.)
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(INSPECTORS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Trust::default()),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let file: File = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
        Self::from_file(file, dir).map_err(|e| e.to_string())
    }

    fn from_file(file: File, key_dir: &Path) -> Result<Self, ConfigError> {
        let apt = file
            .apt
            .repositories
            .into_iter()
            .enumerate()
            .map(|(i, r)| repository(i, r, key_dir))
            .collect::<Result<_, _>>()?;
        let pip = origins("pip.indexes", file.pip.indexes.iter().map(String::as_str))?;
        let cargo = origins(
            "cargo.registries",
            file.cargo
                .registries
                .iter()
                .map(|u| u.strip_prefix("sparse+").unwrap_or(u)),
        )?;
        let npm = origins(
            "npm.registries",
            file.npm.registries.iter().map(String::as_str),
        )?;
        let git = origins("git.hosts", file.git.hosts.iter().map(String::as_str))?;
        let go = origins("go.proxies", file.go.proxies.iter().map(String::as_str))?;
        Ok(Trust {
            apt,
            pip,
            cargo,
            npm,
            git,
            go,
        })
    }

    /// Adds a session's own trusted origins.
    pub fn extend(&mut self, more: Trust) {
        self.apt.extend(more.apt);
        self.pip.extend(more.pip);
        self.cargo.extend(more.cargo);
        self.npm.extend(more.npm);
        self.git.extend(more.git);
        self.go.extend(more.go);
    }
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
        let Some(object) = value.as_object() else {
            return Err(ConfigError::Syntax("not a JSON object".into()));
        };
        let mut known = serde_json::Map::new();
        for (key, section) in object {
            if SECTIONS.contains(&key.as_str()) {
                known.insert(key.clone(), section.clone());
            } else {
                tracing::warn!(key = %key, "inspectors-configuration: ignoring a section fetchgate does not know");
            }
        }
        let file: File = serde_json::from_value(serde_json::Value::Object(known))
            .map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Trust::from_file(file, Path::new("/")).map(SessionConfig)
    }

    /// [`Self::from_json`] from stored JSON text.
    pub fn from_json_text(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Self::from_json(&value)
    }

    pub fn into_trust(self) -> Trust {
        self.0
    }
}

fn repository(
    index: usize,
    r: RepositoryEntry,
    key_dir: &Path,
) -> Result<AptRepository, ConfigError> {
    let base = normalise_base(&r.url).map_err(|reason| ConfigError::Url {
        index,
        url: r.url.clone(),
        reason,
    })?;
    if r.suites.is_empty() {
        return Err(ConfigError::NoSuite { index });
    }
    for (field, values) in [("suites", &r.suites), ("components", &r.components)] {
        for v in values {
            if v.is_empty()
                || v.starts_with('/')
                || v.ends_with('/')
                || v.split('/').any(|s| s == ".." || s == ".")
            {
                return Err(ConfigError::Name {
                    index,
                    field,
                    value: v.clone(),
                    reason: "not a path segment of the archive",
                });
            }
        }
    }
    if r.keys.is_empty() {
        return Err(ConfigError::NoKey { index });
    }
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
        base,
        suites: r.suites,
        components: r.components,
        keys: Arc::new(keys),
    })
}

/// A list of trusted base URLs (package indexes, registries), normalised.
fn origins<'u>(
    section: &'static str,
    urls: impl Iterator<Item = &'u str>,
) -> Result<Vec<String>, ConfigError> {
    urls.enumerate()
        .map(|(index, url)| {
            normalise_base(url).map_err(|reason| ConfigError::Origin {
                section,
                index,
                url: url.to_owned(),
                reason,
            })
        })
        .collect()
}

/// `http(s)://host[:port]/path/` → `scheme://host:port/path`, as the pipeline writes
/// request URLs.
pub fn normalise_base(url: &str) -> Result<String, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL")?;
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        _ => return Err("the scheme must be http or https"),
    };
    let authority = uri.authority().ok_or("no host")?;
    if authority.as_str().contains('@') {
        return Err("credentials do not belong in a repository URL");
    }
    if uri.query().is_some() {
        return Err("a repository URL has no query");
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let path = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{host}:{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_like_request_urls() {
        assert_eq!(
            normalise_base("http://Deb.Debian.org/debian/").unwrap(),
            "http://deb.debian.org:80/debian"
        );
        assert_eq!(
            normalise_base("https://[::1]:8443/").unwrap(),
            "https://[::1]:8443"
        );
        assert!(normalise_base("ftp://x/").is_err());
        assert!(normalise_base("http://u:p@x/").is_err());
    }

    #[test]
    fn a_repository_without_suites_or_keys_is_refused_with_its_index() {
        let v = serde_json::json!({"apt": {"repositories": [{"url": "http://x/", "suites": [], "keys": []}]}});
        let e = SessionConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("repositories[0].suites"), "{e}");
        let v = serde_json::json!({"apt": {"repositories": [{"url": "http://x/", "suites": ["s"], "keys": []}]}});
        let e = SessionConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("repositories[0].keys"), "{e}");
    }

    #[test]
    fn unknown_sections_are_ignored_but_known_ones_are_checked() {
        let v = serde_json::json!({"conda": {"index": "x"}});
        assert!(
            SessionConfig::from_json(&v)
                .unwrap()
                .into_trust()
                .apt
                .is_empty()
        );
        let v = serde_json::json!({"apt": {"repos": []}});
        let e = SessionConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("unknown field `repos`"), "{e}");
        let v = serde_json::json!({"pip": {"indexes": ["ftp://x/simple"]}});
        let e = SessionConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("pip.indexes[0]"), "{e}");
        let v = serde_json::json!({"pip": {"indexes": ["https://PyPI.org/simple/"]}});
        let trust = SessionConfig::from_json(&v).unwrap().into_trust();
        assert_eq!(trust.pip, ["https://pypi.org:443/simple"]);
        let v = serde_json::json!({"cargo": {"registries": ["sparse+https://index.crates.io/"]}});
        let trust = SessionConfig::from_json(&v).unwrap().into_trust();
        assert_eq!(trust.cargo, ["https://index.crates.io:443"]);
        let v = serde_json::json!({"apt": {"repositories": [{"url": "http://x/", "suites": ["s"],
            "keys": ["-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n-----END PGP PUBLIC KEY BLOCK-----\n"]}]}});
        let e = SessionConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("keys[0]"), "{e}");
    }
}
