//! Crates from trusted cargo registries (the sparse index protocol):
//!
//! - `cargo.index`: a registry's `config.json` (its `dl` download template is
//!   remembered) and its index files (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd…`): every
//!   version's download URL, from the template, is remembered with its `cksum`.
//! - `cargo.crate`: a remembered download URL; the `.crate` is spooled, its sha256 must
//!   be the index entry's, and its `{name}-{version}/Cargo.toml` must name the crate and
//!   version the URL was made from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use fetchgate_storage::BodyDigest;
use serde::Deserialize;

use super::config::normalise_url;
use super::spool::{Buffer, Spool};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const INDEX_ID: &str = "cargo.index";
pub const CRATE_ID: &str = "cargo.crate";

/// The largest index file (or `config.json`) read; crates.io's largest are a few MiB.
const MAX_INDEX_FILE: usize = 64 << 20;
/// The largest `.crate` spooled (crates.io accepts 10 MiB).
const MAX_CRATE: u64 = 1 << 30;
/// The most a `.crate` is expanded while looking for its `Cargo.toml`.
const MAX_CRATE_EXPANDED: u64 = 4 << 30;
/// The largest `Cargo.toml` read.
const MAX_MANIFEST: u64 = 4 << 20;
/// The most crate versions remembered per session.
const MAX_VERSIONS: usize = 4_000_000;

/// What the cargo inspectors remember in a session.
#[derive(Debug, Default)]
pub struct CargoMemory {
    /// A registry's base URL → its `dl` template.
    dl: HashMap<String, String>,
    /// Download URL → the index entry it was made from.
    crates: HashMap<String, CrateEntry>,
}

/// One version of a crate, as an index entry gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateEntry {
    pub name: String,
    pub version: String,
    pub cksum: [u8; 32],
}

/// What a URL is within a trusted registry.
#[derive(Debug, PartialEq, Eq)]
enum IndexPath {
    Config,
    /// The index file of this (lowercase) crate name.
    Crate(String),
}

/// The trusted registry a GET URL belongs to, and what it is there.
fn classify<'t>(
    session: &'t SessionInspection,
    req: &RequestInfo<'_>,
) -> Option<(&'t str, IndexPath)> {
    if req.method != "GET" || req.url.contains('?') {
        return None;
    }
    session.trust.cargo.iter().find_map(|base| {
        let rest = req.url.strip_prefix(base.as_str())?.strip_prefix('/')?;
        if rest == "config.json" {
            return Some((base.as_str(), IndexPath::Config));
        }
        let name = rest.rsplit('/').next()?;
        (valid_name(name) && index_path(name) == rest)
            .then(|| (base.as_str(), IndexPath::Crate(name.to_owned())))
    })
}

