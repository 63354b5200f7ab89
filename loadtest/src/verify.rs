//! Checks a session report (`shared/spec/report.md`) against what the builder fetched:
//! every exchange appears exactly once as a download with its URL and status, every 200
//! download sits under an artifact whose `sha256` and `size` are the content's, nothing
//! else is listed, and nothing was denied. A request that failed in transit may or may
//! not have reached the proxy, so it is allowed to appear (once) but not required.
//! [`verify_included`] is the weaker check for a run the proxy crashed in: only that
//! every answered request is listed.

use serde_json::Value;

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

/// One download as the report lists it, with its artifact's digest.
struct Listed<'a> {
    url: &'a str,
    status: u16,
    sha256: Option<&'a str>,
    size: Option<u64>,
    matched: bool,
}

fn listed(report: &Value) -> Result<Vec<Listed<'_>>, Mismatch> {
    let shape = |what: &str| Mismatch::Shape(what.to_owned());
    let artifacts = report["artifacts"]
        .as_array()
        .ok_or_else(|| shape("no \"artifacts\" array"))?;
    let mut out = Vec::new();
    for artifact in artifacts {
        let metadata = &artifact["metadata"];
        let downloads = artifact["downloads"]
            .as_array()
            .ok_or_else(|| shape("an artifact without a \"downloads\" array"))?;
        for d in downloads {
            let url = d["url"]
                .as_str()
                .ok_or_else(|| shape("a download without a \"url\""))?;
            let status = d["status-code"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| shape("a download without a numeric \"status-code\""))?;
            out.push(Listed {
                url,
                status,
                sha256: metadata["sha256"].as_str(),
                size: metadata["size"].as_u64(),
                matched: false,
            });
        }
    }
    Ok(out)
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
pub fn verify_included(expected: &[Expected], report: &Value) -> Result<(), Mismatch> {
    let mut listed = listed(report)?;
    expected.iter().try_for_each(|e| claim(&mut listed, e))
}

/// Checks `report` against the requests in `expected`.
pub fn verify(expected: &[Expected], report: &Value) -> Result<(), Mismatch> {
    match report.get("denied") {
        None | Some(Value::Null) => {}
        Some(Value::Array(d)) if d.is_empty() => {}
        Some(Value::Array(d)) => return Err(Mismatch::Denied(d.len())),
        Some(_) => return Err(Mismatch::Shape("\"denied\" is not an array".into())),
    }
    let mut listed = listed(report)?;
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
    use serde_json::json;

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

    fn report(artifacts: Vec<Value>) -> Value {
        json!({"artifacts": artifacts, "denied": []})
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
        let mut r = report(vec![]);
        r["denied"] = json!([{"url": A}]);
        assert_eq!(verify(&[], &r), Err(Mismatch::Denied(1)));
        assert!(matches!(verify(&[], &json!({})), Err(Mismatch::Shape(_))));
    }
}
