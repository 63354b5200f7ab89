//! apt repositories: `apt.release` verifies a suite's `InRelease` (or `Release` +
//! `Release.gpg`) with the repository's trusted keys and remembers its SHA256 list;
//! `apt.packages` checks every index file under `dists/<suite>/` (plain, compressed or
//! by-hash) against that list and remembers the packages of `Packages` indexes, which
//! the `deb` inspector later matches `.deb` files against.
//!
//! Files are recognised only under a trusted repository's base URL, for its configured
//! suites and components. Index files are spooled to disk while they stream and parsed
//! with the shared deb822 parser once complete, so memory stays bounded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fetchgate_formats::apt::{ReleaseIndex, parse_release};
use fetchgate_formats::deb822::{Compression, Item, Paragraphs};
use fetchgate_formats::debtags::{TagMap, stanza_tags};
use fetchgate_formats::parse_sha256;
use fetchgate_storage::BodyDigest;
use time::OffsetDateTime;

use super::config::AptRepository;
use super::spool::{Buffer, Spool};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};
use crate::debtags::cache::{FedIndex, PackagesCache};

pub const RELEASE_ID: &str = "apt.release";
pub const PACKAGES_ID: &str = "apt.packages";

/// The largest Release file accepted (Ubuntu's are about 250 KiB).
const MAX_RELEASE: usize = 16 << 20;
/// The largest index file spooled.
const MAX_INDEX: u64 = 1 << 30;
/// The most a compressed Packages index may expand to.
const MAX_PACKAGES_TEXT: u64 = 4 << 30;
/// The most packages remembered per session.
const MAX_PACKAGES: usize = 2_000_000;

/// A suite of a repository: (base URL, suite).
type SuiteKey = (String, String);

/// What apt inspectors remember in a session.
#[derive(Debug, Default)]
pub struct AptMemory {
    /// Release files whose signature verified.
    releases: HashMap<SuiteKey, ReleaseIndex>,
    /// A `Release` waiting for its `Release.gpg`.
    unsigned: HashMap<SuiteKey, Vec<u8>>,
    /// Packages of verified indexes, by the sha256 of the `.deb`.
    packages: HashMap<[u8; 32], PackageEntry>,
}

impl AptMemory {
    /// The package a verified index lists with this sha256.
    pub fn package(&self, sha256: &[u8; 32]) -> Option<&PackageEntry> {
        self.packages.get(sha256)
    }
}

/// One package of a verified Packages index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    /// Of the `.deb`.
    pub sha256: [u8; 32],
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub size: u64,
    pub listing: Arc<Listing>,
}

/// Where a Packages index came from, shared by its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub suite: String,
    /// The Release file's `Origin`.
    pub vendor: Option<String>,
}

/// Why a Release or Packages file is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("Release file: {0}")]
    Release(String),
    #[error("Packages index: {0}")]
    Packages(String),
}

/// What one Packages index holds.
#[derive(Debug, Default)]
pub struct PackagesIndex {
    pub entries: Vec<PackageEntry>,
    /// Stanzas skipped as malformed or incomplete.
    pub skipped: usize,
    /// Package → normalised debtags, for the debtags Packages cache.
    pub tags: TagMap,
}

