//! `go.module`: the GOPROXY protocol under a trusted module proxy. The module path and
//! version come from the URL (`<proxy>/<module>/@v/<version>.{info,mod,zip}`,
//! `/@v/list`, `/@latest`; upper-case letters escaped as `!x`), and each file must agree:
//! `.info` and `@latest` are `{"Version": ...}` JSON (`.info` for that version), `.mod`
//! declares that module path, and the `.zip` (spooled) holds only files under
//! `<module>@<version>/`, whose `go.mod`, when there is one, declares that module path.
//! (The go command checks the content hashes against go.sum and the checksum database
//! itself; here the trusted proxy and these consistency checks decide.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use fetchgate_formats::gomod::{
    check_zip, declared_module, unescape, valid_module, version_info, version_list,
};
use fetchgate_storage::BodyDigest;

use super::spool::{Buffer, Spool};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const ID: &str = "go.module";

/// The largest `.info`, `.mod` or version list read (Go's own go.mod limit is 16 MiB).
const MAX_TEXT: usize = 16 << 20;
/// The largest module zip (the go command refuses more than 500 MiB).
const MAX_ZIP: u64 = 500 << 20;

/// What a GOPROXY URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum File {
    List,
    Latest,
    Info(String),
    Mod(String),
    Zip(String),
}

/// The module and the file a GET URL under a trusted proxy asks for.
fn classify(session: &SessionInspection, req: &RequestInfo<'_>) -> Option<(String, File)> {
    if req.method != "GET" || req.url.contains('?') {
        return None;
    }
    session.trust.go.iter().find_map(|base| {
        let rest = req.url.strip_prefix(base.as_str())?.strip_prefix('/')?;
        let (module, file) = match rest.strip_suffix("/@latest") {
            Some(module) => (module, File::Latest),
            None => {
                let (module, file) = rest.rsplit_once("/@v/")?;
                let version = |ext: &str| {
                    file.strip_suffix(ext)
                        .and_then(unescape)
                        .filter(|v| !v.is_empty() && !v.contains('/'))
                };
                let file = if file == "list" {
                    File::List
                } else if let Some(v) = version(".info") {
                    File::Info(v)
                } else if let Some(v) = version(".mod") {
                    File::Mod(v)
                } else {
                    File::Zip(version(".zip")?)
                };
                (module, file)
            }
        };
        let module = unescape(module).filter(|m| valid_module(m))?;
        Some((module, file))
    })
}

/// `go.module`.
pub struct ModuleInspector {
    pub spool: Arc<PathBuf>,
}

impl Inspector for ModuleInspector {
    fn id(&self) -> &'static str {
        ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some((module, file)) = classify(session, req) else {
            return RequestFinding::unknown();
        };
        let body = match &file {
            File::Zip(_) => Body::Spooled(Spool::new(&self.spool, MAX_ZIP)),
            _ => Body::Buffered(Buffer::new(MAX_TEXT)),
        };
        RequestFinding::pending(Box::new(ModuleObserver {
            module: module.clone(),
            file,
            body,
        }))
        .note("module", module)
    }
}

enum Body {
    Buffered(Buffer),
    Spooled(Spool),
}

struct ModuleObserver {
    module: String,
    file: File,
    body: Body,
}

impl ModuleObserver {
    /// The verdict's metadata and annotations, or why the file is rejected.
    fn check(self) -> Result<ResponseFinding, String> {
        let ModuleObserver { module, file, body } = self;
        let named = |version: &str| {
            let mut finding = ResponseFinding::approved();
            finding.metadata = BTreeMap::from([
                ("name".to_owned(), module.clone()),
                ("version".to_owned(), version.to_owned()),
            ]);
            finding
        };
        match (file, body) {
            (File::List, Body::Buffered(b)) => {
                let versions = version_list(&b.into_bytes()?)?;
                Ok(ResponseFinding::approved().note("versions", versions.to_string()))
            }
            (file @ (File::Latest | File::Info(_)), Body::Buffered(b)) => {
                let version = version_info(&b.into_bytes()?)?;
                match file {
                    File::Info(v) if v != version => {
                        Err(format!("the info is for version {version}, the URL {v}"))
                    }
                    _ => Ok(named(&version)),
                }
            }
            (File::Mod(v), Body::Buffered(b)) => {
                let declared = declared_module(&b.into_bytes()?)?;
                if declared != module {
                    return Err(format!("go.mod declares module {declared}, not {module}"));
                }
                Ok(named(&v))
            }
            (File::Zip(v), Body::Spooled(spool)) => {
                let files = check_zip(spool.into_reader()?, &module, &v)?;
                Ok(named(&v).note("files", files.to_string()))
            }
            _ => Err("the body was not kept the way this file is read".into()),
        }
    }
}

impl BodyObserver for ModuleObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        match &mut self.body {
            Body::Buffered(b) => b.write(bytes),
            Body::Spooled(s) => s.write(bytes),
        }
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        self.check().unwrap_or_else(ResponseFinding::rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::config::Trust;

    #[test]
    fn urls_give_the_module_and_the_file() {
        let s = SessionInspection::new(Trust {
            go: vec!["https://p:443".into()],
            ..Default::default()
        });
        let what = |url: &str| crate::inspect::with_request("GET", url, |req| classify(&s, req));
        assert_eq!(
            what("https://p:443/github.com/!burnt!sushi/toml/@v/v1.2.0.zip"),
            Some((
                "github.com/BurntSushi/toml".into(),
                File::Zip("v1.2.0".into())
            ))
        );
        assert_eq!(
            what("https://p:443/example.com/m/@v/list"),
            Some(("example.com/m".into(), File::List))
        );
        assert_eq!(
            what("https://p:443/example.com/m/@latest"),
            Some(("example.com/m".into(), File::Latest))
        );
        for other in [
            "https://p:443/example.com/M/@v/list",
            "https://p:443/example.com/m/@v/v1.0.0.tar",
            "https://p:443/example.com/../m/@v/list",
            "https://p:443/example.com/m/@v/v1!.info",
            "https://q:443/example.com/m/@v/list",
        ] {
            assert_eq!(what(other), None, "{other}");
        }
    }
}
