//! Fuzz target: the session report, folded over arbitrary audit records and serialised
//! to JSON. Records are built from the input (small alphabets, so that digests collide
//! and deduplication happens) and round-tripped through the storage codec; the input's
//! tail is also decoded by the codec as one more record, as a corrupt store would hand
//! it over. Beyond not panicking, the report must keep the promises of
//! `shared/spec/report.md`: one artifact per distinct sha256 (and one per body-less
//! download), every download and every denied request, in order, and digests the
//! metadata of an inspector cannot override.
#![no_main]

use std::collections::{BTreeMap, HashSet};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use fetchgate_report::{fold, result, rfc3339};
use fetchgate_storage::{
    AuditRecord, BodyDigest, Denied, DeniedStage, Download, Failure, HeaderList, Inspection,
    Opinion, Policy, SessionHeader, SessionId, Timestamp, codec,
};

/// A short string out of a few characters that matter to JSON and the metadata keys.
fn text(u: &mut Unstructured) -> Result<String> {
    const WORDS: [&str; 10] = [
        "sha256", "sha1", "size", "type", "name", "a", "\"", "\\", "\u{0}", "é",
    ];
    let n = u.int_in_range(0..=3)?;
    let mut s = String::new();
    for _ in 0..n {
        if u.ratio(1, 4)? {
            s.push_str(u.arbitrary::<&str>()?);
        } else {
            s.push_str(u.choose(&WORDS)?);
        }
    }
    Ok(s)
}

fn map<T>(
    u: &mut Unstructured,
    mut value: impl FnMut(&mut Unstructured) -> Result<T>,
) -> Result<BTreeMap<String, T>> {
    let mut m = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3)? {
        m.insert(text(u)?, value(u)?);
    }
    Ok(m)
}

fn timestamp(u: &mut Unstructured) -> Result<Timestamp> {
    Ok(Timestamp::from_micros(if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        u.int_in_range(0..=4_000_000_000_000_000)?
    }))
}

fn inspection(u: &mut Unstructured) -> Result<Inspection> {
    Ok(Inspection {
        opinion: *u.choose(&[
            Opinion::Pending,
            Opinion::Approved,
            Opinion::Unknown,
            Opinion::Rejected,
        ])?,
        reason: if u.arbitrary()? { Some(text(u)?) } else { None },
        annotations: map(u, text)?,
    })
}

fn headers(u: &mut Unstructured) -> Result<HeaderList> {
    let mut h = HeaderList::default();
    for _ in 0..u.int_in_range(0..=2)? {
        h.push(&text(u)?, &text(u)?);
    }
    Ok(h)
}

fn download(u: &mut Unstructured) -> Result<Download> {
    let body = if u.arbitrary()? {
        // Four possible contents: the same bytes are downloaded again and again.
        let b = u.int_in_range(0..=3u8)?;
        Some(BodyDigest {
            sha1: [b; 20],
            sha256: [b; 32],
            size: u.arbitrary()?,
        })
    } else {
        None
    };
    Ok(Download {
        start: timestamp(u)?,
        end: timestamp(u)?,
        method: text(u)?,
        url: text(u)?,
        client_address: text(u)?,
        user_agent: if u.arbitrary()? { Some(text(u)?) } else { None },
        status_code: u.arbitrary()?,
        status: text(u)?,
        content_type: if u.arbitrary()? { Some(text(u)?) } else { None },
        request_headers: headers(u)?,
        response_headers: headers(u)?,
        body,
        failure: if u.arbitrary()? {
            Some(Failure {
                stage: text(u)?,
                reason: text(u)?,
            })
        } else {
            None
        },
        request_inspection: map(u, inspection)?.into_iter().collect(),
        response_inspection: map(u, inspection)?.into_iter().collect(),
        metadata: map(u, text)?,
    })
}

fn record(u: &mut Unstructured) -> Result<AuditRecord> {
    if u.ratio(1, 4)? {
        Ok(AuditRecord::Denied(Denied {
            time: timestamp(u)?,
            method: text(u)?,
            url: text(u)?,
            client_address: text(u)?,
            reason: text(u)?,
            stage: *u.choose(&[DeniedStage::Auth, DeniedStage::Acl, DeniedStage::Policy])?,
        }))
    } else {
        Ok(AuditRecord::Download(Box::new(download(u)?)))
    }
}

fn header(u: &mut Unstructured) -> Result<SessionHeader> {
    Ok(SessionHeader {
        id: SessionId::from_bytes(u.arbitrary()?),
        token_hash: [0; 32],
        policy: if u.arbitrary()? {
            Policy::Strict
        } else {
            Policy::Permissive
        },
        created: timestamp(u)?,
        timeout_secs: u.arbitrary()?,
        revoked: if u.arbitrary()? {
            Some(timestamp(u)?)
        } else {
            None
        },
        ended: None,
        secrets: vec![],
        inspectors_configuration: None,
        owner: if u.arbitrary()? { Some(text(u)?) } else { None },
        labels: map(u, text)?,
    })
}

