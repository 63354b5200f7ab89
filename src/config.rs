//! Configuration, parsed once at the edge into typed values: command-line flags, the
//! environment (`FETCH_SERVICE_AUTH`, `SNAP_DATA`/`SNAP_COMMON`, the upstream proxy
//! variables `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`) and the optional
//! `fetchgate.toml` and `acl.yaml` in the config directory. Every error names the flag,
//! variable, file or key that caused it. The files' formats are parsed and validated by
//! `fetchgate-config`; this module reads them, checks what depends on the machine or the
//! flags (paths, ports, URLs of the daemon's clients, the HA pair) and builds [`Config`].

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fetchgate_config::acl::{AclSection, merge};
use fetchgate_config::file::{ClusterSection, DebtagsSection, FileConfig, WebhooksSection};
use fetchgate_storage::redis_store::RedisConfig;
use fetchgate_storage::{InvalidNodeId, NodeId};
use subtle::ConstantTimeEq;

use crate::cli::{ClusterArgs, LogFormat, ServeArgs, Verbosity};
use crate::cluster::Peer;
use crate::debtags::Archive;
use crate::debtags::upstream::Upstream;
use crate::http_client::Endpoint;
use crate::proxy::ProxyConfig;
use crate::proxy::acl::AclRules;
use crate::proxy::upstream::UpstreamProxies;
use crate::webhook::WebhookConfig;

pub use fetchgate_config::acl::ACL_FILE;
pub use fetchgate_config::file::CONFIG_FILE;

/// A configuration problem, named precisely enough to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{name} must be `user:password` with a non-empty user")]
    Credentials { name: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// Control API credentials (`user:password`), compared in constant time.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    /// Parses `user:password`; the password may contain colons, the user may not.
    pub fn parse(s: &str, name: &str) -> Result<Self, ConfigError> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err(ConfigError::Credentials { name: name.into() }),
        }
    }

    /// Builds credentials from their parts.
    pub fn new(user: String, password: String) -> Self {
        Credentials { user, password }
    }

    /// Whether `user`/`password` match, without leaking where they differ through timing.
    pub fn matches(&self, user: &str, password: &str) -> bool {
        let user_ok = self.user.as_bytes().ct_eq(user.as_bytes());
        let password_ok = self.password.as_bytes().ct_eq(password.as_bytes());
        (user_ok & password_ok).into()
    }

    /// The `user:password` form, for writing the generated credentials file.
    pub fn to_pair(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.user)
    }
}

/// Where the interception CA comes from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// `--cert` and `--key`.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated under the spool on first start, reused afterwards.
    Generated { dir: PathBuf },
}

/// Logging destinations and level.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub file: Option<PathBuf>,
    pub security_file: Option<PathBuf>,
    pub verbosity: Verbosity,
    pub json: bool,
}

/// Session limits and timers.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Timeout of a session created without one, in seconds.
    pub default_timeout_secs: u64,
    /// Largest timeout a client may ask for, in seconds.
    pub max_timeout_secs: u64,
    /// How often the reaper ends expired sessions.
    pub reaper_interval: Duration,
}

/// How long ended sessions' data is kept.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Kept this long after a session ends (0 = deleted at the next sweep).
    pub period: Duration,
    /// How often the sweeper runs.
    pub sweep_interval: Duration,
}

/// The daemon's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub control_port: u16,
    pub proxy_port: u16,
    pub config_dir: PathBuf,
    pub spool: PathBuf,
    pub db_path: PathBuf,
    pub ca: CaSource,
    pub permissive_mode: bool,
    pub idle_shutdown: Option<Duration>,
    pub log: LogConfig,
    /// `None`: generate credentials under the spool on first start.
    pub control_auth: Option<Credentials>,
    pub metrics_require_auth: bool,
    pub sessions: SessionConfig,
    pub retention: RetentionConfig,
    pub proxy: ProxyConfig,
    /// Archives served by `GET /debtags/...`, in configuration order (the first is the default).
    pub debtags: Vec<Archive>,
    /// `None`: a standalone node with the embedded session store.
    pub cluster: Option<ClusterConfig>,
    /// Receivers of session events (none by default).
    pub webhooks: WebhookConfig,
}

