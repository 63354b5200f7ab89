//! The daemon: binds the ports, opens storage and the CA, starts the control API, the
//! proxy listener and the background tasks, and stops on SIGTERM/SIGINT or idleness.
//!
//! Start-up order matters to clients: the proxy port is bound first, then the control
//! port, so a taken port is reported (status 1 or 2, and a log line with `ERROR:` and
//! `bind: address already in use`) before anything else happens.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fetchgate_storage::Timestamp;
use fetchgate_storage::redis_store::RedisStorage;
use fetchgate_storage::rocks::{OpenOptions, RocksStorage};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::ca::{CaError, CertificateAuthority};
use crate::cluster::Cluster;
use crate::config::{CaSource, Config, Credentials};
use crate::control::{self, ControlState};
use crate::debtags::Debtags;
use crate::idle::{Activity, wait_until_idle};
use crate::proxy;
use crate::session::membership::Membership;
use crate::session::{Finish, Sessions, expiry};
use crate::telemetry::{self, LogFiles};
use crate::webhook::Webhooks;

/// File under the spool holding generated control credentials.
pub const GENERATED_AUTH_FILE: &str = "control-auth";
/// How long in-flight control requests get to finish after a stop signal.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Why the daemon could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on proxy port {port}: listen tcp {addr}: bind: {reason}")]
    ProxyBind {
        port: u16,
        addr: SocketAddr,
        reason: String,
    },
    #[error("cannot listen on control port {port}: listen tcp {addr}: bind: {reason}")]
    ControlBind {
        port: u16,
        addr: SocketAddr,
        reason: String,
    },
    #[error("cannot open log file: {0}")]
    Logging(std::io::Error),
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    #[error("{0}")]
    Setup(String),
    #[error("storage: {0}")]
    Storage(#[from] fetchgate_storage::Error),
    #[error("service failed: {0}")]
    Service(String),
}

impl DaemonError {
    /// The process exit status for this error (see `shared/spec/cli.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::ProxyBind { .. } | DaemonError::Logging(_) => 1,
            // A certificate or key that is wrong is a wrong argument; one that cannot be
            // read or written is the service failing.
            DaemonError::Ca(CaError::Read { .. } | CaError::Write { .. }) => 2,
            DaemonError::Ca(_) => 1,
            DaemonError::ControlBind { .. }
            | DaemonError::Setup(_)
            | DaemonError::Storage(_)
            | DaemonError::Service(_) => 2,
        }
    }
}

