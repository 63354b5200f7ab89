//! go.module end to end: a static module proxy (the GOPROXY protocol: `@v/list`,
//! `.info`, `.mod`, `.zip`) built in a temporary directory and served over HTTPS by a
//! local origin, fetched through the proxy in the order `go mod download` asks.
//!
//! The proxy tests' client is curl, not the go command: Go never sends requests for
//! `localhost` or loopback addresses through a proxy (`httpproxy.Config.ProxyFunc`).
//! The direct (VCS) tests run the real go command with `GOPROXY=direct` against an
//! origin named [`common::GO_HOST`] (a name the test script maps to a loopback address
//! in `/etc/hosts`, listening on port 443 since module paths carry no port): its
//! `?go-get=1` pages and a git repository served over smart HTTP.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{artifact, sha256_hex};
use serde_json::json;

const MODULE: &str = "example.com/fg/hello";
const VERSION: &str = "v1.0.0";

/// The proxy's files under `root`.
struct ModuleProxy {
    root: PathBuf,
}

impl ModuleProxy {
    fn build(dir: &Path) -> ModuleProxy {
        let proxy = ModuleProxy {
            root: dir.join("goproxy"),
        };
        let v = proxy.root.join(MODULE).join("@v");
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("list"), format!("{VERSION}\n")).unwrap();
        std::fs::write(
            v.join(format!("{VERSION}.info")),
            json!({"Version": VERSION, "Time": "2026-01-01T00:00:00Z"}).to_string(),
        )
        .unwrap();
        let go_mod = format!("module {MODULE}\n\ngo 1.21\n");
        std::fs::write(v.join(format!("{VERSION}.mod")), &go_mod).unwrap();
        proxy.write_zip(&[
            ("go.mod", go_mod.as_bytes()),
            ("hello.go", b"package hello\n"),
        ]);
        proxy
    }

    fn zip_path(&self) -> PathBuf {
        self.root
            .join(MODULE)
            .join("@v")
            .join(format!("{VERSION}.zip"))
    }

    /// Writes the module zip with these files under `<module>@<version>/`.
    fn write_zip(&self, files: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            zip.start_file(
                format!("{MODULE}@{VERSION}/{name}"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(data).unwrap();
        }
        std::fs::write(self.zip_path(), zip.finish().unwrap().into_inner()).unwrap();
    }
}

impl common::Tree for ModuleProxy {
    fn root(&self) -> &Path {
        &self.root
    }
}

type Setup = common::Served<ModuleProxy>;

async fn setup() -> Setup {
    common::serve_trusted(ModuleProxy::build, |base| {
        format!("go:\n  proxies: [{base}]\n")
    })
    .await
}

