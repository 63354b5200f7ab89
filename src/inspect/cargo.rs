//! Crates from trusted cargo registries (the sparse index protocol):
//!
//! - `cargo.index`: a registry's `config.json` (its `dl` download template is
//!   remembered) and its index files (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd…`): every
//!   version's download URL, from the template, is remembered with its `cksum`.
//! - `cargo.crate`: a remembered download URL; the `.crate` is spooled, its sha256 must
//!   be the index entry's, and its `{name}-{version}/Cargo.toml` must name the crate and
//!   version the URL was made from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use fetchgate_formats::cargo::{
    CrateEntry, download_url, index_path, inspect_crate, parse_config, parse_index_file, valid_name,
};
use fetchgate_storage::BodyDigest;

use super::spool::{Buffer, Spool};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const INDEX_ID: &str = "cargo.index";
pub const CRATE_ID: &str = "cargo.crate";

/// The largest index file (or `config.json`) read; crates.io's largest are a few MiB.
const MAX_INDEX_FILE: usize = 64 << 20;
/// The largest `.crate` spooled (crates.io accepts 10 MiB).
const MAX_CRATE: u64 = 1 << 30;
/// The most crate versions remembered per session.
const MAX_VERSIONS: usize = 4_000_000;

/// What the cargo inspectors remember in a session.
#[derive(Debug, Default)]
pub struct CargoMemory {
    /// A registry's base URL → its `dl` template.
    dl: HashMap<String, String>,
    /// Download URL → the index entry it was made from.
    crates: HashMap<String, CrateEntry>,
}

/// What a URL is within a trusted registry.
#[derive(Debug, PartialEq, Eq)]
enum IndexPath {
    Config,
    /// The index file of this (lowercase) crate name.
    Crate(String),
}

/// The trusted registry a GET URL belongs to, and what it is there.
fn classify<'t>(
    session: &'t SessionInspection,
    req: &RequestInfo<'_>,
) -> Option<(&'t str, IndexPath)> {
    if req.method != "GET" || req.url.contains('?') {
        return None;
    }
    session.trust.cargo.iter().find_map(|base| {
        let rest = req.url.strip_prefix(base.as_str())?.strip_prefix('/')?;
        if rest == "config.json" {
            return Some((base.as_str(), IndexPath::Config));
        }
        let name = rest.rsplit('/').next()?;
        (valid_name(name) && index_path(name) == rest)
            .then(|| (base.as_str(), IndexPath::Crate(name.to_owned())))
    })
}

/// `cargo.index`.
pub struct IndexInspector;

impl Inspector for IndexInspector {
    fn id(&self) -> &'static str {
        INDEX_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some((base, path)) = classify(session, req) else {
            return RequestFinding::unknown();
        };
        let what = match &path {
            IndexPath::Config => "config.json".to_owned(),
            IndexPath::Crate(name) => name.clone(),
        };
        RequestFinding::pending(Box::new(IndexObserver {
            session: Arc::clone(session),
            base: base.to_owned(),
            path,
            body: Buffer::new(MAX_INDEX_FILE),
        }))
        .note("index-file", what)
    }
}

struct IndexObserver {
    session: Arc<SessionInspection>,
    base: String,
    path: IndexPath,
    body: Buffer,
}

impl BodyObserver for IndexObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.body.write(bytes);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let text = match self.body.into_expanded() {
            Ok(t) => t,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let mut memory = self.session.cargo.lock().unwrap_or_else(|p| p.into_inner());
        let name = match self.path {
            IndexPath::Config => {
                return match parse_config(&text) {
                    Ok(dl) => {
                        let finding = ResponseFinding::approved().note("dl", dl.clone());
                        memory.dl.insert(self.base, dl);
                        finding
                    }
                    Err(e) => ResponseFinding::rejected(e),
                };
            }
            IndexPath::Crate(name) => name,
        };
        let Some(dl) = memory.dl.get(&self.base).cloned() else {
            return ResponseFinding::rejected(format!(
                "no config.json of {} fetched in this session yet",
                self.base
            ));
        };
        let (entries, skipped) = match parse_index_file(&text, &name) {
            Ok(e) => e,
            Err(e) => return ResponseFinding::rejected(e),
        };
        if memory.crates.len() + entries.len() > MAX_VERSIONS {
            return ResponseFinding::rejected(format!(
                "the session would remember more than {MAX_VERSIONS} crate versions"
            ));
        }
        let n = entries.len();
        for entry in entries {
            if let Some(url) = download_url(&dl, &entry) {
                memory.crates.insert(url, entry);
            }
        }
        let mut finding = ResponseFinding::approved().note("versions", n.to_string());
        if skipped > 0 {
            finding = finding.note("skipped-lines", skipped.to_string());
        }
        finding
    }
}

/// `cargo.crate`.
pub struct CrateInspector {
    pub spool: Arc<PathBuf>,
}

impl Inspector for CrateInspector {
    fn id(&self) -> &'static str {
        CRATE_ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        if req.method != "GET" {
            return RequestFinding::unknown();
        }
        let entry = session
            .cargo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .crates
            .get(req.url)
            .cloned();
        let Some(entry) = entry else {
            return RequestFinding::unknown();
        };
        let (name, version) = (entry.name.clone(), entry.version.clone());
        RequestFinding::pending(Box::new(CrateObserver {
            entry,
            spool: Spool::new(&self.spool, MAX_CRATE),
        }))
        .note("crate", format!("{name} {version}"))
    }
}

struct CrateObserver {
    entry: CrateEntry,
    spool: Spool,
}

impl BodyObserver for CrateObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.spool.write(bytes);
    }

    fn finish(self: Box<Self>, body: &BodyDigest) -> ResponseFinding {
        if body.sha256 != self.entry.cksum {
            return ResponseFinding::rejected(format!(
                "sha256 {} does not match the index entry's cksum {}",
                hex::encode(body.sha256),
                hex::encode(self.entry.cksum)
            ));
        }
        let checked = self
            .spool
            .into_reader()
            .and_then(|file| inspect_crate(file, &self.entry));
        match checked {
            Ok(metadata) => {
                let mut finding = ResponseFinding::approved()
                    .note("cksum", "matches the index entry")
                    .note("manifest", "names this crate and version");
                finding.metadata = metadata;
                finding
            }
            Err(e) => ResponseFinding::rejected(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::config::Trust;

    #[test]
    fn index_urls_are_recognised_under_a_trusted_registry() {
        let s = SessionInspection::new(Trust {
            cargo: vec!["https://idx:443/reg".into()],
            ..Default::default()
        });
        let what = |url: &str| {
            crate::inspect::with_request("GET", url, |req| classify(&s, req).map(|(_, p)| p))
        };
        assert_eq!(
            what("https://idx:443/reg/config.json"),
            Some(IndexPath::Config)
        );
        assert_eq!(
            what("https://idx:443/reg/se/rd/serde"),
            Some(IndexPath::Crate("serde".into()))
        );
        for other in [
            "https://idx:443/reg/se/rd/sebde",
            "https://idx:443/reg/3/b/abc",
            "https://idx:443/reg/../x",
            "https://idx:443/regx/config.json",
            "https://idx:443/reg/se/rd/serde?x",
        ] {
            assert_eq!(what(other), None, "{other}");
        }
    }
}
