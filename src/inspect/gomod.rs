//! `go.module`: the GOPROXY protocol under a trusted module proxy. The module path and
//! version come from the URL (`<proxy>/<module>/@v/<version>.{info,mod,zip}`,
//! `/@v/list`, `/@latest`; upper-case letters escaped as `!x`), and each file must agree:
//! `.info` and `@latest` are `{"Version": ...}` JSON (`.info` for that version), `.mod`
//! declares that module path, and the `.zip` (spooled) holds only files under
//! `<module>@<version>/`, whose `go.mod`, when there is one, declares that module path.
//! (The go command checks the content hashes against go.sum and the checksum database
//! itself; here the trusted proxy and these consistency checks decide.)

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use fetchgate_storage::BodyDigest;
use serde::Deserialize;

use super::spool::{Buffer, Spool};
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const ID: &str = "go.module";

/// The largest `.info`, `.mod` or version list read (Go's own go.mod limit is 16 MiB).
const MAX_TEXT: usize = 16 << 20;
/// The largest module zip (the go command refuses more than 500 MiB).
const MAX_ZIP: u64 = 500 << 20;
/// The most a module zip's `go.mod` is read.
const MAX_GO_MOD: u64 = 16 << 20;

/// What a GOPROXY URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum File {
    List,
    Latest,
    Info(String),
    Mod(String),
    Zip(String),
}

/// `!x` → `X`; `None` for an upper-case letter or a bad escape (Go's rules).
fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '!' => out.push(
                chars
                    .next()
                    .filter(char::is_ascii_lowercase)?
                    .to_ascii_uppercase(),
            ),
            c if c.is_ascii_uppercase() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A plausible module path: non-empty segments of printable ASCII, no `.`/`..`.
fn valid_module(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b))
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

/// The module path a go.mod declares (`module path`, quoted or not, comments allowed).
pub fn declared_module(go_mod: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(go_mod).map_err(|_| "go.mod is not UTF-8".to_string())?;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        let Some(rest) = line.strip_prefix("module") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let path = rest.trim().trim_matches(|c| c == '"' || c == '`');
        if path.is_empty() {
            return Err("go.mod has an empty module directive".into());
        }
        return Ok(path.to_owned());
    }
    Err("go.mod has no module directive".into())
}

#[derive(Deserialize)]
struct Info {
    #[serde(rename = "Version")]
    version: String,
}

/// Checks a module zip: every file under `<module>@<version>/` and its `go.mod`, when
/// present, declaring `module`. Returns how many files it holds.
pub fn check_zip<R: Read + std::io::Seek>(
    reader: R,
    module: &str,
    version: &str,
) -> Result<usize, String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a zip archive: {e}"))?;
    if zip.has_duplicate_names() {
        return Err("the zip archive holds two files of the same name".into());
    }
    let prefix = format!("{module}@{version}/");
    let mut go_mod = None;
    for i in 0..zip.len() {
        let file = zip
            .by_index_raw(i)
            .map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = file.name().map_err(|e| format!("zip entry {i}: {e}"))?;
        let inside = name.strip_prefix(prefix.as_str());
        if inside.is_none_or(|p| p.split('/').any(|s| s == "..")) {
            return Err(format!("{name} is not a file of {module}@{version}"));
        }
        if inside == Some("go.mod") {
            go_mod = Some(i);
        }
    }
    if let Some(i) = go_mod {
        let mut text = Vec::new();
        zip.by_index(i)
            .map_err(|e| format!("go.mod: {e}"))?
            .take(MAX_GO_MOD)
            .read_to_end(&mut text)
            .map_err(|e| format!("go.mod: {e}"))?;
        let declared = declared_module(&text)?;
        if declared != module {
            return Err(format!(
                "its go.mod declares module {declared}, not {module}"
            ));
        }
    }
    Ok(zip.len())
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
                let text = b.into_bytes()?;
                let text = std::str::from_utf8(&text).map_err(|_| "the list is not UTF-8")?;
                let versions = text.lines().filter(|l| !l.trim().is_empty()).count();
                Ok(ResponseFinding::approved().note("versions", versions.to_string()))
            }
            (file @ (File::Latest | File::Info(_)), Body::Buffered(b)) => {
                let info: Info = serde_json::from_slice(&b.into_bytes()?)
                    .map_err(|e| format!("version info: {e}"))?;
                match file {
                    File::Info(v) if v != info.version => Err(format!(
                        "the info is for version {}, the URL {v}",
                        info.version
                    )),
                    _ => Ok(named(&info.version)),
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
    use std::io::{Cursor, Write};

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in files {
            out.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(data).unwrap();
        }
        out.finish().unwrap().into_inner()
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

    #[test]
    fn go_mod_declares_its_module() {
        assert_eq!(
            declared_module(b"// c\nmodule \"example.com/m\" // x\n\ngo 1.21\n").unwrap(),
            "example.com/m"
        );
        assert!(declared_module(b"go 1.21\nmodules x\n").is_err());
        assert!(declared_module(b"\xff").is_err());
    }

    #[test]
    fn a_zip_holds_only_its_module_and_version() {
        let good = zip_of(&[
            ("example.com/m@v1.0.0/go.mod", b"module example.com/m\n"),
            ("example.com/m@v1.0.0/m.go", b"package m\n"),
        ]);
        assert_eq!(
            check_zip(Cursor::new(&good), "example.com/m", "v1.0.0"),
            Ok(2)
        );
        let e = check_zip(Cursor::new(&good), "example.com/m", "v1.0.1").unwrap_err();
        assert!(e.contains("is not a file of"), "{e}");
        let other = zip_of(&[("example.com/m@v1.0.0/go.mod", b"module evil.org/x\n")]);
        let e = check_zip(Cursor::new(&other), "example.com/m", "v1.0.0").unwrap_err();
        assert!(e.contains("declares module evil.org/x"), "{e}");
        let escape = zip_of(&[("example.com/m@v1.0.0/../../x", b"")]);
        assert!(check_zip(Cursor::new(&escape), "example.com/m", "v1.0.0").is_err());
        assert!(check_zip(Cursor::new(b"junk"), "example.com/m", "v1.0.0").is_err());
    }

    #[test]
    fn mutated_modules_never_panic() {
        let go_mod = b"module \"example.com/m\" // c\n\ngo 1.21\n";
        for m in crate::inspect::mutations(go_mod, 300) {
            let _ = declared_module(&m);
            let _ = unescape(&String::from_utf8_lossy(&m));
        }
        let z = zip_of(&[("example.com/m@v1.0.0/go.mod", go_mod.as_slice())]);
        for m in crate::inspect::mutations(&z, 300) {
            let _ = check_zip(Cursor::new(m), "example.com/m", "v1.0.0");
        }
    }
}
