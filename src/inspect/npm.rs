//! Packages from trusted npm registries:
//!
//! - `npm.metadata`: a packument (`<registry>/<name>`, `<registry>/@scope%2fname`, full
//!   or abbreviated); every version's `dist.tarball` URL is remembered with its
//!   `dist.integrity` (Subresource Integrity) and `dist.shasum`.
//! - `npm.tarball`: a remembered tarball URL; the content must match the integrity (its
//!   strongest algorithm, hashed while streaming) or, without one, the sha1 shasum; the
//!   spooled tarball's `package.json` must name the package and version.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use fetchgate_storage::BodyDigest;
use serde::Deserialize;
use sha2::Digest;

use super::config::{normalise_url, percent_decode};
use super::spool::{Buffer, Spool};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const METADATA_ID: &str = "npm.metadata";
pub const TARBALL_ID: &str = "npm.tarball";

/// The largest packument read (the largest on npmjs.org are tens of MiB).
const MAX_PACKUMENT: usize = 256 << 20;
/// The largest tarball spooled.
const MAX_TARBALL: u64 = 1 << 30;
/// The most a tarball is expanded while looking for `package.json`.
const MAX_TARBALL_EXPANDED: u64 = 4 << 30;
/// The largest `package.json` read.
const MAX_PACKAGE_JSON: u64 = 16 << 20;
/// The most versions remembered per session.
const MAX_VERSIONS: usize = 4_000_000;

/// What the npm inspectors remember in a session: tarball URL → version.
#[derive(Debug, Default)]
pub struct NpmMemory {
    tarballs: HashMap<String, Version>,
}

/// A version as a packument gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub version: String,
    pub integrity: Option<Integrity>,
    /// `dist.shasum`: sha1 of the tarball.
    pub shasum: Option<[u8; 20]>,
}

/// The strongest digest of an SRI string (`sha512-<base64> ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    pub algorithm: Algorithm,
    /// Any of these digests matches (SRI allows several of one algorithm).
    pub digests: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// Parses an SRI string; `None` when it names no algorithm this knows.
pub fn parse_integrity(sri: &str) -> Option<Integrity> {
    let mut best: Option<Integrity> = None;
    for token in sri.split_ascii_whitespace() {
        let Some((name, rest)) = token.split_once('-') else {
            continue;
        };
        let algorithm = match name {
            "sha1" => Algorithm::Sha1,
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => continue,
        };
        // Options after `?` are allowed by SRI and carry nothing for us.
        let encoded = rest.split('?').next().unwrap_or_default();
        let Ok(digest) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        match &mut best {
            Some(b) if b.algorithm == algorithm => b.digests.push(digest),
            Some(b) if b.algorithm > algorithm => {}
            _ => {
                best = Some(Integrity {
                    algorithm,
                    digests: vec![digest],
                })
            }
        }
    }
    best
}

#[derive(Deserialize)]
struct Packument {
    #[serde(default)]
    versions: HashMap<String, PackumentVersion>,
}

#[derive(Deserialize)]
struct PackumentVersion {
    name: Option<String>,
    version: Option<String>,
    dist: Option<Dist>,
}

#[derive(Deserialize)]
struct Dist {
    tarball: String,
    integrity: Option<String>,
    shasum: Option<String>,
}

/// A packument's versions for package `name`, by normalised tarball URL (relative
/// tarball URLs resolve against `url`); how many versions were skipped for having no
/// usable tarball URL.
pub fn parse_packument(
    text: &[u8],
    name: &str,
    url: &str,
) -> Result<(Vec<(String, Version)>, usize), String> {
    let packument: Packument =
        serde_json::from_slice(text).map_err(|e| format!("packument: {e}"))?;
    let base = url::Url::parse(url).map_err(|e| format!("packument URL: {e}"))?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for (key, v) in packument.versions {
        if v.name.as_deref().is_some_and(|n| n != name) {
            return Err(format!("version {key} is of package {:?}", v.name));
        }
        let tarball = v
            .dist
            .as_ref()
            .and_then(|d| base.join(&d.tarball).ok())
            .and_then(|u| normalise_url(&u));
        let (Some(tarball), Some(dist)) = (tarball, v.dist) else {
            skipped += 1;
            continue;
        };
        let shasum = dist.shasum.as_deref().and_then(|h| {
            let mut out = [0u8; 20];
            hex::decode_to_slice(h, &mut out).ok().map(|()| out)
        });
        out.push((
            tarball,
            Version {
                name: name.to_owned(),
                version: v.version.unwrap_or(key),
                integrity: dist.integrity.as_deref().and_then(parse_integrity),
                shasum,
            },
        ));
    }
    Ok((out, skipped))
}

