//! Python packages from trusted simple indexes (PEP 503 / 691):
//!
//! - `pip.simple-index`: a project page under a trusted index base URL; the files it
//!   lists are remembered with their sha256 (the `#sha256=` fragment or `hashes`) and
//!   the hash of their PEP 658 metadata.
//! - `pip.wheel`: a listed `.whl`, spooled while it streams; its sha256 must be the
//!   page's, every file must match `RECORD`, and `METADATA` must name it. A wheel
//!   verified so before (in any session), listed with the same sha256, is checked by
//!   that sha256 alone, and one that starts while another download of it is checked
//!   takes that verdict ([`Verified`]).
//! - `pip.sdist`: a listed `.tar.gz`, spooled; sha256 as above, `PKG-INFO` must name it.
//! - `pip.metadata`: a listed file's `.metadata` (PEP 658), checked against the hash the
//!   page gave for it.
//!
//! A file is recognised by its URL having been listed on a project page fetched in the
//! same session, wherever it is hosted; an unlisted file under a trusted index is
//! rejected at request time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fetchgate_storage::BodyDigest;

use super::spool::{Buffer, Spool};
use super::verified::{Begun, Checking, Leader, Verified};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};
use fetchgate_formats::pip::index::{self, IndexedFile};
use fetchgate_formats::pip::metadata::CoreMetadata;
use fetchgate_formats::pip::{metadata, sdist, wheel};

pub const INDEX_ID: &str = "pip.simple-index";
pub const WHEEL_ID: &str = "pip.wheel";
pub const SDIST_ID: &str = "pip.sdist";
pub const METADATA_ID: &str = "pip.metadata";

/// The MIME type given to wheels.
pub const WHEEL_MIME: &str = "application/x-wheel+zip";

/// The largest distribution file spooled.
const MAX_DISTRIBUTION: u64 = 4 << 30;
/// The most listed files remembered per session.
const MAX_FILES: usize = 2_000_000;

/// What the pip inspectors remember in a session: the files of the project pages
/// fetched, by URL.
#[derive(Debug, Default)]
pub struct PipMemory {
    files: HashMap<String, IndexedFile>,
}

/// The trusted index whose project page this is, and the project.
fn project_page<'r>(session: &SessionInspection, req: &RequestInfo<'r>) -> Option<&'r str> {
    if req.method != "GET" || req.url.contains('?') {
        return None;
    }
    session.trust.pip.iter().find_map(|base| {
        let rest = req.url.strip_prefix(base.as_str())?.strip_prefix('/')?;
        let project = rest.strip_suffix('/').unwrap_or(rest);
        (!project.is_empty() && !project.contains('/') && project != "." && project != "..")
            .then_some(project)
    })
}

/// The file a project page of this session listed at this URL.
fn listed(session: &SessionInspection, url: &str) -> Option<IndexedFile> {
    session
        .pip
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .files
        .get(url)
        .cloned()
}

