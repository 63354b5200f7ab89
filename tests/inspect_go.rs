//! go.module end to end: a static module proxy (the GOPROXY protocol: `@v/list`,
//! `.info`, `.mod`, `.zip`) built in a temporary directory and served over HTTPS by a
//! local origin, fetched through the proxy in the order `go mod download` asks.
//!
//! The client is curl, not the go command: Go never sends requests for `localhost` or
//! loopback addresses through a proxy (`httpproxy.Config.ProxyFunc`), and these tests
//! talk to 127.0.0.1 only.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

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