/// The package whose packument a URL under a trusted registry is.
fn packument_name(session: &SessionInspection, req: &RequestInfo<'_>) -> Option<String> {
    if req.method != "GET" || req.url.contains('?') {
        return None;
    }
    session.trust.npm.iter().find_map(|base| {
        let rest = req.url.strip_prefix(base.as_str())?.strip_prefix('/')?;
        let name = percent_decode(rest);
        let valid = |part: &str| {
            !part.is_empty()
                && !part.starts_with(['.', '_'])
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        };
        let ok = match name.strip_prefix('@') {
            Some(scoped) => scoped
                .split_once('/')
                .is_some_and(|(scope, n)| valid(scope) && valid(n)),
            None => valid(&name),
        };
        ok.then_some(name)
    })
}

/// `npm.metadata`.
pub struct MetadataInspector;

impl Inspector for MetadataInspector {
    fn id(&self) -> &'static str {
        METADATA_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some(name) = packument_name(session, req) else {
            return RequestFinding::unknown();
        };
        RequestFinding::pending(Box::new(PackumentObserver {
            session: Arc::clone(session),
            url: req.url.to_owned(),
            name: name.clone(),
            body: Buffer::new(MAX_PACKUMENT),
        }))
        .note("package", name)
    }
}

struct PackumentObserver {
    session: Arc<SessionInspection>,
    url: String,
    name: String,
    body: Buffer,
}

impl BodyObserver for PackumentObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.body.write(bytes);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let parsed = self
            .body
            .into_expanded()
            .and_then(|text| parse_packument(&text, &self.name, &self.url));
        let (versions, skipped) = match parsed {
            Ok(v) => v,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let n = versions.len();
        let mut memory = self.session.npm.lock().unwrap_or_else(|p| p.into_inner());
        if memory.tarballs.len() + n > MAX_VERSIONS {
            return ResponseFinding::rejected(format!(
                "the session would remember more than {MAX_VERSIONS} versions"
            ));
        }
        memory.tarballs.extend(versions);
        let mut finding = ResponseFinding::approved().note("versions", n.to_string());
        if skipped > 0 {
            finding = finding.note("skipped-versions", skipped.to_string());
        }
        finding
    }
}

/// `npm.tarball`.
pub struct TarballInspector {
    pub spool: Arc<PathBuf>,
}

impl Inspector for TarballInspector {
    fn id(&self) -> &'static str {
        TARBALL_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        if req.method != "GET" {
            return RequestFinding::unknown();
        }
        let version = session
            .npm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tarballs
            .get(req.url)
            .cloned();
        let Some(version) = version else {
            return RequestFinding::unknown();
        };
        let hasher = version
            .integrity
            .as_ref()
            .and_then(|i| Hasher::for_algorithm(i.algorithm));
        let label = format!("{}@{}", version.name, version.version);
        RequestFinding::pending(Box::new(TarballObserver {
            version,
            hasher,
            spool: Spool::new(&self.spool, MAX_TARBALL),
        }))
        .note("package", label)
    }
}

