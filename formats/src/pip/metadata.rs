//! Python core metadata (`METADATA` in a wheel, `PKG-INFO` in an sdist, a PEP 658
//! `.metadata` file): RFC 822-style header fields, read up to the first blank line.
//! Also the project-name normalisation of PEP 503, which every comparison uses.

use std::collections::BTreeMap;

/// The largest metadata file read.
pub const MAX_METADATA: u64 = 16 << 20;

/// The fields of a distribution's core metadata the report uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreMetadata {
    pub name: String,
    pub version: String,
    pub license: Option<String>,
    pub summary: Option<String>,
    pub author: Option<String>,
    pub author_email: Option<String>,
}

/// Parses the header fields; `Name` and `Version` are required.
pub fn parse(text: &[u8]) -> Result<CoreMetadata, String> {
    let text = std::str::from_utf8(text).map_err(|_| "metadata is not UTF-8".to_string())?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some((_, value)) => {
                    value.push('\n');
                    value.push_str(line.trim());
                }
                None => return Err(format!("metadata line {}: continuation first", i + 1)),
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!(
                "metadata line {}: not a `Field: value` line",
                i + 1
            ));
        };
        fields.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, v)| k == key && !v.is_empty() && v != "UNKNOWN")
            .map(|(_, v)| v.clone())
    };
    let name = get("name").ok_or("metadata has no Name")?;
    let version = get("version").ok_or("metadata has no Version")?;
    // A free-text `License` is used only when it is one short line (an SPDX-like name).
    let license = get("license-expression")
        .or_else(|| get("license").filter(|l| !l.contains('\n') && l.len() <= 100));
    let (mut author, mut author_email) = (get("author"), None);
    if let Some(value) = get("author-email") {
        match value.split_once('<') {
            Some((who, rest)) => {
                let who = who.trim().trim_matches('"');
                if author.is_none() && !who.is_empty() {
                    author = Some(who.to_owned());
                }
                author_email = Some(rest.trim_end_matches(['>', ' ']).to_owned());
            }
            None => author_email = Some(value),
        }
    }
    Ok(CoreMetadata {
        name,
        version,
        license,
        summary: get("summary"),
        author,
        author_email,
    })
}

impl CoreMetadata {
    /// The report's metadata keys.
    pub fn report(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert("name".into(), self.name.clone());
        out.insert("version".into(), self.version.clone());
        for (key, value) in [
            ("license", &self.license),
            ("description", &self.summary),
            ("author", &self.author),
            ("author-email", &self.author_email),
        ] {
            if let Some(v) = value {
                out.insert(key.into(), v.clone());
            }
        }
        out
    }

    /// Checks that this is the distribution a file name (or index page) says it is.
    pub fn matches(&self, name: &str, version: &str) -> Result<(), String> {
        if normalise_name(&self.name) != normalise_name(name) {
            return Err(format!(
                "metadata names {:?}, the file name {name:?}",
                self.name
            ));
        }
        if normalise_version(&self.version) != normalise_version(version) {
            return Err(format!(
                "metadata says version {:?}, the file name {version:?}",
                self.version
            ));
        }
        Ok(())
    }
}

/// PEP 503: lowercase, every run of `-`, `_` and `.` becomes one `-`.
pub fn normalise_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Versions as file names write them (a wheel name escapes `-` as `_`), lowercase.
fn normalise_version(version: &str) -> String {
    version.to_ascii_lowercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_up_to_the_body() {
        let text = b"Metadata-Version: 2.4\nName: Fg_Hello\nVersion: 1.0.post1\nSummary: says hello\nLicense-Expression: MIT\nAuthor-email: Jo Tester <jo@example.org>\nDescription: long\n  more\n\nName: not this\n";
        let m = parse(text).unwrap();
        assert_eq!(m.name, "Fg_Hello");
        assert_eq!(m.version, "1.0.post1");
        assert_eq!(m.license.as_deref(), Some("MIT"));
        assert_eq!(m.author.as_deref(), Some("Jo Tester"));
        assert_eq!(m.author_email.as_deref(), Some("jo@example.org"));
        assert!(m.matches("fg-hello", "1.0.post1").is_ok());
        assert!(m.matches("fg-hello", "1.1").is_err());
        assert!(m.matches("other", "1.0.post1").is_err());
    }

    #[test]
    fn long_free_text_licenses_are_left_out() {
        let m = parse(
            b"Name: a\nVersion: 1\nLicense: Copyright (c) 2026\n  Permission is hereby granted\n",
        )
        .unwrap();
        assert_eq!(m.license, None);
    }

    #[test]
    fn hostile_metadata_gives_a_reason() {
        for (text, needle) in [
            (&b"\xff\xfe"[..], "UTF-8"),
            (b" leading continuation\n", "continuation first"),
            (b"Name: a\nno colon here\n", "line 2"),
            (b"Name: a\n", "no Version"),
            (b"Version: 1\nName: UNKNOWN\n", "no Name"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn names_are_normalised_as_pep_503_says() {
        assert_eq!(normalise_name("Foo.Bar__baz-"), "foo-bar-baz");
        assert_eq!(normalise_name("_x"), "x");
    }

    #[test]
    fn mutated_metadata_never_panics() {
        let sample = b"Metadata-Version: 2.1\nName: fg-hello\nVersion: 1.0\nAuthor-email: \"Jo\" <jo@example.org>\nDescription: a\n  b\n\nbody\n";
        for m in crate::testing::mutations(sample, 500) {
            let _ = parse(&m);
        }
    }
}