fn input(data: &[u8]) -> Result<(SessionHeader, Vec<AuditRecord>, Timestamp)> {
    // The first two bytes say where the records built from the input end; what follows
    // is decoded by the codec as one more record.
    let (split, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let (built, raw) = rest.split_at(split.min(rest.len()));
    let mut u = Unstructured::new(built);
    let header = header(&mut u)?;
    let now = timestamp(&mut u)?;
    let mut records = Vec::new();
    while !u.is_empty() && records.len() < 64 {
        let r = record(&mut u)?;
        let bytes = codec::encode(&r).expect("every record encodes");
        let back: AuditRecord = codec::decode(&bytes).expect("an encoded record decodes");
        assert_eq!(back, r, "the codec round-trips a record");
        records.push(r);
    }
    if let Ok(r) = codec::decode::<AuditRecord>(raw) {
        records.push(r);
    }
    Ok((header, records, now))
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x[key].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Ok((header, records, now)) = input(data) else {
        return;
    };
    let downloads: Vec<&Download> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Download(d) => Some(&**d),
            AuditRecord::Denied(_) => None,
        })
        .collect();
    let denied: Vec<&Denied> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Denied(d) => Some(d),
            AuditRecord::Download(_) => None,
        })
        .collect();
    let report = fold(
        &header,
        "/spool/s".as_ref(),
        vec!["default".into()],
        records.clone(),
        now,
    );
    let bytes = serde_json::to_vec(&report).expect("a report serialises");
    let json: Value = serde_json::from_slice(&bytes).expect("a report is valid JSON");

    assert_eq!(json["session-id"], header.id.to_string());
    assert_eq!(json["policy"], header.policy.as_str());
    let start = json["start-time"].as_str().expect("start-time is a string");
    // Within the years RFC 3339 can write (0000 to 9999), the time reads back exactly.
    if (-62_167_219_200_000_000..=253_402_300_799_999_999).contains(&header.created.as_micros()) {
        assert_eq!(rfc3339::parse(start), Some(header.created), "{start}");
    }
    assert_eq!(
        json["end-time"].is_null(),
        header.end_time(now).is_none(),
        "end-time is null exactly while the session is active"
    );

    // Artifacts: one per distinct sha256 and one per body-less download, in order of
    // first download; each holds every download of its content, in append order.
    let artifacts = json["artifacts"].as_array().expect("artifacts is a list");
    let mut seen = HashSet::new();
    let mut expected: Vec<Vec<&Download>> = Vec::new();
    let mut index: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    for d in &downloads {
        match d.body {
            Some(b) => match index.get(&b.sha256) {
                Some(&i) => expected[i].push(d),
                None => {
                    index.insert(b.sha256, expected.len());
                    expected.push(vec![d]);
                }
            },
            None => expected.push(vec![d]),
        }
    }
    assert_eq!(artifacts.len(), expected.len(), "one artifact per content");
    let mut total = 0;
    for (a, group) in artifacts.iter().zip(&expected) {
        let first = group[0];
        let list = &a["downloads"];
        assert_eq!(list.as_array().map(Vec::len), Some(group.len()));
        total += group.len();
        let urls: Vec<&str> = group.iter().map(|d| d.url.as_str()).collect();
        assert_eq!(strs(list, "url"), urls, "every download, in order");
        assert_eq!(a["result"], result(first, header.policy));
        let m = &a["metadata"];
        match first.body {
            Some(b) => {
                let sha = m["sha256"].as_str().expect("a body has its sha256");
                assert_eq!(sha, hex(&b.sha256), "the digest, not an inspector's value");
                assert_eq!(m["sha1"].as_str(), Some(hex(&b.sha1).as_str()));
                assert_eq!(m["size"].as_u64(), Some(b.size));
                assert!(
                    seen.insert(sha.to_owned()),
                    "sha256 {sha} is in two artifacts"
                );
            }
            None => {
                for k in ["sha256", "sha1", "size"] {
                    assert!(m.get(k).is_none(), "no body, yet metadata.{k}: {m}");
                }
            }
        }
    }
    assert_eq!(total, downloads.len(), "every download is kept");

    // Every denied request, in order, with its stage.
    let listed = &json["denied"];
    let urls: Vec<&str> = denied.iter().map(|d| d.url.as_str()).collect();
    assert_eq!(strs(listed, "url"), urls, "every denied request, in order");
    let stages: Vec<&str> = denied.iter().map(|d| d.stage.as_str()).collect();
    assert_eq!(strs(listed, "stage"), stages);
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
