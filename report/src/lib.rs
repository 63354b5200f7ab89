//! The session report: a fold over the session's audit records into the JSON document of
//! `shared/spec/report.md` (artifacts deduplicated by sha256, every download and every
//! denied request kept), and the RFC 3339 time format it and the control API share.
//!
//! Pure data in, JSON out: no storage backend, HTTP or async runtime, so the daemon's
//! control API and the fuzz target (`fuzz/fuzz_targets/report_fold.rs`) run the same
//! code. It must never panic on a record, whatever the record holds.
//!
//! The fold only groups record indices; serialisation then writes straight from the
//! records into the output stream, so producing a report allocates little beyond the
//! records themselves (a 10,000-artifact report is benchmarked in `benches/report_fold.rs`).

use std::collections::HashMap;

use fetchgate_storage::{
    AuditRecord, Denied, Download, HeaderList, Inspection, Inspections, Opinion, Policy,
    SessionHeader, Timestamp,
};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

pub mod rfc3339;

/// The report format's artifact metadata version.
pub const ARTIFACT_METADATA_VERSION: &str = "0.3";

/// Metadata keys filled from the body digest; an inspector cannot override them.
const DIGEST_KEYS: [&str; 3] = ["sha1", "sha256", "size"];

/// A session's report: its records, grouped, ready to serialise.
pub struct Report {
    header: SessionHeader,
    spool_path: String,
    inspectors: Vec<String>,
    now: Timestamp,
    records: Vec<AuditRecord>,
    /// Each artifact: the index of its first download, then of the others.
    artifacts: Vec<(usize, Vec<usize>)>,
    denied: Vec<usize>,
}

/// Folds a session's records, in append order, into its report.
pub fn fold(
    header: &SessionHeader,
    spool_path: &std::path::Path,
    inspectors: Vec<String>,
    records: Vec<AuditRecord>,
    now: Timestamp,
) -> Report {
    let mut artifacts: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut by_sha: HashMap<[u8; 32], usize> = HashMap::new();
    let mut denied = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match record {
            AuditRecord::Download(d) => match d.body.map(|b| b.sha256) {
                Some(sha) => match by_sha.get(&sha) {
                    Some(&a) => artifacts[a].1.push(i),
                    None => {
                        by_sha.insert(sha, artifacts.len());
                        artifacts.push((i, Vec::new()));
                    }
                },
                None => artifacts.push((i, Vec::new())),
            },
            AuditRecord::Denied(_) => denied.push(i),
        }
    }
    Report {
        header: header.clone(),
        spool_path: spool_path.display().to_string(),
        inspectors,
        now,
        records,
        artifacts,
        denied,
    }
}

impl Report {
    fn download(&self, i: usize) -> Option<&Download> {
        match self.records.get(i) {
            Some(AuditRecord::Download(d)) => Some(d),
            _ => None,
        }
    }
}

fn opinion(o: Opinion) -> &'static str {
    match o {
        Opinion::Pending => "Pending",
        Opinion::Approved => "Approved",
        Opinion::Unknown => "Unknown",
        Opinion::Rejected => "Rejected",
    }
}

/// The result rule (`shared/spec/report.md`): approved only if some inspector approved
/// the response and none rejected the request or the response; in strict mode the
/// request must also have been Pending. The pipeline enforces the same rule.
pub fn approved(d: &Download, policy: Policy) -> bool {
    let any = |m: &Inspections, o| m.values().any(|i| i.opinion == o);
    let rejected = |m: &Inspections| any(m, Opinion::Rejected);
    any(&d.response_inspection, Opinion::Approved)
        && !rejected(&d.response_inspection)
        && !rejected(&d.request_inspection)
        && (policy == Policy::Permissive || any(&d.request_inspection, Opinion::Pending))
}

