//! `fetchgate.toml`: its sections as typed values with their defaults, and the checks
//! that depend on nothing but the file ([`FileConfig::validate`]). Unknown keys are
//! errors, so a typo does not silently do nothing. Values that name files, URLs of the
//! daemon's clients or that command-line flags override are checked by the daemon
//! (`src/config.rs`) as it wires them in.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use crate::acl::AclSection;

/// The name of the optional configuration file inside the config directory.
pub const CONFIG_FILE: &str = "fetchgate.toml";

/// A value outside what the daemon accepts, with its key (`sessions.max-timeout`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole file; every section is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub control: ControlSection,
    pub sessions: SessionsSection,
    pub storage: StorageSection,
    pub logging: LoggingSection,
    pub proxy: ProxySection,
    pub acl: AclSection,
    pub debtags: DebtagsSection,
    pub cluster: ClusterSection,
    pub webhooks: WebhooksSection,
}

impl FileConfig {
    /// Parses the file's text; the error names the line and the key (the caller names
    /// the file).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks the values whose validity depends on nothing but the file.
    pub fn validate(&self) -> Result<(), Invalid> {
        let s = &self.sessions;
        if s.max_timeout == 0 {
            return Err(invalid("sessions.max-timeout", "must be at least 1 second"));
        }
        if s.default_timeout == 0 || s.default_timeout > s.max_timeout {
            return Err(invalid(
                "sessions.default-timeout",
                format!(
                    "must be between 1 and sessions.max-timeout ({})",
                    s.max_timeout
                ),
            ));
        }
        if s.reaper_interval == 0 {
            return Err(invalid(
                "sessions.reaper-interval",
                "must be at least 1 second",
            ));
        }
        if self.storage.sweep_interval == 0 {
            return Err(invalid(
                "storage.sweep-interval",
                "must be at least 1 second",
            ));
        }
        let p = &self.proxy;
        for (key, secs) in [
            ("proxy.header-timeout", p.header_timeout),
            ("proxy.idle-timeout", p.idle_timeout),
            ("proxy.connect-timeout", p.connect_timeout),
            ("proxy.read-timeout", p.read_timeout),
        ] {
            if secs == 0 {
                return Err(invalid(key, "must be at least 1 second"));
            }
        }
        if p.max_header_bytes < 1024 {
            return Err(invalid("proxy.max-header-bytes", "must be at least 1024"));
        }
        for (key, n) in [
            ("proxy.max-connections", p.max_connections),
            ("proxy.max-requests-per-session", p.max_requests_per_session),
        ] {
            if n == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// `[cluster]`: the HA pair. The command-line flags override each key.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSection {
    pub redis: Option<String>,
    pub key_prefix: Option<String>,
    pub node_id: Option<String>,
    pub peers: Vec<String>,
}

/// `[webhooks]`: where session events (revoked, ended, expired) are POSTed.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhooksSection {
    pub urls: Vec<String>,
    /// One attempt's timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts per event and receiver.
    pub attempts: u32,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        WebhooksSection {
            urls: Vec::new(),
            timeout_ms: 5000,
            attempts: 8,
        }
    }
}

/// `[debtags]`: the archives `GET /debtags/{suite}/{component}` serves.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DebtagsSection {
    pub archive: Vec<DebtagsArchive>,
}

/// One `[[debtags.archive]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DebtagsArchive {
    pub name: String,
    /// The directory holding `dists/`.
    pub root: PathBuf,
    /// Base URL of the upstream debtags service (`http://[user:pass@]host[:port][/path]`).
    pub upstream: Option<String>,
    /// How long the upstream gets to answer, in milliseconds.
    #[serde(default = "default_debtags_timeout_ms")]
    pub timeout_ms: u64,
    /// `pkg[, pkg]: tag, tag` lines applied on top of either source.
    pub overrides: Option<PathBuf>,
}

fn default_debtags_timeout_ms() -> u64 {
    2000
}

/// `[proxy]`: the proxy port's timers and limits.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProxySection {
    pub header_timeout: u64,
    pub idle_timeout: u64,
    pub max_header_bytes: usize,
    pub connect_timeout: u64,
    pub read_timeout: u64,
    pub upstream_ca_file: Option<PathBuf>,
    /// Certificates minted for intercepted hosts kept in memory (0 is refused by the parser).
    pub cert_cache_size: NonZeroUsize,
    /// Seconds an upstream host name's addresses are kept (0: looked up every time).
    pub dns_cache_ttl: u64,
    /// Idle upstream connections kept for reuse, over all origins (0 is refused by the
    /// parser).
    pub upstream_keepalive_pool: NonZeroUsize,
    /// Wheels verified in full, and `.deb` licenses, remembered with their sha256, of
    /// each kind (0: none).
    pub verified_cache_size: usize,
    pub max_connections: usize,
    pub max_requests_per_session: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            header_timeout: 30,
            idle_timeout: 60,
            max_header_bytes: 64 * 1024,
            connect_timeout: 10,
            read_timeout: 60,
            upstream_ca_file: None,
            cert_cache_size: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            dns_cache_ttl: 30,
            upstream_keepalive_pool: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            verified_cache_size: 4096,
            max_connections: 4096,
            max_requests_per_session: 256,
        }
    }
}