fn bind_reason(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        "address already in use".to_owned()
    } else {
        e.to_string()
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

/// Runs the daemon until it is told to stop; `Ok` means a normal stop (status 0).
pub fn run(config: Config) -> Result<(), DaemonError> {
    let log_files = telemetry::init_logging(&config.log).map_err(|e| {
        eprintln!("ERROR: cannot open log file: {e}");
        DaemonError::Logging(e)
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::memory::on_worker_park)
        .thread_name("fetchgate")
        .build()
        .map_err(|e| DaemonError::Service(format!("cannot start the runtime: {e}")))?;
    raise_open_files_limit(&config.proxy);
    let logs_to_file = config.log.file.is_some();
    let result = runtime.block_on(serve(config, log_files));
    if let Err(e) = &result {
        tracing::error!("ERROR: {e}");
        if logs_to_file {
            // craft reads the log file; people read stderr. Give both the reason.
            eprintln!("ERROR: {e}");
        }
    }
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Raises the soft limit on open files to the hard one: each proxied connection holds
/// two descriptors (builder and upstream), each idle upstream connection kept for reuse
/// one, and a shell's default soft limit (1,024) would refuse connections long before
/// `proxy.max-connections`. Warns when even the hard limit is too low for those settings.
fn raise_open_files_limit(proxy: &crate::proxy::ProxyConfig) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    // Two per connection and one per pooled upstream connection, plus the database's
    // files, logs and listeners.
    let needed =
        2 * proxy.max_connections as u64 + proxy.upstream_keepalive_pool.get() as u64 + 512;
    if soft < needed {
        tracing::warn!(
            limit = soft,
            needed,
            "the open-files limit is below what proxy.max-connections and proxy.upstream-keepalive-pool need; raise it (LimitNOFILE= in the unit, ulimit -n) or lower them"
        );
    }
}

async fn serve(config: Config, log_files: LogFiles) -> Result<(), DaemonError> {
    let started = Timestamp::now();
    let started_at = Instant::now();

    let proxy_addr = SocketAddr::new(config.bind, config.proxy_port);
    let proxy_listener = bind(proxy_addr).map_err(|e| DaemonError::ProxyBind {
        port: config.proxy_port,
        addr: proxy_addr,
        reason: bind_reason(&e),
    })?;
    let control_addr = SocketAddr::new(config.bind, config.control_port);
    let control_listener = bind(control_addr).map_err(|e| DaemonError::ControlBind {
        port: config.control_port,
        addr: control_addr,
        reason: bind_reason(&e),
    })?;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&config.spool)
        .map_err(|e| {
            DaemonError::Setup(format!(
                "cannot create spool {}: {e}",
                config.spool.display()
            ))
        })?;

    // Loading proves the certificate matches the key and the key can sign.
    let (ca, origin) = match &config.ca {
        CaSource::Files { cert, key } => (CertificateAuthority::load(cert, key)?, "loaded"),
        CaSource::Generated { dir } => match CertificateAuthority::load_or_generate(dir)? {
            (ca, true) => (ca, "generated"),
            (ca, false) => (ca, "reusing generated"),
        },
    };
    tracing::info!(path = %ca.cert_path().display(), "{origin} CA certificate; builders must trust this file");

    let credentials = match config.control_auth.clone() {
        Some(c) => c,
        None => generated_credentials(&config.spool)?,
    };

    let db_path = config.db_path.clone();
    let metrics = telemetry::init_metrics().map_err(DaemonError::Setup)?;
    let storage = tokio::task::spawn_blocking(move || {
        let options = OpenOptions {
            observer: Some(Arc::new(telemetry::AuditWriterMetrics::register())),
            ..OpenOptions::default()
        };
        RocksStorage::open_with(&db_path, options)
    })
    .await
    .map_err(|e| DaemonError::Service(e.to_string()))??;
    let storage = Arc::new(storage);
    let (sessions, cluster) = match &config.cluster {
        None => (
            Sessions::new(
                storage.clone(),
                storage,
                config.spool.clone(),
                config.sessions,
                config.permissive_mode,
            ),
            None,
        ),
        Some(c) => {
            // Sessions in the shared Redis, this node's audit records in its own RocksDB.
            let observer = Arc::new(telemetry::SessionCacheMetrics);
            let shared = Arc::new(RedisStorage::connect_with(&c.redis, Some(observer)).await?);
            tracing::info!(node = %c.node, peers = c.peers.len(), "HA pair node; sessions in redis");
            let sessions = Sessions::new(
                shared.clone(),
                storage,
                config.spool.clone(),
                config.sessions,
                config.permissive_mode,
            )
            .with_membership(Membership::new(c.node.clone(), shared));
            let cluster = Cluster::new(c.peers.clone(), credentials.clone());
            (sessions, Some(Arc::new(cluster)))
        }
    };
    if let Some(webhooks) = Webhooks::start(config.webhooks.clone()) {
        sessions.on_finished(move |h, how| webhooks.notify(h, how));
    }
    let sessions = Arc::new(sessions);
    if config.retention.period.is_zero() {
        // Retention 0: the data goes when the session ends, not at the next sweep.
        let weak = Arc::downgrade(&sessions);
        sessions.on_finished(move |_, how| {
            if how == Finish::Revoked {
                return;
            }
            if let Some(s) = weak.upgrade() {
                tokio::spawn(async move {
                    if let Err(e) = expiry::sweep_retained(&s, Duration::ZERO).await {
                        tracing::warn!(error = %e, "deleting an ended session failed; the next sweep retries");
                    }
                });
            }
        });
    }
    let activity = Arc::new(Activity::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    expiry::spawn(
        Arc::clone(&sessions),
        config.sessions.reaper_interval,
        config.retention.period,
        config.retention.sweep_interval,
        stop_rx.clone(),
    );
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let debtags = Arc::new(Debtags::new(config.debtags.clone()));
    let proxy = proxy::build(
        &config.proxy,
        ca,
        proxy::Shared {
            sessions: Arc::clone(&sessions),
            activity: Arc::clone(&activity),
            debtags: Arc::clone(debtags.packages()),
        },
        config.bind,
        vec![config.control_port, config.proxy_port],
        &config.spool,
    )
    .map_err(DaemonError::Setup)?;
    tokio::spawn(proxy.serve(proxy_listener, stop_rx.clone()));

    // Before the control API answers: a client that saw `/status` may signal at once
    // (logrotate's SIGUSR1 would otherwise kill the process by its default action).
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Setup(e.to_string()))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| DaemonError::Setup(e.to_string()))?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).map_err(|e| DaemonError::Setup(e.to_string()))?;
    let state = Arc::new(ControlState {
        sessions,
        credentials,
        metrics,
        metrics_require_auth: config.metrics_require_auth,
        started,
        started_at,
        activity: Arc::clone(&activity),
        debtags,
        cluster,
    });
    let mut control_stop = stop_rx.clone();
    let mut control = tokio::spawn(control::serve(control_listener, state, async move {
        let _ = control_stop.changed().await;
    }));
    tracing::info!(
        proxy = %proxy_addr,
        control = %control_addr,
        spool = %config.spool.display(),
        "fetchgate {} started",
        env!("CARGO_PKG_VERSION")
    );

    let idle = async {
        match config.idle_shutdown {
            Some(limit) => wait_until_idle(&activity, limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(idle);
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sigusr1.recv() => log_files.reopen(),
            _ = &mut idle => break Ok("idle shutdown"),
            r = &mut control => break Err(DaemonError::Service(match r {
                Ok(Ok(())) => "the control API stopped".to_owned(),
                Ok(Err(e)) => format!("control API: {e}"),
                Err(e) => format!("control API task: {e}"),
            })),
        }
    };
    let _ = stop_tx.send(true);
    if let Ok(reason) = &outcome {
        tracing::info!("stopping ({reason}); live sessions are kept for the next start");
        let _ = tokio::time::timeout(STOP_GRACE, control).await;
    }
    outcome.map(|_| ())
}

/// Reads the generated control credentials, creating them (mode 0600) on first start.
fn generated_credentials(spool: &Path) -> Result<Credentials, DaemonError> {
    let path = spool.join(GENERATED_AUTH_FILE);
    let setup = |what: &str, e: std::io::Error| {
        DaemonError::Setup(format!("cannot {what} {}: {e}", path.display()))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let creds = Credentials::parse(text.trim(), &path.display().to_string())
                .map_err(|e| DaemonError::Setup(e.to_string()))?;
            tracing::info!(path = %path.display(), user = creds.user(), "control API credentials read from the spool");
            Ok(creds)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let password: String = rand::rng()
                .sample_iter(Alphanumeric)
                .take(32)
                .map(char::from)
                .collect();
            let creds = Credentials::new("fetchgate".into(), password);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| setup("create", e))?;
            writeln!(f, "{}", creds.to_pair()).map_err(|e| setup("write", e))?;
            f.sync_all().map_err(|e| setup("write", e))?;
            tracing::warn!(
                path = %path.display(),
                "no control credentials configured (FETCH_SERVICE_AUTH or control.auth); generated them in this file"
            );
            Ok(creds)
        }
        Err(e) => Err(setup("read", e)),
    }
}
