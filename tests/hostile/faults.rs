//! Faults under the daemon: its spool on a small tmpfs that fills up. (The test mounts
//! the tmpfs itself, so it runs as root, as the test script does.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Origin, assert_healthy, daemon_opts};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount(8) is installed");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the hostile suite runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with one file, which it returns.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

/// How a download through the proxy ended at the client.
#[derive(Debug, PartialEq)]
enum Fetched {
    Complete,
    Refused(u16),
    Broken,
}

async fn fetch(client: &reqwest::Client, url: &str) -> Fetched {
    match client.get(url).send().await {
        Ok(r) if r.status() == 200 => match r.bytes().await {
            Ok(b) if &b[..] == b"ok" => Fetched::Complete,
            _ => Fetched::Broken,
        },
        Ok(r) => Fetched::Refused(r.status().as_u16()),
        Err(_) => Fetched::Broken,
    }
}

/// Whether a download through the proxy completed at the client.
async fn download(client: &reqwest::Client, url: &str) -> bool {
    fetch(client, url).await == Fetched::Complete
}

#[tokio::test]
async fn a_full_disk_stops_downloads_from_completing_and_writes_resume_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let opts = daemon_opts(dir.path());
    let spool = Tmpfs::mount(&opts.spool, "48m");
    let d = opts.start().await;
    let origin = Origin::start().await;
    let (id, token) = d.create(json!({ "policy": "permissive" })).await;
    let proxy = reqwest::Proxy::http(format!("http://127.0.0.1:{}", d.opts.proxy_port))
        .unwrap()
        .basic_auth(&id, &token);
    let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
    let url = |i: usize| format!("http://127.0.0.1:{}/file-{i}", origin.port);
    let mut completed = 0;
    assert!(download(&client, &url(0)).await);
    completed += 1;

    // The disk fills up: within a few hundred downloads the write-ahead log can no
    // longer grow, and from then on no download completes at the client.
    let filler = fill(&spool.0);
    let mut failed_at = None;
    for i in 1..2000 {
        if download(&client, &url(i)).await {
            completed += 1;
        } else {
            failed_at = Some(i);
            break;
        }
    }
    let failed_at = failed_at.expect("downloads went on completing on a full disk");
    // The download whose record failed was cut off; later ones are not even started.
    for i in failed_at + 1..failed_at + 4 {
        assert_eq!(fetch(&client, &url(i)).await, Fetched::Refused(503));
    }
    let status = d
        .anon(reqwest::Method::GET, "/status")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 503, "/status while writes fail");
    let body = status.text().await.unwrap();
    assert!(body.contains("audit log"), "{body}");

    // Room again: the database is reopened and downloads complete once more.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next = failed_at + 4;
    loop {
        next += 1;
        if download(&client, &url(next)).await {
            completed += 1;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the disk had room again; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in next + 1..next + 4 {
        assert!(download(&client, &url(i)).await);
        completed += 1;
    }

    // Every download that completed at the client is in the report, and only those.
    assert_eq!(d.revoke(&id, &token).await.status(), 200);
    let report = d.get_json(&format!("/session/{id}")).await;
    let recorded: usize = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["downloads"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dl| dl["status-code"] == 200 && dl.get("error").is_none())
                .count()
        })
        .sum();
    assert_eq!(recorded, completed, "{report:#}");
    assert_healthy(&d, &origin).await;
}
