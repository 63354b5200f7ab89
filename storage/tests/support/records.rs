//! Audit records for the RocksDB tests.

use std::collections::BTreeMap;

use fetchgate_storage::{AuditRecord, BodyDigest, Download, HeaderList, Timestamp};

/// A download at `at` (µs) of `size` bytes of content whose sha256 is `sha256`, named
/// `name` version 1: one entry in each artifact index.
pub fn named_download(at: i64, sha256: [u8; 32], size: u64, name: &str) -> AuditRecord {
    AuditRecord::Download(Box::new(Download {
        start: Timestamp::from_micros(at),
        end: Timestamp::from_micros(at + 1),
        method: "GET".into(),
        url: format!("http://h/{name}"),
        client_address: "127.0.0.1:1".into(),
        user_agent: None,
        status_code: 200,
        status: "200 OK".into(),
        content_type: None,
        request_headers: HeaderList::default(),
        response_headers: HeaderList::default(),
        body: Some(BodyDigest {
            sha1: [1; 20],
            sha256,
            size,
        }),
        failure: None,
        request_inspection: Default::default(),
        response_inspection: Default::default(),
        metadata: BTreeMap::from([("name".into(), name.into()), ("version".into(), "1".into())]),
    }))
}
