//! Trusted origins as written: `inspectors.yaml` (every session) and a session's
//! `inspectors-configuration` JSON object (that session only), both of the shape
//! documented in the daemon's `inspect::config`. Parsing yields normalised base URLs
//! and checked suite and component names; the apt signing keys stay text (armored keys
//! or key file paths) for the daemon to load, since that reads files and parses OpenPGP.

use serde::Deserialize;

/// The optional inspectors configuration inside the config directory.
pub const INSPECTORS_FILE: &str = "inspectors.yaml";

/// Why a trusted-origins configuration is unusable; each names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginsError {
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
    #[serde(default)]
    imports: Vec<String>,
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

/// A trusted apt repository, its keys not loaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// Normalised base URL, `scheme://host:port/path` without a trailing slash.
    pub base: String,
    pub suites: Vec<String>,
    /// Empty: any component.
    pub components: Vec<String>,
    /// At least one: armored public keys, or paths of key files.
    pub keys: Vec<String>,
}

/// Every trusted origin of one configuration, normalised. `A` is what an apt repository
/// is: [`AptSource`] as parsed, the daemon's repository with loaded keys once
/// [`Origins::try_map_apt`] has loaded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins<A = AptSource> {
    pub apt: Vec<A>,
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
    /// Go import paths whose `?go-get=1` pages are trusted (beyond those under a git
    /// host): normalised base URLs, such as a vanity import host's.
    pub go_imports: Vec<String>,
}

// Not derived: that would ask `A: Default`.
impl<A> Default for Origins<A> {
    fn default() -> Self {
        Origins {
            apt: Vec::new(),
            pip: Vec::new(),
            cargo: Vec::new(),
            npm: Vec::new(),
            git: Vec::new(),
            go: Vec::new(),
            go_imports: Vec::new(),
        }
    }
}

impl<A> Origins<A> {
    /// Adds another configuration's origins (a session's to the daemon's).
    pub fn extend(&mut self, more: Self) {
        self.apt.extend(more.apt);
        self.pip.extend(more.pip);
        self.cargo.extend(more.cargo);
        self.npm.extend(more.npm);
        self.git.extend(more.git);
        self.go.extend(more.go);
        self.go_imports.extend(more.go_imports);
    }

    /// Turns each apt repository (with its index) into `B`, keeping the other origins.
    pub fn try_map_apt<B, E>(
        self,
        f: impl FnMut((usize, A)) -> Result<B, E>,
    ) -> Result<Origins<B>, E> {
        Ok(Origins {
            apt: self
                .apt
                .into_iter()
                .enumerate()
                .map(f)
                .collect::<Result<_, _>>()?,
            pip: self.pip,
            cargo: self.cargo,
            npm: self.npm,
            git: self.git,
            go: self.go,
            go_imports: self.go_imports,
        })
    }
}

impl Origins {
    /// Parses the text of `inspectors.yaml`.
    pub fn from_yaml(text: &str) -> Result<Self, OriginsError> {
        let file: File =
            serde_saphyr::from_str(text).map_err(|e| OriginsError::Syntax(e.to_string()))?;
        Self::from_file(file)
    }

    /// Parses a session's `inspectors-configuration`, returning the origins and the
    /// sections fetchgate does not know, which are ignored: clients written for the
    /// reference may send sections of their own (the control API ignores unknown keys).
    pub fn from_session_json(
        value: &serde_json::Value,
    ) -> Result<(Self, Vec<String>), OriginsError> {
        let Some(object) = value.as_object() else {
            return Err(OriginsError::Syntax("not a JSON object".into()));
        };
        let mut known = serde_json::Map::new();
        let mut ignored = Vec::new();
        for (key, section) in object {
            if SECTIONS.contains(&key.as_str()) {
                known.insert(key.clone(), section.clone());
            } else {
                ignored.push(key.clone());
            }
        }
        let file: File = serde_json::from_value(serde_json::Value::Object(known))
            .map_err(|e| OriginsError::Syntax(e.to_string()))?;
        Ok((Self::from_file(file)?, ignored))
    }

    fn from_file(file: File) -> Result<Self, OriginsError> {
        let apt = file
            .apt
            .repositories
            .into_iter()
            .enumerate()
            .map(|(i, r)| repository(i, r))
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
        let go_imports = origins("go.imports", file.go.imports.iter().map(String::as_str))?;
        Ok(Origins {
            apt,
            pip,
            cargo,
            npm,
            git,
            go,
            go_imports,
        })
    }
}

fn repository(index: usize, r: RepositoryEntry) -> Result<AptSource, OriginsError> {
    let base = normalise_base(&r.url).map_err(|reason| OriginsError::Url {
        index,
        url: r.url.clone(),
        reason,
    })?;
    if r.suites.is_empty() {
        return Err(OriginsError::NoSuite { index });
    }
    for (field, values) in [("suites", &r.suites), ("components", &r.components)] {
        for v in values {
            if v.is_empty()
                || v.starts_with('/')
                || v.ends_with('/')
                || v.split('/').any(|s| s == ".." || s == ".")
            {
                return Err(OriginsError::Name {
                    index,
                    field,
                    value: v.clone(),
                    reason: "not a path segment of the archive",
                });
            }
        }
    }
    if r.keys.is_empty() {
        return Err(OriginsError::NoKey { index });
    }
    Ok(AptSource {
        base,
        suites: r.suites,
        components: r.components,
        keys: r.keys,
    })
}

