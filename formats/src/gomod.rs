//! The GOPROXY protocol's files: escaped module paths (`!x` for `X`), a `go.mod`'s
//! `module` directive, a version's `.info`, the `@v/list`, and a module zip, which must
//! hold only files under `<module>@<version>/`.

use std::io::{Read, Seek};

use serde::Deserialize;

/// The most a module zip's `go.mod` is read.
const MAX_GO_MOD: u64 = 16 << 20;

/// `!x` → `X`; `None` for an upper-case letter or a bad escape (Go's rules).
pub fn unescape(escaped: &str) -> Option<String> {
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
pub fn valid_module(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b))
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

/// The version a `.info` file or `@latest` answer (`{"Version": ...}`) gives.
pub fn version_info(text: &[u8]) -> Result<String, String> {
    serde_json::from_slice::<Info>(text)
        .map(|i| i.version)
        .map_err(|e| format!("version info: {e}"))
}

/// How many versions a `@v/list` answer lists (one a line).
pub fn version_list(text: &[u8]) -> Result<usize, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the list is not UTF-8".to_string())?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
}

/// What a `?go-get=1` page's `<meta name="go-import" content="prefix vcs repo">`
/// says of an import path: the repository root the go command fetches in direct mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoImport {
    /// The import-path prefix the repository holds.
    pub prefix: String,
    /// `git`, `hg`, `svn`, `bzr`, `fossil`, or `mod` (a module proxy).
    pub vcs: String,
    /// The repository root URL.
    pub repo: String,
}

/// The go-import of a `?go-get=1` page that applies to `import_path`, chosen as the
/// go command chooses it: the `<meta>` tags before `<body>` or `</head>`, with 3 fields
/// (or 4: a subdirectory), whose prefix is the path or a parent of it; several matches
/// are an error unless a `mod` one comes first.
pub fn go_import(html: &[u8], import_path: &str) -> Result<GoImport, String> {
    let mut chosen: Option<GoImport> = None;
    for content in go_import_contents(html) {
        let fields: Vec<&str> = content.split_whitespace().collect();
        let [prefix, vcs, repo, ..] = fields[..] else {
            continue;
        };
        if fields.len() > 4 {
            continue;
        }
        let applies = import_path == prefix
            || import_path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        if !applies {
            continue;
        }
        match &chosen {
            Some(first) if first.vcs == "mod" && vcs != "mod" => break,
            Some(_) => {
                return Err(format!(
                    "several go-import tags match import path {import_path}"
                ));
            }
            None => {
                chosen = Some(GoImport {
                    prefix: prefix.to_owned(),
                    vcs: vcs.to_owned(),
                    repo: repo.to_owned(),
                })
            }
        }
    }
    chosen.ok_or_else(|| format!("no go-import tag for import path {import_path}"))
}

/// The `content` of each `<meta name="go-import">` before the body, entities decoded.
fn go_import_contents(html: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(html);
    let mut out = Vec::new();
    let mut rest = &*text;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.split_once("-->").map_or("", |(_, after)| after);
            continue;
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '/'))
            .unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        if name == "body" || name == "/head" {
            break;
        }
        let (attrs, after) = split_tag(&rest[name_len..]);
        rest = after;
        if name == "meta" && attribute(attrs, "name").as_deref() == Some("go-import") {
            out.extend(attribute(attrs, "content"));
        }
    }
    out
}

/// A tag's attribute text and what follows its `>` (quoted `>`s do not end it).
fn split_tag(text: &str) -> (&str, &str) {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return (&text[..i], &text[i + 1..]),
            _ => {}
        }
    }
    (text, "")
}

