//! git inspector end to end: a bare repository served over HTTPS by `git http-backend`
//! behind a local origin, cloned by a real `git clone` through the proxy with protocol
//! v2 and v0.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{artifact, assert_success};
use serde_json::{Value, json};

/// The origin's files: `demo.git` (served under `/git/`) and the commit it holds.
struct Repositories {
    root: PathBuf,
    home: PathBuf,
    commit: String,
}

impl Repositories {
    fn build(dir: &Path) -> Repositories {
        let root = dir.join("repositories");
        let home = dir.join("git-home");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let commit = common::bare_repository(&root, &home, "demo.git", "hello\n");
        Repositories { root, home, commit }
    }
}

impl common::Tree for Repositories {
    fn root(&self) -> &Path {
        &self.root
    }
}

type Setup = common::Served<Repositories>;

async fn setup() -> Setup {
    common::serve_trusted(Repositories::build, |base| {
        format!("git:\n  hosts: [{base}git]\n")
    })
    .await
}

impl Setup {
    /// `git clone` of `path` on the origin through the proxy, with this protocol version.
    fn clone(&self, session: (&str, &str), path: &str, protocol: u8, dest: &str) -> Output {
        let proxy = format!("http.proxy={}", self.d.proxy_url(session.0, session.1));
        let ca = format!("http.sslCAInfo={}", self.d.ca_file().display());
        let version = format!("protocol.version={protocol}");
        let url = format!("{}{path}", self.origin.base());
        common::git(
            self.dir.path(),
            &self.files.home,
            &[
                "-c", &proxy, "-c", &ca, "-c", &version, "clone", "-q", &url, dest,
            ],
        )
    }

    fn repository(&self) -> String {
        format!("https://localhost:{}/git/demo.git", self.origin.port)
    }
}

/// The upload-pack artifact that carried a pack (v2 also posts `ls-refs`).
fn fetch(report: &Value) -> &Value {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["metadata"].get("version").is_some())
        .unwrap_or_else(|| panic!("no fetch with wanted commits in {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_approves_a_clone_over_smart_http_with_both_protocols() {
    let s = setup().await;
    for protocol in [2, 0] {
        let (id, token) = s.d.create(json!({})).await;
        let dest = format!("clone-v{protocol}");
        assert_success(
            &s.clone((&id, &token), "git/demo.git", protocol, &dest),
            "git clone",
        );
        assert_eq!(
            std::fs::read_to_string(s.dir.path().join(&dest).join("README")).unwrap(),
            "hello\n"
        );
        let report = s.d.report(&id, &token).await;
        assert_eq!(report["denied"], json!([]), "{report:#}");
        let refs = artifact(&report, "/info/refs?service=git-upload-pack");
        assert_eq!(refs["result"], "Approved", "{refs:#}");
        let inspection = &refs["response-inspection"]["git.smart-http"]["annotations"];
        assert_eq!(inspection["protocol"], protocol.to_string(), "{refs:#}");
        assert_eq!(refs["metadata"]["name"], s.repository());

        let pack = fetch(&report);
        assert_eq!(pack["result"], "Approved", "{pack:#}");
        assert_eq!(pack["downloads"][0]["method"], "POST");
        assert_eq!(pack["metadata"]["name"], s.repository());
        assert_eq!(pack["metadata"]["version"], s.files.commit);
        let annotations = &pack["response-inspection"]["git.smart-http"]["annotations"];
        assert!(
            annotations["pack"]
                .as_str()
                .unwrap()
                .ends_with("SHA-1 verified"),
            "{pack:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_outside_the_trusted_hosts_is_refused() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let out = s.clone((&id, &token), "elsewhere/demo.git", 2, "refused");
    assert!(!out.status.success());
    let report = s.d.report(&id, &token).await;
    assert_eq!(report["artifacts"], json!([]), "{report:#}");
    assert_eq!(report["denied"][0]["stage"], "policy", "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_the_remote_cannot_pack_is_cut_off() {
    let s = setup().await;
    // A corrupt object: upload-pack cannot build the pack it must send after `done`.
    let bare = s.files.root.join("demo.git");
    let blob = common::git(&bare, &s.files.home, &["rev-parse", "HEAD:README"]);
    let blob = String::from_utf8(blob.stdout).unwrap();
    let object = bare
        .join("objects")
        .join(&blob.trim()[..2])
        .join(&blob.trim()[2..]);
    std::fs::write(&object, "not a zlib stream").unwrap();

    let (id, token) = s.d.create(json!({})).await;
    let out = s.clone((&id, &token), "git/demo.git", 2, "broken");
    assert!(
        !out.status.success(),
        "git cloned a repository without its pack"
    );
    let report = s.d.report(&id, &token).await;
    let fetch = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["result"] == "Rejected")
        .unwrap_or_else(|| panic!("no rejected fetch in {report:#}"));
    assert_eq!(fetch["downloads"][0]["method"], "POST", "{fetch:#}");
    let reason = fetch["response-inspection"]["git.smart-http"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("no pack") || reason.contains("the remote reported an error"),
        "{fetch:#}"
    );
    assert_eq!(
        fetch["downloads"][0]["error"]["stage"], "policy",
        "{fetch:#}"
    );
}