/// Whether a URL is under a trusted index (where every file must be listed).
fn under_trusted_index(session: &SessionInspection, url: &str) -> bool {
    session.trust.pip.iter().any(|base| {
        url.strip_prefix(base.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// `pip.simple-index`.
pub struct IndexInspector;

impl Inspector for IndexInspector {
    fn id(&self) -> &'static str {
        INDEX_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some(project) = project_page(session, req) else {
            return RequestFinding::unknown();
        };
        RequestFinding::pending(Box::new(PageObserver {
            session: Arc::clone(session),
            url: req.url.to_owned(),
            body: Buffer::new(index::MAX_PAGE),
        }))
        .note("project", project)
    }
}

struct PageObserver {
    session: Arc<SessionInspection>,
    url: String,
    body: Buffer,
}

impl BodyObserver for PageObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.body.write(bytes);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let files = match self
            .body
            .into_expanded()
            .and_then(|page| index::parse_page(&page, &self.url))
        {
            Ok(f) => f,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let n = files.len();
        let mut memory = self.session.pip.lock().unwrap_or_else(|p| p.into_inner());
        if memory.files.len() + n > MAX_FILES {
            return ResponseFinding::rejected(format!(
                "the session would remember more than {MAX_FILES} files"
            ));
        }
        memory
            .files
            .extend(files.into_iter().map(|f| (f.url.clone(), f)));
        ResponseFinding::approved().note("files", n.to_string())
    }
}

/// What the report says of a wheel verified in full, remembered by its sha256.
#[derive(Debug)]
pub struct VerifiedWheel {
    metadata: CoreMetadata,
    platform: String,
    /// Files checked against `RECORD`.
    checked: usize,
}

impl VerifiedWheel {
    /// The approval, with `record` as the `record` annotation.
    fn finding(&self, record: String) -> ResponseFinding {
        let mut finding = ResponseFinding::approved().note("record", record);
        finding.metadata = self.metadata.report();
        finding
            .metadata
            .insert("architecture".into(), self.platform.clone());
        finding.metadata.insert("type".into(), WHEEL_MIME.into());
        finding
    }

    /// The length of its text, which bounds what remembering it costs.
    fn text_len(&self) -> usize {
        let m = &self.metadata;
        [&m.license, &m.summary, &m.author, &m.author_email]
            .into_iter()
            .flatten()
            .chain([&m.name, &m.version, &self.platform])
            .map(String::len)
            .sum()
    }
}

/// What a distribution inspector reads, and how.
enum Distribution {
    /// Wheels verified before are remembered here.
    Wheel(Arc<Verified<VerifiedWheel>>),
    Sdist,
}

impl Distribution {
    fn id(&self) -> &'static str {
        match self {
            Distribution::Wheel(_) => WHEEL_ID,
            Distribution::Sdist => SDIST_ID,
        }
    }

    fn suffix(&self) -> &'static str {
        match self {
            Distribution::Wheel(_) => ".whl",
            Distribution::Sdist => ".tar.gz",
        }
    }
}

/// `pip.wheel` and `pip.sdist`: the same request rule, different readers.
pub struct DistributionInspector {
    kind: Distribution,
    spool: Arc<PathBuf>,
}

impl DistributionInspector {
    /// `pip.wheel`, remembering up to `verified_cache` wheels verified in full.
    pub fn wheel(spool: Arc<PathBuf>, verified_cache: usize) -> Self {
        DistributionInspector {
            kind: Distribution::Wheel(Arc::new(Verified::new("wheel", verified_cache))),
            spool,
        }
    }

    pub fn sdist(spool: Arc<PathBuf>) -> Self {
        DistributionInspector {
            kind: Distribution::Sdist,
            spool,
        }
    }

    /// The observer of a listed file's download.
    fn observer(&self, file: IndexedFile) -> Box<dyn BodyObserver> {
        let spool = || Spool::new(&self.spool, MAX_DISTRIBUTION);
        match &self.kind {
            Distribution::Wheel(verified) => {
                let role = match file.sha256.map(|h| verified.begin(&file.filename, h)) {
                    Some(Begun::Remembered(wheel)) => {
                        return Box::new(KnownWheelObserver { file, wheel });
                    }
                    Some(Begun::Checking(checking)) => Role::Follow(checking),
                    Some(Begun::Check(leader)) => Role::Check(Some(leader)),
                    // Rejected at its end: the page gives no sha256.
                    None => Role::Check(None),
                };
                Box::new(WheelObserver::new(
                    file,
                    spool(),
                    Arc::clone(verified),
                    role,
                ))
            }
            Distribution::Sdist => Box::new(SdistObserver {
                file,
                spool: spool(),
            }),
        }
    }
}

impl Inspector for DistributionInspector {
    fn id(&self) -> &'static str {
        self.kind.id()
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        if req.method != "GET" || !req.url.ends_with(self.kind.suffix()) {
            return RequestFinding::unknown();
        }
        match listed(session, req.url) {
            Some(file) => RequestFinding::pending(self.observer(file)),
            None if under_trusted_index(session, req.url) => RequestFinding::rejected(
                "not listed on any project page of a trusted index fetched in this session",
            ),
            None => RequestFinding::unknown(),
        }
    }
}

