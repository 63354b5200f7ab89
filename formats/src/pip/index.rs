//! A project page of a Python simple index: HTML (PEP 503, the anchors' `href` with a
//! `#sha256=` fragment and `data-core-metadata` / `data-dist-info-metadata` of PEP 658)
//! or JSON (PEP 691, `files[]` with `url`, `hashes.sha256` and `core-metadata`). Either
//! gives the files the page lists, with their absolute URLs as the proxy writes them.

use serde::Deserialize;

use crate::urls::{normalise_url, percent_decode};

/// The largest page read (expanded, when the origin sent it gzip-compressed).
pub const MAX_PAGE: usize = 64 << 20;
/// The most files one page may list.
const MAX_FILES: usize = 200_000;

/// A file a project page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    /// Absolute and normalised (`scheme://host:port/path`), without the fragment.
    pub url: String,
    /// The last segment of the URL's path, percent-decoded.
    pub filename: String,
    pub sha256: Option<[u8; 32]>,
    /// PEP 658: `None` when the index serves no `.metadata` for it, `Some(None)` when it
    /// does but gives no hash.
    pub metadata: Option<Option<[u8; 32]>>,
}

/// Parses a page fetched from `page_url` (normalised).
pub fn parse_page(body: &[u8], page_url: &str) -> Result<Vec<IndexedFile>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the page is not UTF-8".to_string())?;
    let base = url::Url::parse(page_url).map_err(|e| format!("page URL: {e}"))?;
    let files = if text.trim_start().starts_with('{') {
        json_files(text, &base)?
    } else {
        html_files(text, &base)?
    };
    if files.len() > MAX_FILES {
        return Err(format!("the page lists more than {MAX_FILES} files"));
    }
    Ok(files)
}

#[derive(Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
    #[serde(default, rename = "core-metadata")]
    core_metadata: Option<serde_json::Value>,
    #[serde(default, rename = "dist-info-metadata")]
    dist_info_metadata: Option<serde_json::Value>,
}

fn json_files(text: &str, base: &url::Url) -> Result<Vec<IndexedFile>, String> {
    let page: JsonPage = serde_json::from_str(text).map_err(|e| format!("JSON page: {e}"))?;
    page.files
        .into_iter()
        .map(|f| {
            let metadata = match f.core_metadata.or(f.dist_info_metadata) {
                None | Some(serde_json::Value::Bool(false)) => None,
                Some(serde_json::Value::Object(hashes)) => Some(
                    hashes
                        .get("sha256")
                        .and_then(|v| v.as_str())
                        .and_then(crate::parse_sha256),
                ),
                Some(_) => Some(None),
            };
            let sha256 = match f.hashes.get("sha256") {
                Some(h) => Some(
                    crate::parse_sha256(h).ok_or_else(|| format!("{}: bad sha256 {h:?}", f.url))?,
                ),
                None => None,
            };
            let (url, filename) = resolve(base, &f.url)?;
            Ok(IndexedFile {
                url,
                filename,
                sha256,
                metadata,
            })
        })
        .collect()
}

fn html_files(text: &str, base: &url::Url) -> Result<Vec<IndexedFile>, String> {
    let mut files = Vec::new();
    let lower = text.to_ascii_lowercase();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a").map(|i| at + i) {
        at = start + 2;
        // `<a` followed by whitespace: an anchor (not `<abbr>`).
        if !lower[at..].starts_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let Some(end) = tag_end(&text[at..]).map(|i| at + i) else {
            return Err("an anchor tag is never closed".into());
        };
        let attributes = attributes(&text[at..end]);
        at = end;
        let Some(href) = attribute(&attributes, "href").filter(|h| !h.is_empty()) else {
            continue;
        };
        let (link, fragment) = match href.split_once('#') {
            Some((l, f)) => (l, Some(f)),
            None => (href.as_str(), None),
        };
        let sha256 = match fragment.and_then(|f| f.strip_prefix("sha256=")) {
            Some(h) => {
                Some(crate::parse_sha256(h).ok_or_else(|| format!("{href}: bad sha256 fragment"))?)
            }
            None => None,
        };
        let metadata = attribute(&attributes, "data-core-metadata")
            .or_else(|| attribute(&attributes, "data-dist-info-metadata"))
            .and_then(|v| match v.as_str() {
                "false" => None,
                v => Some(v.strip_prefix("sha256=").and_then(crate::parse_sha256)),
            });
        let (url, filename) = resolve(base, link)?;
        files.push(IndexedFile {
            url,
            filename,
            sha256,
            metadata,
        });
        if files.len() > MAX_FILES {
            break;
        }
    }
    Ok(files)
}