/// Reads a Packages index (already decompressed by `reader`), at most
/// `MAX_PACKAGES_TEXT` bytes.
pub fn parse_packages(
    reader: impl std::io::BufRead,
    listing: &Arc<Listing>,
) -> Result<PackagesIndex, IndexError> {
    let err = |m: String| IndexError::Packages(m);
    let mut limited = reader.take(MAX_PACKAGES_TEXT);
    let mut paragraphs = Paragraphs::new(&mut limited);
    let mut out = Vec::new();
    let mut tags = TagMap::new();
    let mut skipped = 0usize;
    loop {
        let stanza = match paragraphs.next_item() {
            Ok(Some(Item::Stanza(s))) => s,
            Ok(Some(Item::Malformed(_))) => {
                skipped += 1;
                continue;
            }
            Ok(None) => break,
            Err(e) => return Err(err(e.to_string())),
        };
        tags.extend(stanza_tags(stanza));
        let entry = (|| {
            Some(PackageEntry {
                sha256: parse_sha256(stanza.get("SHA256")?)?,
                name: stanza.get("Package")?.to_owned(),
                version: stanza.get("Version")?.to_owned(),
                architecture: stanza.get("Architecture")?.to_owned(),
                size: stanza.get("Size")?.parse().ok()?,
                listing: Arc::clone(listing),
            })
        })();
        match entry {
            Some(e) if out.len() < MAX_PACKAGES => out.push(e),
            Some(_) => return Err(err(format!("more than {MAX_PACKAGES} packages"))),
            None => skipped += 1,
        }
    }
    drop(paragraphs);
    if limited.limit() == 0 {
        return Err(err(format!(
            "expands to more than {MAX_PACKAGES_TEXT} bytes"
        )));
    }
    Ok(PackagesIndex {
        entries: out,
        skipped,
        tags,
    })
}

/// What a URL is within a trusted repository.
#[derive(Debug, PartialEq, Eq)]
enum AptPath {
    /// `dists/<suite>/InRelease`.
    InRelease { suite: String },
    /// `dists/<suite>/Release`.
    Release { suite: String },
    /// `dists/<suite>/Release.gpg`.
    ReleaseSignature { suite: String },
    /// Any other file under `dists/<suite>/` (path relative to it).
    Index { suite: String, path: String },
    /// A `.deb` under the repository.
    Deb,
}

/// Finds the trusted repository a GET URL belongs to, and what it is there.
fn classify<'t>(
    session: &'t SessionInspection,
    req: &RequestInfo<'_>,
) -> Option<(&'t AptRepository, AptPath)> {
    if req.method != "GET" || req.url.contains('?') {
        return None;
    }
    session.trust.apt.iter().find_map(|repo| {
        let rest = req
            .url
            .strip_prefix(repo.base.as_str())?
            .strip_prefix('/')?;
        if rest
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return None;
        }
        if rest.ends_with(".deb") {
            return Some((repo, AptPath::Deb));
        }
        let in_dists = rest.strip_prefix("dists/")?;
        repo.suites.iter().find_map(|suite| {
            let file = in_dists.strip_prefix(suite.as_str())?.strip_prefix('/')?;
            let suite = suite.clone();
            let path = match file {
                "InRelease" => AptPath::InRelease { suite },
                "Release" => AptPath::Release { suite },
                "Release.gpg" => AptPath::ReleaseSignature { suite },
                _ => {
                    // Components may have slashes (Debian security: `updates/main`).
                    let in_component = |c: &String| {
                        file.strip_prefix(c.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                    };
                    if !repo.components.is_empty()
                        && file.contains('/')
                        && !repo.components.iter().any(in_component)
                    {
                        return None;
                    }
                    AptPath::Index {
                        suite,
                        path: file.to_owned(),
                    }
                }
            };
            Some((repo, path))
        })
    })
}

/// Whether a URL is a `.deb` of a trusted repository (for the `deb` inspector).
pub(super) fn is_trusted_deb(session: &SessionInspection, req: &RequestInfo<'_>) -> bool {
    matches!(classify(session, req), Some((_, AptPath::Deb)))
}

/// `apt.release`.
pub struct ReleaseInspector;

