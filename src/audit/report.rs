//! The session report: a fold over the session's audit records into the JSON document of
//! `shared/spec/report.md` (artifacts deduplicated by sha256, every download and every
//! denied request kept), serialised straight into the response stream.

use std::collections::{BTreeMap, HashMap};

use fetchgate_storage::{
    AuditRecord, Denied, Download, Inspection, Opinion, Policy, SessionHeader, Timestamp,
};
use serde::Serialize;

use crate::rfc3339;
use crate::session::end_time;

/// The report format's artifact metadata version.
pub const ARTIFACT_METADATA_VERSION: &str = "0.3";

/// The whole report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub generator: String,
    pub session_id: String,
    pub start_time: String,
    pub end_time: Option<String>,
    pub policy: &'static str,
    pub spool_path: String,
    pub inspectors: Vec<String>,
    pub artifacts: Vec<Artifact>,
    pub denied: Vec<DeniedEntry>,
}

/// One distinct content (or one body-less response).
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Artifact {
    pub artifact_metadata_version: &'static str,
    pub request_inspection: BTreeMap<String, InspectionEntry>,
    pub response_inspection: BTreeMap<String, InspectionEntry>,
    pub result: &'static str,
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub downloads: Vec<DownloadEntry>,
}

/// An inspector's opinion as reported.
#[derive(Debug, Serialize)]
pub struct InspectionEntry {
    pub opinion: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// One request for an artifact.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DownloadEntry {
    pub start_time: String,
    pub end_time: String,
    pub method: String,
    pub url: String,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub status_code: u16,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub request_header: BTreeMap<String, Vec<String>>,
    pub response_header: BTreeMap<String, Vec<String>>,
    /// Extension: why the request did not complete normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorEntry>,
}

/// Where and why a download failed.
#[derive(Debug, Serialize)]
pub struct ErrorEntry {
    pub stage: String,
    pub reason: String,
}

/// A request refused before any download.
#[derive(Debug, Serialize)]
pub struct DeniedEntry {
    pub time: String,
    pub method: String,
    pub url: String,
    pub address: String,
    pub reason: String,
    pub stage: &'static str,
}

fn opinion(o: Opinion) -> &'static str {
    match o {
        Opinion::Pending => "Pending",
        Opinion::Approved => "Approved",
        Opinion::Unknown => "Unknown",
        Opinion::Rejected => "Rejected",
    }
}

fn inspections(m: &BTreeMap<String, Inspection>) -> BTreeMap<String, InspectionEntry> {
    m.iter()
        .map(|(id, i)| {
            let entry = InspectionEntry {
                opinion: opinion(i.opinion),
                reason: i.reason.clone(),
                annotations: i.annotations.clone(),
            };
            (id.clone(), entry)
        })
        .collect()
}

/// `Approved` only if some inspector approved the response and none rejected the
/// request or the response; in strict mode the request must also have been Pending.
fn result(d: &Download, policy: Policy) -> &'static str {
    let rejected =
        |m: &BTreeMap<String, Inspection>| m.values().any(|i| i.opinion == Opinion::Rejected);
    let any = |m: &BTreeMap<String, Inspection>, o| m.values().any(|i| i.opinion == o);
    let approved = any(&d.response_inspection, Opinion::Approved)
        && !rejected(&d.response_inspection)
        && !rejected(&d.request_inspection)
        && (policy == Policy::Permissive || any(&d.request_inspection, Opinion::Pending));
    if approved { "Approved" } else { "Rejected" }
}

