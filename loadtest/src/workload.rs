//! Simulated builders: N concurrent tasks, each running complete sessions the way
//! Launchpad does — create a session, fetch a mix of artifacts through the proxy,
//! revoke the token, read the report, check it lists exactly what was fetched, end
//! the session — until the run's time (or session budget) is used up. Against a proxy
//! without a control API the session steps are skipped and the same fetches are made.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{ConnMode, ErrorKind, Fetcher, Scheme, url};
use crate::completions::{Completion, CompletionLog};
use crate::content::{Artifact, Rng, ServedFile};
use crate::control::SessionCredentials;
use crate::harness::Harness;
use crate::procstat::Usage;
use crate::stats::{Live, Recorder, Summary};
use crate::verify::{Expected, Outcome, verify};

/// Which origin listener requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeMix {
    Http,
    Https,
    /// Each request picks HTTP or HTTPS at random, half and half.
    Mixed,
}

/// One artifact size in the mix and how often it is picked relative to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSize {
    pub size: u64,
    pub weight: u32,
}

/// What builders fetch.
#[derive(Debug, Clone)]
pub enum Mix {
    /// Synthetic artifacts of these sizes, `distinct` different ones of each size.
    Synthetic {
        objects: Vec<ObjectSize>,
        distinct: u32,
    },
    /// Real files the origin serves ([`crate::origin::OriginBehaviour::files`]).
    Files {
        /// Picked uniformly.
        files: Vec<ServedFile>,
        /// Fetched in this order at the start of every session (under each scheme of
        /// the mix), on top of its picks: the index pages that let inspectors verify
        /// the files.
        first: Vec<ServedFile>,
    },
}

impl Mix {
    /// Synthetic artifacts: `(size, weight)` pairs, `distinct` different ones of each.
    pub fn synthetic(sizes: &[(u64, u32)], distinct: u32) -> Mix {
        Mix::Synthetic {
            objects: sizes
                .iter()
                .map(|&(size, weight)| ObjectSize { size, weight })
                .collect(),
            distinct,
        }
    }
}

/// What every builder does.
#[derive(Debug, Clone)]
pub struct Workload {
    pub builders: usize,
    pub duration: Duration,
    /// Stop after this many sessions in all, if reached before `duration`.
    pub max_sessions: Option<u64>,
    /// Picks per session (any [`Mix::Files::first`] fetches come on top).
    pub requests_per_session: usize,
    pub mix: Mix,
    /// What each session trusts (`inspectors-configuration`), if anything.
    pub session_trust: Option<Value>,
    pub scheme: SchemeMix,
    pub connection: ConnMode,
    /// Hash every body on the builder side and compare it with the content.
    pub hash_bodies: bool,
    pub policy: String,
    pub request_timeout: Duration,
    /// Where to log every download a builder received whole (bodies are then hashed).
    pub completions: Option<Arc<CompletionLog>>,
}

/// One session's requests and what the report said about them.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    pub expected: Vec<Expected>,
    /// The report's JSON, when the target has sessions and every control step worked.
    pub report: Option<bytes::Bytes>,
}

/// One artifact the workload can pick: where the origin serves it, and its content.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Every artifact the workload can pick, in groups picked by weight (one per synthetic
/// size; all files in one group), then uniformly within the group.
pub struct Catalogue {
    groups: Vec<(u64, Vec<Entry>)>,
    total_weight: u64,
    /// Fetched at the start of every session.
    first: Vec<Entry>,
}

