//! Debtags strings and the overrides file, parsed without any I/O of their own.
//!
//! A tag string is normalised the Debian way: facet groups such as
//! `role::{program,shared-lib}` are expanded to `role::program, role::shared-lib`, tags
//! are de-duplicated, sorted and joined with `", "`. The overrides file has one
//! `pkg[, pkg]: tag, tag` line per entry (blank lines and `#` comments ignored); a later
//! line for the same package replaces an earlier one, and an empty tag list removes the
//! package from the answer.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::deb822::Stanza;

/// Package name → normalised tag string.
pub type TagMap = BTreeMap<String, String>;

/// Normalises a tag string; `""` when it holds no tags.
pub fn normalise(raw: &str) -> String {
    let mut tags: Vec<Cow<'_, str>> = Vec::new();
    for item in split_top_level(raw) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match (item.find('{'), item.rfind('}')) {
            (Some(open), Some(close)) if open < close => {
                let (prefix, suffix) = (&item[..open], &item[close + 1..]);
                for inner in item[open + 1..close].split(',') {
                    let inner = inner.trim();
                    if !inner.is_empty() {
                        let tag = format!("{}{inner}{}", prefix.trim(), suffix.trim());
                        tags.push(Cow::Owned(one_line(&tag).into_owned()));
                    }
                }
            }
            _ => tags.push(one_line(item)),
        }
    }
    tags.sort_unstable();
    tags.dedup();
    let mut out = String::with_capacity(raw.len() + 8);
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(t);
    }
    out
}

/// Runs of whitespace (line breaks included) as one space: a tag never spans lines, so
/// the `package: tags` text form keeps one line per package whatever the input held.
fn one_line(tag: &str) -> Cow<'_, str> {
    if tag.contains(|c: char| c.is_whitespace() && c != ' ') || tag.contains("  ") {
        Cow::Owned(tag.split_whitespace().collect::<Vec<_>>().join(" "))
    } else {
        Cow::Borrowed(tag)
    }
}

/// The normalised tags of one Packages stanza, if it has any and a valid package name
/// (a name is one token of `[a-z0-9+.-]`, so it cannot smuggle a line into
/// [`to_text`]).
pub fn stanza_tags(stanza: &Stanza) -> Option<(String, String)> {
    let (pkg, raw) = (stanza.get("Package")?, stanza.get("Tag")?);
    if pkg.is_empty() || !valid_package_name(pkg) {
        return None;
    }
    let t = normalise(raw);
    (!t.is_empty()).then(|| (pkg.to_owned(), t))
}

/// Splits at commas that are not inside braces.
fn split_top_level(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        let mut depth = 0usize;
        for (i, c) in r.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    rest = Some(&r[i + 1..]);
                    return Some(&r[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(r)
    })
}

/// A line of an overrides file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    pub reason: &'static str,
}

/// Overrides: package → normalised tags (`""` = remove the package).
pub type Overrides = BTreeMap<String, String>;

/// Parses an overrides file; unusable lines are returned for the caller to warn about.
pub fn parse_overrides(text: &str) -> (Overrides, Vec<BadLine>) {
    let mut map = Overrides::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((pkgs, tags)) = line.split_once(':') else {
            bad.push(BadLine {
                line: i + 1,
                reason: "expected `pkg[, pkg]: tag, tag`",
            });
            continue;
        };
        let names: Vec<&str> = pkgs
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if names.is_empty() || names.iter().any(|n| !valid_package_name(n)) {
            bad.push(BadLine {
                line: i + 1,
                reason: "package names must be non-empty and made of a-z 0-9 + - .",
            });
            continue;
        }
        let tags = normalise(tags);
        for n in names {
            map.insert(n.to_owned(), tags.clone());
        }
    }
    (map, bad)
}

