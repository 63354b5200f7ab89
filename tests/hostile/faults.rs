//! Faults under the daemon: the file system holding its spool (and database) breaks
//! while downloads run, and comes back. Two faults, one scenario
//! ([`writes_stop_and_resume`]): the spool on a small tmpfs that fills up, and the
//! spool on an ext4 image (a loop device) that the kernel turns read-only after an
//! error. (The tests mount file systems themselves, so they run as root, as the test
//! script does.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::{self, DaemonOpts};
use super::{Origin, assert_healthy, daemon_opts};

/// Runs a system tool the fault needs (the hostile suite runs as root); its stdout.
fn sh(program: &str, args: &[&str]) -> String {
    let out = common::run(Command::new(program).args(args));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Something that breaks the file system under the spool, and repairs it.
trait StorageFault {
    /// Mounts the file system the spool will live on.
    fn mount(spool: &Path) -> Self;
    /// Breaks writes to it (the daemon is running).
    fn inject(&mut self);
    /// Makes writes possible again, without touching the daemon.
    fn repair(&mut self);
}

/// A small tmpfs that the test fills up; unmounted when dropped.
struct FullDisk {
    at: PathBuf,
    filler: Option<PathBuf>,
}

impl StorageFault for FullDisk {
    fn mount(at: &Path) -> FullDisk {
        std::fs::create_dir_all(at).unwrap();
        let at_str = at.to_str().unwrap();
        sh("mount", &["-t", "tmpfs", "-o", "size=48m", "tmpfs", at_str]);
        FullDisk {
            at: at.to_owned(),
            filler: None,
        }
    }

    /// Fills the file system with one file.
    fn inject(&mut self) {
        use std::io::Write;
        let path = self.at.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        self.filler = Some(path);
    }

    fn repair(&mut self) {
        if let Some(filler) = self.filler.take() {
            std::fs::remove_file(filler).unwrap();
        }
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// An ext4 image on a loop device, mounted `errors=remount-ro`; unmounted and detached
/// when dropped.
///
/// The read-only fault is the kernel's own: an error forced through
/// `/sys/fs/ext4/<dev>/trigger_fs_error` aborts the journal and remounts the file system
/// read-only while RocksDB holds its files open for writing (`mount -o remount,ro`
/// refuses then: "mount point is busy"). An aborted ext4 cannot be remounted read-write
/// either, so the repair replaces the mount, as an operator would after a file system
/// check: the old mount is detached (it lives on while the daemon holds files in it),
/// and a checked copy of the image is mounted in its place.
struct ReadOnlyDisk {
    at: PathBuf,
    image: PathBuf,
    /// Loop devices attached so far; the last is the one mounted.
    devices: Vec<String>,
}

impl ReadOnlyDisk {
    /// Attaches `image` to a free loop device and mounts it at `self.at`.
    fn attach(&mut self, image: &Path) {
        let dev = sh("losetup", &["-f", "--show", image.to_str().unwrap()]);
        sh(
            "mount",
            &["-o", "errors=remount-ro", &dev, self.at.to_str().unwrap()],
        );
        self.devices.push(dev);
    }
}

impl StorageFault for ReadOnlyDisk {
    fn mount(at: &Path) -> ReadOnlyDisk {
        std::fs::create_dir_all(at).unwrap();
        let image = at.with_extension("ext4");
        // Sparse; room for RocksDB's preallocated write-ahead logs (about 70 MiB each),
        // the old and the new one during a reopen.
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let mut disk = ReadOnlyDisk {
            at: at.to_owned(),
            image: image.clone(),
            devices: Vec::new(),
        };
        disk.attach(&image);
        disk
    }

    fn inject(&mut self) {
        let dev = self.devices.last().unwrap();
        let name = dev.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "test\n").unwrap();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.starts_with(&format!("{dev} ")))
            .unwrap_or_else(|| panic!("{dev} is not mounted any more: {mounts}"));
        assert!(line.contains("emergency_ro"), "{line}");
    }

    fn repair(&mut self) {
        sh("umount", &["-l", self.at.to_str().unwrap()]);
        let copy = self
            .image
            .with_extension(format!("{}.ext4", self.devices.len()));
        sh(
            "cp",
            &[
                "--sparse=always",
                self.image.to_str().unwrap(),
                copy.to_str().unwrap(),
            ],
        );
        // Replays the journal and clears the error state; exit 1 means "fixed".
        let fsck = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&copy)
            .output()
            .expect("e2fsck is installed");
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        self.attach(&copy);
    }
}

impl Drop for ReadOnlyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        for dev in &self.devices {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
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

/// The scenario both faults share. The daemon runs with its spool on `F`'s file system;
/// downloads complete; the fault is injected, and from the download whose record cannot
/// be written on, none completes: that one is cut off, later ones are refused with 503
/// before they start, and `/status` answers 503 naming the audit log. After the repair,
/// writes resume by themselves (no restart), and the report lists exactly the downloads
/// that completed at the client.
async fn writes_stop_and_resume<F: StorageFault>(opts: DaemonOpts) {
    let mut fault = F::mount(&opts.spool);
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

    // A full disk lets the write-ahead log grow a little more (a few hundred
    // downloads); a read-only one fails the next write.
    fault.inject();
    let mut failed_at = None;
    for i in 1..2000 {
        if download(&client, &url(i)).await {
            completed += 1;
        } else {
            failed_at = Some(i);
            break;
        }
    }
    let failed_at = failed_at.expect("downloads went on completing after the fault");
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

    // Repaired: the database is reopened and downloads complete once more.
    fault.repair();
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
            "writes did not resume after the repair; log:\n{}",
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

#[tokio::test]
async fn a_full_disk_stops_downloads_from_completing_and_writes_resume_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    writes_stop_and_resume::<FullDisk>(daemon_opts(dir.path())).await;
}

#[tokio::test]
async fn a_read_only_database_stops_downloads_from_completing_and_writes_resume_on_a_writable_mount()
 {
    let dir = tempfile::tempdir().unwrap();
    writes_stop_and_resume::<ReadOnlyDisk>(daemon_opts(dir.path())).await;
}