impl Catalogue {
    pub fn new(mix: &Mix) -> Catalogue {
        let entries = |files: &[ServedFile]| -> Vec<Entry> {
            files
                .iter()
                .map(|f| Entry {
                    path: f.path.clone(),
                    size: f.bytes.len() as u64,
                    sha256: f.sha256,
                })
                .collect()
        };
        let (groups, first): (Vec<(u64, Vec<Entry>)>, _) = match mix {
            Mix::Synthetic { objects, distinct } => (
                objects
                    .iter()
                    .map(|o| {
                        let entries = (0..(*distinct).max(1))
                            .map(|index| {
                                let a = Artifact {
                                    size: o.size,
                                    index,
                                };
                                Entry {
                                    path: a.path(),
                                    size: a.size,
                                    sha256: a.sha256(),
                                }
                            })
                            .collect();
                        (u64::from(o.weight), entries)
                    })
                    .collect(),
                Vec::new(),
            ),
            Mix::Files { files, first } => (vec![(1, entries(files))], entries(first)),
        };
        Catalogue {
            total_weight: groups.iter().map(|(w, _)| w).sum(),
            groups,
            first,
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<&Entry> {
        let mut draw = rng.below(self.total_weight.max(1));
        let (_, entries) = self.groups.iter().find(|(weight, _)| {
            let hit = draw < *weight;
            draw = draw.saturating_sub(*weight);
            hit
        })?;
        if entries.is_empty() {
            return None;
        }
        entries.get(rng.below(entries.len() as u64) as usize)
    }
}

/// Runs `workload` against the harness; `live` feeds the progress line.
pub async fn run(harness: Arc<Harness>, workload: Arc<Workload>, live: Arc<Live>) -> Recorder {
    let catalogue = Arc::new(Catalogue::new(&workload.mix));
    let deadline = Instant::now() + workload.duration;
    let started_sessions = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(workload.builders);
    for b in 0..workload.builders {
        let (harness, workload, live, catalogue, started_sessions) = (
            harness.clone(),
            workload.clone(),
            live.clone(),
            catalogue.clone(),
            started_sessions.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new(live);
            let mut rng = Rng::new(0x5eed ^ ((b as u64) << 32));
            while Instant::now() < deadline {
                let n = started_sessions.fetch_add(1, Ordering::Relaxed);
                if workload.max_sessions.is_some_and(|max| n >= max) {
                    break;
                }
                run_session(&harness, &workload, &catalogue, &mut rng, &mut rec).await;
            }
            rec
        }));
    }
    let mut total = Recorder::new(Arc::new(Live::default()));
    for t in tasks {
        match t.await {
            Ok(rec) => total.merge(&rec),
            // A bug in the harness, not a result: surface it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    total
}

/// Runs a whole workload and summarises it, with the proxy's resource use: its peak
/// memory and the CPU time it spent during the run.
pub async fn run_and_summarise(
    harness: Arc<Harness>,
    workload: Arc<Workload>,
    live: Arc<Live>,
    label: &str,
) -> Summary {
    let before = harness.target.usage();
    let started = Instant::now();
    let rec = run(harness.clone(), workload, live).await;
    let elapsed = started.elapsed();
    let proxy = harness.target.usage().map(|end| Usage {
        cpu_seconds: end.cpu_seconds - before.map_or(0.0, |b| b.cpu_seconds),
        ..end
    });
    rec.summary(label, elapsed, proxy)
}

/// One complete session: the requests, and (with a control API) the report check.
pub async fn run_session(
    harness: &Harness,
    workload: &Workload,
    catalogue: &Catalogue,
    rng: &mut Rng,
    rec: &mut Recorder,
) -> SessionOutcome {
    let control = harness.target.control();
    let session = match control {
        Some(c) => match c
            .create_session(&workload.policy, workload.session_trust.as_ref())
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                rec.error(ErrorKind::Control, || e.to_string());
                // Do not spin on a control API that refuses everything.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return SessionOutcome {
                    expected: vec![],
                    report: None,
                };
            }
        },
        None => None,
    };
    let mut fetcher = Fetcher::new(
        harness.target.route(session.as_ref()),
        workload.connection,
        harness.tls.clone(),
        workload.request_timeout,
        workload.hash_bodies || workload.completions.is_some(),
    );
    // The session's fetches: the first entries under every scheme picks may use (a
    // page lists its files at its own origin), then the picks.
    let schemes: &[Scheme] = match workload.scheme {
        SchemeMix::Http => &[Scheme::Http],
        SchemeMix::Https => &[Scheme::Https],
        SchemeMix::Mixed => &[Scheme::Http, Scheme::Https],
    };
    let mut plan: Vec<(&Entry, Scheme)> = catalogue
        .first
        .iter()
        .flat_map(|e| schemes.iter().map(move |s| (e, *s)))
        .collect();
    for _ in 0..workload.requests_per_session {
        let Some(entry) = catalogue.pick(rng) else {
            break;
        };
        plan.push((entry, pick_scheme(workload.scheme, rng)));
    }
    let mut expected = Vec::with_capacity(plan.len());
    for (entry, scheme) in plan {
        let session = session.as_ref();
        expected.push(fetch(harness, workload, &mut fetcher, session, scheme, entry, rec).await);
    }
    drop(fetcher);

    let (Some(control), Some(session)) = (control, session) else {
        rec.session(None);
        return SessionOutcome {
            expected,
            report: None,
        };
    };
    let report = async {
        control.revoke(&session).await?;
        let report = control.report(&session).await?;
        control.end(&session).await?;
        Ok::<_, crate::control::ControlError>(report)
    }
    .await;
    match report {
        Ok(report) => {
            rec.session(
                verify(&expected, &report)
                    .err()
                    .map(|m| format!("session {}: {m}", session.id)),
            );
            SessionOutcome {
                expected,
                report: Some(report),
            }
        }
        Err(e) => {
            rec.error(ErrorKind::Control, || e.to_string());
            SessionOutcome {
                expected,
                report: None,
            }
        }
    }
}

