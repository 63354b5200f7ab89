//! Counting what happened: per-builder recorders (latency histogram, bytes, errors by
//! kind, sessions, report-verification failures) merged at the end into a [`Summary`],
//! live counters for the progress line, and the table and JSON renderings of results.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::ErrorKind;
use crate::procstat::Usage;

/// Counters shared by every builder, read by the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub sessions: AtomicU64,
}

/// One builder's tally.
pub struct Recorder {
    live: Arc<Live>,
    latency_us: Histogram<u64>,
    requests: u64,
    bytes: u64,
    errors: BTreeMap<ErrorKind, u64>,
    /// The first error of each kind, for diagnosis.
    examples: BTreeMap<ErrorKind, String>,
    sessions: u64,
    report_failures: u64,
}

/// Latencies are recorded in microseconds, up to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

impl Recorder {
    pub fn new(live: Arc<Live>) -> Recorder {
        Recorder {
            live,
            latency_us: histogram(),
            requests: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            sessions: 0,
            report_failures: 0,
        }
    }

    /// A request that got an answer (any status) after `latency`, with `bytes` of body.
    pub fn answered(&mut self, latency: Duration, bytes: u64) {
        self.latency_us
            .saturating_record(latency.as_micros().try_into().unwrap_or(u64::MAX));
        self.requests += 1;
        self.bytes += bytes;
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        self.live.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A failure of `kind`; `detail` says what happened (kept for the first of a kind).
    pub fn error(&mut self, kind: ErrorKind, detail: impl FnOnce() -> String) {
        *self.errors.entry(kind).or_default() += 1;
        self.examples.entry(kind).or_insert_with(detail);
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A session that went through every step; `report_failure` says how its report
    /// differed from what was fetched, if it did.
    pub fn session(&mut self, report_failure: Option<String>) {
        self.sessions += 1;
        self.live.sessions.fetch_add(1, Ordering::Relaxed);
        if let Some(failure) = report_failure {
            self.report_failures += 1;
            self.error(ErrorKind::Report, || failure);
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        self.bytes += other.bytes;
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        for (k, e) in &other.examples {
            self.examples.entry(*k).or_insert_with(|| e.clone());
        }
        self.sessions += other.sessions;
        self.report_failures += other.report_failures;
    }

    /// The results of a run that lasted `elapsed`.
    pub fn summary(&self, label: &str, elapsed: Duration, proxy: Option<Usage>) -> Summary {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            label: label.to_owned(),
            duration_s: secs,
            requests: self.requests,
            requests_per_s: self.requests as f64 / secs,
            bytes: self.bytes,
            mb_per_s: self.bytes as f64 / 1e6 / secs,
            latency_ms: Latency::of(&self.latency_us),
            errors: self.errors.clone(),
            error_examples: self.examples.clone(),
            error_total: self.errors.values().sum(),
            sessions: self.sessions,
            sessions_per_s: self.sessions as f64 / secs,
            report_verification_failures: self.report_failures,
            proxy,
        }
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// The quantiles of a histogram of microseconds.
    pub fn of(us: &Histogram<u64>) -> Latency {
        let ms = |q: f64| us.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: us.max() as f64 / 1000.0,
        }
    }
}

/// The results of one traffic scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub label: String,
    pub duration_s: f64,
    /// Requests that got an answer, whatever its status.
    pub requests: u64,
    pub requests_per_s: f64,
    pub bytes: u64,
    pub mb_per_s: f64,
    pub latency_ms: Latency,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first error of each kind.
    pub error_examples: BTreeMap<ErrorKind, String>,
    pub error_total: u64,
    /// Complete sessions (without a control API: complete batches of requests).
    pub sessions: u64,
    pub sessions_per_s: f64,
    pub report_verification_failures: u64,
    /// The proxy's processes at the end, when known.
    pub proxy: Option<Usage>,
}

impl Summary {
    /// A two-column table for people.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("duration".into(), format!("{:.1} s", self.duration_s)),
            ("requests".into(), self.requests.to_string()),
            ("requests/s".into(), format!("{:.1}", self.requests_per_s)),
            ("MB/s".into(), format!("{:.1}", self.mb_per_s)),
            (
                "latency p50/p90/p99/max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms",
                    self.latency_ms.p50,
                    self.latency_ms.p90,
                    self.latency_ms.p99,
                    self.latency_ms.max
                ),
            ),
            ("sessions".into(), self.sessions.to_string()),
            ("sessions/s".into(), format!("{:.2}", self.sessions_per_s)),
            (
                "report verification failures".into(),
                self.report_verification_failures.to_string(),
            ),
            ("errors".into(), self.error_total.to_string()),
        ];
        for (kind, n) in &self.errors {
            let example = self.error_examples.get(kind).map_or("", String::as_str);
            rows.push((format!("  {kind:?}"), format!("{n} (first: {example})")));
        }
        if let Some(u) = &self.proxy {
            rows.push(("proxy peak RSS".into(), format!("{} KiB", u.peak_rss_kib)));
            rows.push(("proxy CPU".into(), format!("{:.2} s", u.cpu_seconds)));
        }
        render(&self.label, &rows)
    }
}

