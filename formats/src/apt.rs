//! apt's `Release` files (the `Release` of `Release` + `Release.gpg`, or the text an
//! `InRelease` signature covers): the suite they are for, their validity and the SHA256
//! list of the index files under `dists/<suite>/`. The OpenPGP signature is the
//! daemon's business (`inspect::openpgp`); this only reads the text.

use std::collections::HashMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::deb822::{Item, Paragraphs};

/// A Release file's SHA256 list (the caller checks its signature before trusting it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseIndex {
    /// Path under `dists/<suite>/` → what the Release says of it.
    files: HashMap<String, Listed>,
    /// Its `Origin` (the archive's vendor, `Debian`, `Ubuntu`, ...).
    origin: Option<String>,
}

/// What a Release file says of one index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub sha256: [u8; 32],
    pub size: u64,
}

impl ReleaseIndex {
    /// What the Release lists at this path (under `dists/<suite>/`).
    pub fn get(&self, path: &str) -> Option<Listed> {
        self.files.get(path).copied()
    }

    /// A path the Release lists with this sha256 (by-hash requests name only that).
    pub fn path_of(&self, sha256: &[u8; 32]) -> Option<&str> {
        self.files
            .iter()
            .find(|(_, l)| l.sha256 == *sha256)
            .map(|(p, _)| p.as_str())
    }

    /// How many files the Release lists (never 0: such a Release is refused).
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The Release file's `Origin`.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

/// Parses a Release file's text: its SHA256 list, after checking it is for `suite` and,
/// when it says `Valid-Until`, still valid at `now` (an old signed Release replayed
/// would otherwise hide security updates).
pub fn parse_release(
    text: &[u8],
    suite: &str,
    now: OffsetDateTime,
) -> Result<ReleaseIndex, String> {
    let mut paragraphs = Paragraphs::new(text);
    let stanza = match paragraphs.next_item() {
        Ok(Some(Item::Stanza(s))) => s,
        Ok(Some(Item::Malformed(m))) => return Err(format!("line {}: {}", m.line, m.reason)),
        Ok(None) => return Err("empty".to_owned()),
        Err(e) => return Err(e.to_string()),
    };
    let names: Vec<&str> = ["Suite", "Codename"]
        .iter()
        .filter_map(|f| stanza.get(f))
        .collect();
    let last = suite.rsplit('/').next().unwrap_or(suite);
    if !names.is_empty() && !names.iter().any(|n| *n == suite || *n == last) {
        return Err(format!(
            "it is for suite {}, not {suite}",
            names.join(" / ")
        ));
    }
    if let Some(until) = stanza.get("Valid-Until") {
        let parsed =
            release_date(until).ok_or_else(|| format!("Valid-Until {until:?} is not a date"))?;
        if parsed < now {
            return Err(format!("expired (Valid-Until {until})"));
        }
    }
    let list = stanza
        .get("SHA256")
        .ok_or_else(|| "no SHA256 list".to_owned())?;
    let mut files = HashMap::new();
    for (i, line) in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let mut parts = line.split_ascii_whitespace();
        let (Some(hash), Some(size), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("SHA256 line {}: expected `hash size path`", i + 1));
        };
        let sha = crate::parse_sha256(hash)
            .ok_or_else(|| format!("SHA256 line {}: bad hash {hash:?}", i + 1))?;
        let size: u64 = size
            .parse()
            .map_err(|_| format!("SHA256 line {}: bad size {size:?}", i + 1))?;
        files.insert(path.to_owned(), Listed { sha256: sha, size });
    }
    if files.is_empty() {
        return Err("the SHA256 list is empty".to_owned());
    }
    Ok(ReleaseIndex {
        files,
        origin: stanza.get("Origin").map(str::to_owned),
    })
}

/// A Release date (RFC 2822, where Debian writes `UTC` for the zone).
fn release_date(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    let numeric = match text.strip_suffix("UTC") {
        Some(rest) => format!("{rest}+0000"),
        None => text.to_owned(),
    };
    OffsetDateTime::parse(&numeric, &Rfc2822).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-06-01 12:00 UTC)
    }

    #[test]
    fn an_expired_release_is_refused() {
        let text = |until: &str| {
            format!(
                "Suite: s\nValid-Until: {until}\nSHA256:\n {SHA} 0 main/binary-amd64/Packages\n"
            )
        };
        assert!(
            parse_release(text("Sat, 06 Jun 2026 00:00:00 UTC").as_bytes(), "s", now()).is_ok()
        );
        let e = parse_release(text("Fri, 01 May 2026 00:00:00 UTC").as_bytes(), "s", now())
            .unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let e = parse_release(text("tomorrow").as_bytes(), "s", now()).unwrap_err();
        assert!(e.contains("not a date"), "{e}");
    }

    #[test]
    fn release_list_is_parsed_and_suite_checked() {
        let text = format!(
            "Suite: stable\nCodename: bookworm\nSHA256:\n {SHA} 0 main/binary-amd64/Packages\n {SHA}   0 main/binary-amd64/Packages.gz\n"
        );
        let index = parse_release(text.as_bytes(), "bookworm", now()).unwrap();
        assert_eq!(index.file_count(), 2);
        let e = parse_release(text.as_bytes(), "sid", now()).unwrap_err();
        assert!(e.contains("not sid"), "{e}");
    }

    #[test]
    fn hostile_release_files_are_refused_with_a_reason() {
        for (text, needle) in [
            ("", "empty"),
            ("Suite: s\n", "no SHA256"),
            ("Suite: s\nSHA256:\n zz 1 p\n", "bad hash"),
            (&format!("Suite: s\nSHA256:\n {SHA} -1 p\n"), "bad size"),
            (&format!("Suite: s\nSHA256:\n {SHA} 1\n"), "expected"),
            ("\u{0}\u{1}garbage without colon\n", "line 1"),
        ] {
            let e = parse_release(text.as_bytes(), "s", now())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn listed_files_are_found_by_path_and_by_hash() {
        let text = format!("Origin: Debian\nSHA256:\n {SHA} 42 main/binary-amd64/Packages\n");
        let index = parse_release(text.as_bytes(), "s", now()).unwrap();
        let sha = crate::parse_sha256(SHA).unwrap();
        assert_eq!(
            index.get("main/binary-amd64/Packages"),
            Some(Listed {
                sha256: sha,
                size: 42
            })
        );
        assert_eq!(index.get("main/binary-i386/Packages"), None);
        assert_eq!(index.path_of(&sha), Some("main/binary-amd64/Packages"));
        assert_eq!(index.path_of(&[0; 32]), None);
        assert_eq!(index.origin(), Some("Debian"));
    }
}