fn pick_scheme(mix: SchemeMix, rng: &mut Rng) -> Scheme {
    let https = match mix {
        SchemeMix::Http => false,
        SchemeMix::Https => true,
        SchemeMix::Mixed => rng.below(2) == 1,
    };
    if https { Scheme::Https } else { Scheme::Http }
}

/// Fetches one artifact through the proxy and checks the body; what the report should say.
async fn fetch(
    harness: &Harness,
    workload: &Workload,
    fetcher: &mut Fetcher,
    session: Option<&SessionCredentials>,
    scheme: Scheme,
    artifact: &Entry,
    rec: &mut Recorder,
) -> Expected {
    let digest = artifact.sha256;
    let origin = harness.endpoint(scheme);
    let path = &artifact.path;
    let normalised = url(scheme, &origin, path);
    let outcome = match fetcher.get(scheme, &origin, path).await {
        Ok(r) => {
            rec.answered(r.latency, r.body_len);
            if r.status != hyper::StatusCode::OK {
                rec.error(ErrorKind::for_status(r.status), || {
                    format!("{path}: HTTP {}", r.status)
                });
                if r.refused_unread {
                    // No session saw it: not expected in the report.
                    Outcome::Failed
                } else {
                    Outcome::Status(r.status.as_u16())
                }
            } else {
                if r.body_len != artifact.size || r.sha256.is_some_and(|s| s != digest) {
                    rec.error(ErrorKind::BodyMismatch, || {
                        format!("{path}: {} bytes or a wrong digest", r.body_len)
                    });
                } else if let (Some(log), Some(sha256)) = (&workload.completions, r.sha256) {
                    let completion = Completion {
                        session_id: session.map(|s| s.id.clone()),
                        url: normalised.clone(),
                        sha256: hex::encode(sha256),
                        size: r.body_len,
                    };
                    if let Err(e) = log.record(&completion) {
                        rec.error(ErrorKind::Completions, || e.to_string());
                    }
                }
                Outcome::Body {
                    sha256: digest,
                    size: artifact.size,
                }
            }
        }
        Err(e) => {
            rec.error(e.kind, || format!("{path}: {}", e.detail));
            Outcome::Failed
        }
    };
    Expected {
        url: normalised,
        outcome,
    }
}