impl Inspector for ReleaseInspector {
    fn id(&self) -> &'static str {
        RELEASE_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some((repo, path)) = classify(session, req) else {
            return RequestFinding::unknown();
        };
        let (suite, kind) = match path {
            AptPath::InRelease { suite } => (suite, ReleaseKind::InRelease),
            AptPath::Release { suite } => (suite, ReleaseKind::Release),
            AptPath::ReleaseSignature { suite } => (suite, ReleaseKind::Signature),
            AptPath::Index { .. } | AptPath::Deb => return RequestFinding::unknown(),
        };
        RequestFinding::pending(Box::new(ReleaseObserver {
            session: Arc::clone(session),
            repo: repo.clone(),
            suite: suite.clone(),
            kind,
            text: Buffer::new(MAX_RELEASE),
        }))
        .note("suite", suite)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReleaseKind {
    InRelease,
    Release,
    Signature,
}

struct ReleaseObserver {
    session: Arc<SessionInspection>,
    repo: AptRepository,
    suite: String,
    kind: ReleaseKind,
    text: Buffer,
}

impl BodyObserver for ReleaseObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.text.write(bytes);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let text = match self.text.into_bytes() {
            Ok(t) => t,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let key = (self.repo.base.clone(), self.suite.clone());
        let mut memory = self.session.apt.lock().unwrap_or_else(|p| p.into_inner());
        match self.kind {
            ReleaseKind::InRelease => {
                let Ok(text) = std::str::from_utf8(&text) else {
                    return ResponseFinding::rejected("InRelease is not UTF-8 text");
                };
                let signed = match self.repo.keys.verify_cleartext(text) {
                    Ok(s) => s,
                    Err(e) => return ResponseFinding::rejected(format!("InRelease: {e}")),
                };
                match parse_release(signed.as_bytes(), &self.suite, OffsetDateTime::now_utc())
                    .map_err(IndexError::Release)
                {
                    Ok(index) => {
                        let n = index.file_count();
                        memory.releases.insert(key, index);
                        ResponseFinding::approved()
                            .note("signature", "verified")
                            .note("files", n.to_string())
                    }
                    Err(e) => ResponseFinding::rejected(e.to_string()),
                }
            }
            ReleaseKind::Release => {
                match parse_release(&text, &self.suite, OffsetDateTime::now_utc())
                    .map_err(IndexError::Release)
                {
                    Ok(_) => {
                        memory.unsigned.insert(key, text);
                        ResponseFinding::approved().note(
                            "signature",
                            "checked with Release.gpg; index files wait for it",
                        )
                    }
                    Err(e) => ResponseFinding::rejected(e.to_string()),
                }
            }
            ReleaseKind::Signature => {
                let Some(release) = memory.unsigned.get(&key) else {
                    return ResponseFinding::rejected(
                        "no Release file of this suite was fetched before its signature",
                    );
                };
                if let Err(e) = self.repo.keys.verify_detached(release, &text) {
                    return ResponseFinding::rejected(format!("Release.gpg: {e}"));
                }
                match parse_release(release, &self.suite, OffsetDateTime::now_utc())
                    .map_err(IndexError::Release)
                {
                    Ok(index) => {
                        let n = index.file_count();
                        memory.unsigned.remove(&key);
                        memory.releases.insert(key, index);
                        ResponseFinding::approved()
                            .note("signature", "verified")
                            .note("files", n.to_string())
                    }
                    Err(e) => ResponseFinding::rejected(e.to_string()),
                }
            }
        }
    }
}

/// `apt.packages`.
pub struct PackagesInspector {
    pub spool: Arc<PathBuf>,
    /// Where the debtags of verified Packages indexes go.
    pub debtags: Option<Arc<PackagesCache>>,
}

impl Inspector for PackagesInspector {
    fn id(&self) -> &'static str {
        PACKAGES_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some((repo, AptPath::Index { suite, path })) = classify(session, req) else {
            return RequestFinding::unknown();
        };
        let key = (repo.base.clone(), suite.clone());
        let verified = session
            .apt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .releases
            .contains_key(&key);
        if !verified {
            // apt fetches the Release first; without it nothing here could verify.
            return RequestFinding::rejected(format!(
                "no verified Release file for suite {suite} of {} in this session yet",
                repo.base
            ));
        }
        // Only Packages indexes are read; a by-hash name may turn out to be one.
        let name = path.rsplit('/').next().unwrap_or_default();
        let spool = (is_packages(name) || path.contains("/by-hash/"))
            .then(|| Spool::new(&self.spool, MAX_INDEX));
        RequestFinding::pending(Box::new(IndexObserver {
            session: Arc::clone(session),
            base: repo.base.clone(),
            suite: suite.clone(),
            path: path.clone(),
            spool,
            debtags: self.debtags.clone(),
        }))
        .note("suite", suite)
        .note("path", path)
    }
}

