//! What survives: expired sessions are ended by the reaper and keep their report;
//! sessions and records outlive `kill -9`; retention deletes data only when it is over.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::DaemonOpts;
use fetchgate_storage::rocks::RocksStorage;
use fetchgate_storage::{
    AuditLog, AuditRecord, BodyDigest, Denied, DeniedStage, Download, HeaderList, SessionId,
    Timestamp,
};
use reqwest::Method;
use serde_json::{Value, json};

fn download(url: &str, status: u16, body: Option<u8>) -> AuditRecord {
    AuditRecord::Download(Box::new(Download {
        start: Timestamp::now(),
        end: Timestamp::now(),
        method: "GET".into(),
        url: url.into(),
        client_address: "127.0.0.1:40000".into(),
        user_agent: Some("curl/8".into()),
        status_code: status,
        status: format!("{status}"),
        content_type: Some("application/octet-stream".into()),
        request_headers: HeaderList::from_iter([("Accept", ["*/*"])]),
        response_headers: HeaderList::default(),
        body: body.map(|b| BodyDigest {
            sha1: [b; 20],
            sha256: [b; 32],
            size: u64::from(b) * 100,
        }),
        failure: None,
        request_inspection: Default::default(),
        response_inspection: Default::default(),
        metadata: BTreeMap::new(),
    }))
}

fn denied(url: &str) -> AuditRecord {
    AuditRecord::Denied(Denied {
        time: Timestamp::now(),
        method: "GET".into(),
        url: url.into(),
        client_address: "127.0.0.1:40000".into(),
        reason: "destination denied".into(),
        stage: DeniedStage::Acl,
    })
}

#[tokio::test]
async fn an_expired_session_is_ended_by_the_reaper_and_keeps_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let (id, token) = d.create(json!({"timeout": 2})).await;
    let (live, _) = d.create(json!({})).await;
    let state_of = |id: String| {
        let req = d.authed(Method::GET, "/sessions");
        async move {
            let v: Value = req.send().await.unwrap().json().await.unwrap();
            v["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["session-id"] == id.as_str())
                .unwrap()["state"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(state_of(id.clone()).await, "active");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Expired at that instant, whatever the reaper has done yet.
    assert_eq!(state_of(id.clone()).await, "expired");
    // The report is readable without revoking: expiry counts as revocation.
    let r = d
        .authed(Method::GET, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The reaper ends it in storage.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = d
            .authed(Method::GET, &format!("/reports/{id}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["session-id"], id.as_str());
            assert!(v["end-time"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "reaper did not end the session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = d
        .authed(Method::DELETE, &format!("/resources/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an expired session counts as ended");
    assert_eq!(d.revoke(&id, &token).await.status(), 200);
    assert_eq!(state_of(id).await, "expired");
    assert_eq!(state_of(live).await, "active");
    let status: Value = d
        .anon(Method::GET, "/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["active-sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sessions_and_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let (active, _) = d.create(json!({})).await;
    let (revoked, revoked_token) = d.create(json!({})).await;
    let (ended, _) = d.create(json!({})).await;
    d.revoke(&revoked, &revoked_token).await;
    d.authed(Method::DELETE, &format!("/session/{ended}"))
        .send()
        .await
        .unwrap();
    let opts = d.kill9();

    // Records written through the storage API while the daemon is down, as the proxy
    // will write them.
    {
        let store = RocksStorage::open(&opts.spool.join("db")).unwrap();
        let rid: SessionId = revoked.parse().unwrap();
        store
            .append(rid, download("https://a:443/x.deb", 200, Some(1)))
            .await
            .unwrap();
        store
            .append(rid, download("https://mirror:443/x.deb", 200, Some(1)))
            .await
            .unwrap();
        store
            .append(rid, download("http://a:80/moved", 301, None))
            .await
            .unwrap();
        store
            .append(rid, denied("http://169.254.169.254:80/"))
            .await
            .unwrap();
        store
            .append(
                ended.parse().unwrap(),
                download("https://b:443/y", 200, Some(2)),
            )
            .await
            .unwrap();
    }

    for round in 0..2 {
        let d = opts.clone().start().await;
        let list: Value = d.get_json("/sessions").await;
        let states: BTreeMap<String, (String, u64)> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["session-id"].as_str().unwrap().to_owned(),
                    (
                        r["state"].as_str().unwrap().to_owned(),
                        r["downloads"].as_u64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(states[&active], ("active".to_owned(), 0), "round {round}");
        assert_eq!(states[&revoked], ("revoked".to_owned(), 3));
        assert_eq!(states[&ended], ("ended".to_owned(), 1));

        let report: Value = d.get_json(&format!("/session/{revoked}")).await;
        let artifacts = report["artifacts"].as_array().unwrap();
        assert_eq!(artifacts.len(), 2, "{report}");
        assert_eq!(artifacts[0]["metadata"]["sha256"], "01".repeat(32));
        assert_eq!(artifacts[0]["downloads"].as_array().unwrap().len(), 2);
        assert_eq!(artifacts[1]["downloads"][0]["status-code"], 301);
        assert_eq!(report["denied"][0]["stage"], "acl");
        let r = d
            .authed(Method::GET, &format!("/reports/{ended}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The token of the active session still works after the restart.
        assert_eq!(
            d.authed(Method::GET, &format!("/session/{active}"))
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        d.kill9();
    }
}

#[tokio::test]
async fn retention_deletes_ended_sessions_only_after_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path())
        .config_toml("[storage]\nretention = 1\nsweep-interval = 1\n")
        .start()
        .await;
    let (ended, _) = d.create(json!({})).await;
    let (live, _) = d.create(json!({})).await;
    d.authed(Method::DELETE, &format!("/session/{ended}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.authed(Method::GET, &format!("/reports/{ended}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = d
            .authed(Method::GET, &format!("/reports/{ended}"))
            .send()
            .await
            .unwrap()
            .status();
        if s == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "retained session never swept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        d.authed(Method::GET, &format!("/session/{live}"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}
