//! Origins are untrusted too: an origin that promises a body (`Content-Length`), sends
//! part of it and then resets the connection (SO_LINGER 0: an RST, no FIN; over TLS no
//! `close_notify` either), over plain HTTP and inside an intercepted CONNECT. The
//! builder must see a failed transfer, never a clean end of a short body, and the
//! report must record the download as failed.

use serde_json::{Value, json};

use super::common;
use super::{Origin, assert_healthy, daemon_opts_with};

/// The body length the origin announces.
const TOTAL: usize = 1 << 20;

/// The download of a report whose URL ends with `url_end`, and its artifact.
fn download<'a>(report: &'a Value, url_end: &str) -> (&'a Value, &'a Value) {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| {
            a["downloads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["url"].as_str().is_some_and(|u| u.ends_with(url_end)))
                .map(|d| (a, d))
        })
        .unwrap_or_else(|| panic!("no download from …{url_end} in {report:#}"))
}

#[tokio::test]
async fn an_upstream_reset_mid_body_fails_the_download_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let (ca, leaf, key) = common::origin_pki(dir.path(), "origin");
    let plain = common::Origin::start(&files, None);
    let tls = common::Origin::start(&files, Some((&leaf, &key)));
    let d = daemon_opts_with(
        dir.path(),
        &format!("upstream-ca-file = \"{}\"\n", ca.display()),
    )
    .start()
    .await;
    let (id, token) = d.create(json!({ "policy": "permissive" })).await;

    // Each origin stops after a different number of bytes, so that the two partial
    // bodies are different artifacts in the report.
    let cases = [(&plain, 200_000), (&tls, 300_000)];
    for (origin, sent) in cases {
        let url = format!("{}reset/{TOTAL}?after={sent}", origin.base());
        let (exit, status, body) = d.curl((&id, &token), &url, dir.path(), &[]);
        // 18: "transfer closed with outstanding read data remaining"; 56: "failure
        // when receiving data" (the reset). 0 would be a short body passed off as whole.
        assert!(
            matches!(exit, 18 | 56),
            "{url}: curl exit {exit}, HTTP {status}, {} bytes",
            body.len()
        );
        assert!(body.len() <= sent, "{url}: {} bytes", body.len());
    }

    let report = d.report(&id, &token).await;
    for (origin, sent) in cases {
        let url_end = format!(":{}/reset/{TOTAL}?after={sent}", origin.port);
        let (artifact, dl) = download(&report, &url_end);
        let stage = dl["error"]["stage"].as_str().unwrap_or_default();
        assert!(stage.starts_with("upstream"), "{url_end}: {artifact:#}");
        // What was recorded is what arrived, not what was announced.
        let size = artifact["metadata"]["size"].as_u64();
        assert!(
            size.is_none_or(|s| s <= sent as u64),
            "{url_end}: {artifact:#}"
        );
    }
    assert_healthy(&d, &Origin::start().await).await;
}