/// The longest a download waits for the check of the same wheel another download is
/// doing, before checking its own copy.
const FOLLOW_LIMIT: Duration = Duration::from_secs(10);

/// Which download checks a wheel not verified before.
enum Role {
    /// This one, for those that start meanwhile too (`None`: nobody waits for it).
    Check(Option<Leader<VerifiedWheel>>),
    /// Another one: take its verdict, or check this copy if there is none.
    Follow(Arc<Checking<VerifiedWheel>>),
}

/// A wheel not verified before: spooled; when this download checks it, its files are
/// expanded and hashed from the spool as it is written, the rest checked at its end.
struct WheelObserver {
    file: IndexedFile,
    spool: Spool,
    /// The thread expanding and hashing the files as the wheel streams in.
    streaming: Option<std::thread::JoinHandle<wheel::Streamed>>,
    verified: Arc<Verified<VerifiedWheel>>,
    role: Role,
}

impl WheelObserver {
    fn new(
        file: IndexedFile,
        mut spool: Spool,
        verified: Arc<Verified<VerifiedWheel>>,
        role: Role,
    ) -> Self {
        let tail = match role {
            Role::Check(_) => spool.tail(),
            Role::Follow(_) => None,
        };
        let streaming = tail.and_then(|tail| {
            std::thread::Builder::new()
                .name("wheel-stream".into())
                .spawn(move || {
                    wheel::stream_entries(std::io::BufReader::with_capacity(256 << 10, tail))
                })
                .inspect_err(|e| tracing::warn!(error = %e, "cannot start the wheel streamer; the wheel is expanded at its end"))
                .ok()
        });
        WheelObserver {
            file,
            spool,
            streaming,
            verified,
            role,
        }
    }
}

/// The page's sha256 for a file must be the content's.
fn check_listed_hash(expected: Option<[u8; 32]>, body: &BodyDigest) -> Result<(), String> {
    match expected {
        None => Err("the project page gives no sha256 for it".into()),
        Some(h) if h != body.sha256 => Err(format!(
            "sha256 {} does not match the project page's {}",
            hex::encode(body.sha256),
            hex::encode(h)
        )),
        Some(_) => Ok(()),
    }
}

impl BodyObserver for WheelObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.spool.write(bytes);
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        if let Err(e) = check_listed_hash(self.file.sha256, body) {
            return ResponseFinding::rejected(e);
        }
        if let Role::Follow(checking) = &self.role
            && let Some(wheel) = checking.wait(FOLLOW_LIMIT)
        {
            return wheel
                .finding(format!(
                    "{} files checked by another download of this sha256 at the same time",
                    wheel.checked
                ))
                .note("sha256", "matches the project page");
        }
        let file = match self.spool.into_reader() {
            Ok(f) => f,
            Err(e) => return ResponseFinding::rejected(e),
        };
        // The spool is complete: the streamer reads to its end and stops.
        let streamed = self
            .streaming
            .and_then(|s| s.join().ok())
            .unwrap_or_default();
        let name = &self.file.filename;
        let checked = wheel::parse_name(name).and_then(|w| {
            let got = wheel::inspect_streamed(file, &w, &streamed)?;
            Ok((got, w.platform))
        });
        let (got, platform) = match checked {
            Ok(c) => c,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let verified = VerifiedWheel {
            metadata: got.metadata,
            platform,
            checked: got.checked,
        };
        let finding = verified.finding(format!(
            "{} files checked, {} of them while the wheel streamed",
            got.checked, got.streamed
        ));
        let len = verified.text_len();
        match self.role {
            Role::Check(Some(leader)) => leader.approve(verified, len),
            _ => self.verified.insert(name, body.sha256, verified, len),
        }
        finding.note("sha256", "matches the project page")
    }
}

/// A wheel of a sha256 verified in full before: only its sha256 is checked.
struct KnownWheelObserver {
    file: IndexedFile,
    wheel: Arc<VerifiedWheel>,
}