impl Setup {
    /// Fetches a file of the module through the proxy: (curl exit code, status).
    fn fetch(&self, session: (&str, &str), file: &str) -> (i32, u16) {
        let url = format!("{}{MODULE}/@v/{file}", self.origin.base());
        let (exit, code, _) = self.d.curl(session, &url, self.dir.path(), &[]);
        (exit, code)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_approves_a_module_from_a_trusted_proxy() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    for file in ["list", "v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip"] {
        assert_eq!(s.fetch((&id, &token), file), (0, 200), "{file}");
    }
    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"], json!([]), "{report:#}");
    for file in ["list", "v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip"] {
        let a = artifact(&report, &format!("/@v/{file}"));
        assert_eq!(a["result"], "Approved", "{a:#}");
        assert_eq!(a["request-inspection"]["go.module"]["opinion"], "Pending");
        if file != "list" {
            assert_eq!(a["metadata"]["name"], MODULE, "{a:#}");
            assert_eq!(a["metadata"]["version"], VERSION, "{a:#}");
        }
    }
    let zip = artifact(&report, "/@v/v1.0.0.zip");
    let served = std::fs::read(s.files.zip_path()).unwrap();
    assert_eq!(zip["metadata"]["sha256"], sha256_hex(&served));
    assert_eq!(zip["metadata"]["type"], "application/zip");
    assert_eq!(
        zip["response-inspection"]["go.module"]["annotations"]["files"],
        "2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_zip_declaring_another_module_is_cut_off() {
    let s = setup().await;
    s.files
        .write_zip(&[("go.mod", b"module evil.example.org/x\n")]);
    let served = std::fs::read(s.files.zip_path()).unwrap();
    let (id, token) = s.d.create(json!({})).await;
    // A body this small is cut off before its response head went out: a 403 then.
    let (exit, code) = s.fetch((&id, &token), "v1.0.0.zip");
    assert!(code != 200 || exit != 0, "curl saw a complete download");
    let report = s.d.report(&id, &token).await;
    common::assert_cut_off(
        &report,
        "/@v/v1.0.0.zip",
        &served,
        "go.module",
        "declares module evil.example.org/x",
    );
}

/// The direct-mode module and the repository its go-import names.
const DIRECT_MODULE: &str = "go.fetchgate.test/fg/hello";

/// The direct-mode origin's files: `/fg/hello?go-get=1` naming `/git/hello.git` (a
/// repository holding the module at tag `v1.0.0`), and `/fg/astray?go-get=1` naming a
/// repository on a host nobody trusts.
struct Vcs {
    root: PathBuf,
    home: PathBuf,
    commit: String,
}

impl Vcs {
    fn build(dir: &Path) -> Vcs {
        let root = dir.join("vcs");
        let home = dir.join("git-home");
        let work = home.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let page = |path: &str, content: &str| {
            std::fs::create_dir_all(root.join(path)).unwrap();
            std::fs::write(
                root.join(path).join("go-get.html"),
                format!(
                    "<!DOCTYPE html><html><head><meta name=\"go-import\" content=\"{content}\"></head><body>go get</body></html>"
                ),
            )
            .unwrap();
        };
        let host = common::GO_HOST;
        page(
            "fg/hello",
            &format!("{DIRECT_MODULE} git https://{host}/git/hello.git"),
        );
        page(
            "fg/astray",
            &format!("{host}/fg/astray git https://elsewhere.fetchgate.test/astray.git"),
        );
        let git = |dir: &Path, args: &[&str]| {
            let out = common::git(dir, &home, args);
            common::assert_success(&out, &format!("git {args:?}"));
            String::from_utf8(out.stdout).unwrap()
        };
        git(&root, &["init", "-q", "--bare", "hello.git"]);
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(
            work.join("go.mod"),
            format!("module {DIRECT_MODULE}\n\ngo 1.19\n"),
        )
        .unwrap();
        std::fs::write(work.join("hello.go"), "package hello\n").unwrap();
        git(&work, &["add", "go.mod", "hello.go"]);
        git(
            &work,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.org",
                "commit",
                "-q",
                "-m",
                "v1",
            ],
        );
        git(&work, &["tag", "v1.0.0"]);
        let bare = root.join("hello.git").display().to_string();
        git(&work, &["push", "-q", &bare, "main", "v1.0.0"]);
        let commit = git(&work, &["rev-parse", "HEAD"]).trim().to_owned();
        Vcs { root, home, commit }
    }
}

impl common::Tree for Vcs {
    fn root(&self) -> &Path {
        &self.root
    }
}

/// The origin at `https://go.fetchgate.test` (port 443) and a daemon trusting its git
/// repositories and its import paths under `/fg`.
async fn direct_setup() -> common::Served<Vcs> {
    let resolved: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&(common::GO_HOST, 443))
        .map(Iterator::collect)
        .unwrap_or_default();
    assert!(
        resolved
            .iter()
            .any(|a| a.ip().to_string() == common::GO_ADDRESS),
        "{} must resolve to {} (scripts/test.sh adds it to /etc/hosts); it gave {resolved:?}",
        common::GO_HOST,
        common::GO_ADDRESS,
    );
    let dir = tempfile::tempdir().unwrap();
    let files = Vcs::build(dir.path());
    let host = common::GO_HOST;
    let (origin, d) = common::trusted_origin_at(
        (common::GO_ADDRESS, 443),
        dir.path(),
        &files.root,
        true,
        "",
        |_| format!("git:\n  hosts: [https://{host}/git]\ngo:\n  imports: [https://{host}/fg]\n"),
    )
    .await;
    common::Served {
        dir,
        files,
        origin,
        d,
    }
}

/// `go mod download -json <module>@v1.0.0` with `GOPROXY=direct` through the proxy, in
/// a fresh module cache.
fn go_download(s: &common::Served<Vcs>, session: (&str, &str), module: &str) -> Output {
    let work = s
        .dir
        .path()
        .join(format!("go-{}", module.replace('/', "_")));
    std::fs::create_dir_all(&work).unwrap();
    let proxy = s.d.proxy_url(session.0, session.1);
    let ca = s.d.ca_file();
    Command::new("go")
        .current_dir(&work)
        .args(["mod", "download", "-json", &format!("{module}@v1.0.0")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &s.files.home)
        .env("GOPATH", work.join("gopath"))
        .env("GOMODCACHE", work.join("modcache"))
        .env("GOCACHE", work.join("gocache"))
        .env("GOFLAGS", "-modcacherw")
        .env("GO111MODULE", "on")
        .env("GOPROXY", "direct")
        .env("GOSUMDB", "off")
        .env("GOTOOLCHAIN", "local")
        .env("HTTPS_PROXY", &proxy)
        .env("SSL_CERT_FILE", &ca)
        .env("GIT_SSL_CAINFO", &ca)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("go (golang-go)")
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_approves_a_direct_module_fetch_from_a_trusted_git_host() {
    let s = direct_setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let out = go_download(&s, (&id, &token), DIRECT_MODULE);
    common::assert_success(&out, "go mod download");
    let downloaded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(downloaded["Version"], VERSION, "{downloaded:#}");
    let zip = std::path::PathBuf::from(downloaded["Zip"].as_str().unwrap());
    assert!(zip.is_file(), "{downloaded:#}");

    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"], json!([]), "{report:#}");
    let page = artifact(&report, "/fg/hello?go-get=1");
    assert_eq!(page["result"], "Approved", "{page:#}");
    assert_eq!(page["metadata"]["name"], DIRECT_MODULE, "{page:#}");
    let notes = &page["response-inspection"]["go.module"]["annotations"];
    assert_eq!(notes["vcs"], "git", "{page:#}");
    assert_eq!(
        notes["repository"],
        format!("https://{}/git/hello.git", common::GO_HOST)
    );
    let refs = artifact(&report, "/git/hello.git/info/refs?service=git-upload-pack");
    assert_eq!(refs["result"], "Approved", "{refs:#}");
    let fetched = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["metadata"]["version"] == s.files.commit.as_str())
        .unwrap_or_else(|| panic!("no fetch of {} in {report:#}", s.files.commit));
    assert_eq!(fetched["result"], "Approved", "{fetched:#}");
    assert_eq!(fetched["downloads"][0]["method"], "POST");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_go_import_naming_an_untrusted_repository_is_cut_off() {
    let s = direct_setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let module = format!("{}/fg/astray", common::GO_HOST);
    let out = go_download(&s, (&id, &token), &module);
    assert!(!out.status.success(), "go fetched {module}");
    let report = s.d.report(&id, &token).await;
    let page = artifact(&report, "/fg/astray?go-get=1");
    assert_eq!(page["result"], "Rejected", "{page:#}");
    let reason = page["response-inspection"]["go.module"]["reason"].to_string();
    assert!(
        reason.contains(
            "https://elsewhere.fetchgate.test/astray.git is not under a trusted git host"
        ),
        "{page:#}"
    );
    // Nothing was fetched from the repository the page named.
    assert!(
        !report
            .to_string()
            .contains("elsewhere.fetchgate.test/astray.git/"),
        "{report:#}"
    );
}