/// Crate names are ASCII letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The directories of a crate's index file: `1`, `2`, `3/a`, `ab/cd` (for a valid name).
fn prefix(name: &str) -> String {
    match name.len() {
        1 => "1".into(),
        2 => "2".into(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    }
}

/// A crate's index file path under the registry (lowercase, as cargo asks for it).
fn index_path(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    format!("{}/{lower}", prefix(&lower))
}

/// A version's download URL from the registry's `dl` template (cargo appends
/// `/{crate}/{version}/download` when it has no marker).
fn download_url(dl: &str, entry: &CrateEntry) -> Option<String> {
    const MARKERS: [&str; 5] = [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    let template = if MARKERS.iter().any(|m| dl.contains(m)) {
        dl.to_owned()
    } else {
        format!(
            "{}/{{crate}}/{{version}}/download",
            dl.trim_end_matches('/')
        )
    };
    let expanded = template
        .replace("{crate}", &entry.name)
        .replace("{version}", &entry.version)
        .replace("{prefix}", &prefix(&entry.name))
        .replace("{lowerprefix}", &prefix(&entry.name).to_ascii_lowercase())
        .replace("{sha256-checksum}", &hex::encode(entry.cksum));
    normalise_url(&url::Url::parse(&expanded).ok()?)
}

#[derive(Deserialize)]
struct RegistryConfig {
    dl: String,
}

#[derive(Deserialize)]
struct IndexLine {
    name: String,
    vers: String,
    cksum: String,
}

/// Parses an index file of crate `name`: its entries, and how many lines were skipped
/// (not JSON, or a checksum that is not sha256 hex).
pub fn parse_index_file(text: &[u8], name: &str) -> Result<(Vec<CrateEntry>, usize), String> {
    let mut entries = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(parsed) = serde_json::from_slice::<IndexLine>(line) else {
            skipped += 1;
            continue;
        };
        if !parsed.name.eq_ignore_ascii_case(name) || !valid_name(&parsed.name) {
            return Err(format!(
                "line {}: an entry for {:?} in the index file of {name}",
                i + 1,
                parsed.name
            ));
        }
        let Some(cksum) = super::apt::parse_sha256(&parsed.cksum) else {
            skipped += 1;
            continue;
        };
        entries.push(CrateEntry {
            name: parsed.name,
            version: parsed.vers,
            cksum,
        });
    }
    Ok((entries, skipped))
}

/// `cargo.index`.
pub struct IndexInspector;

impl Inspector for IndexInspector {
    fn id(&self) -> &'static str {
        INDEX_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some((base, path)) = classify(session, req) else {
            return RequestFinding::unknown();
        };
        let what = match &path {
            IndexPath::Config => "config.json".to_owned(),
            IndexPath::Crate(name) => name.clone(),
        };
        RequestFinding::pending(Box::new(IndexObserver {
            session: Arc::clone(session),
            base: base.to_owned(),
            path,
            body: Buffer::new(MAX_INDEX_FILE),
        }))
        .note("index-file", what)
    }
}

struct IndexObserver {
    session: Arc<SessionInspection>,
    base: String,
    path: IndexPath,
    body: Buffer,
}

impl BodyObserver for IndexObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.body.write(bytes);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let text = match self.body.into_expanded() {
            Ok(t) => t,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let mut memory = self.session.cargo.lock().unwrap_or_else(|p| p.into_inner());
        let name = match self.path {
            IndexPath::Config => {
                return match serde_json::from_slice::<RegistryConfig>(&text) {
                    Ok(config) => {
                        let finding = ResponseFinding::approved().note("dl", config.dl.clone());
                        memory.dl.insert(self.base, config.dl);
                        finding
                    }
                    Err(e) => ResponseFinding::rejected(format!("config.json: {e}")),
                };
            }
            IndexPath::Crate(name) => name,
        };
        let Some(dl) = memory.dl.get(&self.base).cloned() else {
            return ResponseFinding::rejected(format!(
                "no config.json of {} fetched in this session yet",
                self.base
            ));
        };
        let (entries, skipped) = match parse_index_file(&text, &name) {
            Ok(e) => e,
            Err(e) => return ResponseFinding::rejected(e),
        };
        if memory.crates.len() + entries.len() > MAX_VERSIONS {
            return ResponseFinding::rejected(format!(
                "the session would remember more than {MAX_VERSIONS} crate versions"
            ));
        }
        let n = entries.len();
        for entry in entries {
            if let Some(url) = download_url(&dl, &entry) {
                memory.crates.insert(url, entry);
            }
        }
        let mut finding = ResponseFinding::approved().note("versions", n.to_string());
        if skipped > 0 {
            finding = finding.note("skipped-lines", skipped.to_string());
        }
        finding
    }
}

/// `cargo.crate`.
pub struct CrateInspector {
    pub spool: Arc<PathBuf>,
}

impl Inspector for CrateInspector {
    fn id(&self) -> &'static str {
        CRATE_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        if req.method != "GET" {
            return RequestFinding::unknown();
        }
        let entry = session
            .cargo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .crates
            .get(req.url)
            .cloned();
        let Some(entry) = entry else {
            return RequestFinding::unknown();
        };
        let (name, version) = (entry.name.clone(), entry.version.clone());
        RequestFinding::pending(Box::new(CrateObserver {
            entry,
            spool: Spool::new(&self.spool, MAX_CRATE),
        }))
        .note("crate", format!("{name} {version}"))
    }
}

