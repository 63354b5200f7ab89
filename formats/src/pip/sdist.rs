//! A source distribution (`{name}-{version}.tar.gz`, read from its spool file): the
//! `PKG-INFO` at the top of its one directory holds the core metadata, whose name and
//! version must be the file name's.

use std::io::Read;

use super::metadata::{self, CoreMetadata, MAX_METADATA};
use crate::tarball::find_top_level_file;

/// The most an sdist is expanded while looking for `PKG-INFO`.
const MAX_EXPANDED: u64 = 4 << 30;

/// `{name}-{version}.tar.gz` → (name, version).
pub fn parse_name(filename: &str) -> Result<(String, String), String> {
    filename
        .strip_suffix(".tar.gz")
        .and_then(|stem| stem.rsplit_once('-'))
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{filename:?} is not `name-version.tar.gz`"))
}

/// Reads the `PKG-INFO` of an sdist file named `filename` and checks it names the file.
pub fn inspect(reader: impl Read, filename: &str) -> Result<CoreMetadata, String> {
    let (name, version) = parse_name(filename)?;
    let text = find_top_level_file(reader, "PKG-INFO", |_| true, MAX_EXPANDED, MAX_METADATA)?
        .ok_or("no PKG-INFO at the top of the sdist")?;
    let metadata = metadata::parse(&text).map_err(|e| format!("PKG-INFO: {e}"))?;
    metadata.matches(&name, &version)?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tar_gz as sdist;

    #[test]
    fn pkg_info_names_the_sdist() {
        let s = sdist(&[
            ("fg-hello-1.0/setup.py", b"".as_slice()),
            ("fg-hello-1.0/sub/PKG-INFO", b"Name: wrong\nVersion: 9\n"),
            ("fg-hello-1.0/PKG-INFO", b"Name: fg-hello\nVersion: 1.0\n"),
        ]);
        let m = inspect(&s[..], "fg-hello-1.0.tar.gz").unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("fg-hello", "1.0"));
        let e = inspect(&s[..], "fg-hello-2.0.tar.gz").unwrap_err();
        assert!(e.contains("version"), "{e}");
    }

    #[test]
    fn hostile_sdists_give_a_reason() {
        let e = inspect(&b"\x1f\x8b\x08\x00garbage"[..], "a-1.tar.gz").unwrap_err();
        assert!(e.contains("tar"), "{e}");
        let e = inspect(&sdist(&[("a-1/setup.py", b"")])[..], "a-1.tar.gz").unwrap_err();
        assert!(e.contains("no PKG-INFO"), "{e}");
        assert!(parse_name("nodash.tar.gz").is_err());
        assert!(parse_name("a-1.zip").is_err());
    }

    #[test]
    fn mutated_sdists_never_panic() {
        let s = sdist(&[("fg-hello-1.0/PKG-INFO", b"Name: fg-hello\nVersion: 1.0\n")]);
        for m in crate::testing::mutations(&s, 300) {
            let _ = inspect(&m[..], "fg-hello-1.0.tar.gz");
        }
    }
}
