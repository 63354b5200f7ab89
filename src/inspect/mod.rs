//! Inspectors: what is this download, and may it pass?
//!
//! Each inspector has an id and gives, in [declared order](INSPECTOR_IDS), a request
//! opinion from the method, URL and headers ([`RequestOpinion`]: `Pending` means "I
//! recognise this and will verify it"); an inspector that wants the body returns a
//! [`BodyObserver`], which sees the response body chunk by chunk while it streams to the
//! builder and finally gives a response opinion ([`ResponseOpinion`]) with annotations
//! and artifact metadata. `default` (type sniffing) always runs last.
//!
//! Inspectors may remember what they verified for the rest of the session (the digests
//! of a signed Release file, the packages of a verified Packages index, the files of a
//! Python index's project pages, a cargo registry's
//! checksums, an npm packument's integrity strings): that state is
//! [`SessionInspection`], kept in memory keyed by session id and never persisted.
//!
//! The pipeline (`proxy::pipeline`) asks [`Inspectors::begin`] at request time, feeds
//! the body, and calls [`DownloadInspection::finish`] before releasing the last chunk;
//! the policy (refuse, cut off, or only warn) is the pipeline's business, and the
//! result rule is `audit::report::approved`. Nothing here knows about sockets.

pub mod apt;
pub mod cargo;
pub mod config;
pub mod copyright;
pub mod deb;
pub mod git;
pub mod gomod;
pub mod npm;
pub mod openpgp;
pub mod pip;
pub mod sniff;
pub mod spool;
pub mod verified;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fetchgate_storage::{BodyDigest, Inspection, Inspections, Opinion, SessionHeader, SessionId};
use lru::LruCache;

use self::config::Trust;
use crate::debtags::cache::PackagesCache;

/// The inspectors, in the order they run (the report's `inspectors` list).
pub const INSPECTOR_IDS: [&str; 14] = [
    apt::RELEASE_ID,
    apt::PACKAGES_ID,
    deb::ID,
    pip::INDEX_ID,
    pip::WHEEL_ID,
    pip::SDIST_ID,
    pip::METADATA_ID,
    cargo::INDEX_ID,
    cargo::CRATE_ID,
    npm::METADATA_ID,
    npm::TARBALL_ID,
    gomod::ID,
    git::ID,
    sniff::ID,
];

/// A request as inspectors see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    /// Normalised: `scheme://host:port/path?query`.
    pub url: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// An inspector's opinion on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOpinion {
    /// Recognised; the response will be verified.
    Pending,
    Unknown,
    Rejected(String),
}

/// An inspector's opinion on a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOpinion {
    Approved,
    Unknown,
    Rejected(String),
}

/// What an inspector concluded about a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFinding {
    pub opinion: ResponseOpinion,
    pub annotations: BTreeMap<String, String>,
    /// Artifact metadata (`name`, `version`, `type`, ...); keys it cannot fill are absent.
    pub metadata: BTreeMap<String, String>,
}

impl ResponseFinding {
    pub fn approved() -> Self {
        Self::with(ResponseOpinion::Approved)
    }