impl BodyObserver for KnownWheelObserver {
    fn chunk(&mut self, _bytes: &[u8]) {}

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        if let Err(e) = check_listed_hash(self.file.sha256, body) {
            return ResponseFinding::rejected(e);
        }
        self.wheel
            .finding(format!(
                "{} files checked when a download of this sha256 was first verified",
                self.wheel.checked
            ))
            .note("sha256", "matches the project page")
    }
}

/// An sdist: spooled, `PKG-INFO` read at its end.
struct SdistObserver {
    file: IndexedFile,
    spool: Spool,
}

impl BodyObserver for SdistObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.spool.write(bytes);
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        if let Err(e) = check_listed_hash(self.file.sha256, body) {
            return ResponseFinding::rejected(e);
        }
        let checked = self
            .spool
            .into_reader()
            .and_then(|file| sdist::inspect(file, &self.file.filename));
        match checked {
            Ok(m) => {
                let mut finding = ResponseFinding::approved();
                finding.metadata = m.report();
                finding.note("sha256", "matches the project page")
            }
            Err(e) => ResponseFinding::rejected(e),
        }
    }
}

/// `pip.metadata`.
pub struct MetadataInspector;

impl Inspector for MetadataInspector {
    fn id(&self) -> &'static str {
        METADATA_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some(distribution_url) = req.url.strip_suffix(".metadata") else {
            return RequestFinding::unknown();
        };
        if req.method != "GET" {
            return RequestFinding::unknown();
        }
        match listed(session, distribution_url).filter(|f| f.metadata.is_some()) {
            Some(file) => RequestFinding::pending(Box::new(MetadataObserver {
                file,
                text: Buffer::new(metadata::MAX_METADATA as usize),
            })),
            None if under_trusted_index(session, req.url) => RequestFinding::rejected(
                "no project page fetched in this session lists metadata for this file",
            ),
            None => RequestFinding::unknown(),
        }
    }
}

struct MetadataObserver {
    file: IndexedFile,
    text: Buffer,
}

