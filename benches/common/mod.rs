//! Audit records modelled on real downloads (about 600 bytes encoded, with headers),
//! shared by the benchmarks.

use std::collections::BTreeMap;

use fetchgate_storage::{AuditRecord, BodyDigest, Download, HeaderList, Timestamp};

/// A download of artifact `n`: a wheel from a PyPI-like index with realistic headers.
pub fn download(n: u64) -> AuditRecord {
    let mut sha256 = [0u8; 32];
    sha256[..8].copy_from_slice(&n.to_be_bytes());
    let h = |k, v| (k, [v]);
    AuditRecord::Download(Box::new(Download {
        start: Timestamp::from_micros(1_790_000_000_000_000 + n as i64),
        end: Timestamp::from_micros(1_790_000_000_050_000 + n as i64),
        method: "GET".into(),
        url: format!("https://files.pythonhosted.org:443/packages/ab/cd/ef0123456789/package_{n}-1.2.3-py3-none-any.whl"),
        client_address: "10.20.30.40:51234".into(),
        user_agent: Some("pip/24.0 {\"ci\":null,\"cpu\":\"x86_64\",\"implementation\":{\"name\":\"CPython\",\"version\":\"3.12.3\"}}".into()),
        status_code: 200,
        status: "200 OK".into(),
        content_type: Some("binary/octet-stream".into()),
        request_headers: HeaderList::from_iter([
            h("Accept", "*/*"),
            h("Accept-Encoding", "gzip, deflate"),
            h("Connection", "keep-alive"),
        ]),
        response_headers: HeaderList::from_iter([
            h("Content-Type", "binary/octet-stream"),
            h("Content-Length", "123456"),
            h("ETag", "\"0123456789abcdef0123456789abcdef\""),
            h("Last-Modified", "Tue, 01 Oct 2024 12:00:00 GMT"),
            h("Cache-Control", "max-age=365000000, immutable, public"),
            h("Date", "Mon, 23 Nov 2026 02:05:31 GMT"),
        ]),
        body: Some(BodyDigest {
            sha1: [7; 20],
            sha256,
            size: 123_456,
        }),
        failure: None,
        request_inspection: Default::default(),
        response_inspection: Default::default(),
        metadata: BTreeMap::from([
            ("name".to_owned(), format!("package-{n}")),
            ("version".to_owned(), "1.2.3".to_owned()),
            ("type".to_owned(), "application/x-wheel+zip".to_owned()),
        ]),
    }))
}