/// A node of an HA pair: the shared Redis, this node's name, the other nodes.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis: RedisConfig,
    pub node: NodeId,
    pub peers: Vec<Peer>,
}

/// The default prefix of fetchgate's Redis keys.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "fetchgate:";

/// Resolves the HA pair settings (flags over `[cluster]`); errors name the flag or key.
fn cluster_config(
    args: &ClusterArgs,
    file: &ClusterSection,
    retention: Duration,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let pick = |flag: &Option<String>, key: &Option<String>, flag_name: &str, key_name: &str| match (
        flag, key,
    ) {
        (Some(v), _) => Some((v.clone(), flag_name.to_owned())),
        (None, Some(v)) => Some((v.clone(), format!("cluster.{key_name}"))),
        (None, None) => None,
    };
    let redis = pick(&args.redis, &file.redis, "--redis", "redis");
    let node = pick(&args.node_id, &file.node_id, "--node-id", "node-id");
    let (peers, peers_key) = if args.peers.is_empty() {
        (file.peers.clone(), "cluster.peers")
    } else {
        (args.peers.clone(), "--peer")
    };
    let Some((url, url_key)) = redis else {
        if let Some((_, key)) = node {
            return Err(invalid(&key, "only applies with --redis (cluster.redis)"));
        }
        if !peers.is_empty() {
            return Err(invalid(
                peers_key,
                "only applies with --redis (cluster.redis)",
            ));
        }
        return Ok(None);
    };
    if !url.starts_with("redis://") {
        return Err(invalid(&url_key, "must be a redis://host:port[/db] URL"));
    }
    let (node, node_key) = node.ok_or_else(|| {
        invalid(
            "--node-id",
            "an HA pair node needs a name (--node-id or cluster.node-id)",
        )
    })?;
    let node: NodeId = node
        .parse()
        .map_err(|e: InvalidNodeId| invalid(&node_key, e.to_string()))?;
    let key_prefix = pick(
        &args.redis_key_prefix,
        &file.key_prefix,
        "--redis-key-prefix",
        "key-prefix",
    )
    .map(|(p, _)| p)
    .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_owned());
    let peers = peers
        .iter()
        .enumerate()
        .map(|(i, p)| Peer::parse(p).map_err(|m| invalid(&format!("{peers_key}[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(ClusterConfig {
        redis: RedisConfig {
            url,
            key_prefix,
            retention,
        },
        node,
        peers,
    }))
}

fn webhook_config(w: &WebhooksSection) -> Result<WebhookConfig, ConfigError> {
    if w.timeout_ms == 0 {
        return Err(invalid("webhooks.timeout-ms", "must be at least 1"));
    }
    if w.attempts == 0 {
        return Err(invalid("webhooks.attempts", "must be at least 1"));
    }
    let urls = w
        .urls
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let (endpoint, userinfo) = Endpoint::parse(u)
                .map_err(|e| invalid(&format!("webhooks.urls[{i}]"), e.to_string()))?;
            Ok((u.clone(), endpoint, userinfo))
        })
        .collect::<Result<_, ConfigError>>()?;
    Ok(WebhookConfig {
        urls,
        timeout: Duration::from_millis(w.timeout_ms),
        attempts: w.attempts,
    })
}

