//! The cargo sparse registry protocol's files: a registry's `config.json`, the index
//! file of a crate (one JSON object per version and line), the download URL cargo makes
//! from the `dl` template, and a `.crate`'s `Cargo.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::urls::normalise_url;

/// The most a `.crate` is expanded while looking for its `Cargo.toml`.
const MAX_CRATE_EXPANDED: u64 = 4 << 30;
/// The largest `Cargo.toml` read.
const MAX_MANIFEST: u64 = 4 << 20;

/// One version of a crate, as an index entry gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateEntry {
    pub name: String,
    pub version: String,
    pub cksum: [u8; 32],
}

/// Crate names are ASCII letters, digits, `-` and `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The directories of a crate's index file: `1`, `2`, `3/a`, `ab/cd` (for a valid name).
fn prefix(name: &str) -> String {
    match name.len() {
        1 => "1".into(),
        2 => "2".into(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    }
}

/// A crate's index file path under the registry (lowercase, as cargo asks for it).
pub fn index_path(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    format!("{}/{lower}", prefix(&lower))
}

/// A version's download URL from the registry's `dl` template (cargo appends
/// `/{crate}/{version}/download` when it has no marker).
pub fn download_url(dl: &str, entry: &CrateEntry) -> Option<String> {
    const MARKERS: [&str; 5] = [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    let template = if MARKERS.iter().any(|m| dl.contains(m)) {
        dl.to_owned()
    } else {
        format!(
            "{}/{{crate}}/{{version}}/download",
            dl.trim_end_matches('/')
        )
    };
    let expanded = template
        .replace("{crate}", &entry.name)
        .replace("{version}", &entry.version)
        .replace("{prefix}", &prefix(&entry.name))
        .replace("{lowerprefix}", &prefix(&entry.name).to_ascii_lowercase())
        .replace("{sha256-checksum}", &hex::encode(entry.cksum));
    normalise_url(&url::Url::parse(&expanded).ok()?)
}

#[derive(Deserialize)]
struct RegistryConfig {
    dl: String,
}

/// A registry's `config.json`: its `dl` download template.
pub fn parse_config(text: &[u8]) -> Result<String, String> {
    serde_json::from_slice::<RegistryConfig>(text)
        .map(|c| c.dl)
        .map_err(|e| format!("config.json: {e}"))
}

#[derive(Deserialize)]
struct IndexLine {
    name: String,
    vers: String,
    cksum: String,
}

/// Parses an index file of crate `name`: its entries, and how many lines were skipped
/// (not JSON, or a checksum that is not sha256 hex).
pub fn parse_index_file(text: &[u8], name: &str) -> Result<(Vec<CrateEntry>, usize), String> {
    let mut entries = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(parsed) = serde_json::from_slice::<IndexLine>(line) else {
            skipped += 1;
            continue;
        };
        if !parsed.name.eq_ignore_ascii_case(name) || !valid_name(&parsed.name) {
            return Err(format!(
                "line {}: an entry for {:?} in the index file of {name}",
                i + 1,
                parsed.name
            ));
        }
        let Some(cksum) = crate::parse_sha256(&parsed.cksum) else {
            skipped += 1;
            continue;
        };
        entries.push(CrateEntry {
            name: parsed.name,
            version: parsed.vers,
            cksum,
        });
    }
    Ok((entries, skipped))
}

/// Reads a `.crate`'s `Cargo.toml`, checks it names `entry`, and gives the report's
/// metadata from it.
pub fn inspect_crate(
    reader: impl std::io::Read,
    entry: &CrateEntry,
) -> Result<BTreeMap<String, String>, String> {
    let top = format!("{}-{}", entry.name, entry.version);
    let text = crate::tarball::find_top_level_file(
        reader,
        "Cargo.toml",
        |t| t == top,
        MAX_CRATE_EXPANDED,
        MAX_MANIFEST,
    )?
    .ok_or_else(|| format!("no {top}/Cargo.toml in the crate"))?;
    let text = std::str::from_utf8(&text).map_err(|_| "Cargo.toml is not UTF-8".to_string())?;
    let manifest: toml::Table = toml::from_str(text).map_err(|e| format!("Cargo.toml: {e}"))?;
    let package = manifest
        .get("package")
        .and_then(toml::Value::as_table)
        .ok_or("Cargo.toml has no [package]")?;
    let field = |key: &str| package.get(key).and_then(toml::Value::as_str);
    let (name, version) = (field("name"), field("version"));
    if name != Some(entry.name.as_str()) || version != Some(entry.version.as_str()) {
        return Err(format!(
            "Cargo.toml names {} {}, the URL {} {}",
            name.unwrap_or("no crate"),
            version.unwrap_or("no version"),
            entry.name,
            entry.version
        ));
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("name".to_owned(), entry.name.clone());
    metadata.insert("version".to_owned(), entry.version.clone());
    for (key, report_key) in [("license", "license"), ("description", "description")] {
        if let Some(v) = field(key) {
            metadata.insert(report_key.to_owned(), v.trim().to_owned());
        }
    }
    let first_author = package
        .get("authors")
        .and_then(toml::Value::as_array)
        .and_then(|a| a.first())
        .and_then(toml::Value::as_str);
    if let Some(author) = first_author {
        match author.split_once('<') {
            Some((who, email)) => {
                metadata.insert("author".into(), who.trim().to_owned());
                metadata.insert(
                    "author-email".into(),
                    email.trim_end_matches(['>', ' ']).to_owned(),
                );
            }
            None => {
                metadata.insert("author".into(), author.trim().to_owned());
            }
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tar_gz;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn entry() -> CrateEntry {
        CrateEntry {
            name: "Fg-Hello".into(),
            version: "0.1.0".into(),
            cksum: [7; 32],
        }
    }

    #[test]
    fn index_paths_follow_the_name_length() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("Serde"), "se/rd/serde");
    }

    #[test]
    fn config_json_gives_the_dl_template() {
        assert_eq!(
            parse_config(br#"{"dl": "https://static.crates.io/crates", "api": "x"}"#),
            Ok("https://static.crates.io/crates".to_owned())
        );
        assert!(parse_config(b"{}").unwrap_err().contains("config.json"));
    }

    #[test]
    fn download_urls_come_from_the_dl_template() {
        let e = entry();
        assert_eq!(
            download_url("https://static.crates.io/crates", &e).unwrap(),
            "https://static.crates.io:443/crates/Fg-Hello/0.1.0/download"
        );
        assert_eq!(
            download_url(
                "http://r:8080/{lowerprefix}/{crate}-{version}.crate?h={sha256-checksum}",
                &e
            )
            .unwrap(),
            format!(
                "http://r:8080/fg/-h/Fg-Hello-0.1.0.crate?h={}",
                hex::encode([7u8; 32])
            )
        );
        assert_eq!(download_url("not a url/{crate}", &e), None);
    }

    #[test]
    fn index_files_give_entries_and_refuse_other_crates() {
        let text = format!(
            "{{\"name\":\"fg-hello\",\"vers\":\"0.1.0\",\"deps\":[],\"cksum\":\"{SHA}\",\"features\":{{}},\"yanked\":false}}\nnot json\n{{\"name\":\"fg-hello\",\"vers\":\"0.2.0\",\"cksum\":\"short\"}}\n\n"
        );
        let (entries, skipped) = parse_index_file(text.as_bytes(), "fg-hello").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].version, "0.1.0");
        assert_eq!(skipped, 2);
        let other = format!("{{\"name\":\"evil\",\"vers\":\"1.0.0\",\"cksum\":\"{SHA}\"}}\n");
        let e = parse_index_file(other.as_bytes(), "fg-hello").unwrap_err();
        assert!(e.contains("\"evil\""), "{e}");
    }

    #[test]
    fn the_manifest_must_name_the_crate_and_version() {
        let manifest = b"[package]\nname = \"Fg-Hello\"\nversion = \"0.1.0\"\nlicense = \"MIT OR Apache-2.0\"\nauthors = [\"Jo Tester <jo@example.org>\"]\ndescription = \"says hello\"\n";
        let c = tar_gz(&[("Fg-Hello-0.1.0/Cargo.toml", manifest.as_slice())]);
        let m = inspect_crate(&c[..], &entry()).unwrap();
        assert_eq!(m["license"], "MIT OR Apache-2.0");
        assert_eq!(m["author"], "Jo Tester");
        assert_eq!(m["author-email"], "jo@example.org");
        let other = CrateEntry {
            version: "0.2.0".into(),
            ..entry()
        };
        let e = inspect_crate(&c[..], &other).unwrap_err();
        assert!(e.contains("no Fg-Hello-0.2.0/Cargo.toml"), "{e}");
        let wrong = tar_gz(&[(
            "Fg-Hello-0.1.0/Cargo.toml",
            b"[package]\nname = \"other\"\nversion = \"0.1.0\"\n".as_slice(),
        )]);
        let e = inspect_crate(&wrong[..], &entry()).unwrap_err();
        assert!(e.contains("names other 0.1.0"), "{e}");
        let bad = tar_gz(&[("Fg-Hello-0.1.0/Cargo.toml", b"[package\n".as_slice())]);
        assert!(
            inspect_crate(&bad[..], &entry())
                .unwrap_err()
                .contains("Cargo.toml")
        );
    }

    #[test]
    fn mutated_index_files_and_crates_never_panic() {
        let line = format!("{{\"name\":\"Fg-Hello\",\"vers\":\"0.1.0\",\"cksum\":\"{SHA}\"}}\n");
        for m in crate::testing::mutations(line.as_bytes(), 300) {
            let _ = parse_index_file(&m, "fg-hello");
        }
        let manifest =
            b"[package]\nname = \"Fg-Hello\"\nversion = \"0.1.0\"\nauthors = [\"Jo <jo@x>\"]\n";
        let c = tar_gz(&[("Fg-Hello-0.1.0/Cargo.toml", manifest.as_slice())]);
        for m in crate::testing::mutations(&c, 300) {
            let _ = inspect_crate(&m[..], &entry());
        }
    }
}