/// The report's `result` of a download: `Approved` or `Rejected` (see [`approved`]).
pub fn result(d: &Download, policy: Policy) -> &'static str {
    if approved(d, policy) {
        "Approved"
    } else {
        "Rejected"
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(9))?;
        // The workspace shares one version, so this is the daemon's version too.
        m.serialize_entry(
            "generator",
            concat!("fetchgate ", env!("CARGO_PKG_VERSION")),
        )?;
        m.serialize_entry("session-id", &self.header.id.to_string())?;
        m.serialize_entry("start-time", &rfc3339::format(self.header.created))?;
        m.serialize_entry(
            "end-time",
            &self.header.end_time(self.now).map(rfc3339::format),
        )?;
        m.serialize_entry("policy", self.header.policy.as_str())?;
        // Extensions: clients that do not know them ignore them.
        if let Some(owner) = &self.header.owner {
            m.serialize_entry("owner", owner)?;
        }
        if !self.header.labels.is_empty() {
            m.serialize_entry("labels", &self.header.labels)?;
        }
        m.serialize_entry("spool-path", &self.spool_path)?;
        m.serialize_entry("inspectors", &self.inspectors)?;
        m.serialize_entry("artifacts", &Artifacts(self))?;
        m.serialize_entry("denied", &DeniedList(self))?;
        m.end()
    }
}

struct Artifacts<'a>(&'a Report);

impl Serialize for Artifacts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut seq = s.serialize_seq(Some(r.artifacts.len()))?;
        for (first, more) in &r.artifacts {
            if let Some(d) = r.download(*first) {
                seq.serialize_element(&ArtifactView {
                    report: r,
                    first: d,
                    more,
                })?;
            }
        }
        seq.end()
    }
}

struct ArtifactView<'a> {
    report: &'a Report,
    first: &'a Download,
    more: &'a [usize],
}

impl Serialize for ArtifactView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.first;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("artifact-metadata-version", ARTIFACT_METADATA_VERSION)?;
        m.serialize_entry(
            "request-inspection",
            &InspectionsView(&d.request_inspection),
        )?;
        m.serialize_entry(
            "response-inspection",
            &InspectionsView(&d.response_inspection),
        )?;
        m.serialize_entry("result", result(d, self.report.header.policy))?;
        m.serialize_entry("metadata", &Metadata(d))?;
        m.serialize_entry("downloads", &Downloads(self))?;
        m.end()
    }
}

struct InspectionsView<'a>(&'a Inspections);

impl Serialize for InspectionsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (id, i) in self.0.iter() {
            m.serialize_entry(id, &InspectionView(i))?;
        }
        m.end()
    }
}

struct InspectionView<'a>(&'a Inspection);

impl Serialize for InspectionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("opinion", opinion(i.opinion))?;
        if let Some(reason) = &i.reason {
            m.serialize_entry("reason", reason)?;
        }
        m.serialize_entry("annotations", &i.annotations)?;
        m.end()
    }
}

struct Metadata<'a>(&'a Download);

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let mut m = s.serialize_map(None)?;
        for (k, v) in &d.metadata {
            if !DIGEST_KEYS.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some(body) = &d.body {
            if !d.metadata.contains_key("type")
                && let Some(ct) = &d.content_type
            {
                m.serialize_entry("type", ct)?;
            }
            let mut sha1 = [0u8; 40];
            let mut sha256 = [0u8; 64];
            // Encoding into buffers of exactly twice the input length cannot fail.
            if hex::encode_to_slice(body.sha1, &mut sha1).is_ok()
                && hex::encode_to_slice(body.sha256, &mut sha256).is_ok()
            {
                m.serialize_entry("sha1", std::str::from_utf8(&sha1).unwrap_or_default())?;
                m.serialize_entry("sha256", std::str::from_utf8(&sha256).unwrap_or_default())?;
            }
            m.serialize_entry("size", &body.size)?;
        }
        m.end()
    }
}

struct Downloads<'a>(&'a ArtifactView<'a>);

impl Serialize for Downloads<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut seq = s.serialize_seq(Some(1 + a.more.len()))?;
        seq.serialize_element(&DownloadView(a.first))?;
        for d in a.more.iter().filter_map(|&i| a.report.download(i)) {
            seq.serialize_element(&DownloadView(d))?;
        }
        seq.end()
    }
}

struct DownloadView<'a>(&'a Download);