    pub fn unknown() -> Self {
        Self::with(ResponseOpinion::Unknown)
    }

    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::with(ResponseOpinion::Rejected(reason.into()))
    }

    fn with(opinion: ResponseOpinion) -> Self {
        ResponseFinding {
            opinion,
            annotations: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Adds an annotation.
    pub fn note(mut self, key: &str, value: impl Into<String>) -> Self {
        self.annotations.insert(key.to_owned(), value.into());
        self
    }
}

/// Watches one response body as it streams (and the request body, before it).
pub trait BodyObserver: Send + Sync {
    /// The next chunk of the request body (a POST's); most observers ignore it.
    fn request_chunk(&mut self, _bytes: &[u8]) {}
    /// The next chunk of the body.
    fn chunk(&mut self, bytes: &[u8]);
    /// The body is complete (`body` is its digest); the verdict.
    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding;
}

/// An inspector's answer at request time.
pub struct RequestFinding {
    pub opinion: RequestOpinion,
    pub annotations: BTreeMap<String, String>,
    /// Set when the inspector wants to see the response body.
    pub observer: Option<Box<dyn BodyObserver>>,
}

impl RequestFinding {
    /// Not this inspector's business.
    pub fn unknown() -> Self {
        RequestFinding {
            opinion: RequestOpinion::Unknown,
            annotations: BTreeMap::new(),
            observer: None,
        }
    }

    /// Recognised; `observer` will verify the body.
    pub fn pending(observer: Box<dyn BodyObserver>) -> Self {
        RequestFinding {
            opinion: RequestOpinion::Pending,
            annotations: BTreeMap::new(),
            observer: Some(observer),
        }
    }

    pub fn rejected(reason: impl Into<String>) -> Self {
        RequestFinding {
            opinion: RequestOpinion::Rejected(reason.into()),
            annotations: BTreeMap::new(),
            observer: None,
        }
    }

    /// Adds an annotation.
    pub fn note(mut self, key: &str, value: impl Into<String>) -> Self {
        self.annotations.insert(key.to_owned(), value.into());
        self
    }
}

/// One inspector.
pub trait Inspector: Send + Sync {
    /// The id shown in the report.
    fn id(&self) -> &'static str;
    /// The opinion on a request, and an observer when the body is of interest.
    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding;
}

/// What a session's inspectors trust and remember. Lives in memory only: a daemon
/// restart forgets it (later index files of the session are then rejected until the
/// Release file is fetched again).
pub struct SessionInspection {
    pub trust: Trust,
    pub apt: Mutex<apt::AptMemory>,
    pub pip: Mutex<pip::PipMemory>,
    pub cargo: Mutex<cargo::CargoMemory>,
    pub npm: Mutex<npm::NpmMemory>,
    /// What strict would have blocked, had this session been strict.
    pub overlooked: Mutex<Overlooked>,
}

impl SessionInspection {
    /// A session's state before any request: what it trusts, nothing remembered.
    pub fn new(trust: Trust) -> Self {
        SessionInspection {
            trust,
            apt: Mutex::default(),
            pip: Mutex::default(),
            cargo: Mutex::default(),
            npm: Mutex::default(),
            overlooked: Mutex::default(),
        }
    }
}

/// Where strict would have stopped a request that a permissive session let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictAction {
    /// Refused at request time: no inspector recognised it, or one rejected it.
    Refuse,
    /// Cut off at the last chunk: the response was not approved.
    CutOff,
}

/// A permissive session's tally of what strict would have blocked, logged once when
/// the session finishes rather than once per request (each download's own result is in
/// the report).
#[derive(Debug, Default)]
pub struct Overlooked {
    refused: u64,
    cut_off: u64,
    /// The first one, as an example: URL and reason.
    first: Option<(String, String)>,
}

impl Overlooked {
    fn note(&mut self, action: StrictAction, url: &str, reason: &str) {
        match action {
            StrictAction::Refuse => self.refused += 1,
            StrictAction::CutOff => self.cut_off += 1,
        }
        self.first
            .get_or_insert_with(|| (url.to_owned(), reason.to_owned()));
    }
}

/// The inspector chain and every live session's inspection state.
pub struct Inspectors {
    chain: Vec<Box<dyn Inspector>>,
    /// Indices into `chain` in inspector id order: the order a download's
    /// [`Inspections`] keep, so its request opinions are placed, not sorted.
    by_id: Vec<usize>,
    global: Trust,
    /// Live sessions' state, forgotten when they finish ([`Self::forget`]); beyond
    /// [`MAX_SESSIONS`] the least recently used goes (its later index files are then
    /// refused until its Release is fetched again).
    sessions: Mutex<LruCache<SessionId, Arc<SessionInspection>>>,
}

/// Sessions whose inspection state is kept.
const MAX_SESSIONS: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

