//! `go.module`: the GOPROXY protocol under a trusted module proxy. The module path and
//! version come from the URL (`<proxy>/<module>/@v/<version>.{info,mod,zip}`,
//! `/@v/list`, `/@latest`; upper-case letters escaped as `!x`), and each file must agree:
//! `.info` and `@latest` are `{"Version": ...}` JSON (`.info` for that version), `.mod`
//! declares that module path, and the `.zip` (spooled) holds only files under
//! `<module>@<version>/`, whose `go.mod`, when there is one, declares that module path.
//! (The go command checks the content hashes against go.sum and the checksum database
//! itself; here the trusted proxy and these consistency checks decide.)
//!
//! With `GOPROXY=direct` the go command asks the import path's host instead
//! (`https://<import path>?go-get=1`) and fetches the repository its
//! `<meta name="go-import">` names with the VCS tool (git: over smart HTTP, which
//! `git.smart-http` inspects). Such a page is recognised under a trusted git host or a
//! trusted import host (`go.imports`), and approved only when the go-import applying to
//! the path names a git repository under a trusted git host, or a trusted module proxy
//! (`mod`): a trusted page cannot send the build to an origin nobody vetted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use fetchgate_config::inspectors::normalise_base;
use fetchgate_formats::gomod::{
    GoImport, check_zip, declared_module, go_import, unescape, valid_module, version_info,
    version_list,
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
/// The largest `?go-get=1` page read.
const MAX_PAGE: usize = 1 << 20;

/// What a GOPROXY URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum File {
    List,
    Latest,
    Info(String),
    Mod(String),
    Zip(String),
    /// A `?go-get=1` page (direct mode): the import path is the module.
    Discovery,
}

/// Whether `url` is `base` or under it.
fn under(url: &str, base: &str) -> bool {
    url.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The import path a `?go-get=1` page under a trusted git or import host is asked for.
fn discovery(session: &SessionInspection, req: &RequestInfo<'_>) -> Option<String> {
    let page = req.url.strip_suffix("?go-get=1")?;
    let trust = &session.trust;
    if req.method != "GET"
        || page.contains('?')
        || !trust
            .git
            .iter()
            .chain(&trust.go_imports)
            .any(|b| under(page, b))
    {
        return None;
    }
    let (_, rest) = page.split_once("://")?;
    let (authority, path) = rest.split_once('/')?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    let import_path = format!("{host}/{path}");
    valid_module(&import_path).then_some(import_path)
}

/// Why the repository a go-import names is not one strict mode may fetch, if it is not.
fn untrusted_source(session: &SessionInspection, found: &GoImport) -> Option<String> {
    let Ok(repo) = normalise_base(&found.repo) else {
        return Some(format!(
            "the go-import repository {:?} is not a URL",
            found.repo
        ));
    };
    let (trusted, what) = match found.vcs.as_str() {
        "git" => (&session.trust.git, "git host"),
        "mod" => (&session.trust.go, "Go module proxy"),
        vcs => {
            return Some(format!(
                "the go-import names a {vcs} repository; only git and mod are inspected"
            ));
        }
    };
    (!trusted.iter().any(|b| under(&repo, b))).then(|| {
        format!(
            "the go-import repository {} is not under a trusted {what}",
            found.repo
        )
    })
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
        let found = classify(session, req)
            .or_else(|| discovery(session, req).map(|path| (path, File::Discovery)));
        let Some((module, file)) = found else {
            return RequestFinding::unknown();
        };
        let body = match &file {
            File::Zip(_) => Body::Spooled(Spool::new(&self.spool, MAX_ZIP)),
            File::Discovery => Body::Buffered(Buffer::new(MAX_PAGE)),
            _ => Body::Buffered(Buffer::new(MAX_TEXT)),
        };
        RequestFinding::pending(Box::new(ModuleObserver {
            module: module.clone(),
            file,
            body,
            session: Arc::clone(session),
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
    session: Arc<SessionInspection>,
}

impl ModuleObserver {
    /// The verdict's metadata and annotations, or why the file is rejected.
    fn check(self) -> Result<ResponseFinding, String> {
        let ModuleObserver {
            module,
            file,
            body,
            session,
        } = self;
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
            (File::Discovery, Body::Buffered(b)) => {
                let found = go_import(&b.into_bytes()?, &module)?;
                if let Some(why) = untrusted_source(&session, &found) {
                    return Err(why);
                }
                let mut finding = ResponseFinding::approved()
                    .note("vcs", found.vcs)
                    .note("repository", found.repo);
                finding.metadata.insert("name".to_owned(), found.prefix);
                Ok(finding)
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
    fn go_get_pages_are_recognised_under_trusted_hosts_and_checked_against_them() {
        let s = SessionInspection::new(Trust {
            git: vec!["https://g:443".into()],
            go: vec!["https://p:443/go".into()],
            go_imports: vec!["https://vanity:443/x".into()],
            ..Default::default()
        });
        let page = |method: &str, url: &str| {
            crate::inspect::with_request(method, url, |req| discovery(&s, req))
        };
        assert_eq!(
            page("GET", "https://g:443/team/hello?go-get=1").as_deref(),
            Some("g/team/hello")
        );
        assert_eq!(
            page("GET", "https://vanity:443/x/y?go-get=1").as_deref(),
            Some("vanity/x/y")
        );
        for (method, other) in [
            ("GET", "https://other:443/team/hello?go-get=1"),
            ("GET", "https://vanity:443/xy?go-get=1"),
            ("GET", "https://g:443/team/hello?go-get=1&x=2"),
            ("GET", "https://g:443/team/hello"),
            ("GET", "https://g:443/team/../hello?go-get=1"),
            ("POST", "https://g:443/team/hello?go-get=1"),
        ] {
            assert_eq!(page(method, other), None, "{method} {other}");
        }
        let import = |vcs: &str, repo: &str| GoImport {
            prefix: "g/team/hello".into(),
            vcs: vcs.into(),
            repo: repo.into(),
        };
        assert_eq!(
            untrusted_source(&s, &import("git", "https://g/team/hello.git")),
            None
        );
        assert_eq!(untrusted_source(&s, &import("mod", "https://p/go")), None);
        for (vcs, repo, why) in [
            (
                "git",
                "https://evil/team/hello.git",
                "not under a trusted git host",
            ),
            ("git", "https://p/go/x", "not under a trusted git host"),
            (
                "mod",
                "https://g/team",
                "not under a trusted Go module proxy",
            ),
            ("hg", "https://g/team/hello", "only git and mod"),
            ("git", "ftp://g/x", "not a URL"),
        ] {
            let reason = untrusted_source(&s, &import(vcs, repo)).unwrap_or_default();
            assert!(reason.contains(why), "{vcs} {repo}: {reason:?}");
        }
    }

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
