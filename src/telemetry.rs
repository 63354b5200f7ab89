//! Logging and metrics set-up, and every metric name in one place.
//!
//! Logs go to stderr or to `--log-file` (reopened on SIGUSR1 for logrotate); security
//! events (target `security`) also go, as JSON lines, to `--security-log-file`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use fetchgate_storage::redis_store::CacheObserver;
use fetchgate_storage::rocks::WriterObserver;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::cli::Verbosity;
use crate::config::LogConfig;

/// The tracing target of security events.
pub const SECURITY: &str = "security";

/// Metric names.
pub mod metric {
    /// Sessions created, by policy.
    pub const SESSIONS_CREATED: &str = "fetchgate_sessions_created_total";
    /// Sessions ended, by reason (`ended`, `expired`).
    pub const SESSIONS_ENDED: &str = "fetchgate_sessions_ended_total";
    /// Control API requests, by route and status code.
    pub const CONTROL_REQUESTS: &str = "fetchgate_control_requests_total";
    /// Control API authentication failures.
    pub const CONTROL_AUTH_FAILURES: &str = "fetchgate_control_auth_failures_total";
    /// Proxy requests received (plain and inside tunnels).
    pub const PROXY_REQUESTS: &str = "fetchgate_proxy_requests_total";
    /// Proxy requests refused, by stage (`auth`, `acl`, `policy`, `limit`, `storage`).
    pub const PROXY_DENIED: &str = "fetchgate_proxy_denied_total";
    /// Complete downloads the inspectors judged, by `result` (`approved`, `rejected`)
    /// and `action` (`passed`, `cut-off`).
    pub const INSPECTED: &str = "fetchgate_inspected_downloads_total";
    /// Response body bytes sent to builders.
    pub const PROXY_BYTES_DOWN: &str = "fetchgate_proxy_bytes_down_total";
    /// Request body bytes received from builders and sent upstream.
    pub const PROXY_BYTES_UP: &str = "fetchgate_proxy_bytes_up_total";
    /// Time from picking the upstream (connect, TLS, request) to its response head, in
    /// seconds.
    pub const UPSTREAM_RESPONSE_SECONDS: &str = "fetchgate_upstream_response_seconds";
    /// Time the inspectors took to give their verdict on a complete download (the
    /// download's last bytes wait for it), in seconds.
    pub const INSPECTION_SECONDS: &str = "fetchgate_inspection_seconds";
    /// Leaf certificate lookups, by result (`hit`, `miss`).
    pub const CERT_CACHE: &str = "fetchgate_cert_cache_total";
    /// Downloads whose costly check may have been remembered, by `kind` (`wheel`: the
    /// full check; `deb`: the license scan) and `result` (`hit`: remembered, checked by
    /// sha256 alone; `shared`: a wheel another download was checking, whose verdict it
    /// takes; `miss`: checked in full).
    pub const VERIFIED_CACHE: &str = "fetchgate_verified_cache_total";
    /// Upstream host names resolved, by result (`hit`: from the cache, `miss`: a query).
    pub const DNS_LOOKUPS: &str = "fetchgate_dns_lookups_total";
    /// Debtags lookups answered, by source (`upstream`, `packages-cache`, `overrides-only`).
    pub const DEBTAGS_LOOKUPS: &str = "fetchgate_debtags_lookups_total";
    /// Time to parse one Packages file for debtags, in seconds.
    pub const DEBTAGS_PARSE_SECONDS: &str = "fetchgate_debtags_parse_seconds";
    /// Debtags component lookups in the Packages cache, by result (`hit`, `miss`).
    pub const DEBTAGS_CACHE: &str = "fetchgate_debtags_cache_total";
    /// Open proxy connections (plain requests and CONNECT tunnels).
    pub const PROXY_CONNECTIONS_OPEN: &str = "fetchgate_proxy_connections_open";
    /// Time from a proxy request's head to the end of its answer, in seconds, by
    /// status class of the answer (`2xx` ... `5xx`, `none` when nothing was answered).
    pub const PROXY_REQUEST_SECONDS: &str = "fetchgate_proxy_request_duration_seconds";
    /// Sessions by state, counted when `/metrics` is read: live ones `active`,
    /// `revoked` or `expired` (timed out, about to be ended by the reaper), and as
    /// `ended` those kept for the retention period (ended or expired).
    pub const SESSIONS: &str = "fetchgate_sessions";
    /// HA pair: proxy authentication reads of the Redis session store, by `result`
    /// (`hit`: answered from this node's cache, `miss`: asked Redis).
    pub const SESSION_CACHE: &str = "fetchgate_session_cache_total";
    /// HA pair: 1 while this node receives Redis's invalidations (its auth cache is
    /// on), 0 while not.
    pub const SESSION_CACHE_SUBSCRIBED: &str = "fetchgate_session_cache_subscribed";
    /// Audit appends waiting for the writer, sampled before each group commit.
    pub const AUDIT_QUEUE_DEPTH: &str = "fetchgate_audit_queue_depth";
    /// Duration of one audit group commit, fsync included, in seconds.
    pub const AUDIT_COMMIT_SECONDS: &str = "fetchgate_audit_commit_duration_seconds";
    /// Audit records written durably.
    pub const AUDIT_RECORDS: &str = "fetchgate_audit_records_total";
    /// Duration of one ingest of in-memory artifact index entries into the database.
    pub const AUDIT_INDEX_INGEST_SECONDS: &str = "fetchgate_audit_index_ingest_duration_seconds";
    /// Artifact index entries moved from memory into the database.
    pub const AUDIT_INDEX_ENTRIES: &str = "fetchgate_audit_index_entries_ingested_total";
    /// Session webhook events, by `outcome` (`delivered`, `failed` after every retry,
    /// `dropped` because the queue was full); one per receiver for the first two.
    pub const WEBHOOK_EVENTS: &str = "fetchgate_webhook_events_total";
}