/// Validates `[[debtags.archive]]` entries; errors name the key.
fn debtags_archives(section: &DebtagsSection) -> Result<Vec<Archive>, ConfigError> {
    let mut out: Vec<Archive> = Vec::new();
    for (i, a) in section.archive.iter().enumerate() {
        let key = |k: &str| format!("debtags.archive[{i}].{k}");
        if a.name.is_empty() || !crate::debtags::valid_name(&a.name) {
            return Err(invalid(
                &key("name"),
                "must be non-empty letters, digits and . + _ -",
            ));
        }
        if out.iter().any(|o| o.name == a.name) {
            return Err(invalid(
                &key("name"),
                format!("{:?} is used by an earlier archive", a.name),
            ));
        }
        if !a.root.is_absolute() || !a.root.is_dir() {
            return Err(invalid(
                &key("root"),
                format!("{} is not an existing absolute directory", a.root.display()),
            ));
        }
        if a.timeout_ms == 0 || a.timeout_ms > 60_000 {
            return Err(invalid(
                &key("timeout-ms"),
                "must be between 1 and 60000 milliseconds",
            ));
        }
        let upstream = a
            .upstream
            .as_deref()
            .map(|u| Upstream::parse(u, Duration::from_millis(a.timeout_ms)))
            .transpose()
            .map_err(|m| invalid(&key("upstream"), m))?;
        if let Some(o) = &a.overrides
            && !o.is_file()
        {
            return Err(invalid(
                &key("overrides"),
                format!("{} is not a readable file", o.display()),
            ));
        }
        out.push(Archive {
            name: a.name.clone(),
            root: a.root.clone(),
            upstream,
            overrides: a.overrides.clone(),
        });
    }
    Ok(out)
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Resolves flags, environment and the config file into a validated configuration.
    pub fn load(args: ServeArgs) -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let config_dir = args
            .config
            .or_else(|| env("SNAP_DATA").map(|d| Path::new(&d).join("conf")))
            .unwrap_or_else(|| PathBuf::from("/etc/fetchgate"));
        let spool = args
            .spool
            .or_else(|| env("SNAP_COMMON").map(|d| Path::new(&d).join("spool")))
            .unwrap_or_else(|| PathBuf::from("/var/lib/fetchgate"));
        let file = read_file_config(&config_dir)?;

        let control_auth = match std::env::var("FETCH_SERVICE_AUTH") {
            Ok(v) if !v.is_empty() => Some(Credentials::parse(&v, "FETCH_SERVICE_AUTH")?),
            _ => file
                .control
                .auth
                .as_deref()
                .map(|v| Credentials::parse(v, "control.auth in fetchgate.toml"))
                .transpose()?,
        };

        file.validate().map_err(|e| invalid(&e.key, e.message))?;
        if args.control_port == args.proxy_port {
            return Err(invalid(
                "--control-port",
                format!(
                    "the control and proxy ports must differ (both are {})",
                    args.proxy_port
                ),
            ));
        }

        let p = &file.proxy;
        let acl = acl_rules(&config_dir, &file.acl)?;
        let upstreams = UpstreamProxies::from_env(|name| std::env::var(name).ok())
            .map_err(|e| invalid(&e.var, e.message))?;
        let trust =
            crate::inspect::config::load(&config_dir).map_err(|message| ConfigError::File {
                path: config_dir.join(crate::inspect::config::INSPECTORS_FILE),
                message,
            })?;
        let proxy = ProxyConfig {
            trust,
            head_timeout: Duration::from_secs(p.header_timeout),
            idle_timeout: Duration::from_secs(p.idle_timeout),
            max_head_bytes: p.max_header_bytes,
            connect_timeout: Duration::from_secs(p.connect_timeout),
            read_timeout: Duration::from_secs(p.read_timeout),
            upstream_ca_file: p.upstream_ca_file.clone(),
            cert_cache_size: p.cert_cache_size,
            dns_cache_ttl: Duration::from_secs(p.dns_cache_ttl),
            upstream_keepalive_pool: p.upstream_keepalive_pool,
            verified_cache_size: p.verified_cache_size,
            acl,
            upstreams,
            max_connections: p.max_connections,
            max_requests_per_session: p.max_requests_per_session,
        };

        let debtags = debtags_archives(&file.debtags)?;
        let webhooks = webhook_config(&file.webhooks)?;
        let cluster = cluster_config(
            &args.cluster,
            &file.cluster,
            Duration::from_secs(file.storage.retention),
        )?;
        let ca = match (args.cert, args.key) {
            (Some(cert), Some(key)) => CaSource::Files { cert, key },
            _ => CaSource::Generated {
                dir: spool.join("ca"),
            },
        };
        let db_path = file
            .storage
            .path
            .clone()
            .unwrap_or_else(|| spool.join("db"));

        Ok(Config {
            bind: args.bind,
            control_port: args.control_port,
            proxy_port: args.proxy_port,
            config_dir,
            db_path,
            ca,
            permissive_mode: args.permissive_mode,
            idle_shutdown: (args.idle_shutdown > 0)
                .then(|| Duration::from_secs(args.idle_shutdown)),
            log: LogConfig {
                file: args.log_file,
                security_file: args.security_log_file,
                verbosity: args.verbosity,
                // The flag wins over the file.
                json: args.log_format.unwrap_or(file.logging.format) == LogFormat::Json,
            },
            control_auth,
            metrics_require_auth: file.control.metrics_require_auth,
            sessions: SessionConfig {
                default_timeout_secs: file.sessions.default_timeout,
                max_timeout_secs: file.sessions.max_timeout,
                reaper_interval: Duration::from_secs(file.sessions.reaper_interval),
            },
            retention: RetentionConfig {
                period: Duration::from_secs(file.storage.retention),
                sweep_interval: Duration::from_secs(file.storage.sweep_interval),
            },
            proxy,
            spool,
            debtags,
            cluster,
            webhooks,
        })
    }
}