struct IndexObserver {
    session: Arc<SessionInspection>,
    base: String,
    suite: String,
    /// Relative to `dists/<suite>/`.
    path: String,
    /// Where a Packages index is kept until it is complete (`None`: another index).
    spool: Option<Spool>,
    debtags: Option<Arc<PackagesCache>>,
}

/// Whether a file name under `dists/` is a Packages index.
fn is_packages(name: &str) -> bool {
    matches!(name, "Packages" | "Packages.gz" | "Packages.xz")
}

impl BodyObserver for IndexObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        if let Some(spool) = &mut self.spool {
            spool.write(bytes);
        }
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        let key = (self.base.clone(), self.suite.clone());
        let (listed, listing) = {
            let memory = self.session.apt.lock().unwrap_or_else(|p| p.into_inner());
            let Some(release) = memory.releases.get(&key) else {
                return ResponseFinding::rejected(format!(
                    "no verified Release file for suite {} of {} in this session",
                    self.suite, self.base
                ));
            };
            let listing = Listing {
                suite: self.suite.clone(),
                vendor: release.origin().map(str::to_owned),
            };
            match listed_path(release, &self.path, body) {
                Ok(p) => (p, Arc::new(listing)),
                Err(reason) => return ResponseFinding::rejected(reason),
            }
        };
        let finding = ResponseFinding::approved().note("release-path", listed.clone());
        let name = listed.rsplit('/').next().unwrap_or_default();
        if !is_packages(name) {
            return finding;
        }
        let file = match self.spool.map(Spool::into_file) {
            Some(Ok(f)) => f,
            Some(Err(reason)) => return ResponseFinding::rejected(reason),
            None => return ResponseFinding::rejected(format!("{listed} was not kept to be read")),
        };
        let reader = Compression::from_path(Path::new(name)).reader(file);
        match parse_packages(reader, &listing) {
            Ok(PackagesIndex {
                entries,
                skipped,
                tags,
            }) => {
                let n = entries.len();
                let mut memory = self.session.apt.lock().unwrap_or_else(|p| p.into_inner());
                if memory.packages.len() + n > MAX_PACKAGES {
                    return ResponseFinding::rejected(format!(
                        "the session would remember more than {MAX_PACKAGES} packages"
                    ));
                }
                memory
                    .packages
                    .extend(entries.into_iter().map(|e| (e.sha256, e)));
                drop(memory);
                // Verified against a signed Release: its debtags can answer lookups.
                if let (Some(cache), Some(index)) =
                    (&self.debtags, FedIndex::at(&self.suite, &listed))
                {
                    cache.feed(&index, tags);
                }
                let mut finding = finding.note("packages", n.to_string());
                if skipped > 0 {
                    finding = finding.note("skipped-stanzas", skipped.to_string());
                }
                finding
                    .metadata
                    .insert("apt-suite".into(), self.suite.clone());
                finding
            }
            Err(e) => ResponseFinding::rejected(e.to_string()),
        }
    }
}