/// Histogram buckets of every `*_seconds` metric: from a fast fsync to a slow download.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
];

/// A log file that can be reopened in place (after logrotate moved it away).
#[derive(Clone)]
pub struct ReopenableFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl ReopenableFile {
    /// Opens `path` for appending, creating it.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(ReopenableFile {
            path: path.into(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    /// Closes the current file and opens the path again.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One log line's writer: holds the file lock only while writing.
pub struct FileWriter<'a>(&'a ReopenableFile);

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush()
    }
}

impl<'a> MakeWriter<'a> for ReopenableFile {
    type Writer = FileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        FileWriter(self)
    }
}

/// The open log files, for SIGUSR1.
#[derive(Clone, Default)]
pub struct LogFiles(Vec<ReopenableFile>);

impl LogFiles {
    /// Reopens every log file, reporting failures on the log itself.
    pub fn reopen(&self) {
        for f in &self.0 {
            if let Err(e) = f.reopen() {
                tracing::error!(path = %f.path.display(), error = %e, "cannot reopen log file");
            }
        }
    }
}

fn level(v: Verbosity) -> LevelFilter {
    match v {
        Verbosity::Error => LevelFilter::ERROR,
        Verbosity::Warn => LevelFilter::WARN,
        Verbosity::Info => LevelFilter::INFO,
        Verbosity::Debug => LevelFilter::DEBUG,
        Verbosity::Trace => LevelFilter::TRACE,
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn fmt_layer<W>(writer: W, json: bool, ansi: bool) -> BoxedLayer
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    if json {
        layer.json().boxed()
    } else {
        layer.boxed()
    }
}

/// Installs the global tracing subscriber.
pub fn init_logging(config: &LogConfig) -> io::Result<LogFiles> {
    let mut files = Vec::new();
    let main = match &config.file {
        Some(path) => {
            let f = ReopenableFile::open(path)?;
            files.push(f.clone());
            fmt_layer(f, config.json, false)
        }
        None => fmt_layer(io::stderr, config.json, false),
    };
    let ours = Targets::new()
        .with_default(level(config.verbosity))
        // Dependencies only speak up when something is wrong.
        .with_target("hyper", Level::WARN)
        .with_target("h2", Level::WARN)
        .with_target("rustls", Level::WARN);
    let mut layers = vec![main.with_filter(ours).boxed()];
    if let Some(path) = &config.security_file {
        let f = ReopenableFile::open(path)?;
        files.push(f.clone());
        layers.push(
            fmt_layer(f, true, false)
                .with_filter(Targets::new().with_target(SECURITY, Level::TRACE))
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers).init();
    Ok(LogFiles(files))
}

/// Installs the Prometheus recorder; the handle renders `/metrics`.
pub fn init_metrics() -> Result<PrometheusHandle, String> {
    let failed = |e| format!("cannot install the metrics recorder: {e}");
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .map_err(failed)?
        .install_recorder()
        .map_err(failed)
}

/// Exports what the audit writer reports, through handles registered once (see
/// [`ProxyMetrics`]): it reports on every commit.
pub struct AuditWriterMetrics {
    commit_seconds: metrics::Histogram,
    records: metrics::Counter,
    queue_depth: metrics::Gauge,
    ingest_seconds: metrics::Histogram,
    index_entries: metrics::Counter,
}

impl AuditWriterMetrics {
    /// Registers the handles with the installed recorder.
    pub fn register() -> Self {
        AuditWriterMetrics {
            commit_seconds: metrics::histogram!(metric::AUDIT_COMMIT_SECONDS),
            records: metrics::counter!(metric::AUDIT_RECORDS),
            queue_depth: metrics::gauge!(metric::AUDIT_QUEUE_DEPTH),
            ingest_seconds: metrics::histogram!(metric::AUDIT_INDEX_INGEST_SECONDS),
            index_entries: metrics::counter!(metric::AUDIT_INDEX_ENTRIES),
        }
    }
}

impl WriterObserver for AuditWriterMetrics {
    fn committed(&self, records: usize, elapsed: Duration) {
        self.commit_seconds.record(elapsed.as_secs_f64());
        self.records.increment(records as u64);
    }

    fn queue_depth(&self, queued: usize) {
        self.queue_depth.set(queued as f64);
    }

    fn ingested(&self, entries: usize, elapsed: Duration) {
        self.ingest_seconds.record(elapsed.as_secs_f64());
        self.index_entries.increment(entries as u64);
    }
}

/// Exports how the Redis session store's auth cache fares.
pub struct SessionCacheMetrics;

impl CacheObserver for SessionCacheMetrics {
    fn auth_read(&self, cached: bool) {
        let result = if cached { "hit" } else { "miss" };
        metrics::counter!(metric::SESSION_CACHE, "result" => result).increment(1);
    }

    fn subscribed(&self, up: bool) {
        metrics::gauge!(metric::SESSION_CACHE_SUBSCRIBED).set(if up { 1.0 } else { 0.0 });
    }
}

/// The `status` label values of request durations: the class of the HTTP status
/// (`1xx` ... `5xx`), or `none` for a request that got no response.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn status_class_index(status: Option<u16>) -> usize {
    match status {
        Some(100..=199) => 0,
        Some(200..=299) => 1,
        Some(300..=399) => 2,
        Some(400..=499) => 3,
        Some(_) => 4,
        None => 5,
    }
}

/// Handles of the metrics every proxied request updates, registered once. Looking a
/// metric up by name (`metrics::counter!`) makes the Prometheus recorder copy its key
/// and search its registry each time; a handle does neither. Built after
/// [`init_metrics`]: a handle taken before the recorder is installed records nothing.
pub struct ProxyMetrics {
    pub requests: metrics::Counter,
    pub bytes_up: metrics::Counter,
    pub bytes_down: metrics::Counter,
    pub upstream_response_seconds: metrics::Histogram,
    /// Request durations, by [`STATUS_CLASSES`].
    request_seconds: [metrics::Histogram; 6],
    pub inspection_seconds: metrics::Histogram,
    /// Inspected downloads approved (and passed).
    pub inspected_approved: metrics::Counter,
    /// Inspected downloads rejected but passed: a permissive session.
    pub inspected_rejected_passed: metrics::Counter,
    /// Inspected downloads rejected and cut off: a strict session.
    pub inspected_rejected_cut_off: metrics::Counter,
}

impl ProxyMetrics {
    /// Registers the handles with the installed recorder.
    pub fn register() -> Self {
        ProxyMetrics {
            requests: metrics::counter!(metric::PROXY_REQUESTS),
            bytes_up: metrics::counter!(metric::PROXY_BYTES_UP),
            bytes_down: metrics::counter!(metric::PROXY_BYTES_DOWN),
            upstream_response_seconds: metrics::histogram!(metric::UPSTREAM_RESPONSE_SECONDS),
            request_seconds: STATUS_CLASSES
                .map(|class| metrics::histogram!(metric::PROXY_REQUEST_SECONDS, "status" => class)),
            inspection_seconds: metrics::histogram!(metric::INSPECTION_SECONDS),
            inspected_approved: metrics::counter!(metric::INSPECTED, "result" => "approved", "action" => "passed"),
            inspected_rejected_passed: metrics::counter!(metric::INSPECTED, "result" => "rejected", "action" => "passed"),
            inspected_rejected_cut_off: metrics::counter!(metric::INSPECTED, "result" => "rejected", "action" => "cut-off"),
        }
    }

    /// The duration histogram of requests answered with `status` (`None`: no answer).
    pub fn request_seconds(&self, status: Option<u16>) -> &metrics::Histogram {
        &self.request_seconds[status_class_index(status)]
    }
}

/// Counts one open proxy connection for as long as it lives.
pub struct OpenConnection(());

impl OpenConnection {
    /// Counts a connection just accepted.
    pub fn start() -> Self {
        metrics::gauge!(metric::PROXY_CONNECTIONS_OPEN).increment(1.0);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(metric::PROXY_CONNECTIONS_OPEN).decrement(1.0);
    }
}
