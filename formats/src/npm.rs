//! npm registry formats: a packument (every version's `dist.tarball`, `integrity` and
//! `shasum`), Subresource Integrity strings, and a tarball's `package.json`.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use serde::Deserialize;

use crate::urls::normalise_url;

/// The most a tarball is expanded while looking for `package.json`.
const MAX_TARBALL_EXPANDED: u64 = 4 << 30;
/// The largest `package.json` read.
const MAX_PACKAGE_JSON: u64 = 16 << 20;

/// A version as a packument gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub version: String,
    pub integrity: Option<Integrity>,
    /// `dist.shasum`: sha1 of the tarball.
    pub shasum: Option<[u8; 20]>,
}

/// The strongest digest of an SRI string (`sha512-<base64> ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    pub algorithm: Algorithm,
    /// Any of these digests matches (SRI allows several of one algorithm).
    pub digests: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// Parses an SRI string; `None` when it names no algorithm this knows.
pub fn parse_integrity(sri: &str) -> Option<Integrity> {
    let mut best: Option<Integrity> = None;
    for token in sri.split_ascii_whitespace() {
        let Some((name, rest)) = token.split_once('-') else {
            continue;
        };
        let algorithm = match name {
            "sha1" => Algorithm::Sha1,
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => continue,
        };
        // Options after `?` are allowed by SRI and carry nothing for us.
        let encoded = rest.split('?').next().unwrap_or_default();
        let Ok(digest) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        match &mut best {
            Some(b) if b.algorithm == algorithm => b.digests.push(digest),
            Some(b) if b.algorithm > algorithm => {}
            _ => {
                best = Some(Integrity {
                    algorithm,
                    digests: vec![digest],
                })
            }
        }
    }
    best
}

#[derive(Deserialize)]
struct Packument {
    #[serde(default)]
    versions: HashMap<String, PackumentVersion>,
}

#[derive(Deserialize)]
struct PackumentVersion {
    name: Option<String>,
    version: Option<String>,
    dist: Option<Dist>,
}

#[derive(Deserialize)]
struct Dist {
    tarball: String,
    integrity: Option<String>,
    shasum: Option<String>,
}

/// A packument's versions for package `name`, by normalised tarball URL (relative
/// tarball URLs resolve against `url`); how many versions were skipped for having no
/// usable tarball URL.
pub fn parse_packument(
    text: &[u8],
    name: &str,
    url: &str,
) -> Result<(Vec<(String, Version)>, usize), String> {
    let packument: Packument =
        serde_json::from_slice(text).map_err(|e| format!("packument: {e}"))?;
    let base = url::Url::parse(url).map_err(|e| format!("packument URL: {e}"))?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for (key, v) in packument.versions {
        if v.name.as_deref().is_some_and(|n| n != name) {
            return Err(format!("version {key} is of package {:?}", v.name));
        }
        let tarball = v
            .dist
            .as_ref()
            .and_then(|d| base.join(&d.tarball).ok())
            .and_then(|u| normalise_url(&u));
        let (Some(tarball), Some(dist)) = (tarball, v.dist) else {
            skipped += 1;
            continue;
        };
        let shasum = dist.shasum.as_deref().and_then(|h| {
            let mut out = [0u8; 20];
            hex::decode_to_slice(h, &mut out).ok().map(|()| out)
        });
        out.push((
            tarball,
            Version {
                name: name.to_owned(),
                version: v.version.unwrap_or(key),
                integrity: dist.integrity.as_deref().and_then(parse_integrity),
                shasum,
            },
        ));
    }
    Ok((out, skipped))
}

#[derive(Deserialize)]
struct PackageJson {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    license: Option<serde_json::Value>,
    author: Option<serde_json::Value>,
}

