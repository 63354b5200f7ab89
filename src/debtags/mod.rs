//! Debtags lookup: package → tags for one suite/component of a configured archive,
//! served on the control port (`GET /debtags/{suite}/{component}`) and by
//! `fetchgate debtags`. See `shared/spec/debtags.md`.
//!
//! Sources, in order: the archive's upstream debtags service (short timeout, its answer
//! becomes the cache for that key), then the tags in the archive's last-written Packages
//! files ([`cache::PackagesCache`], parsed once per file version); the overrides file
//! is applied on top of either. The stanzas come from `fetchgate_formats::deb822`,
//! shared with the apt inspector; `fetchgate_formats::debtags` normalises
//! what they say.

pub mod cache;
pub mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use self::cache::{PackagesCache, Snapshot};
use self::upstream::{Answer, Upstream};
use crate::telemetry::metric;
use fetchgate_formats::debtags::{self as tags, TagMap};

/// One configured archive (`[[debtags.archive]]` in `fetchgate.toml`).
#[derive(Debug, Clone)]
pub struct Archive {
    pub name: String,
    /// The directory holding `dists/`.
    pub root: PathBuf,
    pub upstream: Option<Upstream>,
    pub overrides: Option<PathBuf>,
}

/// Which source answered (the `X-Debtags-Source` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Upstream,
    PackagesCache,
    OverridesOnly,
}

impl Source {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::PackagesCache => "packages-cache",
            Source::OverridesOnly => "overrides-only",
        }
    }
}

/// A lookup's answer.
#[derive(Debug)]
pub struct Found {
    pub tags: Arc<TagMap>,
    pub source: Source,
    /// When the data was read from its source.
    pub read_at: SystemTime,
}

/// Why a lookup has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no archive named {0:?} is configured for debtags")]
    UnknownArchive(String),
    #[error("no debtags archive is configured ([[debtags.archive]] in fetchgate.toml)")]
    NoArchives,
    #[error("archive {archive}: no debtags known for {suite}/{component}")]
    NotFound {
        archive: String,
        suite: String,
        component: String,
    },
    #[error(
        "archive {archive}: the upstream debtags service failed ({reason}) and no Packages data exists for {suite}/{component}"
    )]
    Unavailable {
        archive: String,
        suite: String,
        component: String,
        reason: String,
    },
    #[error("archive {archive}: cannot read the Packages data: {source}")]
    Io {
        archive: String,
        source: std::io::Error,
    },
}

type UpstreamKey = (String, String, String, Option<String>);

/// The debtags service: archives, the Packages cache, the last upstream answers.
pub struct Debtags {
    archives: Vec<Archive>,
    packages: Arc<PackagesCache>,
    upstream_answers: Mutex<HashMap<UpstreamKey, Snapshot>>,
}

/// What the Packages side (plus overrides) found, computed off the async runtime.
struct Local {
    packages: Option<Snapshot>,
    overrides: Arc<tags::Overrides>,
    overrides_read_at: SystemTime,
    component_exists: bool,
}

impl Debtags {
    /// A service over the configured archives.
    pub fn new(archives: Vec<Archive>) -> Self {
        Debtags {
            archives,
            packages: Arc::new(PackagesCache::new()),
            upstream_answers: Mutex::default(),
        }
    }

    /// The Packages cache (its parse counter is exposed for tests and metrics; the
    /// proxy's apt inspector feeds it the indexes builders fetch).
    pub fn packages(&self) -> &Arc<PackagesCache> {
        &self.packages
    }

    fn archive(&self, name: Option<&str>) -> Result<&Archive, LookupError> {
        match name {
            None => self.archives.first().ok_or(LookupError::NoArchives),
            Some(n) => self
                .archives
                .iter()
                .find(|a| a.name == n)
                .ok_or_else(|| LookupError::UnknownArchive(n.to_owned())),
        }
    }