/// Debian package names: lowercase letters, digits, `+`, `-`, `.`.
fn valid_package_name(n: &str) -> bool {
    n.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Applies overrides on top of a tag map.
pub fn apply(tags: &mut TagMap, overrides: &Overrides) {
    for (pkg, t) in overrides {
        if t.is_empty() {
            tags.remove(pkg);
        } else {
            tags.insert(pkg.clone(), t.clone());
        }
    }
}

/// The `debtags cat` text form: one `package: tag, tag` line per package, sorted.
pub fn to_text(tags: &TagMap) -> String {
    let mut out = String::with_capacity(tags.len() * 64);
    for (pkg, t) in tags {
        out.push_str(pkg);
        out.push_str(": ");
        out.push_str(t);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facet_groups_expand_sort_and_dedupe() {
        assert_eq!(
            normalise(
                "works-with::{text,image}, role::program,\n implemented-in::c, role::program"
            ),
            "implemented-in::c, role::program, works-with::image, works-with::text"
        );
        assert_eq!(
            normalise("role::{program, shared-lib}"),
            "role::program, role::shared-lib"
        );
        assert_eq!(normalise(" , ,\n"), "");
        assert_eq!(normalise("x::{}"), "");
    }

    #[test]
    fn unbalanced_braces_stay_literal_and_never_panic() {
        assert_eq!(normalise("a::{b,c"), "a::{b,c");
        assert_eq!(
            normalise("}a{, b"),
            "}a{, b",
            "an unclosed brace swallows the rest"
        );
        assert_eq!(normalise("é::{ü,ß}"), "é::ß, é::ü");
    }

    /// Found by the `debtags` fuzz target: the text after a facet group's `}` kept its
    /// line break, so the text form grew a line for a package nobody tagged.
    #[test]
    fn a_tag_never_holds_a_line_break() {
        let raw = "# commento, v, usa::{editing,m: }# comment\nhello, vim: rrol";
        let t = normalise(raw);
        assert!(!t.contains('\n'), "{t:?}");
        assert_eq!(normalise(&t), t);
        let tags: TagMap = [("pkg".to_owned(), t)].into();
        assert_eq!(to_text(&tags).lines().count(), 1);
        assert_eq!(normalise("a::{b\r\n c,d}\tx"), "a::b cx, a::dx");
    }

    #[test]
    fn stanza_tags_need_a_valid_package_name() {
        let tags_of = |text: &str| {
            let mut p = crate::deb822::Paragraphs::new(text.as_bytes());
            match p.next_item().unwrap() {
                Some(crate::deb822::Item::Stanza(s)) => stanza_tags(s),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            tags_of("Package: vim\nTag: role::{program,data}\n"),
            Some(("vim".into(), "role::data, role::program".into()))
        );
        assert_eq!(tags_of("Package: vim\n evil: x\nTag: a\n"), None);
        assert_eq!(tags_of("Package: Vim\nTag: a\n"), None);
        assert_eq!(tags_of("Package: vim\nTag: , \n"), None);
    }

    #[test]
    fn overrides_parse_replace_and_remove() {
        let (o, bad) = parse_overrides(
            "# local packages\n\nfoo, bar: role::{program,data}\nnot a line\nBad!: x\nbaz:\nfoo: use::editing\n",
        );
        assert_eq!(
            bad,
            vec![
                BadLine {
                    line: 4,
                    reason: "expected `pkg[, pkg]: tag, tag`"
                },
                BadLine {
                    line: 5,
                    reason: "package names must be non-empty and made of a-z 0-9 + - ."
                },
            ]
        );
        assert_eq!(o["foo"], "use::editing");
        assert_eq!(o["bar"], "role::data, role::program");
        assert_eq!(o["baz"], "");
        let mut tags: TagMap = [("baz", "x"), ("keep", "y")]
            .into_iter()
            .map(|(a, b)| (a.into(), b.into()))
            .collect();
        apply(&mut tags, &o);
        assert_eq!(
            to_text(&tags),
            "bar: role::data, role::program\nfoo: use::editing\nkeep: y\n"
        );
    }
}
