//! The revocation scenario, for an HA pair: how long after a token is revoked through one
//! node's control API another node's proxy refuses it.
//!
//! Each round creates a session through the control API (`--control`, node A), makes one
//! plain request through the proxy (`--proxy`, node B) so that B has authenticated the
//! token, revokes the token on A and then asks B again, on a new connection each time,
//! until B answers 407. The round's figure is the time from A acknowledging the
//! revocation to B's first 407; a round B has not caught up with after
//! [`GIVE_UP`] counts as an error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::client::{ConnMode, ErrorKind, Fetcher, Scheme};
use crate::content::Artifact;
use crate::harness::Harness;
use crate::stats::{RevocationSummary, histogram};

/// How long B may keep accepting a revoked token before the round is an error.
pub const GIVE_UP: Duration = Duration::from_secs(5);

/// Runs `rounds` revocations in sessions of `policy` and summarises them.
pub async fn run(harness: &Harness, rounds: usize, policy: &str, label: &str) -> RevocationSummary {
    let mut errors: BTreeMap<ErrorKind, u64> = BTreeMap::new();
    let mut examples: BTreeMap<ErrorKind, String> = BTreeMap::new();
    let mut error = |kind: ErrorKind, detail: String| {
        *errors.entry(kind).or_default() += 1;
        examples.entry(kind).or_insert(detail);
    };
    let mut latency_us = histogram();
    let mut attempts = 0u64;
    let Some(control) = harness.target.control() else {
        error(
            ErrorKind::Control,
            "the target has no control API (use --target fetchgate or spawn)".into(),
        );
        return RevocationSummary::new(label, rounds, &latency_us, attempts, errors, examples);
    };
    let origin = harness.endpoint(Scheme::Http);
    let path = Artifact {
        size: 1024,
        index: 0,
    }
    .path();
    for _ in 0..rounds {
        let session = match control.create_session(policy, None).await {
            Ok(s) => s,
            Err(e) => {
                error(ErrorKind::Control, e.to_string());
                continue;
            }
        };
        let mut fetcher = Fetcher::new(
            harness.target.route(Some(&session)),
            ConnMode::PerRequest,
            harness.tls.clone(),
            Duration::from_secs(10),
            false,
        );
        match fetcher.get(Scheme::Http, &origin, &path).await {
            Ok(r) if r.status.is_success() => {}
            Ok(r) => {
                error(
                    ErrorKind::for_status(r.status),
                    format!("before the revocation the proxy answered {}", r.status),
                );
                continue;
            }
            Err(e) => {
                error(e.kind, e.detail);
                continue;
            }
        }
        if let Err(e) = control.revoke(&session).await {
            error(ErrorKind::Control, e.to_string());
            continue;
        }
        let revoked = Instant::now();
        let refused = loop {
            attempts += 1;
            match fetcher.get(Scheme::Http, &origin, &path).await {
                Ok(r) if r.status.as_u16() == 407 => break Some(revoked.elapsed()),
                Ok(_) if revoked.elapsed() < GIVE_UP => {}
                Ok(r) => {
                    error(
                        ErrorKind::RevokedAccepted,
                        format!(
                            "the proxy still answered {} {GIVE_UP:?} after the revocation",
                            r.status
                        ),
                    );
                    break None;
                }
                Err(e) => {
                    error(e.kind, e.detail);
                    break None;
                }
            }
        };
        if let Some(t) = refused {
            latency_us.saturating_record(t.as_micros().try_into().unwrap_or(u64::MAX));
        }
        if let Err(e) = control.end(&session).await {
            error(ErrorKind::Control, e.to_string());
        }
    }
    RevocationSummary::new(label, rounds, &latency_us, attempts, errors, examples)
}