/// A digest the pipeline does not compute itself, computed while streaming.
enum Hasher {
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn for_algorithm(algorithm: Algorithm) -> Option<Self> {
        match algorithm {
            Algorithm::Sha384 => Some(Hasher::Sha384(sha2::Sha384::new())),
            Algorithm::Sha512 => Some(Hasher::Sha512(sha2::Sha512::new())),
            Algorithm::Sha1 | Algorithm::Sha256 => None,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

struct TarballObserver {
    version: Version,
    hasher: Option<Hasher>,
    spool: Spool,
}

impl TarballObserver {
    /// The content against the packument: integrity first, else shasum.
    fn check_digest(
        integrity: Option<&Integrity>,
        shasum: Option<[u8; 20]>,
        streamed: Option<Vec<u8>>,
        body: &BodyDigest,
    ) -> Result<&'static str, String> {
        if let Some(integrity) = integrity {
            let got = match integrity.algorithm {
                Algorithm::Sha1 => body.sha1.to_vec(),
                Algorithm::Sha256 => body.sha256.to_vec(),
                Algorithm::Sha384 | Algorithm::Sha512 => streamed.unwrap_or_default(),
            };
            return if integrity.digests.contains(&got) {
                Ok("integrity")
            } else {
                Err(format!(
                    "{:?} digest does not match the packument's integrity",
                    integrity.algorithm
                ))
            };
        }
        match shasum {
            Some(s) if s == body.sha1 => Ok("shasum"),
            Some(_) => Err("sha1 does not match the packument's shasum".into()),
            None => Err("the packument gives no integrity or shasum for it".into()),
        }
    }
}

impl BodyObserver for TarballObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        self.spool.write(bytes);
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        let streamed = self.hasher.map(Hasher::finish);
        let matched = match Self::check_digest(
            self.version.integrity.as_ref(),
            self.version.shasum,
            streamed,
            body,
        ) {
            Ok(m) => m,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let checked = self
            .spool
            .into_reader()
            .and_then(|f| inspect_tarball(f, &self.version));
        match checked {
            Ok(metadata) => {
                let mut finding = ResponseFinding::approved()
                    .note("digest", format!("matches the packument's {matched}"));
                finding.metadata = metadata;
                finding
            }
            Err(e) => ResponseFinding::rejected(e),
        }
    }
}

#[derive(Deserialize)]
struct PackageJson {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    license: Option<serde_json::Value>,
    author: Option<serde_json::Value>,
}

/// Reads a tarball's `package.json`, checks it names `version`, and gives the report's
/// metadata from it.
pub fn inspect_tarball(
    reader: impl std::io::Read,
    version: &Version,
) -> Result<BTreeMap<String, String>, String> {
    let text = super::tarball::find_top_level_file(
        reader,
        "package.json",
        |_| true,
        MAX_TARBALL_EXPANDED,
        MAX_PACKAGE_JSON,
    )?
    .ok_or("no package.json at the top of the tarball")?;
    let package: PackageJson =
        serde_json::from_slice(&text).map_err(|e| format!("package.json: {e}"))?;
    if package.name.as_deref() != Some(version.name.as_str())
        || package.version.as_deref() != Some(version.version.as_str())
    {
        return Err(format!(
            "package.json names {}@{}, the packument {}@{}",
            package.name.as_deref().unwrap_or("no package"),
            package.version.as_deref().unwrap_or("no version"),
            version.name,
            version.version
        ));
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("name".to_owned(), version.name.clone());
    metadata.insert("version".to_owned(), version.version.clone());
    if let Some(d) = package.description.filter(|d| !d.is_empty()) {
        metadata.insert("description".into(), d);
    }
    let license = match package.license {
        Some(serde_json::Value::String(l)) => Some(l),
        Some(serde_json::Value::Object(o)) => {
            o.get("type").and_then(|t| t.as_str()).map(str::to_owned)
        }
        _ => None,
    };
    if let Some(l) = license {
        metadata.insert("license".into(), l);
    }
    let (author, email) = match package.author {
        Some(serde_json::Value::String(a)) => match a.split_once('<') {
            Some((who, rest)) => (
                Some(who.trim().to_owned()),
                rest.split_once('>').map(|(e, _)| e.trim().to_owned()),
            ),
            None => (Some(a.trim().to_owned()), None),
        },
        Some(serde_json::Value::Object(o)) => (
            o.get("name").and_then(|v| v.as_str()).map(str::to_owned),
            o.get("email").and_then(|v| v.as_str()).map(str::to_owned),
        ),
        _ => (None, None),
    };
    for (key, value) in [("author", author), ("author-email", email)] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            metadata.insert(key.into(), v);
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::config::Trust;
    use crate::inspect::tarball::tests::tar_gz;

    fn sri(algorithm: &str, digest: &[u8]) -> String {
        format!(
            "{algorithm}-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }

    fn version() -> Version {
        Version {
            name: "@fg/hello".into(),
            version: "1.0.0".into(),
            integrity: None,
            shasum: None,
        }
    }

    #[test]
    fn the_strongest_integrity_algorithm_is_used() {
        let i = parse_integrity(&format!(
            "{} {} bogus md5-AAAA",
            sri("sha1", &[1; 20]),
            sri("sha512", &[2; 64])
        ))
        .unwrap();
        assert_eq!(i.algorithm, Algorithm::Sha512);
        assert_eq!(i.digests, [vec![2u8; 64]]);
        assert_eq!(parse_integrity("md5-AAAA"), None);
        assert_eq!(parse_integrity("sha512-not*base64"), None);
    }

    #[test]
    fn digests_are_checked_against_integrity_then_shasum() {
        let body = BodyDigest {
            sha1: [1; 20],
            sha256: [2; 32],
            size: 0,
        };
        let check = TarballObserver::check_digest;
        let i512 = parse_integrity(&sri("sha512", &[3; 64])).unwrap();
        assert_eq!(
            check(Some(&i512), None, Some(vec![3; 64]), &body),
            Ok("integrity")
        );
        assert!(check(Some(&i512), None, Some(vec![4; 64]), &body).is_err());
        let i256 = parse_integrity(&sri("sha256", &[2; 32])).unwrap();
        assert_eq!(check(Some(&i256), None, None, &body), Ok("integrity"));
        assert_eq!(check(None, Some([1; 20]), None, &body), Ok("shasum"));
        assert!(check(None, Some([9; 20]), None, &body).is_err());
        assert!(
            check(None, None, None, &body)
                .unwrap_err()
                .contains("no integrity")
        );
    }

    #[test]
    fn packuments_give_tarball_urls_and_refuse_other_packages() {
        let text = format!(
            r#"{{"name":"@fg/hello","versions":{{"1.0.0":{{"name":"@fg/hello","version":"1.0.0","dist":{{"tarball":"/t/hello-1.0.0.tgz","integrity":"{}","shasum":"{}"}}}},"2.0.0":{{"name":"@fg/hello"}}}}}}"#,
            sri("sha512", &[5; 64]),
            hex::encode([6u8; 20])
        );
        let (versions, skipped) =
            parse_packument(text.as_bytes(), "@fg/hello", "https://r:443/@fg%2fhello").unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(versions[0].0, "https://r:443/t/hello-1.0.0.tgz");
        assert_eq!(versions[0].1.shasum, Some([6; 20]));
        let e = parse_packument(text.as_bytes(), "other", "https://r:443/other").unwrap_err();
        assert!(e.contains("@fg/hello"), "{e}");
        assert!(parse_packument(br#"{"versions": 3}"#, "x", "https://r:443/x").is_err());
    }

    #[test]
    fn packument_urls_are_recognised_under_a_trusted_registry() {
        let s = SessionInspection::new(Trust {
            npm: vec!["https://r:443".into()],
            ..Default::default()
        });
        let name =
            |url: &str| crate::inspect::with_request("GET", url, |req| packument_name(&s, req));
        assert_eq!(name("https://r:443/left-pad").as_deref(), Some("left-pad"));
        assert_eq!(
            name("https://r:443/@fg%2fhello").as_deref(),
            Some("@fg/hello")
        );
        assert_eq!(
            name("https://r:443/@fg/hello").as_deref(),
            Some("@fg/hello")
        );
        for other in [
            "https://r:443/-/npm/v1/security/audits",
            "https://r:443/a/b",
            "https://r:443/.hidden",
            "https://r:443/x?write=true",
            "https://other:443/left-pad",
        ] {
            assert_eq!(name(other), None, "{other}");
        }
    }

    #[test]
    fn package_json_must_name_the_version() {
        let json = br#"{"name":"@fg/hello","version":"1.0.0","license":{"type":"ISC"},"author":"Jo Tester <jo@example.org> (https://example.org)","description":"hi"}"#;
        let t = tar_gz(&[("package/package.json", json.as_slice())]);
        let m = inspect_tarball(&t[..], &version()).unwrap();
        assert_eq!(m["license"], "ISC");
        assert_eq!(m["author"], "Jo Tester");
        assert_eq!(m["author-email"], "jo@example.org");
        let other = Version {
            version: "2.0.0".into(),
            ..version()
        };
        assert!(
            inspect_tarball(&t[..], &other)
                .unwrap_err()
                .contains("names @fg/hello@1.0.0")
        );
        let bad = tar_gz(&[("package/package.json", b"{".as_slice())]);
        assert!(
            inspect_tarball(&bad[..], &version())
                .unwrap_err()
                .contains("package.json")
        );
        let none = tar_gz(&[("package/index.js", b"".as_slice())]);
        assert!(
            inspect_tarball(&none[..], &version())
                .unwrap_err()
                .contains("no package.json")
        );
    }

    #[test]
    fn mutated_packuments_and_tarballs_never_panic() {
        let packument = format!(
            r#"{{"versions":{{"1.0.0":{{"name":"@fg/hello","version":"1.0.0","dist":{{"tarball":"/t.tgz","integrity":"{}","shasum":"{}"}}}}}}}}"#,
            sri("sha512", &[5; 64]),
            hex::encode([6u8; 20])
        );
        for m in crate::inspect::mutations(packument.as_bytes(), 300) {
            let _ = parse_packument(&m, "@fg/hello", "https://r:443/@fg%2fhello");
            let _ = parse_integrity(&String::from_utf8_lossy(&m));
        }
        let json =
            br#"{"name":"@fg/hello","version":"1.0.0","author":{"name":"Jo","email":"jo@x"}}"#;
        let t = tar_gz(&[("package/package.json", json.as_slice())]);
        for m in crate::inspect::mutations(&t, 300) {
            let _ = inspect_tarball(&m[..], &version());
        }
    }
}