impl Inspectors {
    /// The chain in [`INSPECTOR_IDS`] order, trusting `global` (from `inspectors.yaml`)
    /// in every session; index files are spooled under `spool` while they stream, the
    /// debtags of verified Packages indexes are fed to `debtags`, and up to
    /// `verified_cache` wheels verified in full and `.deb` licenses are remembered
    /// ([`verified`]).
    pub fn new(
        global: Trust,
        spool: PathBuf,
        debtags: Option<Arc<PackagesCache>>,
        verified_cache: usize,
    ) -> Self {
        let spool = Arc::new(spool);
        let chain: Vec<Box<dyn Inspector>> = vec![
            Box::new(apt::ReleaseInspector),
            Box::new(apt::PackagesInspector {
                spool: Arc::clone(&spool),
                debtags,
            }),
            Box::new(deb::DebInspector::new(verified_cache)),
            Box::new(pip::IndexInspector),
            Box::new(pip::DistributionInspector::wheel(
                Arc::clone(&spool),
                verified_cache,
            )),
            Box::new(pip::DistributionInspector::sdist(Arc::clone(&spool))),
            Box::new(pip::MetadataInspector),
            Box::new(cargo::IndexInspector),
            Box::new(cargo::CrateInspector {
                spool: Arc::clone(&spool),
            }),
            Box::new(npm::MetadataInspector),
            Box::new(npm::TarballInspector {
                spool: Arc::clone(&spool),
            }),
            Box::new(gomod::ModuleInspector {
                spool: Arc::clone(&spool),
            }),
            Box::new(git::SmartHttpInspector),
            Box::new(sniff::DefaultInspector),
        ];
        let mut by_id: Vec<usize> = (0..chain.len()).collect();
        by_id.sort_by_key(|&i| chain[i].id());
        Inspectors {
            chain,
            by_id,
            global,
            sessions: Mutex::new(LruCache::new(MAX_SESSIONS)),
        }
    }

    /// The session's inspection state, created on its first request from the global
    /// trust plus its own `inspectors-configuration`.
    fn session(&self, header: &SessionHeader) -> Arc<SessionInspection> {
        let lock = || self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = lock().get(&header.id) {
            return Arc::clone(state);
        }
        // Keys are parsed (and key files read) outside the lock; should two first
        // requests race, the first state stored wins.
        let mut trust = self.global.clone();
        if let Some(text) = &header.inspectors_configuration {
            match config::SessionConfig::from_json_text(text) {
                Ok(extra) => trust.extend(extra.into_trust()),
                Err(e) => {
                    tracing::error!(session = %header.id, error = %e, "inspectors-configuration unusable; only the daemon's trusted origins apply");
                }
            }
        }
        let fresh = Arc::new(SessionInspection::new(trust));
        Arc::clone(lock().get_or_insert(header.id, || fresh))
    }

    /// Forgets a session that will serve no more requests (downloads in flight keep
    /// their own reference).
    ///
    /// A permissive session's summary of what strict would have blocked is logged here.
    pub fn forget(&self, id: SessionId) {
        let state = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(&id);
        let Some(state) = state else { return };
        let overlooked = state.overlooked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((url, reason)) = &overlooked.first {
            tracing::warn!(
                session = %id,
                would_refuse = overlooked.refused,
                would_cut_off = overlooked.cut_off,
                first_url = %url,
                first_reason = %reason,
                "permissive session finished: strict would have blocked some of its requests"
            );
        }
    }

    /// Notes that a permissive session let through what strict would have blocked
    /// (per request at debug level; summed up at [`Self::forget`]).
    pub fn overlooked(&self, id: SessionId, action: StrictAction, url: &str, reason: &str) {
        tracing::debug!(session = %id, ?action, %url, %reason, "permissive session: strict would block this");
        let state = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(Arc::clone);
        if let Some(state) = state {
            state
                .overlooked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .note(action, url, reason);
        }
    }

    /// Every inspector's request opinion, in order.
    pub fn begin(&self, header: &SessionHeader, req: &RequestInfo<'_>) -> DownloadInspection {
        let session = self.session(header);
        let mut request: Vec<Option<(&'static str, Inspection)>> =
            Vec::with_capacity(self.chain.len());
        let mut observers = Vec::new();
        let mut pending = false;
        let mut rejected = Vec::new();
        for inspector in &self.chain {
            let finding = inspector.request(req, &session);
            let (opinion, reason) = match finding.opinion {
                RequestOpinion::Pending => {
                    pending = true;
                    (Opinion::Pending, None)
                }
                RequestOpinion::Unknown => (Opinion::Unknown, None),
                RequestOpinion::Rejected(r) => {
                    rejected.push(format!("{}: {r}", inspector.id()));
                    (Opinion::Rejected, Some(r))
                }
            };
            request.push(Some((
                inspector.id(),
                Inspection {
                    opinion,
                    reason,
                    annotations: finding.annotations,
                },
            )));
            if let Some(o) = finding.observer {
                observers.push((inspector.id(), o));
            }
        }
        let refusal = if !rejected.is_empty() {
            Some(rejected.join("; "))
        } else if !pending {
            Some(format!(
                "no inspector recognises {} {}: the origin is not a trusted one in this session",
                req.method, req.url
            ))
        } else {
            None
        };
        DownloadInspection {
            request: self
                .by_id
                .iter()
                .filter_map(|&i| request.get_mut(i).and_then(Option::take))
                .collect(),
            observers,
            recognised: pending,
            refusal,
        }
    }
}

/// One download's inspection, from request to verdict.
pub struct DownloadInspection {
    request: Inspections,
    observers: Vec<(&'static str, Box<dyn BodyObserver>)>,
    /// Some inspector marked the request Pending.
    recognised: bool,
    refusal: Option<String>,
}

/// The inspectors' conclusions on a response.
#[derive(Debug, Default)]
pub struct Verdict {
    pub response: Inspections,
    pub metadata: BTreeMap<String, String>,
}

impl DownloadInspection {
    /// Why a strict session refuses this request, if it does: an inspector rejected
    /// it, or none recognised it.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Whether an inspector will verify the response: it must then be fetched whole.
    pub fn recognised(&self) -> bool {
        self.recognised
    }

