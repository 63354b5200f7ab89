//! Checks a session report (`shared/spec/report.md`) against what the builder fetched:
//! every exchange appears exactly once as a download with its URL and status, every 200
//! download sits under an artifact whose `sha256` and `size` are the content's, nothing
//! else is listed, and nothing was denied. A request that failed in transit may or may
//! not have reached the proxy, so it is allowed to appear (once) but not required.
//! [`verify_included`] is the weaker check for a run the proxy crashed in: only that
//! every answered request is listed.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// What the report must say about one request the builder made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The normalised URL (`http://127.0.0.1:8080/artifact/1024/3`).
    pub url: String,
    pub outcome: Outcome,
}

/// How a request ended, from the builder's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with this content: the download must carry its digest and size.
    Body { sha256: [u8; 32], size: u64 },
    /// Another status: the download must be listed with it.
    Status(u16),
    /// No answer (connection error, timeout): it may be listed, with any status.
    Failed,
}

/// How a report differs from what was fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("report is not shaped as expected: {0}")]
    Shape(String),
    #[error("{url} (status {status}) was fetched but is not in the report")]
    Missing { url: String, status: u16 },
    #[error("{url} (status {status}) is in the report but was not fetched")]
    Unexpected { url: String, status: u16 },
    #[error(
        "{url}: report says sha256 {got_sha256:?} size {got_size:?}, content is {sha256} size {size}"
    )]
    Digest {
        url: String,
        sha256: String,
        size: u64,
        got_sha256: Option<String>,
        got_size: Option<u64>,
    },
    #[error("report lists {0} denied request(s)")]
    Denied(usize),
}

/// The parts of a report the checks read, borrowed from its bytes; everything else
/// (headers, inspections, times) is skipped without being built.
#[derive(Deserialize)]
struct ReportDoc<'a> {
    #[serde(borrow)]
    artifacts: Vec<ArtifactDoc<'a>>,
    #[serde(default)]
    denied: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
struct ArtifactDoc<'a> {
    #[serde(default, borrow)]
    metadata: MetadataDoc<'a>,
    #[serde(borrow)]
    downloads: Vec<DownloadDoc<'a>>,
}

#[derive(Deserialize, Default)]
struct MetadataDoc<'a> {
    #[serde(default, borrow)]
    sha256: Option<Cow<'a, str>>,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Deserialize)]
struct DownloadDoc<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
    #[serde(rename = "status-code")]
    status_code: u16,
}

/// One download as the report lists it, with its artifact's digest.
struct Listed<'a> {
    url: &'a str,
    status: u16,
    sha256: Option<&'a str>,
    size: Option<u64>,
    matched: bool,
}

fn parse(report: &[u8]) -> Result<ReportDoc<'_>, Mismatch> {
    serde_json::from_slice(report).map_err(|e| Mismatch::Shape(e.to_string()))
}

fn listed<'a>(doc: &'a ReportDoc<'_>) -> Vec<Listed<'a>> {
    doc.artifacts
        .iter()
        .flat_map(|a| {
            a.downloads.iter().map(|d| Listed {
                url: &d.url,
                status: d.status_code,
                sha256: a.metadata.sha256.as_deref(),
                size: a.metadata.size,
                matched: false,
            })
        })
        .collect()
}

/// Marks the download of `listed` that answers the request `e`, preferring one with the
/// content's digest when `e` got a body; a request that got no answer needs none.
fn claim(listed: &mut [Listed<'_>], e: &Expected) -> Result<(), Mismatch> {
    let status = match e.outcome {
        Outcome::Body { .. } => 200,
        Outcome::Status(s) => s,
        Outcome::Failed => return Ok(()),
    };
    let content = match &e.outcome {
        Outcome::Body { sha256, size } => Some((hex::encode(sha256), *size)),
        _ => None,
    };
    let fits = |l: &Listed<'_>| !l.matched && l.url == e.url && l.status == status;
    let same_content = |l: &Listed<'_>| {
        content
            .as_ref()
            .is_none_or(|(sha256, size)| l.sha256 == Some(sha256.as_str()) && l.size == Some(*size))
    };
    if let Some(entry) = listed.iter_mut().find(|l| fits(l) && same_content(l)) {
        entry.matched = true;
        return Ok(());
    }
    match (listed.iter().find(|l| fits(l)), content) {
        (Some(entry), Some((sha256, size))) => Err(Mismatch::Digest {
            url: e.url.clone(),
            sha256,
            size,
            got_sha256: entry.sha256.map(str::to_owned),
            got_size: entry.size,
        }),
        _ => Err(Mismatch::Missing {
            url: e.url.clone(),
            status,
        }),
    }
}