/// Reads `acl.yaml` (when present) and merges it with `[acl]` from `fetchgate.toml`
/// into one rule set (see `fetchgate_config::acl::merge`).
fn acl_rules(dir: &Path, toml: &AclSection) -> Result<AclRules, ConfigError> {
    let path = dir.join(ACL_FILE);
    let yaml = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    merge(toml, yaml.as_deref()).map_err(|e| ConfigError::File {
        path: dir.join(e.file),
        message: e.message,
    })
}

fn read_file_config(dir: &Path) -> Result<FileConfig, ConfigError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    FileConfig::parse(&text).map_err(|message| ConfigError::File { path, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::acl::Access;

    #[test]
    fn credentials_split_at_the_first_colon() {
        let c = Credentials::parse("craft:pa:ss", "X").unwrap();
        assert!(c.matches("craft", "pa:ss"));
        assert!(!c.matches("craft", "pa"));
        assert!(!c.matches("craf", "pa:ss"));
        assert!(Credentials::parse("nocolon", "X").is_err());
        assert!(Credentials::parse(":pw", "X").is_err());
        assert!(Credentials::parse("u:", "X").unwrap().matches("u", ""));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials::parse("craft:secret", "X").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn acl_yaml_and_toml_merge_into_one_rule_set() {
        use crate::proxy::acl::Acl;
        use crate::proxy::target::HostPort;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(ACL_FILE),
            "http-proxy:\n  rules:\n    - dst: [10.1.0.0/16]\n      access: deny\n  deny-hosts: [Bad.Example]\n",
        )
        .unwrap();
        let file: FileConfig = FileConfig::parse(
            "[acl]\npolicy = \"allow\"\nallow = [\"10.1.2.3\"]\ndeny = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let acl = Acl::new(
            "127.0.0.1".parse().unwrap(),
            vec![],
            acl_rules(dir.path(), &file.acl).unwrap(),
        );
        let check = |a: &str| acl.check(a.parse().unwrap()).map_err(|e| e.to_string());
        assert!(check("10.1.2.3:80").is_ok(), "the allow hole comes first");
        assert!(
            check("10.1.2.4:80")
                .unwrap_err()
                .contains("http-proxy.rules[0] in acl.yaml")
        );
        assert!(
            check("10.2.0.1:80")
                .unwrap_err()
                .contains("acl.deny in fetchgate.toml")
        );
        assert!(check("192.0.2.1:80").is_ok());
        let host = HostPort {
            host: "bad.example".into(),
            port: 443,
        };
        let err = acl.check_destination(&host).unwrap_err().to_string();
        assert!(err.contains("http-proxy.deny-hosts in acl.yaml"), "{err}");

        for empty in ["", "# no rules yet\n"] {
            std::fs::write(dir.path().join(ACL_FILE), empty).unwrap();
            let rules = acl_rules(dir.path(), &AclSection::default()).unwrap();
            assert!(rules.rules.is_empty() && rules.policy == Access::Allow);
        }
        let file: FileConfig = FileConfig::parse("[acl]\npolicy = \"deny\"\n").unwrap();
        std::fs::write(dir.path().join(ACL_FILE), "http-proxy:\n  policy: allow\n").unwrap();
        let err = acl_rules(dir.path(), &file.acl).unwrap_err().to_string();
        assert!(err.contains("acl.yaml: http-proxy.policy"), "{err}");
    }

    #[test]
    fn debtags_archives_are_validated_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display();
        let check = |text: String| {
            let f = FileConfig::parse(&text)?;
            debtags_archives(&f.debtags).map_err(|e| e.to_string())
        };
        let ok = check(format!(
            "[[debtags.archive]]\nname = \"main\"\nroot = \"{root}\"\nupstream = \"http://u:p@127.0.0.1:1/base/\"\n"
        ))
        .unwrap();
        assert_eq!(
            ok[0].upstream.as_ref().unwrap().timeout(),
            Duration::from_secs(2)
        );
        for (extra, key) in [
            ("timeout-ms = 0\n", "debtags.archive[0].timeout-ms"),
            ("upstream = \"https://x\"\n", "debtags.archive[0].upstream"),
            (
                "overrides = \"/nonexistent\"\n",
                "debtags.archive[0].overrides",
            ),
            ("colour = 1\n", "colour"),
        ] {
            let err = check(format!(
                "[[debtags.archive]]\nname = \"main\"\nroot = \"{root}\"\n{extra}"
            ))
            .unwrap_err();
            assert!(err.contains(key), "{err}");
        }
        let err =
            check("[[debtags.archive]]\nname = \"m\"\nroot = \"relative\"\n".into()).unwrap_err();
        assert!(err.contains("debtags.archive[0].root"), "{err}");
        let err = check(format!(
            "[[debtags.archive]]\nname = \"m\"\nroot = \"{root}\"\n[[debtags.archive]]\nname = \"m\"\nroot = \"{root}\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("debtags.archive[1].name"), "{err}");
    }

    #[test]
    fn cluster_settings_come_from_flags_over_the_file_and_name_the_key() {
        let flags = |redis: Option<&str>, node: Option<&str>, peers: &[&str]| ClusterArgs {
            redis: redis.map(Into::into),
            redis_key_prefix: None,
            node_id: node.map(Into::into),
            peers: peers.iter().map(|p| p.to_string()).collect(),
        };
        let file: FileConfig = FileConfig::parse(
            "[cluster]\nredis = \"redis://r:6379/\"\nnode-id = \"a\"\nkey-prefix = \"x:\"\npeers = [\"http://b:9999\"]\n",
        )
        .unwrap();
        let ttl = Duration::from_secs(60);
        let c = cluster_config(&flags(None, Some("z"), &[]), &file.cluster, ttl)
            .unwrap()
            .unwrap();
        assert_eq!(c.node.as_str(), "z");
        assert_eq!(c.redis.key_prefix, "x:");
        assert_eq!(c.peers, vec![Peer::parse("http://b:9999").unwrap()]);
        let none = ClusterSection::default();
        assert!(
            cluster_config(&flags(None, None, &[]), &none, ttl)
                .unwrap()
                .is_none()
        );
        let c = cluster_config(&flags(Some("redis://h:1"), Some("a"), &[]), &none, ttl)
            .unwrap()
            .unwrap();
        assert_eq!(c.redis.key_prefix, DEFAULT_REDIS_KEY_PREFIX);
        for (args, key) in [
            (flags(Some("redis://h:1"), None, &[]), "--node-id"),
            (flags(Some("redis://h:1"), Some("a b"), &[]), "--node-id"),
            (flags(Some("http://h:1"), Some("a"), &[]), "--redis"),
            (flags(None, Some("a"), &[]), "--node-id"),
            (flags(None, None, &["http://b:1"]), "--peer"),
            (
                flags(Some("redis://h:1"), Some("a"), &["ftp://b"]),
                "--peer[0]",
            ),
        ] {
            let err = cluster_config(&args, &none, ttl).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
        let file: FileConfig = FileConfig::parse("[cluster]\nredis = \"redis://r/\"\n").unwrap();
        let err = cluster_config(&flags(None, None, &[]), &file.cluster, ttl).unwrap_err();
        assert!(err.to_string().starts_with("--node-id"), "{err}");
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = read_file_config(dir.path()).unwrap();
        assert_eq!(f.sessions.default_timeout, 21600);
        assert_eq!(f.storage.retention, 7 * 24 * 3600);
    }
}