/// The results of the idle keep-alive connections scenario.
#[derive(Debug, Clone, Serialize)]
pub struct IdleSummary {
    pub label: String,
    pub tls: bool,
    pub connections: usize,
    /// Connections that completed their first request and stayed open.
    pub established: usize,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub rss_before_kib: Option<u64>,
    /// With the first N connections open.
    pub rss_after_kib: Option<u64>,
    /// With N more open.
    pub rss_after_second_kib: Option<u64>,
    /// (after - before) / established, when the proxy's processes are known.
    pub kib_per_connection: Option<f64>,
    /// (after second - after) / the second batch's established connections.
    pub kib_per_added_connection: Option<f64>,
}

impl IdleSummary {
    pub fn table(&self) -> String {
        let kib = |v: Option<u64>| v.map_or("unknown".into(), |k| format!("{k} KiB"));
        let mut rows = vec![
            ("connections".into(), self.connections.to_string()),
            ("intercepted TLS".into(), self.tls.to_string()),
            ("established".into(), self.established.to_string()),
            ("proxy RSS before".into(), kib(self.rss_before_kib)),
            ("proxy RSS after".into(), kib(self.rss_after_kib)),
            (
                "proxy RSS after N more".into(),
                kib(self.rss_after_second_kib),
            ),
            (
                "memory per connection".into(),
                per_connection(self.kib_per_connection),
            ),
            (
                "memory per added connection".into(),
                per_connection(self.kib_per_added_connection),
            ),
        ];
        for (kind, n) in &self.errors {
            rows.push((format!("error {kind:?}"), n.to_string()));
        }
        render(&self.label, &rows)
    }
}

fn per_connection(kib: Option<f64>) -> String {
    kib.map_or("unknown".into(), |k| format!("{k:.1} KiB"))
}

/// The results of the revocation scenario ([`crate::revocation`]).
#[derive(Debug, Clone, Serialize)]
pub struct RevocationSummary {
    pub label: String,
    pub rounds: usize,
    /// Rounds in which the other node refused the revoked token.
    pub measured: u64,
    /// From the revocation's acknowledgement to the other node's first 407.
    pub propagation_ms: Latency,
    /// Requests made after revocations (the refused one included).
    pub attempts: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first error of each kind.
    pub error_examples: BTreeMap<ErrorKind, String>,
}

impl RevocationSummary {
    pub fn new(
        label: &str,
        rounds: usize,
        latency_us: &Histogram<u64>,
        attempts: u64,
        errors: BTreeMap<ErrorKind, u64>,
        error_examples: BTreeMap<ErrorKind, String>,
    ) -> RevocationSummary {
        RevocationSummary {
            label: label.to_owned(),
            rounds,
            measured: latency_us.len(),
            propagation_ms: Latency::of(latency_us),
            attempts,
            errors,
            error_examples,
        }
    }

    pub fn table(&self) -> String {
        let l = &self.propagation_ms;
        let mut rows = vec![
            ("rounds".into(), self.rounds.to_string()),
            ("refused after revocation".into(), self.measured.to_string()),
            (
                "propagation p50/p90/p99/max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms",
                    l.p50, l.p90, l.p99, l.max
                ),
            ),
            (
                "requests after revocations".into(),
                self.attempts.to_string(),
            ),
        ];
        for (kind, n) in &self.errors {
            rows.push((format!("error {kind:?}"), n.to_string()));
        }
        for (kind, e) in &self.error_examples {
            rows.push((format!("first {kind:?}"), e.clone()));
        }
        render(&self.label, &rows)
    }
}

fn render(title: &str, rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("== {title}\n");
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    out
}