impl Serialize for DownloadView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("start-time", &rfc3339::format(d.start))?;
        m.serialize_entry("end-time", &rfc3339::format(d.end))?;
        m.serialize_entry("method", &d.method)?;
        m.serialize_entry("url", &d.url)?;
        m.serialize_entry("address", &d.client_address)?;
        if let Some(ua) = &d.user_agent {
            m.serialize_entry("user-agent", ua)?;
        }
        m.serialize_entry("status-code", &d.status_code)?;
        m.serialize_entry("status", &d.status)?;
        if let Some(ct) = &d.content_type {
            m.serialize_entry("content-type", ct)?;
        }
        m.serialize_entry("request-header", &HeadersView(&d.request_headers))?;
        m.serialize_entry("response-header", &HeadersView(&d.response_headers))?;
        if let Some(f) = &d.failure {
            m.serialize_entry("error", &FailureView(f))?;
        }
        m.end()
    }
}

struct HeadersView<'a>(&'a HeaderList);

impl Serialize for HeadersView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, values) in self.0.iter() {
            m.serialize_entry(name, &values)?;
        }
        m.end()
    }
}

struct FailureView<'a>(&'a fetchgate_storage::Failure);

impl Serialize for FailureView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("stage", &self.0.stage)?;
        m.serialize_entry("reason", &self.0.reason)?;
        m.end()
    }
}

struct DeniedList<'a>(&'a Report);

impl Serialize for DeniedList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut seq = s.serialize_seq(Some(r.denied.len()))?;
        for i in &r.denied {
            if let Some(AuditRecord::Denied(d)) = r.records.get(*i) {
                seq.serialize_element(&DeniedView(d))?;
            }
        }
        seq.end()
    }
}

struct DeniedView<'a>(&'a Denied);

impl Serialize for DeniedView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("time", &rfc3339::format(d.time))?;
        m.serialize_entry("method", &d.method)?;
        m.serialize_entry("url", &d.url)?;
        m.serialize_entry("address", &d.client_address)?;
        m.serialize_entry("reason", &d.reason)?;
        m.serialize_entry("stage", d.stage.as_str())?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetchgate_storage::{BodyDigest, DeniedStage, Failure, SessionId};
    use std::collections::BTreeMap;

    fn header(policy: Policy) -> SessionHeader {
        SessionHeader {
            revoked: Some(Timestamp::from_micros(2_000_000)),
            ..SessionHeader::new(
                SessionId::from_bytes([7; 16]),
                [0; 32],
                policy,
                Timestamp::from_micros(1_000_000),
                60,
            )
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
            request_headers: HeaderList::from_iter([("Accept", ["*/*"])]),
            response_headers: HeaderList::from_iter([("Content-Length", ["3"])]),
            body: body.map(|b| BodyDigest {
                sha1: [b; 20],
                sha256: [b; 32],
                size: 3,
            }),
            failure: None,
            request_inspection: Inspections::default(),
            response_inspection: Inspections::default(),
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
            records,
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
        let first = &artifacts[0]["downloads"][0];
        assert_eq!(
            first["request-header"],
            serde_json::json!({"Accept": ["*/*"]})
        );
        assert_eq!(
            first["response-header"],
            serde_json::json!({"Content-Length": ["3"]})
        );
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
            records,
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
            records,
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
            .insert("pip.wheel", inspection(Opinion::Approved));
        assert_eq!(result(&d, Policy::Permissive), "Approved");
        assert_eq!(
            result(&d, Policy::Strict),
            "Rejected",
            "strict needs a Pending request"
        );
        d.request_inspection
            .insert("pip.wheel", inspection(Opinion::Pending));
        assert_eq!(result(&d, Policy::Strict), "Approved");
        d.response_inspection
            .insert("default", inspection(Opinion::Rejected));
        assert_eq!(result(&d, Policy::Strict), "Rejected", "one rejection wins");
    }

    #[test]
    fn header_fields_and_end_time() {
        let r = json(&fold(
            &header(Policy::Permissive),
            "/spool/77".as_ref(),
            vec!["default".into()],
            vec![],
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
