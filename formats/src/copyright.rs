//! The machine-readable (DEP-5) `debian/copyright` format, as installed in
//! `usr/share/doc/<package>/copyright`: the license of the package's `Files: *`
//! paragraph (or of the header), with Debian's short names translated to SPDX.
//!
//! Best effort by design: a free-form copyright file, or a license with no SPDX name
//! here, gives `None`, never an error.

use crate::deb822::{Item, Paragraphs};

/// What the copyright file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copyright {
    /// SPDX expression.
    pub license: String,
    /// The `Copyright:` of the `Files: *` paragraph, first line.
    pub holders: Option<String>,
}

/// Debian short license names → SPDX (DEP-5 uses Debian's names).
fn spdx(debian: &str) -> Option<&'static str> {
    const NAMES: [(&str, &str); 27] = [
        ("GPL-1", "GPL-1.0-only"),
        ("GPL-1+", "GPL-1.0-or-later"),
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-3", "GPL-3.0-only"),
        ("GPL-3+", "GPL-3.0-or-later"),
        ("LGPL-2", "LGPL-2.0-only"),
        ("LGPL-2+", "LGPL-2.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPL-3", "LGPL-3.0-only"),
        ("LGPL-3+", "LGPL-3.0-or-later"),
        ("AGPL-3", "AGPL-3.0-only"),
        ("AGPL-3+", "AGPL-3.0-or-later"),
        ("Apache-2.0", "Apache-2.0"),
        ("Expat", "MIT"),
        ("MIT", "MIT"),
        ("BSD-2-clause", "BSD-2-Clause"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("ISC", "ISC"),
        ("MPL-2.0", "MPL-2.0"),
        ("Zlib", "Zlib"),
        ("Artistic", "Artistic-1.0-Perl"),
        ("CC0-1.0", "CC0-1.0"),
        ("PSF-2", "PSF-2.0"),
        ("OpenSSL", "OpenSSL"),
        ("BSL-1.0", "BSL-1.0"),
    ];
    NAMES
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case(debian))
        .map(|(_, s)| *s)
}

/// An expression of Debian names (`GPL-2+ or Artistic`, `MIT and Zlib`) in SPDX, if
/// every name is known.
fn spdx_expression(debian: &str) -> Option<String> {
    let mut out = Vec::new();
    for word in debian.split_ascii_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" => out.push("OR".to_owned()),
            "and" => out.push("AND".to_owned()),
            _ => out.push(spdx(word.trim_end_matches(','))?.to_owned()),
        }
    }
    (!out.is_empty()).then(|| out.join(" "))
}

/// Reads a DEP-5 copyright file: the license of `Files: *` (or of the header).
pub fn parse(text: &[u8]) -> Option<Copyright> {
    let mut paragraphs = Paragraphs::new(text);
    let mut header = None;
    let mut first = true;
    loop {
        let stanza = match paragraphs.next_item() {
            Ok(Some(Item::Stanza(s))) => s,
            Ok(Some(Item::Malformed(_))) => {
                first = false;
                continue;
            }
            _ => break,
        };
        let license = stanza
            .get("License")
            .and_then(|l| l.lines().next())
            .map(str::trim);
        if first {
            first = false;
            stanza.get("Format")?;
            header = license.and_then(spdx_expression);
            continue;
        }
        if stanza.get("Files").map(str::trim) == Some("*") {
            return license.and_then(spdx_expression).map(|license| Copyright {
                license,
                holders: stanza
                    .get("Copyright")
                    .and_then(|c| c.lines().next())
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty()),
            });
        }
    }
    header.map(|license| Copyright {
        license,
        holders: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: 2020 Jo Tester\nLicense: GPL-2+\n long text\n\nFiles: debian/*\nCopyright: 2021 Someone\nLicense: MIT\n";

    #[test]
    fn dep5_files_star_license_is_given_in_spdx() {
        let c = parse(DEP5.as_bytes()).unwrap();
        assert_eq!(c.license, "GPL-2.0-or-later");
        assert_eq!(c.holders.as_deref(), Some("2020 Jo Tester"));
        let dual = DEP5.replace("License: GPL-2+", "License: GPL-2+ or Artistic");
        assert_eq!(
            parse(dual.as_bytes()).unwrap().license,
            "GPL-2.0-or-later OR Artistic-1.0-Perl"
        );
    }

    #[test]
    fn free_form_or_unknown_licenses_give_nothing() {
        assert_eq!(parse(b"This package is Copyright 1999 by someone.\n"), None);
        assert_eq!(parse(b""), None);
        let unknown = DEP5.replace("License: GPL-2+", "License: my-own-license");
        assert_eq!(parse(unknown.as_bytes()), None);
        assert_eq!(parse(&[0xff, 0xfe, b':', b'\n']), None);
    }
}