/// Checks that `report` lists every request in `expected` the builder got an answer to,
/// with its status and content, and allows anything else: after a crash the report may
/// also hold requests whose answer never reached the builder.
pub fn verify_included(expected: &[Expected], report: &[u8]) -> Result<(), Mismatch> {
    let doc = parse(report)?;
    let mut listed = listed(&doc);
    expected.iter().try_for_each(|e| claim(&mut listed, e))
}

/// Checks `report` against the requests in `expected`.
pub fn verify(expected: &[Expected], report: &[u8]) -> Result<(), Mismatch> {
    let doc = parse(report)?;
    if let Some(denied) = doc.denied.as_ref().filter(|d| !d.is_empty()) {
        return Err(Mismatch::Denied(denied.len()));
    }
    let mut listed = listed(&doc);
    for e in expected {
        claim(&mut listed, e)?;
    }
    let mut failed: Vec<&str> = expected
        .iter()
        .filter(|e| e.outcome == Outcome::Failed)
        .map(|e| e.url.as_str())
        .collect();
    for l in listed.iter().filter(|l| !l.matched) {
        match failed.iter().position(|u| *u == l.url) {
            Some(i) => {
                failed.swap_remove(i);
            }
            None => {
                return Err(Mismatch::Unexpected {
                    url: l.url.to_owned(),
                    status: l.status,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const A: &str = "http://127.0.0.1:1/artifact/3/0";
    const B: &str = "https://127.0.0.1:2/artifact/3/1";

    fn body(url: &str, byte: u8) -> Expected {
        Expected {
            url: url.into(),
            outcome: Outcome::Body {
                sha256: [byte; 32],
                size: 3,
            },
        }
    }

    fn artifact(sha: u8, size: u64, downloads: &[(&str, u16)]) -> Value {
        json!({
            "metadata": {"sha256": hex::encode([sha; 32]), "size": size},
            "downloads": downloads.iter().map(|(u, s)| json!({"url": u, "status-code": s})).collect::<Vec<_>>(),
        })
    }

    fn report(artifacts: Vec<Value>) -> Vec<u8> {
        json!({"artifacts": artifacts, "denied": []})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn an_exact_report_passes_including_repeated_downloads() {
        let expected = [body(A, 1), body(A, 1), body(B, 2)];
        let r = report(vec![
            artifact(1, 3, &[(A, 200), (A, 200)]),
            artifact(2, 3, &[(B, 200)]),
        ]);
        assert_eq!(verify(&expected, &r), Ok(()));
    }

    #[test]
    fn a_wrong_digest_size_missing_or_extra_download_fails() {
        let expected = [body(A, 1), body(B, 2)];
        let wrong_sha = report(vec![
            artifact(1, 3, &[(A, 200)]),
            artifact(9, 3, &[(B, 200)]),
        ]);
        assert!(matches!(
            verify(&expected, &wrong_sha),
            Err(Mismatch::Digest { .. })
        ));
        let wrong_size = report(vec![
            artifact(1, 3, &[(A, 200)]),
            artifact(2, 4, &[(B, 200)]),
        ]);
        assert!(matches!(
            verify(&expected, &wrong_size),
            Err(Mismatch::Digest { .. })
        ));
        let missing = report(vec![artifact(1, 3, &[(A, 200)])]);
        assert!(matches!(
            verify(&expected, &missing),
            Err(Mismatch::Missing { .. })
        ));
        let extra = report(vec![
            artifact(1, 3, &[(A, 200), (A, 200)]),
            artifact(2, 3, &[(B, 200)]),
        ]);
        assert!(matches!(
            verify(&expected, &extra),
            Err(Mismatch::Unexpected { .. })
        ));
    }

    #[test]
    fn statuses_and_failed_requests() {
        let expected = [
            Expected {
                url: A.into(),
                outcome: Outcome::Status(404),
            },
            Expected {
                url: B.into(),
                outcome: Outcome::Failed,
            },
        ];
        let listed_failure = report(vec![
            artifact(5, 16, &[(A, 404)]),
            json!({"metadata": {}, "downloads": [{"url": B, "status-code": 502}]}),
        ]);
        assert_eq!(verify(&expected, &listed_failure), Ok(()));
        let unlisted_failure = report(vec![artifact(5, 16, &[(A, 404)])]);
        assert_eq!(verify(&expected, &unlisted_failure), Ok(()));
        let wrong_status = report(vec![artifact(5, 16, &[(A, 500)])]);
        assert!(matches!(
            verify(&expected, &wrong_status),
            Err(Mismatch::Missing { .. })
        ));
    }

    #[test]
    fn included_allows_extra_downloads_but_not_missing_or_wrong_ones() {
        let expected = [body(A, 1)];
        // A second, cut-off download of the same URL does not hide the complete one.
        let with_extra = report(vec![
            artifact(7, 2, &[(A, 200)]),
            artifact(1, 3, &[(A, 200)]),
            artifact(2, 3, &[(B, 200)]),
        ]);
        assert_eq!(verify_included(&expected, &with_extra), Ok(()));
        let missing = report(vec![artifact(2, 3, &[(B, 200)])]);
        assert!(matches!(
            verify_included(&expected, &missing),
            Err(Mismatch::Missing { .. })
        ));
        let truncated = report(vec![artifact(1, 2, &[(A, 200)])]);
        assert!(matches!(
            verify_included(&expected, &truncated),
            Err(Mismatch::Digest { .. })
        ));
    }

    #[test]
    fn denied_requests_and_bad_shapes_fail() {
        let denied = json!({"artifacts": [], "denied": [{"url": A}]}).to_string();
        assert_eq!(verify(&[], denied.as_bytes()), Err(Mismatch::Denied(1)));
        for (bad, why) in [
            ("{}", "no artifacts"),
            ("not json", "not JSON"),
            (r#"{"artifacts": [], "denied": {}}"#, "denied not an array"),
            (
                r#"{"artifacts": [{"downloads": [{"url": 1, "status-code": 200}]}]}"#,
                "numeric url",
            ),
            (
                r#"{"artifacts": [{"downloads": [{"url": "u", "status-code": "200"}]}]}"#,
                "string status",
            ),
            (
                r#"{"artifacts": [{"metadata": {"sha256": 3}, "downloads": []}]}"#,
                "numeric sha256",
            ),
        ] {
            assert!(
                matches!(verify(&[], bad.as_bytes()), Err(Mismatch::Shape(_))),
                "{why}"
            );
        }
        // Absent or null: nothing was denied.
        for ok in [
            r#"{"artifacts": []}"#,
            r#"{"artifacts": [], "denied": null}"#,
        ] {
            assert_eq!(verify(&[], ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn escaped_urls_and_unknown_fields_are_read() {
        // A URL with an escape cannot be borrowed from the bytes; it is still compared.
        let url = "http://127.0.0.1:1/a\\b";
        let r = json!({"generator": "x", "artifacts": [{
            "metadata": {"sha256": hex::encode([1; 32]), "size": 3, "type": "t"},
            "request-inspection": {"i": {"opinion": "Pending"}},
            "downloads": [{"url": url, "status-code": 200, "request-header": {"a": ["b"]}}],
        }], "denied": []});
        let expected = [body(url, 1)];
        assert_eq!(verify(&expected, r.to_string().as_bytes()), Ok(()));
    }
}
