//! Packages from trusted npm registries:
//!
//! - `npm.metadata`: a packument (`<registry>/<name>`, `<registry>/@scope%2fname`, full
//!   or abbreviated); every version's `dist.tarball` URL is remembered with its
//!   `dist.integrity` (Subresource Integrity) and `dist.shasum`.
//! - `npm.tarball`: a remembered tarball URL; the content must match the integrity (its
//!   strongest algorithm, hashed while streaming) or, without one, the sha1 shasum; the
//!   spooled tarball's `package.json` must name the package and version.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use fetchgate_formats::npm::{Algorithm, Integrity, Version, inspect_tarball, parse_packument};
use fetchgate_formats::urls::percent_decode;
use fetchgate_storage::BodyDigest;
use sha2::Digest;

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
/// The most versions remembered per session.
const MAX_VERSIONS: usize = 4_000_000;

/// What the npm inspectors remember in a session: tarball URL → version.
#[derive(Debug, Default)]
pub struct NpmMemory {
    tarballs: HashMap<String, Version>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::config::Trust;

    fn integrity(algorithm: Algorithm, digest: &[u8]) -> Integrity {
        Integrity {
            algorithm,
            digests: vec![digest.to_vec()],
        }
    }

    #[test]
    fn digests_are_checked_against_integrity_then_shasum() {
        let body = BodyDigest {
            sha1: [1; 20],
            sha256: [2; 32],
            size: 0,
        };
        let check = TarballObserver::check_digest;
        let i512 = integrity(Algorithm::Sha512, &[3; 64]);
        assert_eq!(
            check(Some(&i512), None, Some(vec![3; 64]), &body),
            Ok("integrity")
        );
        assert!(check(Some(&i512), None, Some(vec![4; 64]), &body).is_err());
        let i256 = integrity(Algorithm::Sha256, &[2; 32]);
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
}