/// The value of attribute `wanted` (case-insensitive name), entities decoded.
fn attribute(attrs: &str, wanted: &str) -> Option<String> {
    let mut rest = attrs;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return None;
        }
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        let value = match rest.strip_prefix('=') {
            Some(v) => {
                let v = v.trim_start();
                let (value, after) = match v.chars().next() {
                    Some(q @ ('"' | '\'')) => v[1..].split_once(q).unwrap_or((&v[1..], "")),
                    _ => v.split_at(v.find(char::is_whitespace).unwrap_or(v.len())),
                };
                rest = after;
                value
            }
            None => "",
        };
        if name.eq_ignore_ascii_case(wanted) {
            return Some(decode_entities(value));
        }
    }
}

fn decode_entities(value: &str) -> String {
    value
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Checks a module zip: every file under `<module>@<version>/` and its `go.mod`, when
/// present, declaring `module`. Returns how many files it holds.
pub fn check_zip<R: Read + Seek>(reader: R, module: &str, version: &str) -> Result<usize, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    #[test]
    fn the_go_import_of_a_page_is_the_one_for_the_path() {
        let page = br#"<!DOCTYPE html><html><head>
            <!-- <meta name="go-import" content="example.com/a git https://evil/a"> -->
            <meta name="go-source" content="example.com/a _ _ _">
            <META Name='go-import' content="example.com/a git https://git.example.com/a.git">
            <meta name="go-import" content="example.com/other git https://x/other">
            </head><body><meta name="go-import" content="example.com/a/b hg https://late"></body>"#;
        let want = GoImport {
            prefix: "example.com/a".into(),
            vcs: "git".into(),
            repo: "https://git.example.com/a.git".into(),
        };
        assert_eq!(go_import(page, "example.com/a").unwrap(), want);
        assert_eq!(go_import(page, "example.com/a/b/c").unwrap(), want);
        assert!(go_import(page, "example.com/ab").is_err());
        assert!(go_import(page, "example.org/a").is_err());
        let entities =
            br#"<meta name="go-import" content="h.io/x git https://h.io/r?a=1&amp;b=2">"#;
        assert_eq!(
            go_import(entities, "h.io/x").unwrap().repo,
            "https://h.io/r?a=1&b=2"
        );
    }

    #[test]
    fn several_matching_go_imports_are_refused_unless_a_mod_one_comes_first() {
        let two = br#"<meta name="go-import" content="h.io/x git https://a">
            <meta name="go-import" content="h.io/x/y git https://b">"#;
        assert!(go_import(two, "h.io/x/y").unwrap_err().contains("several"));
        let modded = br#"<meta name="go-import" content="h.io/x mod https://proxy">
            <meta name="go-import" content="h.io/x git https://a">"#;
        assert_eq!(go_import(modded, "h.io/x").unwrap().vcs, "mod");
        for bad in [
            &b"<meta name=go-import content=\"h.io/x git\">"[..],
            b"",
            b"<meta",
            b"<<<>>>",
        ] {
            assert!(go_import(bad, "h.io/x").is_err());
        }
        let unquoted = b"<meta name=go-import content=h.io/x>";
        assert!(go_import(unquoted, "h.io/x").is_err());
    }

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
        for m in crate::testing::mutations(go_mod, 300) {
            let _ = declared_module(&m);
            let _ = unescape(&String::from_utf8_lossy(&m));
        }
        let z = zip_of(&[("example.com/m@v1.0.0/go.mod", go_mod.as_slice())]);
        for m in crate::testing::mutations(&z, 300) {
            let _ = check_zip(Cursor::new(m), "example.com/m", "v1.0.0");
        }
    }

    #[test]
    fn info_and_list_answers_give_versions() {
        assert_eq!(
            version_info(br#"{"Version":"v1.2.0","Time":"2024-01-01T00:00:00Z"}"#),
            Ok("v1.2.0".to_owned())
        );
        assert!(version_info(b"{}").unwrap_err().contains("version info"));
        assert_eq!(version_list(b"v1.0.0\n\nv1.1.0\n"), Ok(2));
        assert!(version_list(b"\xff").is_err());
    }
}
