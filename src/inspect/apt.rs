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

use fetchgate_storage::BodyDigest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::config::AptRepository;
use super::spool::{Buffer, Spool};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};
use crate::debtags::cache::{FedIndex, PackagesCache, stanza_tags};
use crate::debtags::deb822::{Compression, Item, Paragraphs};
use crate::debtags::tags::TagMap;

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

/// A verified Release file's SHA256 list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReleaseIndex {
    /// Path under `dists/<suite>/` → (sha256, size).
    files: HashMap<String, ([u8; 32], u64)>,
    /// Its `Origin` (the archive's vendor, `Debian`, `Ubuntu`, ...).
    origin: Option<String>,
}

impl ReleaseIndex {
    /// Whether the Release lists this path (under `dists/<suite>/`).
    #[cfg(test)]
    pub(crate) fn lists(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    fn path_of(&self, sha: &[u8; 32]) -> Option<&str> {
        self.files
            .iter()
            .find(|(_, (s, _))| s == sha)
            .map(|(p, _)| p.as_str())
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

/// Parses a Release file's text: its SHA256 list, after checking it is for `suite` and,
/// when it says `Valid-Until`, still valid at `now` (an old signed Release replayed
/// would otherwise hide security updates).
pub fn parse_release(
    text: &[u8],
    suite: &str,
    now: OffsetDateTime,
) -> Result<ReleaseIndex, IndexError> {
    let err = |m: String| IndexError::Release(m);
    let mut paragraphs = Paragraphs::new(text);
    let stanza = match paragraphs.next_item() {
        Ok(Some(Item::Stanza(s))) => s,
        Ok(Some(Item::Malformed(m))) => return Err(err(format!("line {}: {}", m.line, m.reason))),
        Ok(None) => return Err(err("empty".into())),
        Err(e) => return Err(err(e.to_string())),
    };
    let names: Vec<&str> = ["Suite", "Codename"]
        .iter()
        .filter_map(|f| stanza.get(f))
        .collect();
    let last = suite.rsplit('/').next().unwrap_or(suite);
    if !names.is_empty() && !names.iter().any(|n| *n == suite || *n == last) {
        return Err(err(format!(
            "it is for suite {}, not {suite}",
            names.join(" / ")
        )));
    }
    if let Some(until) = stanza.get("Valid-Until") {
        let parsed = release_date(until)
            .ok_or_else(|| err(format!("Valid-Until {until:?} is not a date")))?;
        if parsed < now {
            return Err(err(format!("expired (Valid-Until {until})")));
        }
    }
    let list = stanza
        .get("SHA256")
        .ok_or_else(|| err("no SHA256 list".into()))?;
    let mut files = HashMap::new();
    for (i, line) in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let mut parts = line.split_ascii_whitespace();
        let (Some(hash), Some(size), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err(format!(
                "SHA256 line {}: expected `hash size path`",
                i + 1
            )));
        };
        let sha = parse_sha256(hash)
            .ok_or_else(|| err(format!("SHA256 line {}: bad hash {hash:?}", i + 1)))?;
        let size: u64 = size
            .parse()
            .map_err(|_| err(format!("SHA256 line {}: bad size {size:?}", i + 1)))?;
        files.insert(path.to_owned(), (sha, size));
    }
    if files.is_empty() {
        return Err(err("the SHA256 list is empty".into()));
    }
    Ok(ReleaseIndex {
        files,
        origin: stanza.get("Origin").map(str::to_owned),
    })
}

/// A Release date (RFC 2822, where Debian writes `UTC` for the zone).
fn release_date(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    let numeric = match text.strip_suffix("UTC") {
        Some(rest) => format!("{rest}+0000"),
        None => text.to_owned(),
    };
    OffsetDateTime::parse(&numeric, &Rfc2822).ok()
}

/// 64 hex digits → bytes.
pub fn parse_sha256(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
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
                match parse_release(signed.as_bytes(), &self.suite, OffsetDateTime::now_utc()) {
                    Ok(index) => {
                        let n = index.files.len();
                        memory.releases.insert(key, index);
                        ResponseFinding::approved()
                            .note("signature", "verified")
                            .note("files", n.to_string())
                    }
                    Err(e) => ResponseFinding::rejected(e.to_string()),
                }
            }
            ReleaseKind::Release => {
                match parse_release(&text, &self.suite, OffsetDateTime::now_utc()) {
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
                match parse_release(release, &self.suite, OffsetDateTime::now_utc()) {
                    Ok(index) => {
                        let n = index.files.len();
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
                vendor: release.origin.clone(),
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
    match release.files.get(path) {
        None => Err(format!("{path} is not listed in the Release file")),
        Some((sha, size)) if *sha != body.sha256 || *size != body.size => Err(format!(
            "content (sha256 {got}, {} bytes) does not match the Release file (sha256 {}, {size} bytes)",
            body.size,
            hex::encode(sha)
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

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-06-01 12:00 UTC)
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
    fn an_expired_release_is_refused() {
        let text = |until: &str| {
            format!(
                "Suite: s\nValid-Until: {until}\nSHA256:\n {SHA} 0 main/binary-amd64/Packages\n"
            )
        };
        assert!(
            parse_release(text("Sat, 06 Jun 2026 00:00:00 UTC").as_bytes(), "s", now()).is_ok()
        );
        let e = parse_release(text("Fri, 01 May 2026 00:00:00 UTC").as_bytes(), "s", now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("expired"), "{e}");
        let e = parse_release(text("tomorrow").as_bytes(), "s", now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a date"), "{e}");
    }

    #[test]
    fn release_list_is_parsed_and_suite_checked() {
        let text = format!(
            "Suite: stable\nCodename: bookworm\nSHA256:\n {SHA} 0 main/binary-amd64/Packages\n {SHA}   0 main/binary-amd64/Packages.gz\n"
        );
        let index = parse_release(text.as_bytes(), "bookworm", now()).unwrap();
        assert_eq!(index.files.len(), 2);
        let e = parse_release(text.as_bytes(), "sid", now()).unwrap_err();
        assert!(e.to_string().contains("not sid"), "{e}");
    }

    #[test]
    fn hostile_release_files_are_refused_with_a_reason() {
        for (text, needle) in [
            ("", "empty"),
            ("Suite: s\n", "no SHA256"),
            ("Suite: s\nSHA256:\n zz 1 p\n", "bad hash"),
            (&format!("Suite: s\nSHA256:\n {SHA} -1 p\n"), "bad size"),
            (&format!("Suite: s\nSHA256:\n {SHA} 1\n"), "expected"),
            ("\u{0}\u{1}garbage without colon\n", "line 1"),
        ] {
            let e = parse_release(text.as_bytes(), "s", now())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
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
        let mut release = ReleaseIndex::default();
        release
            .files
            .insert("main/binary-amd64/Packages".into(), (sha, 0));
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