    /// Looks up `suite`/`component` (names already checked by the caller to be plain
    /// path segments) in archive `archive` (default: the first).
    pub async fn lookup(
        &self,
        archive: Option<&str>,
        suite: &str,
        component: &str,
        arch: Option<&str>,
    ) -> Result<Found, LookupError> {
        let a = self.archive(archive)?;
        let key: UpstreamKey = (
            a.name.clone(),
            suite.to_owned(),
            component.to_owned(),
            arch.map(str::to_owned),
        );
        let mut upstream_failure = None;
        if let Some(up) = &a.upstream {
            match up.fetch(suite, component, arch).await {
                Ok(Answer::Tags(t)) => {
                    let snap = Snapshot {
                        tags: Arc::new(t),
                        read_at: SystemTime::now(),
                    };
                    self.upstream_answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, snap.clone());
                    let overrides = self
                        .local(a, suite, component, arch, false)
                        .await?
                        .overrides;
                    return Ok(self.finish(snap, &overrides, Source::Upstream));
                }
                Ok(Answer::Unknown) => {}
                Err(reason) => {
                    tracing::warn!(archive = %a.name, %suite, %component, %reason, "upstream debtags service failed; using the Packages cache");
                    upstream_failure = Some(reason);
                }
            }
        }
        let local = self.local(a, suite, component, arch, true).await?;
        let remembered = upstream_failure.as_ref().and_then(|_| {
            self.upstream_answers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
        });
        // The freshest of the Packages files and the last upstream answer.
        let cached = match (local.packages, remembered) {
            (Some(p), Some(r)) => Some(if r.read_at > p.read_at { r } else { p }),
            (p, r) => p.or(r),
        };
        if let Some(snap) = cached {
            return Ok(self.finish(snap, &local.overrides, Source::PackagesCache));
        }
        let (archive, suite, component) = (a.name.clone(), suite.to_owned(), component.to_owned());
        if let Some(reason) = upstream_failure {
            return Err(LookupError::Unavailable {
                archive,
                suite,
                component,
                reason,
            });
        }
        if local.component_exists {
            let snap = Snapshot {
                tags: Arc::default(),
                read_at: local.overrides_read_at,
            };
            return Ok(self.finish(snap, &local.overrides, Source::OverridesOnly));
        }
        Err(LookupError::NotFound {
            archive,
            suite,
            component,
        })
    }

    fn finish(&self, snap: Snapshot, overrides: &tags::Overrides, source: Source) -> Found {
        metrics::counter!(metric::DEBTAGS_LOOKUPS, "source" => source.as_str()).increment(1);
        let tags = if overrides.is_empty() {
            snap.tags
        } else {
            let mut t = (*snap.tags).clone();
            tags::apply(&mut t, overrides);
            Arc::new(t)
        };
        Found {
            tags,
            source,
            read_at: snap.read_at,
        }
    }

    async fn local(
        &self,
        a: &Archive,
        suite: &str,
        component: &str,
        arch: Option<&str>,
        with_packages: bool,
    ) -> Result<Local, LookupError> {
        let cache = Arc::clone(&self.packages);
        let (root, overrides_path) = (a.root.clone(), a.overrides.clone());
        let (suite, component, arch) = (
            suite.to_owned(),
            component.to_owned(),
            arch.map(str::to_owned),
        );
        let io = |source| LookupError::Io {
            archive: a.name.clone(),
            source,
        };
        tokio::task::spawn_blocking(move || {
            let packages = if with_packages {
                cache.lookup(&root, &suite, &component, arch.as_deref())?
            } else {
                None
            };
            let overrides = match &overrides_path {
                Some(p) => cache.overrides(p)?,
                None => Arc::default(),
            };
            Ok(Local {
                packages,
                overrides,
                overrides_read_at: SystemTime::now(),
                component_exists: root.join("dists").join(&suite).join(&component).is_dir(),
            })
        })
        .await
        .map_err(|e| io(std::io::Error::other(e.to_string())))?
        .map_err(io)
    }
}

/// Whether `s` is a safe suite, component or architecture name: one path segment of
/// letters, digits and `.+_-`, not starting with a dot.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b))
}