/// The Release entry an index file's content must match: by name, or by-hash.
fn listed_path(release: &ReleaseIndex, path: &str, body: &BodyDigest) -> Result<String, String> {
    let got = hex::encode(body.sha256);
    if let Some((dir, hash)) = path.split_once("by-hash/SHA256/") {
        if hash != got {
            return Err(format!(
                "by-hash name {hash} does not match the content's sha256 {got}"
            ));
        }
        return match release.path_of(&body.sha256) {
            Some(p) if p.starts_with(dir) => Ok(p.to_owned()),
            _ => Err(format!(
                "sha256 {got} is not listed in the Release file under {dir}"
            )),
        };
    }
    match release.get(path) {
        None => Err(format!("{path} is not listed in the Release file")),
        Some(l) if l.sha256 != body.sha256 || l.size != body.size => Err(format!(
            "content (sha256 {got}, {} bytes) does not match the Release file (sha256 {}, {} bytes)",
            body.size,
            hex::encode(l.sha256),
            l.size
        )),
        Some(_) => Ok(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn listing() -> Arc<Listing> {
        Arc::new(Listing {
            suite: "s".into(),
            vendor: None,
        })
    }

    fn session(components: &[&str]) -> SessionInspection {
        SessionInspection::new(crate::inspect::config::Trust {
            apt: vec![AptRepository {
                base: "http://archive:80/debian".into(),
                suites: vec!["bookworm-security".into()],
                components: components.iter().map(|c| c.to_string()).collect(),
                keys: Default::default(),
            }],
            ..Default::default()
        })
    }

    fn what(session: &SessionInspection, url: &str) -> Option<AptPath> {
        let headers = http::HeaderMap::new();
        let req = RequestInfo {
            method: "GET",
            url,
            headers: &headers,
        };
        classify(session, &req).map(|(_, p)| p)
    }

    #[test]
    fn urls_are_recognised_only_under_a_trusted_suite_and_component() {
        let s = session(&["updates/main"]);
        let base = "http://archive:80/debian";
        assert_eq!(
            what(&s, &format!("{base}/dists/bookworm-security/InRelease")),
            Some(AptPath::InRelease {
                suite: "bookworm-security".into()
            })
        );
        assert_eq!(
            what(
                &s,
                &format!("{base}/dists/bookworm-security/updates/main/binary-amd64/Packages.xz")
            ),
            Some(AptPath::Index {
                suite: "bookworm-security".into(),
                path: "updates/main/binary-amd64/Packages.xz".into()
            })
        );
        assert_eq!(
            what(
                &s,
                &format!("{base}/pool/updates/main/h/hello/hello_1_all.deb")
            ),
            Some(AptPath::Deb)
        );
        for other in [
            format!("{base}/dists/bookworm-security/updates/contrib/binary-amd64/Packages.xz"),
            format!("{base}/dists/sid/InRelease"),
            format!("{base}/dists/bookworm-security/../sid/InRelease"),
            format!("{base}x/dists/bookworm-security/InRelease"),
            format!("{base}/dists/bookworm-security/InRelease?x=1"),
            "http://elsewhere:80/debian/dists/bookworm-security/InRelease".into(),
        ] {
            assert_eq!(what(&s, &other), None, "{other}");
        }
    }

    #[test]
    fn packages_stanzas_without_required_fields_are_skipped() {
        let text = format!(
            "Package: a\nVersion: 1\nArchitecture: all\nSize: 3\nSHA256: {SHA}\n\nPackage: b\nVersion: 1\n\nnot a field\n"
        );
        let index = parse_packages(text.as_bytes(), &listing()).unwrap();
        assert_eq!(index.entries.len(), 1);
        assert_eq!(index.entries[0].name, "a");
        assert_eq!(index.skipped, 2);
    }

    #[test]
    fn corrupt_compressed_packages_are_an_error_not_a_panic() {
        let reader = Compression::Xz.reader(&b"\xfd7zXZ\x00garbage"[..]);
        assert!(parse_packages(reader, &listing()).is_err());
        let reader = Compression::Gzip.reader(&b"\x1f\x8b\x08\x00garbage"[..]);
        assert!(parse_packages(reader, &listing()).is_err());
    }

    #[test]
    fn by_hash_content_must_be_listed_under_the_same_directory() {
        let sha = parse_sha256(SHA).unwrap();
        let text = format!("SHA256:\n {SHA} 0 main/binary-amd64/Packages\n");
        let release = parse_release(text.as_bytes(), "s", OffsetDateTime::now_utc()).unwrap();
        let body = BodyDigest {
            sha1: [0; 20],
            sha256: sha,
            size: 0,
        };
        let ok = listed_path(
            &release,
            &format!("main/binary-amd64/by-hash/SHA256/{SHA}"),
            &body,
        );
        assert_eq!(ok.unwrap(), "main/binary-amd64/Packages");
        assert!(listed_path(&release, &format!("contrib/by-hash/SHA256/{SHA}"), &body).is_err());
        let wrong = BodyDigest {
            sha1: [0; 20],
            sha256: [1; 32],
            size: 0,
        };
        assert!(listed_path(&release, "main/binary-amd64/Packages", &wrong).is_err());
        assert!(listed_path(&release, "main/binary-i386/Packages", &body).is_err());
    }
}
