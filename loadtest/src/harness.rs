//! One load-test setup: the origin (with its test CA), the target in front of it and
//! the builders' TLS trust, brought up together and torn down together. Scenarios
//! ([`crate::workload`], [`crate::idle`]) run against a [`Harness`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;

use crate::apt_repo;
use crate::client::{Endpoint, Scheme, url};
use crate::origin::{Origin, OriginBehaviour};
use crate::target::{Target, TargetError, TargetSpec};
use crate::tls::{OriginPki, TlsError, client_config};

/// Why a harness could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("origin TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("origin: cannot listen: {0}")]
    Origin(std::io::Error),
    #[error("origin CA directory: {0}")]
    CaDir(std::io::Error),
    #[error("target: {0}")]
    Target(#[from] TargetError),
}

/// Origin, target and the builders' TLS configuration.
pub struct Harness {
    pub origin: Origin,
    /// The name requests use for the origin: `127.0.0.1` by default; `localhost` for
    /// proxies that cannot intercept TLS to an IP literal (squid mints a DNS-name SAN).
    pub origin_host: String,
    pub target: Target,
    pub tls: Arc<ClientConfig>,
    origin_ca: PathBuf,
    // Keeps a generated origin CA alive for the harness's lifetime.
    _ca_dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// Starts the origin (its CA kept in `origin_ca_dir`, or a temporary one) and the
    /// target.
    pub async fn start(
        spec: &TargetSpec,
        behaviour: OriginBehaviour,
        origin_ca_dir: Option<&Path>,
    ) -> Result<Harness, HarnessError> {
        let (dir, temp) = match origin_ca_dir {
            Some(d) => (d.to_owned(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("fetchgate-loadtest-origin.")
                    .tempdir()
                    .map_err(HarnessError::CaDir)?;
                (t.path().to_owned(), Some(t))
            }
        };
        let pki = OriginPki::load_or_generate(&dir)?;
        let origin = Origin::start(&pki, behaviour)
            .await
            .map_err(HarnessError::Origin)?;
        let target = Target::start(spec, pki.ca_cert_path()).await?;
        let tls = client_config(&[target.trusted_ca(pki.ca_cert_path())])?;
        Ok(Harness {
            origin,
            origin_host: "127.0.0.1".into(),
            target,
            tls,
            origin_ca: pki.ca_cert_path().to_owned(),
            _ca_dir: temp,
        })
    }

    /// The origin listener for `scheme`, under the origin's host name.
    pub fn endpoint(&self, scheme: Scheme) -> Endpoint {
        let addr = match scheme {
            Scheme::Http => self.origin.http_addr(),
            Scheme::Https => self.origin.https_addr(),
        };
        Endpoint::new(&self.origin_host, addr)
    }

    /// An `inspectors-configuration` trusting the origin's files (both listeners):
    /// `/files` as the apt repository [`crate::apt_repo`] builds, signed with
    /// `apt_key`, and `/simple/` as a Python index (its project pages are
    /// [`crate::content::index_pages`]).
    pub fn trust_origin(&self, apt_key: &str) -> serde_json::Value {
        let bases: Vec<String> = [Scheme::Http, Scheme::Https]
            .into_iter()
            .map(|s| url(s, &self.endpoint(s), ""))
            .collect();
        let repositories: Vec<_> = bases
            .iter()
            .map(|b| serde_json::json!({"url": format!("{b}{}", apt_repo::BASE), "suites": [apt_repo::SUITE], "keys": [apt_key]}))
            .collect();
        let indexes: Vec<_> = bases.iter().map(|b| format!("{b}/simple/")).collect();
        serde_json::json!({"apt": {"repositories": repositories}, "pip": {"indexes": indexes}})
    }

    /// The origin CA's certificate file (what a proxy must trust upstream).
    pub fn origin_ca(&self) -> &Path {
        &self.origin_ca
    }

    /// Stops the target if the harness started it.
    pub fn stop(self) {
        self.target.stop();
    }
}