    /// The request opinions, moved out for the audit record (it is written once).
    pub fn take_request_opinions(&mut self) -> Inspections {
        std::mem::take(&mut self.request)
    }

    /// Feeds a chunk of the request body to every observer.
    pub fn request_chunk(&mut self, bytes: &[u8]) {
        for (_, o) in &mut self.observers {
            o.request_chunk(bytes);
        }
    }

    /// Feeds a chunk of the response body to every observer.
    pub fn chunk(&mut self, bytes: &[u8]) {
        for (_, o) in &mut self.observers {
            o.chunk(bytes);
        }
    }

    /// The response opinions once the body is complete. Metadata keys go to the first
    /// inspector (in chain order) that fills them, so `default`'s sniffing only fills
    /// gaps.
    pub fn finish(&mut self, body: &BodyDigest) -> Verdict {
        let mut verdict = Verdict::default();
        for (id, o) in std::mem::take(&mut self.observers) {
            let finding = o.finish(body);
            let (opinion, reason) = match finding.opinion {
                ResponseOpinion::Approved => (Opinion::Approved, None),
                ResponseOpinion::Unknown => (Opinion::Unknown, None),
                ResponseOpinion::Rejected(r) => (Opinion::Rejected, Some(r)),
            };
            verdict.response.insert(
                id,
                Inspection {
                    opinion,
                    reason,
                    annotations: finding.annotations,
                },
            );
            for (k, v) in finding.metadata {
                verdict.metadata.entry(k).or_insert(v);
            }
        }
        verdict
    }
}

/// Runs `f` on a request with no headers (for the inspectors' tests).
#[cfg(test)]
pub(crate) fn with_request<R>(method: &str, url: &str, f: impl FnOnce(&RequestInfo<'_>) -> R) -> R {
    let headers = http::HeaderMap::new();
    f(&RequestInfo {
        method,
        url,
        headers: &headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetchgate_storage::{Policy, Timestamp};

    fn header() -> SessionHeader {
        SessionHeader::new(
            SessionId::from_bytes([3; 16]),
            [0; 32],
            Policy::Strict,
            Timestamp::now(),
            60,
        )
    }

    #[test]
    fn an_unrecognised_request_is_refused_with_every_opinion_recorded() {
        let chain = Inspectors::new(Trust::default(), std::env::temp_dir(), None, 0);
        let headers = http::HeaderMap::new();
        let req = RequestInfo {
            method: "GET",
            url: "http://example.org:80/x.deb",
            headers: &headers,
        };
        let mut inspection = chain.begin(&header(), &req);
        assert!(!inspection.recognised());
        assert!(
            inspection
                .refusal()
                .unwrap()
                .contains("no inspector recognises")
        );
        let opinions = inspection.take_request_opinions();
        let ids: Vec<&str> = opinions.keys().collect();
        let mut declared = INSPECTOR_IDS.to_vec();
        declared.sort_unstable();
        assert_eq!(ids, declared);
    }

    #[test]
    fn a_forgotten_session_starts_afresh() {
        let chain = Inspectors::new(Trust::default(), std::env::temp_dir(), None, 0);
        let first = chain.session(&header());
        assert!(Arc::ptr_eq(&first, &chain.session(&header())));
        chain.forget(header().id);
        assert!(!Arc::ptr_eq(&first, &chain.session(&header())));
    }
}