/// Where the tag that starts at `text` ends (its `>`), outside quoted values.
fn tag_end(text: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// `name="value"` pairs (quoted, single-quoted or bare), names lowercased, values with
/// HTML character references expanded.
fn attributes(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c == '=' || c.is_ascii_whitespace() || c == '/')
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, remainder) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let inner = &after[1..];
                    let close = inner.find(q).unwrap_or(inner.len());
                    (&inner[..close], inner.get(close + 1..).unwrap_or(""))
                }
                _ => {
                    let close = after
                        .find(|c: char| c.is_ascii_whitespace())
                        .unwrap_or(after.len());
                    (&after[..close], &after[close..])
                }
            };
            rest = remainder;
            unescape(value)
        } else {
            if name.is_empty() {
                // A stray `/` or similar: skip one character.
                let next = rest.chars().next().map_or(0, char::len_utf8);
                rest = &rest[next..];
            }
            String::new()
        };
        if !name.is_empty() {
            out.push((name, value));
        }
        rest = rest.trim_start();
    }
    out
}

fn attribute(attributes: &[(String, String)], name: &str) -> Option<String> {
    attributes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Expands `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;` and numeric references.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';').filter(|s| *s <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A link on the page → (normalised absolute URL without fragment, file name).
fn resolve(base: &url::Url, link: &str) -> Result<(String, String), String> {
    let mut url = base.join(link).map_err(|e| format!("link {link:?}: {e}"))?;
    url.set_fragment(None);
    let normalised = normalise_url(&url).ok_or_else(|| format!("link {link:?}: not http(s)"))?;
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    let filename = percent_decode(last);
    Ok((normalised, filename))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn html_page() -> String {
        format!(
            "<!DOCTYPE html><html><body><abbr>x</abbr>\n<A HREF=\"../../files/fg_hello-1.0-py3-none-any.whl#sha256={SHA}\" data-dist-info-metadata=\"sha256={SHA}\">fg_hello-1.0-py3-none-any.whl</A><br/>\n<a href='https://files.example.org/fg-hello-1.0.tar.gz?x=1&amp;y=2' data-requires-python=\"&gt;=3.8\">sdist</a>\n<a href=\"fg%20x-1.0.zip\" data-core-metadata=\"true\" >z</a></body></html>"
        )
    }

    #[test]
    fn html_anchors_give_absolute_urls_hashes_and_metadata() {
        let page = html_page();
        let files = parse_page(
            page.as_bytes(),
            "https://idx.example.org:443/simple/fg-hello/",
        )
        .unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(
            files[0].url,
            "https://idx.example.org:443/files/fg_hello-1.0-py3-none-any.whl"
        );
        assert_eq!(files[0].filename, "fg_hello-1.0-py3-none-any.whl");
        assert_eq!(files[0].sha256, crate::parse_sha256(SHA));
        assert_eq!(files[0].metadata, Some(files[0].sha256));
        assert_eq!(
            files[1].url,
            "https://files.example.org:443/fg-hello-1.0.tar.gz?x=1&y=2"
        );
        assert_eq!(files[1].sha256, None);
        assert_eq!(files[1].metadata, None);
        assert_eq!(files[2].filename, "fg x-1.0.zip");
        assert_eq!(files[2].metadata, Some(None));
    }

    fn json_page() -> String {
        format!(
            r#"{{"meta": {{"api-version": "1.1"}}, "name": "fg-hello", "files": [{{"filename": "fg_hello-1.0.tar.gz", "url": "/f/fg_hello-1.0.tar.gz", "hashes": {{"sha256": "{SHA}"}}, "core-metadata": {{"sha256": "{SHA}"}}}}]}}"#
        )
    }

    #[test]
    fn json_pages_are_read_too() {
        let page = json_page();
        let files = parse_page(page.as_bytes(), "http://idx:8080/simple/fg-hello/").unwrap();
        assert_eq!(files[0].url, "http://idx:8080/f/fg_hello-1.0.tar.gz");
        assert!(files[0].sha256.is_some() && files[0].metadata == Some(files[0].sha256));
    }

    #[test]
    fn hostile_pages_give_a_reason() {
        let base = "http://idx:80/simple/x/";
        for (page, needle) in [
            (&b"<a href=\"x.whl#sha256=zz\">x</a>"[..], "bad sha256"),
            (b"<a href=\"x.whl", "never closed"),
            (b"\xff\xff", "UTF-8"),
            (b"{\"files\": 3}", "JSON page"),
            (b"<a href=\"ftp://x/y.whl\">", "not http"),
        ] {
            let e = parse_page(page, base).unwrap_err();
            assert!(e.contains(needle), "{page:?}: {e}");
        }
        // Odd but harmless markup is no error.
        assert!(parse_page(b"<a></a><a =x/ href>", base).unwrap().is_empty());
        assert_eq!(unescape("&#x41;&#66;&bogus;&"), "AB&bogus;&");
    }

    #[test]
    fn mutated_pages_never_panic() {
        for sample in [html_page(), json_page()] {
            for m in crate::testing::mutations(sample.as_bytes(), 500) {
                let _ = parse_page(&m, "https://idx:443/simple/x/");
            }
        }
    }
}