/// Reads a tarball's `package.json`, checks it names `version`, and gives the report's
/// metadata from it.
pub fn inspect_tarball(
    reader: impl std::io::Read,
    version: &Version,
) -> Result<BTreeMap<String, String>, String> {
    let text = crate::tarball::find_top_level_file(
        reader,
        "package.json",
        |_| true,
        MAX_TARBALL_EXPANDED,
        MAX_PACKAGE_JSON,
    )?
    .ok_or("no package.json at the top of the tarball")?;
    let package: PackageJson =
        serde_json::from_slice(&text).map_err(|e| format!("package.json: {e}"))?;
    if package.name.as_deref() != Some(version.name.as_str())
        || package.version.as_deref() != Some(version.version.as_str())
    {
        return Err(format!(
            "package.json names {}@{}, the packument {}@{}",
            package.name.as_deref().unwrap_or("no package"),
            package.version.as_deref().unwrap_or("no version"),
            version.name,
            version.version
        ));
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("name".to_owned(), version.name.clone());
    metadata.insert("version".to_owned(), version.version.clone());
    if let Some(d) = package.description.filter(|d| !d.is_empty()) {
        metadata.insert("description".into(), d);
    }
    let license = match package.license {
        Some(serde_json::Value::String(l)) => Some(l),
        Some(serde_json::Value::Object(o)) => {
            o.get("type").and_then(|t| t.as_str()).map(str::to_owned)
        }
        _ => None,
    };
    if let Some(l) = license {
        metadata.insert("license".into(), l);
    }
    let (author, email) = match package.author {
        Some(serde_json::Value::String(a)) => match a.split_once('<') {
            Some((who, rest)) => (
                Some(who.trim().to_owned()),
                rest.split_once('>').map(|(e, _)| e.trim().to_owned()),
            ),
            None => (Some(a.trim().to_owned()), None),
        },
        Some(serde_json::Value::Object(o)) => (
            o.get("name").and_then(|v| v.as_str()).map(str::to_owned),
            o.get("email").and_then(|v| v.as_str()).map(str::to_owned),
        ),
        _ => (None, None),
    };
    for (key, value) in [("author", author), ("author-email", email)] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            metadata.insert(key.into(), v);
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tar_gz;

    fn sri(algorithm: &str, digest: &[u8]) -> String {
        format!(
            "{algorithm}-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }

    fn version() -> Version {
        Version {
            name: "@fg/hello".into(),
            version: "1.0.0".into(),
            integrity: None,
            shasum: None,
        }
    }

    #[test]
    fn the_strongest_integrity_algorithm_is_used() {
        let i = parse_integrity(&format!(
            "{} {} bogus md5-AAAA",
            sri("sha1", &[1; 20]),
            sri("sha512", &[2; 64])
        ))
        .unwrap();
        assert_eq!(i.algorithm, Algorithm::Sha512);
        assert_eq!(i.digests, [vec![2u8; 64]]);
        assert_eq!(parse_integrity("md5-AAAA"), None);
        assert_eq!(parse_integrity("sha512-not*base64"), None);
    }

    #[test]
    fn packuments_give_tarball_urls_and_refuse_other_packages() {
        let text = format!(
            r#"{{"name":"@fg/hello","versions":{{"1.0.0":{{"name":"@fg/hello","version":"1.0.0","dist":{{"tarball":"/t/hello-1.0.0.tgz","integrity":"{}","shasum":"{}"}}}},"2.0.0":{{"name":"@fg/hello"}}}}}}"#,
            sri("sha512", &[5; 64]),
            hex::encode([6u8; 20])
        );
        let (versions, skipped) =
            parse_packument(text.as_bytes(), "@fg/hello", "https://r:443/@fg%2fhello").unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(versions[0].0, "https://r:443/t/hello-1.0.0.tgz");
        assert_eq!(versions[0].1.shasum, Some([6; 20]));
        let e = parse_packument(text.as_bytes(), "other", "https://r:443/other").unwrap_err();
        assert!(e.contains("@fg/hello"), "{e}");
        assert!(parse_packument(br#"{"versions": 3}"#, "x", "https://r:443/x").is_err());
    }

    #[test]
    fn package_json_must_name_the_version() {
        let json = br#"{"name":"@fg/hello","version":"1.0.0","license":{"type":"ISC"},"author":"Jo Tester <jo@example.org> (https://example.org)","description":"hi"}"#;
        let t = tar_gz(&[("package/package.json", json.as_slice())]);
        let m = inspect_tarball(&t[..], &version()).unwrap();
        assert_eq!(m["license"], "ISC");
        assert_eq!(m["author"], "Jo Tester");
        assert_eq!(m["author-email"], "jo@example.org");
        let other = Version {
            version: "2.0.0".into(),
            ..version()
        };
        assert!(
            inspect_tarball(&t[..], &other)
                .unwrap_err()
                .contains("names @fg/hello@1.0.0")
        );
        let bad = tar_gz(&[("package/package.json", b"{".as_slice())]);
        assert!(
            inspect_tarball(&bad[..], &version())
                .unwrap_err()
                .contains("package.json")
        );
        let none = tar_gz(&[("package/index.js", b"".as_slice())]);
        assert!(
            inspect_tarball(&none[..], &version())
                .unwrap_err()
                .contains("no package.json")
        );
    }

    #[test]
    fn mutated_packuments_and_tarballs_never_panic() {
        let packument = format!(
            r#"{{"versions":{{"1.0.0":{{"name":"@fg/hello","version":"1.0.0","dist":{{"tarball":"/t.tgz","integrity":"{}","shasum":"{}"}}}}}}}}"#,
            sri("sha512", &[5; 64]),
            hex::encode([6u8; 20])
        );
        for m in crate::testing::mutations(packument.as_bytes(), 300) {
            let _ = parse_packument(&m, "@fg/hello", "https://r:443/@fg%2fhello");
            let _ = parse_integrity(&String::from_utf8_lossy(&m));
        }
        let json =
            br#"{"name":"@fg/hello","version":"1.0.0","author":{"name":"Jo","email":"jo@x"}}"#;
        let t = tar_gz(&[("package/package.json", json.as_slice())]);
        for m in crate::testing::mutations(&t, 300) {
            let _ = inspect_tarball(&m[..], &version());
        }
    }
}
