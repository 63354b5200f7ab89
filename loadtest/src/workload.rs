//! Simulated builders: N concurrent tasks, each running complete sessions the way
//! Launchpad does — create a session, fetch a mix of artifacts through the proxy,
//! revoke the token, read the report, check it lists exactly what was fetched, end
//! the session — until the run's time (or session budget) is used up. Against a proxy
//! without a control API the session steps are skipped and the same fetches are made.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{ConnMode, ErrorKind, Fetcher, Scheme, url};
use crate::completions::{Completion, CompletionLog};
use crate::content::{Artifact, Rng};
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

/// What every builder does.
#[derive(Debug, Clone)]
pub struct Workload {
    pub builders: usize,
    pub duration: Duration,
    /// Stop after this many sessions in all, if reached before `duration`.
    pub max_sessions: Option<u64>,
    pub requests_per_session: usize,
    pub objects: Vec<ObjectSize>,
    /// Distinct artifacts per size.
    pub distinct: u32,
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
    /// The report, when the target has sessions and every control step worked.
    pub report: Option<Value>,
}

/// The content digests of every artifact the workload can pick.
pub struct Catalogue {
    digests: HashMap<Artifact, [u8; 32]>,
    total_weight: u64,
    objects: Vec<ObjectSize>,
    distinct: u32,
}

impl Catalogue {
    pub fn new(objects: &[ObjectSize], distinct: u32) -> Catalogue {
        let distinct = distinct.max(1);
        let mut digests = HashMap::new();
        for o in objects {
            for index in 0..distinct {
                let a = Artifact {
                    size: o.size,
                    index,
                };
                digests.insert(a, a.sha256());
            }
        }
        Catalogue {
            digests,
            total_weight: objects.iter().map(|o| u64::from(o.weight)).sum(),
            objects: objects.to_vec(),
            distinct,
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<(Artifact, [u8; 32])> {
        let mut draw = rng.below(self.total_weight.max(1));
        let o = self.objects.iter().find(|o| {
            let hit = draw < u64::from(o.weight);
            draw = draw.saturating_sub(u64::from(o.weight));
            hit
        })?;
        let a = Artifact {
            size: o.size,
            index: rng.below(u64::from(self.distinct)) as u32,
        };
        self.digests.get(&a).map(|d| (a, *d))
    }
}

/// Runs `workload` against the harness; `live` feeds the progress line.
pub async fn run(harness: Arc<Harness>, workload: Arc<Workload>, live: Arc<Live>) -> Recorder {
    let catalogue = Arc::new(Catalogue::new(&workload.objects, workload.distinct));
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
        Some(c) => match c.create_session(&workload.policy).await {
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
    let mut expected = Vec::with_capacity(workload.requests_per_session);
    for _ in 0..workload.requests_per_session {
        let Some((artifact, digest)) = catalogue.pick(rng) else {
            break;
        };
        let https = match workload.scheme {
            SchemeMix::Http => false,
            SchemeMix::Https => true,
            SchemeMix::Mixed => rng.below(2) == 1,
        };
        let scheme = if https { Scheme::Https } else { Scheme::Http };
        let origin = harness.endpoint(scheme);
        let path = artifact.path();
        let normalised = url(scheme, &origin, &path);
        let outcome = match fetcher.get(scheme, &origin, &path).await {
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
                            session_id: session.as_ref().map(|s| s.id.clone()),
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
        expected.push(Expected {
            url: normalised,
            outcome,
        });
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