/// A list of trusted base URLs (package indexes, registries), normalised.
fn origins<'u>(
    section: &'static str,
    urls: impl Iterator<Item = &'u str>,
) -> Result<Vec<String>, OriginsError> {
    urls.enumerate()
        .map(|(index, url)| {
            normalise_base(url).map_err(|reason| OriginsError::Origin {
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
    // `http::Uri` is lenient about the authority (it takes `k[::1]:8443`, whose host
    // it gives as `k[`), so the host is checked here: a bracketed IPv6 address, or a
    // name or IPv4 address, and nothing else before the port.
    let raw = authority.host();
    let port_len = authority.port().map_or(0, |p| p.as_str().len() + 1);
    if authority.as_str().len() != raw.len() + port_len {
        return Err("not a host and port");
    }
    let host = match raw.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => {
            format!("[{}]", v6.to_ascii_lowercase())
        }
        Some(_) => return Err("not an IPv6 address in brackets"),
        None if !raw.is_empty()
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
        {
            raw.to_ascii_lowercase()
        }
        None => return Err("not a host name"),
    };
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
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

    /// Found by CI's run of the `inspectors_config` fuzz target (the target's own check
    /// was wrong): an `@` after the host is part of the path, as in npm's scoped
    /// packages, and stays; only one in the authority is a credential.
    #[test]
    fn an_at_sign_in_the_path_is_kept() {
        assert_eq!(
            normalise_base("https://PyPI.org/simpl@e/").unwrap(),
            "https://pypi.org:443/simpl@e"
        );
        assert!(normalise_base("https://u@pypi.org/simple/").is_err());
    }

    /// Found by the `inspectors_config` fuzz target: `http::Uri` took this authority and
    /// gave `k[` as its host, so the origin was normalised to `https://k[:8443/go`, a
    /// URL that does not even parse again.
    #[test]
    fn a_base_url_needs_a_real_host() {
        for bad in [
            "https://k[::1]:8443/go/",
            "https://[nope]/",
            "https://[::1/",
            "http://a:b:80/",
            "http://a%41/",
        ] {
            assert!(normalise_base(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalise_base("http://Mirror_1.example:8080").unwrap(),
            "http://mirror_1.example:8080"
        );
    }

    #[test]
    fn a_repository_without_suites_or_keys_is_refused_with_its_index() {
        let v = serde_json::json!({"apt": {"repositories": [{"url": "http://x/", "suites": [], "keys": []}]}});
        let e = Origins::from_session_json(&v).unwrap_err().to_string();
        assert!(e.contains("repositories[0].suites"), "{e}");
        let v = serde_json::json!({"apt": {"repositories": [{"url": "http://x/", "suites": ["s"], "keys": []}]}});
        let e = Origins::from_session_json(&v).unwrap_err().to_string();
        assert!(e.contains("repositories[0].keys"), "{e}");
    }

    #[test]
    fn unknown_sections_are_returned_but_known_ones_are_checked() {
        let v = serde_json::json!({"conda": {"index": "x"}});
        let (origins, ignored) = Origins::from_session_json(&v).unwrap();
        assert_eq!(
            (origins, ignored),
            (Origins::default(), vec!["conda".into()])
        );
        let v = serde_json::json!({"apt": {"repos": []}});
        let e = Origins::from_session_json(&v).unwrap_err().to_string();
        assert!(e.contains("unknown field `repos`"), "{e}");
        let v = serde_json::json!({"go": {"imports": ["https://Golang.org/x/", "ftp://x"]}});
        let e = Origins::from_session_json(&v).unwrap_err().to_string();
        assert!(e.contains("go.imports[1]"), "{e}");
        let v = serde_json::json!({"go": {"imports": ["https://Golang.org/x/"]}});
        assert_eq!(
            Origins::from_session_json(&v).unwrap().0.go_imports,
            ["https://golang.org:443/x"]
        );
        let v = serde_json::json!({"pip": {"indexes": ["ftp://x/simple"]}});
        let e = Origins::from_session_json(&v).unwrap_err().to_string();
        assert!(e.contains("pip.indexes[0]"), "{e}");
        let v = serde_json::json!({"pip": {"indexes": ["https://PyPI.org/simple/"]}});
        assert_eq!(
            Origins::from_session_json(&v).unwrap().0.pip,
            ["https://pypi.org:443/simple"]
        );
        let e = Origins::from_yaml("cargo:\n  registries: [\"sparse+ftp://x/\"]\n").unwrap_err();
        assert!(e.to_string().contains("cargo.registries[0]"), "{e}");
    }
}