impl BodyObserver for MetadataObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.text.write(bytes);
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        let text = match self.text.into_bytes() {
            Ok(t) => t,
            Err(e) => return ResponseFinding::rejected(e),
        };
        if let Err(e) = check_listed_hash(self.file.metadata.flatten(), body) {
            return ResponseFinding::rejected(e);
        }
        let name = &self.file.filename;
        let named = if name.ends_with(".whl") {
            wheel::parse_name(name).map(|w| (w.distribution, w.version))
        } else {
            sdist::parse_name(name)
        };
        let checked = named.and_then(|(n, v)| {
            let m = metadata::parse(&text)?;
            m.matches(&n, &v)?;
            Ok(m)
        });
        match checked {
            Ok(m) => {
                let mut finding =
                    ResponseFinding::approved().note("sha256", "matches the project page");
                finding.metadata = m.report();
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

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn session() -> Arc<SessionInspection> {
        Arc::new(SessionInspection::new(Trust {
            pip: vec!["https://idx:443/simple".into()],
            ..Default::default()
        }))
    }

    fn opinion(inspector: &dyn Inspector, s: &Arc<SessionInspection>, url: &str) -> String {
        crate::inspect::with_request("GET", url, |req| {
            format!("{:?}", inspector.request(req, s).opinion)
        })
    }

    #[test]
    fn files_are_recognised_once_a_project_page_listed_them() {
        let s = session();
        let spool = Arc::new(std::env::temp_dir());
        let wheel = DistributionInspector::wheel(Arc::clone(&spool), 0);
        let url = "https://files:443/p/fg_hello-1.0-py3-none-any.whl";
        assert_eq!(
            opinion(&IndexInspector, &s, "https://idx:443/simple/fg-hello/"),
            "Pending"
        );
        assert_eq!(
            opinion(&IndexInspector, &s, "https://idx:443/simple/a/b"),
            "Unknown"
        );
        assert_eq!(opinion(&wheel, &s, url), "Unknown");
        assert!(opinion(&wheel, &s, "https://idx:443/simple/x.whl").starts_with("Rejected"));

        let page = format!("<a href=\"{url}#sha256={SHA}\" data-core-metadata=\"true\">w</a>");
        assert_eq!(list(&s, &page), crate::inspect::ResponseOpinion::Approved);
        assert_eq!(opinion(&wheel, &s, url), "Pending");
        assert_eq!(
            opinion(&MetadataInspector, &s, &format!("{url}.metadata")),
            "Pending"
        );
        let sdist = DistributionInspector::sdist(spool);
        assert_eq!(opinion(&sdist, &s, url), "Unknown");
    }

    #[test]
    fn a_listed_file_must_have_the_pages_sha256() {
        let body = BodyDigest {
            sha1: [0; 20],
            sha256: [1; 32],
            size: 0,
        };
        assert!(
            check_listed_hash(None, &body)
                .unwrap_err()
                .contains("no sha256")
        );
        assert!(
            check_listed_hash(Some([2; 32]), &body)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(check_listed_hash(Some([1; 32]), &body).is_ok());
    }

    /// The session fetches fg-hello's project page, `page`: its verdict.
    fn list(s: &Arc<SessionInspection>, page: &str) -> crate::inspect::ResponseOpinion {
        let mut observer =
            crate::inspect::with_request("GET", "https://idx:443/simple/fg-hello/", |req| {
                IndexInspector.request(req, s).observer.unwrap()
            });
        observer.chunk(page.as_bytes());
        let digest = BodyDigest {
            sha1: [0; 20],
            sha256: [0; 32],
            size: 0,
        };
        observer.finish(&digest).opinion
    }

    /// A session whose project page listed `url` with `body`'s sha256.
    fn listing(url: &str, body: &[u8]) -> Arc<SessionInspection> {
        use sha2::Digest;
        let s = session();
        let sha256 = hex::encode(sha2::Sha256::digest(body));
        let page = format!("<a href=\"{url}#sha256={sha256}\">w</a>");
        assert_eq!(list(&s, &page), crate::inspect::ResponseOpinion::Approved);
        s
    }

    #[test]
    fn a_wheel_fetched_twice_at_once_is_checked_once_unless_that_download_fails() {
        use sha2::Digest;
        let body = fetchgate_formats::testing::wheel(
            "fg_hello-1.0.dist-info",
            &[
                ("fg_hello/__init__.py", b"print('hello')\n"),
                (
                    "fg_hello-1.0.dist-info/METADATA",
                    b"Metadata-Version: 2.1\nName: fg-hello\nVersion: 1.0\n",
                ),
            ],
        );
        let digest = BodyDigest {
            sha1: [0; 20],
            sha256: sha2::Sha256::digest(&body).into(),
            size: body.len() as u64,
        };
        let url = "https://files:443/p/fg_hello-1.0-py3-none-any.whl";
        let s = listing(url, &body);
        let spool = Arc::new(std::env::temp_dir());
        let record = |finding: ResponseFinding| {
            assert_eq!(finding.opinion, crate::inspect::ResponseOpinion::Approved);
            finding.annotations["record"].clone()
        };

        let wheels = DistributionInspector::wheel(Arc::clone(&spool), 16);
        let begin = || {
            crate::inspect::with_request("GET", url, |req| {
                wheels.request(req, &s).observer.unwrap()
            })
        };
        let (mut first, mut second) = (begin(), begin());
        first.chunk(&body);
        second.chunk(&body);
        assert!(record(first.finish(&digest)).starts_with("2 files checked, "));
        assert_eq!(
            record(second.finish(&digest)),
            "2 files checked by another download of this sha256 at the same time"
        );

        // The download doing the check fails: the other checks its own copy.
        let wheels = DistributionInspector::wheel(spool, 16);
        let begin = || {
            crate::inspect::with_request("GET", url, |req| {
                wheels.request(req, &s).observer.unwrap()
            })
        };
        let (first, mut second) = (begin(), begin());
        second.chunk(&body);
        drop(first);
        assert_eq!(
            record(second.finish(&digest)),
            "2 files checked, 0 of them while the wheel streamed"
        );
    }
}
