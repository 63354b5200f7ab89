//! The proxy port (default 9988): a forward proxy for plain HTTP (absolute-form) and
//! HTTPS (CONNECT, intercepted with a leaf certificate per host), built on Pingora.
//!
//! `listener` accepts connections and handles CONNECT and TLS; `pipeline` is the
//! `ProxyHttp` implementation every request goes through (auth, ACL, upstream,
//! streaming digests, audit record); `mitm` mints leaf certificates; `acl` decides
//! which destinations may be reached; `target` parses destinations; `secrets` injects
//! session credentials upstream. See `docs/architecture.md` for the Pingora seam.

pub mod acl;
pub mod auth;
pub mod downstream;
pub mod limits;
pub mod listener;
pub mod mitm;
pub mod pipeline;
pub mod resolver;
pub mod secrets;
pub mod target;
pub mod upstream;

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;

use self::acl::{Acl, AclRules};
use self::limits::SessionLimiter;
use self::listener::{ConnectionLimits, ProxyListener};
use self::mitm::CertCache;
use self::pipeline::{Pipeline, UpstreamTimeouts};
use self::resolver::Resolver;
use self::upstream::UpstreamProxies;
use crate::ca::CertificateAuthority;
use crate::debtags::cache::PackagesCache;
use crate::idle::Activity;
use crate::inspect::Inspectors;
use crate::inspect::config::Trust;
use crate::session::Sessions;
use crate::telemetry::ProxyMetrics;

/// Where Debian keeps the system's trusted roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub head_timeout: Duration,
    pub max_head_bytes: usize,
    /// Idle time allowed between requests on a kept-alive connection or tunnel, and for
    /// an upstream connection in the keep-alive pool.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Extra roots trusted for upstream TLS, on top of the system's.
    pub upstream_ca_file: Option<PathBuf>,
    pub cert_cache_size: NonZeroUsize,
    /// How long an upstream host name's addresses are kept (zero: looked up every time).
    pub dns_cache_ttl: Duration,
    /// Idle upstream connections kept for reuse, over all origins.
    pub upstream_keepalive_pool: NonZeroUsize,
    /// Wheels verified in full, and `.deb` licenses, remembered with their sha256, of
    /// each kind (0: none).
    pub verified_cache_size: usize,
    /// Operator destination rules (`[acl]` and `acl.yaml`), before the defaults.
    pub acl: AclRules,
    /// Connections open on the proxy port at once (503 beyond).
    pub max_connections: usize,
    /// Requests in flight per session (503 beyond, recorded).
    pub max_requests_per_session: usize,
    /// `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY`.
    pub upstreams: UpstreamProxies,
    /// Origins every session's inspectors trust (`inspectors.yaml`).
    pub trust: Trust,
}

/// What the proxy shares with the rest of the daemon.
pub struct Shared {
    pub sessions: Arc<Sessions>,
    /// Touched by every request (idle shutdown).
    pub activity: Arc<Activity>,
    /// Given the debtags of the Packages indexes builders fetch.
    pub debtags: Arc<PackagesCache>,
}

/// Builds the proxy: the pipeline inside Pingora's `HttpProxy`, and our listener in front.
pub fn build(
    config: &ProxyConfig,
    ca: CertificateAuthority,
    shared: Shared,
    bind: IpAddr,
    own_ports: Vec<u16>,
    spool: &Path,
) -> Result<Arc<ProxyListener>, String> {
    let Shared {
        sessions,
        activity,
        debtags,
    } = shared;
    // Pingora's rustls connector expects a process-wide provider; ring, as ours.
    pingora::tls::install_default_crypto_provider();
    let mut conf = ServerConf {
        // Pingora's pool holds this many per thread of its own server, which we do not
        // run (`threads` stays 1): so this is the whole pool.
        upstream_keepalive_pool_size: config.upstream_keepalive_pool.get(),
        ..ServerConf::default()
    };
    if let Some(extra) = &config.upstream_ca_file {
        conf.ca_file = Some(upstream_roots(extra, spool)?.display().to_string());
    }
    for (scheme, proxy) in [
        ("http", &config.upstreams.http),
        ("https", &config.upstreams.https),
    ] {
        if let Some(p) = proxy {
            tracing::info!(scheme, proxy = %p, "requests go through an upstream proxy (NO_PROXY excepted)");
        }
    }
    let acl = Arc::new(Acl::new(bind, own_ports, config.acl.clone()));
    let inspectors = Arc::new(Inspectors::new(
        config.trust.clone(),
        inspect_spool(spool)?,
        Some(debtags),
        config.verified_cache_size,
    ));
    let forget = Arc::downgrade(&inspectors);
    sessions.on_finished(move |h, _| {
        if let Some(inspectors) = forget.upgrade() {
            inspectors.forget(h.id);
        }
    });
    let pipeline = Pipeline {
        sessions: Arc::clone(&sessions),
        acl: Arc::clone(&acl),
        activity,
        timeouts: UpstreamTimeouts {
            connect: config.connect_timeout,
            read: config.read_timeout,
            idle: config.idle_timeout,
        },
        limiter: SessionLimiter::new(config.max_requests_per_session),
        upstreams: config.upstreams.clone(),
        resolver: Resolver::new(config.dns_cache_ttl),
        inspectors: Arc::clone(&inspectors),
        max_head_bytes: config.max_head_bytes,
        metrics: ProxyMetrics::register(),
    };
    let proxy = pingora::proxy::http_proxy(&Arc::new(conf), pipeline);
    Ok(Arc::new(ProxyListener {
        proxy: Arc::new(proxy),
        certs: Arc::new(CertCache::new(ca, config.cert_cache_size)),
        sessions,
        acl,
        limits: ConnectionLimits {
            head_timeout: config.head_timeout,
            max_head_bytes: config.max_head_bytes,
            idle_timeout: config.idle_timeout,
        },
        connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
    }))
}

/// Where index files are spooled while inspectors read them (unnamed temporary files).
fn inspect_spool(spool: &Path) -> Result<PathBuf, String> {
    let dir = spool.join("inspect");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Pingora's connector trusts exactly one bundle file: write the system roots plus the
/// configured extra roots into one, under the spool.
fn upstream_roots(extra: &Path, spool: &Path) -> Result<PathBuf, String> {
    let extra_pem = std::fs::read_to_string(extra)
        .map_err(|e| format!("upstream-ca-file {}: {e}", extra.display()))?;
    if !extra_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "upstream-ca-file {}: no PEM certificate in it",
            extra.display()
        ));
    }
    let mut bundle = std::fs::read_to_string(SYSTEM_ROOTS).unwrap_or_else(|e| {
        tracing::warn!(path = SYSTEM_ROOTS, error = %e, "no system roots; trusting only upstream-ca-file");
        String::new()
    });
    bundle.push('\n');
    bundle.push_str(&extra_pem);
    let path = spool.join("upstream-roots.pem");
    std::fs::write(&path, bundle).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