/// `[control]`: the control API's credentials and whether `/metrics` needs them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControlSection {
    pub auth: Option<String>,
    pub metrics_require_auth: bool,
}

/// `[sessions]`: timeouts in seconds.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SessionsSection {
    pub default_timeout: u64,
    pub max_timeout: u64,
    pub reaper_interval: u64,
}

impl Default for SessionsSection {
    fn default() -> Self {
        SessionsSection {
            default_timeout: 6 * 3600,
            max_timeout: 7 * 24 * 3600,
            reaper_interval: 1,
        }
    }
}

/// `[storage]`: where the database lives and how long ended sessions are kept (seconds).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageSection {
    pub path: Option<PathBuf>,
    pub retention: u64,
    pub sweep_interval: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            path: None,
            retention: 7 * 24 * 3600,
            sweep_interval: 60,
        }
    }
}

/// `[logging]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoggingSection {
    pub format: LogFormat,
}

/// How log lines are written: for people, or one JSON object per line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let err = FileConfig::parse("[storage]\nretention = 5\nretentoin = 3\n").unwrap_err();
        assert!(err.contains("retentoin"), "{err}");
        let err = FileConfig::parse("[sessions]\ndefault-timeout = \"6h\"\n").unwrap_err();
        assert!(err.contains("default-timeout"), "{err}");
    }

    #[test]
    fn an_empty_file_means_valid_defaults() {
        let f = FileConfig::parse("").unwrap();
        assert_eq!(f.sessions.default_timeout, 21600);
        assert_eq!(f.storage.retention, 7 * 24 * 3600);
        assert_eq!(f.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_key() {
        for (text, key) in [
            ("[sessions]\nmax-timeout = 0\n", "sessions.max-timeout"),
            (
                "[sessions]\nmax-timeout = 10\ndefault-timeout = 11\n",
                "sessions.default-timeout",
            ),
            ("[storage]\nsweep-interval = 0\n", "storage.sweep-interval"),
            ("[proxy]\nread-timeout = 0\n", "proxy.read-timeout"),
            (
                "[proxy]\nmax-header-bytes = 1023\n",
                "proxy.max-header-bytes",
            ),
        ] {
            let err = FileConfig::parse(text).unwrap().validate().unwrap_err();
            assert_eq!(err.key, key, "{text}");
        }
        let err = FileConfig::parse("[proxy]\ncert-cache-size = 0\n").unwrap_err();
        assert!(
            err.contains("cert-cache-size") && err.contains("nonzero"),
            "{err}"
        );
    }

    #[test]
    fn dns_cache_ttl_defaults_to_30_seconds_and_0_turns_it_off() {
        assert_eq!(FileConfig::parse("").unwrap().proxy.dns_cache_ttl, 30);
        let off = FileConfig::parse("[proxy]\ndns-cache-ttl = 0\n").unwrap();
        assert_eq!(off.proxy.dns_cache_ttl, 0);
        off.validate().unwrap();
        let err = FileConfig::parse("[proxy]\ndns-cache-ttl = -1\n").unwrap_err();
        assert!(err.contains("dns-cache-ttl"), "{err}");
    }

    #[test]
    fn upstream_keepalive_pool_defaults_to_1024_and_must_hold_one() {
        let default = FileConfig::parse("").unwrap();
        assert_eq!(default.proxy.upstream_keepalive_pool.get(), 1024);
        let one = FileConfig::parse("[proxy]\nupstream-keepalive-pool = 1\n").unwrap();
        assert_eq!(one.proxy.upstream_keepalive_pool.get(), 1);
        for bad in ["0", "\"big\""] {
            let err = FileConfig::parse(&format!("[proxy]\nupstream-keepalive-pool = {bad}\n"))
                .unwrap_err();
            assert!(err.contains("upstream-keepalive-pool"), "{err}");
        }
    }

    #[test]
    fn verified_cache_size_defaults_to_4096_and_0_turns_it_off() {
        assert_eq!(
            FileConfig::parse("").unwrap().proxy.verified_cache_size,
            4096
        );
        let off = FileConfig::parse("[proxy]\nverified-cache-size = 0\n").unwrap();
        assert_eq!(off.proxy.verified_cache_size, 0);
        off.validate().unwrap();
        let err = FileConfig::parse("[proxy]\nverified-cache-size = -1\n").unwrap_err();
        assert!(err.contains("verified-cache-size"), "{err}");
    }
}