fn headers(h: &[(String, Vec<String>)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in h {
        out.entry(name.clone())
            .or_default()
            .extend(values.iter().cloned());
    }
    out
}

fn download_entry(d: &Download) -> DownloadEntry {
    DownloadEntry {
        start_time: rfc3339::format(d.start),
        end_time: rfc3339::format(d.end),
        method: d.method.clone(),
        url: d.url.clone(),
        address: d.client_address.clone(),
        user_agent: d.user_agent.clone(),
        status_code: d.status_code,
        status: d.status.clone(),
        content_type: d.content_type.clone(),
        request_header: headers(&d.request_headers),
        response_header: headers(&d.response_headers),
        error: d.failure.as_ref().map(|f| ErrorEntry {
            stage: f.stage.clone(),
            reason: f.reason.clone(),
        }),
    }
}

fn artifact(d: &Download, policy: Policy) -> Artifact {
    let mut metadata: BTreeMap<String, serde_json::Value> = d
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    if let Some(body) = &d.body {
        metadata.insert("sha1".into(), hex::encode(body.sha1).into());
        metadata.insert("sha256".into(), hex::encode(body.sha256).into());
        metadata.insert("size".into(), body.size.into());
        if !metadata.contains_key("type")
            && let Some(ct) = &d.content_type
        {
            metadata.insert("type".into(), ct.clone().into());
        }
    }
    Artifact {
        artifact_metadata_version: ARTIFACT_METADATA_VERSION,
        request_inspection: inspections(&d.request_inspection),
        response_inspection: inspections(&d.response_inspection),
        result: result(d, policy),
        metadata,
        downloads: vec![download_entry(d)],
    }
}

fn denied_entry(d: &Denied) -> DeniedEntry {
    DeniedEntry {
        time: rfc3339::format(d.time),
        method: d.method.clone(),
        url: d.url.clone(),
        address: d.client_address.clone(),
        reason: d.reason.clone(),
        stage: d.stage.as_str(),
    }
}

/// Folds a session's records, in append order, into its report.
pub fn fold(
    header: &SessionHeader,
    spool_path: &std::path::Path,
    inspectors: Vec<String>,
    records: &[AuditRecord],
    now: Timestamp,
) -> Report {
    let mut artifacts: Vec<Artifact> = Vec::new();
    let mut by_sha: HashMap<[u8; 32], usize> = HashMap::new();
    let mut denied = Vec::new();
    for record in records {
        match record {
            AuditRecord::Download(d) => match d.body.map(|b| b.sha256) {
                Some(sha) => match by_sha.get(&sha) {
                    Some(&i) => artifacts[i].downloads.push(download_entry(d)),
                    None => {
                        by_sha.insert(sha, artifacts.len());
                        artifacts.push(artifact(d, header.policy));
                    }
                },
                None => artifacts.push(artifact(d, header.policy)),
            },
            AuditRecord::Denied(d) => denied.push(denied_entry(d)),
        }
    }
    Report {
        generator: format!("fetchgate {}", env!("CARGO_PKG_VERSION")),
        session_id: header.id.to_string(),
        start_time: rfc3339::format(header.created),
        end_time: end_time(header, now).map(rfc3339::format),
        policy: header.policy.as_str(),
        spool_path: spool_path.display().to_string(),
        inspectors,
        artifacts,
        denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetchgate_storage::{BodyDigest, DeniedStage, Failure, SessionId};

    fn header(policy: Policy) -> SessionHeader {
        SessionHeader {
            id: SessionId::from_bytes([7; 16]),
            token_hash: [0; 32],
            policy,
            created: Timestamp::from_micros(1_000_000),
            timeout_secs: 60,
            revoked: Some(Timestamp::from_micros(2_000_000)),
            ended: None,
            secrets: vec![],
            inspectors_configuration: None,
        }
    }

    fn download(url: &str, status: u16, body: Option<u8>) -> Download {
        Download {
            start: Timestamp::from_micros(1_100_000),
            end: Timestamp::from_micros(1_200_000),
            method: "GET".into(),
            url: url.into(),
            client_address: "10.0.0.5:4000".into(),
            user_agent: Some("pip/24".into()),
            status_code: status,
            status: format!("{status} X"),
            content_type: Some("application/octet-stream".into()),
            request_headers: vec![("Accept".into(), vec!["*/*".into()])],
            response_headers: vec![("Content-Length".into(), vec!["3".into()])],
            body: body.map(|b| BodyDigest {
                sha1: [b; 20],
                sha256: [b; 32],
                size: 3,
            }),
            failure: None,
            request_inspection: BTreeMap::new(),
            response_inspection: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    fn inspection(o: Opinion) -> Inspection {
        Inspection {
            opinion: o,
            reason: Some("r".into()),
            annotations: BTreeMap::new(),
        }
    }

    fn json(report: &Report) -> serde_json::Value {
        serde_json::to_value(report).unwrap()
    }

    #[test]
    fn same_content_is_one_artifact_with_every_download() {
        let records = vec![
            AuditRecord::Download(Box::new(download("https://a:443/x.whl", 200, Some(1)))),
            AuditRecord::Download(Box::new(download("https://mirror:443/x.whl", 200, Some(1)))),
            AuditRecord::Download(Box::new(download("https://a:443/y.whl", 200, Some(2)))),
        ];
        let r = json(&fold(
            &header(Policy::Strict),
            "/spool/x".as_ref(),
            vec![],
            &records,
            Timestamp::now(),
        ));
        let artifacts = r["artifacts"].as_array().unwrap();
        assert_eq!(artifacts.len(), 2);
        assert_eq!(artifacts[0]["downloads"].as_array().unwrap().len(), 2);
        assert_eq!(
            artifacts[0]["downloads"][1]["url"],
            "https://mirror:443/x.whl"
        );
        assert_eq!(artifacts[0]["metadata"]["sha256"], "01".repeat(32));
        assert_eq!(artifacts[0]["metadata"]["sha1"], "01".repeat(20));
        assert_eq!(artifacts[0]["metadata"]["size"], 3);
        assert_eq!(artifacts[0]["artifact-metadata-version"], "0.3");
        assert_eq!(artifacts[1]["metadata"]["sha256"], "02".repeat(32));
    }

    #[test]
    fn non_200_and_failed_requests_are_kept_without_digests() {
        let mut failed = download("https://gone:443/", 502, None);
        failed.failure = Some(Failure {
            stage: "upstream-connect".into(),
            reason: "connection refused".into(),
        });
        let records = vec![
            AuditRecord::Download(Box::new(download("http://a:80/r", 302, None))),
            AuditRecord::Download(Box::new(failed)),
        ];
        let r = json(&fold(
            &header(Policy::Strict),
            "/s".as_ref(),
            vec![],
            &records,
            Timestamp::now(),
        ));
        let artifacts = r["artifacts"].as_array().unwrap();
        assert_eq!(artifacts.len(), 2);
        assert_eq!(artifacts[0]["downloads"][0]["status-code"], 302);
        assert!(artifacts[0]["metadata"].get("sha256").is_none());
        assert_eq!(
            artifacts[1]["downloads"][0]["error"]["stage"],
            "upstream-connect"
        );
        assert_eq!(artifacts[1]["result"], "Rejected");
    }

    #[test]
    fn denied_requests_are_listed_with_their_stage() {
        let records = vec![AuditRecord::Denied(Denied {
            time: Timestamp::from_micros(1_500_000),
            method: "CONNECT".into(),
            url: "https://169.254.169.254:443".into(),
            client_address: "10.0.0.5:1".into(),
            reason: "destination denied by ACL".into(),
            stage: DeniedStage::Acl,
        })];
        let r = json(&fold(
            &header(Policy::Strict),
            "/s".as_ref(),
            vec![],
            &records,
            Timestamp::now(),
        ));
        assert_eq!(r["denied"][0]["stage"], "acl");
        assert_eq!(r["denied"][0]["time"], "1970-01-01T00:00:01.5Z");
        assert!(r["artifacts"].as_array().unwrap().is_empty());
    }

    #[test]
    fn result_follows_the_inspection_rules() {
        let mut d = download("https://a:443/x", 200, Some(1));
        assert_eq!(
            result(&d, Policy::Permissive),
            "Rejected",
            "no inspector approved"
        );
        d.response_inspection
            .insert("pip.wheel".into(), inspection(Opinion::Approved));
        assert_eq!(result(&d, Policy::Permissive), "Approved");
        assert_eq!(
            result(&d, Policy::Strict),
            "Rejected",
            "strict needs a Pending request"
        );
        d.request_inspection
            .insert("pip.wheel".into(), inspection(Opinion::Pending));
        assert_eq!(result(&d, Policy::Strict), "Approved");
        d.response_inspection
            .insert("default".into(), inspection(Opinion::Rejected));
        assert_eq!(result(&d, Policy::Strict), "Rejected", "one rejection wins");
    }

    #[test]
    fn header_fields_and_end_time() {
        let r = json(&fold(
            &header(Policy::Permissive),
            "/spool/77".as_ref(),
            vec!["default".into()],
            &[],
            Timestamp::now(),
        ));
        assert_eq!(r["session-id"], "07".repeat(16));
        assert_eq!(r["policy"], "permissive");
        assert_eq!(r["start-time"], "1970-01-01T00:00:01Z");
        assert_eq!(r["end-time"], "1970-01-01T00:00:02Z");
        assert_eq!(r["spool-path"], "/spool/77");
        assert_eq!(r["inspectors"][0], "default");
        assert!(r["generator"].as_str().unwrap().starts_with("fetchgate "));
    }
}