struct CrateObserver {
    entry: CrateEntry,
    spool: Spool,
}

impl BodyObserver for CrateObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.spool.write(bytes);
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        if body.sha256 != self.entry.cksum {
            return ResponseFinding::rejected(format!(
                "sha256 {} does not match the index entry's cksum {}",
                hex::encode(body.sha256),
                hex::encode(self.entry.cksum)
            ));
        }
        let checked = self
            .spool
            .into_reader()
            .and_then(|file| inspect_crate(file, &self.entry));
        match checked {
            Ok(metadata) => {
                let mut finding = ResponseFinding::approved()
                    .note("cksum", "matches the index entry")
                    .note("manifest", "names this crate and version");
                finding.metadata = metadata;
                finding
            }
            Err(e) => ResponseFinding::rejected(e),
        }
    }
}

/// Reads a `.crate`'s `Cargo.toml`, checks it names `entry`, and gives the report's
/// metadata from it.
pub fn inspect_crate(
    reader: impl std::io::Read,
    entry: &CrateEntry,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let top = format!("{}-{}", entry.name, entry.version);
    let text = super::tarball::find_top_level_file(
        reader,
        "Cargo.toml",
        |t| t == top,
        MAX_CRATE_EXPANDED,
        MAX_MANIFEST,
    )?
    .ok_or_else(|| format!("no {top}/Cargo.toml in the crate"))?;
    let text = std::str::from_utf8(&text).map_err(|_| "Cargo.toml is not UTF-8".to_string())?;
    let manifest: toml::Table = toml::from_str(text).map_err(|e| format!("Cargo.toml: {e}"))?;
    let package = manifest
        .get("package")
        .and_then(toml::Value::as_table)
        .ok_or("Cargo.toml has no [package]")?;
    let field = |key: &str| package.get(key).and_then(toml::Value::as_str);
    let (name, version) = (field("name"), field("version"));
    if name != Some(entry.name.as_str()) || version != Some(entry.version.as_str()) {
        return Err(format!(
            "Cargo.toml names {} {}, the URL {} {}",
            name.unwrap_or("no crate"),
            version.unwrap_or("no version"),
            entry.name,
            entry.version
        ));
    }
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("name".to_owned(), entry.name.clone());
    metadata.insert("version".to_owned(), entry.version.clone());
    for (key, report_key) in [("license", "license"), ("description", "description")] {
        if let Some(v) = field(key) {
            metadata.insert(report_key.to_owned(), v.trim().to_owned());
        }
    }
    let first_author = package
        .get("authors")
        .and_then(toml::Value::as_array)
        .and_then(|a| a.first())
        .and_then(toml::Value::as_str);
    if let Some(author) = first_author {
        match author.split_once('<') {
            Some((who, email)) => {
                metadata.insert("author".into(), who.trim().to_owned());
                metadata.insert(
                    "author-email".into(),
                    email.trim_end_matches(['>', ' ']).to_owned(),
                );
            }
            None => {
                metadata.insert("author".into(), author.trim().to_owned());
            }
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::config::Trust;
    use crate::inspect::tarball::tests::tar_gz;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn entry() -> CrateEntry {
        CrateEntry {
            name: "Fg-Hello".into(),
            version: "0.1.0".into(),
            cksum: [7; 32],
        }
    }

    #[test]
    fn index_paths_follow_the_name_length() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("Serde"), "se/rd/serde");
        let s = SessionInspection::new(Trust {
            cargo: vec!["https://idx:443/reg".into()],
            ..Default::default()
        });
        let what = |url: &str| {
            crate::inspect::with_request("GET", url, |req| classify(&s, req).map(|(_, p)| p))
        };
        assert_eq!(
            what("https://idx:443/reg/config.json"),
            Some(IndexPath::Config)
        );
        assert_eq!(
            what("https://idx:443/reg/se/rd/serde"),
            Some(IndexPath::Crate("serde".into()))
        );
        for other in [
            "https://idx:443/reg/se/rd/sebde",
            "https://idx:443/reg/3/b/abc",
            "https://idx:443/reg/../x",
            "https://idx:443/regx/config.json",
            "https://idx:443/reg/se/rd/serde?x",
        ] {
            assert_eq!(what(other), None, "{other}");
        }
    }

    #[test]
    fn download_urls_come_from_the_dl_template() {
        let e = entry();
        assert_eq!(
            download_url("https://static.crates.io/crates", &e).unwrap(),
            "https://static.crates.io:443/crates/Fg-Hello/0.1.0/download"
        );
        assert_eq!(
            download_url(
                "http://r:8080/{lowerprefix}/{crate}-{version}.crate?h={sha256-checksum}",
                &e
            )
            .unwrap(),
            format!(
                "http://r:8080/fg/-h/Fg-Hello-0.1.0.crate?h={}",
                hex::encode([7u8; 32])
            )
        );
        assert_eq!(download_url("not a url/{crate}", &e), None);
    }

    #[test]
    fn index_files_give_entries_and_refuse_other_crates() {
        let text = format!(
            "{{\"name\":\"fg-hello\",\"vers\":\"0.1.0\",\"deps\":[],\"cksum\":\"{SHA}\",\"features\":{{}},\"yanked\":false}}\nnot json\n{{\"name\":\"fg-hello\",\"vers\":\"0.2.0\",\"cksum\":\"short\"}}\n\n"
        );
        let (entries, skipped) = parse_index_file(text.as_bytes(), "fg-hello").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].version, "0.1.0");
        assert_eq!(skipped, 2);
        let other = format!("{{\"name\":\"evil\",\"vers\":\"1.0.0\",\"cksum\":\"{SHA}\"}}\n");
        let e = parse_index_file(other.as_bytes(), "fg-hello").unwrap_err();
        assert!(e.contains("\"evil\""), "{e}");
    }

    #[test]
    fn the_manifest_must_name_the_crate_and_version() {
        let manifest = b"[package]\nname = \"Fg-Hello\"\nversion = \"0.1.0\"\nlicense = \"MIT OR Apache-2.0\"\nauthors = [\"Jo Tester <jo@example.org>\"]\ndescription = \"says hello\"\n";
        let c = tar_gz(&[("Fg-Hello-0.1.0/Cargo.toml", manifest.as_slice())]);
        let m = inspect_crate(&c[..], &entry()).unwrap();
        assert_eq!(m["license"], "MIT OR Apache-2.0");
        assert_eq!(m["author"], "Jo Tester");
        assert_eq!(m["author-email"], "jo@example.org");
        let other = CrateEntry {
            version: "0.2.0".into(),
            ..entry()
        };
        let e = inspect_crate(&c[..], &other).unwrap_err();
        assert!(e.contains("no Fg-Hello-0.2.0/Cargo.toml"), "{e}");
        let wrong = tar_gz(&[(
            "Fg-Hello-0.1.0/Cargo.toml",
            b"[package]\nname = \"other\"\nversion = \"0.1.0\"\n".as_slice(),
        )]);
        let e = inspect_crate(&wrong[..], &entry()).unwrap_err();
        assert!(e.contains("names other 0.1.0"), "{e}");
        let bad = tar_gz(&[("Fg-Hello-0.1.0/Cargo.toml", b"[package\n".as_slice())]);
        assert!(
            inspect_crate(&bad[..], &entry())
                .unwrap_err()
                .contains("Cargo.toml")
        );
    }

    #[test]
    fn mutated_index_files_and_crates_never_panic() {
        let line = format!("{{\"name\":\"Fg-Hello\",\"vers\":\"0.1.0\",\"cksum\":\"{SHA}\"}}\n");
        for m in crate::inspect::mutations(line.as_bytes(), 300) {
            let _ = parse_index_file(&m, "fg-hello");
        }
        let manifest =
            b"[package]\nname = \"Fg-Hello\"\nversion = \"0.1.0\"\nauthors = [\"Jo <jo@x>\"]\n";
        let c = tar_gz(&[("Fg-Hello-0.1.0/Cargo.toml", manifest.as_slice())]);
        for m in crate::inspect::mutations(&c, 300) {
            let _ = inspect_crate(&m[..], &entry());
        }
    }
}
