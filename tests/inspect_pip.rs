//! pip inspectors end to end: a simple index (PEP 503 pages with `#sha256=` fragments
//! and PEP 658 metadata) built in a temporary directory with one wheel and one sdist,
//! served over HTTPS by a local origin, fetched by a real `pip download` through the
//! proxy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{artifact, assert_success, run, sha256_hex};
use serde_json::json;

const WHEEL: &str = "fg_hello-1.0-py3-none-any.whl";
const SDIST: &str = "fg_src-2.0.tar.gz";

/// The index's files under `root`: `simple/<project>/index.html` and `packages/`.
struct PyIndex {
    root: PathBuf,
}

impl PyIndex {
    fn build(dir: &Path) -> PyIndex {
        let index = PyIndex {
            root: dir.join("pypi"),
        };
        std::fs::create_dir_all(index.root.join("packages")).unwrap();
        index.write_wheel(b"print('hello')\n");
        // pip reads an sdist's metadata through its build backend: an in-tree one,
        // so nothing has to be installed or fetched for it.
        let pyproject =
            b"[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n";
        let backend = b"import os, shutil\n\ndef get_requires_for_build_wheel(config_settings=None):\n    return []\n\ndef prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):\n    name = 'fg_src-2.0.dist-info'\n    os.makedirs(os.path.join(metadata_directory, name))\n    shutil.copy('PKG-INFO', os.path.join(metadata_directory, name, 'METADATA'))\n    return name\n";
        let pkg_info = b"Metadata-Version: 2.1\nName: fg-src\nVersion: 2.0\nSummary: a tiny sdist for tests\nLicense: Apache-2.0\n";
        let sdist = fetchgate_formats::testing::tar_gz(&[
            ("fg_src-2.0/pyproject.toml", &pyproject[..]),
            ("fg_src-2.0/backend.py", &backend[..]),
            ("fg_src-2.0/PKG-INFO", &pkg_info[..]),
        ]);
        std::fs::write(index.package(SDIST), sdist).unwrap();
        index.write_pages();
        index
    }

    fn package(&self, name: &str) -> PathBuf {
        self.root.join("packages").join(name)
    }

    /// Writes the wheel (with `code` as its module) and its PEP 658 metadata file.
    fn write_wheel(&self, code: &[u8]) {
        let metadata = b"Metadata-Version: 2.1\nName: fg-hello\nVersion: 1.0\nSummary: says hello\nLicense: MIT\nAuthor-email: Jo Tester <jo@example.org>\n";
        let wheel_file = b"Wheel-Version: 1.0\nGenerator: fetchgate-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
        let files: [(&str, &[u8]); 3] = [
            ("fg_hello/__init__.py", code),
            ("fg_hello-1.0.dist-info/METADATA", metadata),
            ("fg_hello-1.0.dist-info/WHEEL", wheel_file),
        ];
        let wheel = fetchgate_formats::testing::wheel("fg_hello-1.0.dist-info", &files);
        std::fs::write(self.package(WHEEL), wheel).unwrap();
        std::fs::write(self.package(&format!("{WHEEL}.metadata")), metadata).unwrap();
    }

    /// Writes each project's page over the files as they are now.
    fn write_pages(&self) {
        let hash = |name: &str| sha256_hex(&std::fs::read(self.package(name)).unwrap());
        for (project, file, metadata) in [
            ("fg-hello", WHEEL, Some(hash(&format!("{WHEEL}.metadata")))),
            ("fg-src", SDIST, None),
        ] {
            let attributes = metadata
                .map(|m| {
                    format!(
                        " data-dist-info-metadata=\"sha256={m}\" data-core-metadata=\"sha256={m}\""
                    )
                })
                .unwrap_or_default();
            let page = format!(
                "<!DOCTYPE html>\n<html><body>\n<a href=\"../../packages/{file}#sha256={}\"{attributes}>{file}</a><br/>\n</body></html>\n",
                hash(file)
            );
            let dir = self.root.join("simple").join(project);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("index.html"), page).unwrap();
        }
    }
}

impl common::Tree for PyIndex {
    fn root(&self) -> &Path {
        &self.root
    }
}

type Setup = common::Served<PyIndex>;

async fn setup() -> Setup {
    common::serve_trusted(PyIndex::build, |base| {
        format!("pip:\n  indexes: [{base}simple]\n")
    })
    .await
}

impl Setup {
    /// `pip download --no-deps` of these requirements through the proxy into `dest`.
    ///
    /// The environment is cleared (a machine's `PIP_*` or `REQUESTS_CA_BUNDLE` would
    /// override the command line), so the interpreter is found first.
    fn pip_download(&self, session: (&str, &str), requirements: &[&str], dest: &Path) -> Output {
        let python =
            run(Command::new("python3").args(["-c", "import sys; print(sys.executable)"])).stdout;
        Command::new(String::from_utf8(python).unwrap().trim())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("PIP_CONFIG_FILE", "/dev/null")
            .args(["-m", "pip", "download"])
            .args([
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(["--no-deps", "--no-build-isolation", "--retries", "0"])
            .args(["--index-url", &format!("{}simple/", self.origin.base())])
            .args(["--proxy", &self.d.proxy_url(session.0, session.1)])
            .arg("--cert")
            .arg(self.d.ca_file())
            .arg("--dest")
            .arg(dest)
            .args(requirements)
            .output()
            .expect("python3 with pip is installed (scripts/test.sh)")
    }
}

impl Setup {
    /// The origin serves another build of the wheel under its name while the page keeps
    /// the original's sha256: a new session's pip download fails, and the report shows
    /// it cut off. Returns the other build.
    async fn serve_another_build_and_expect_it_cut_off(&self) -> Vec<u8> {
        self.files.write_wheel(b"print('tampered')\n");
        let tampered = std::fs::read(self.files.package(WHEEL)).unwrap();
        let (id, token) = self.d.create(json!({})).await;
        let dest = self.dir.path().join("tampered");
        let out = self.pip_download((&id, &token), &["fg-hello==1.0"], &dest);
        assert!(!out.status.success(), "pip accepted a tampered wheel");
        assert!(!dest.join(WHEEL).exists());
        let report = self.d.report(&id, &token).await;
        common::assert_cut_off(
            &report,
            WHEEL,
            &tampered,
            "pip.wheel",
            "does not match the project page",
        );
        tampered
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_approves_a_wheel_and_an_sdist_from_a_trusted_index() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let dest = s.dir.path().join("downloads");
    let out = s.pip_download((&id, &token), &["fg-hello==1.0", "fg-src==2.0"], &dest);
    assert_success(&out, "pip download");
    for file in [WHEEL, SDIST] {
        assert_eq!(
            std::fs::read(dest.join(file)).unwrap(),
            std::fs::read(s.files.package(file)).unwrap(),
            "{file}"
        );
    }

    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"], json!([]), "{report:#}");
    let page = artifact(&report, "/simple/fg-hello/");
    assert_eq!(page["result"], "Approved", "{page:#}");
    assert_eq!(
        page["request-inspection"]["pip.simple-index"]["annotations"]["project"],
        "fg-hello"
    );
    assert_eq!(
        page["response-inspection"]["pip.simple-index"]["annotations"]["files"],
        "1"
    );

    let wheel = artifact(&report, WHEEL);
    assert_eq!(wheel["result"], "Approved", "{wheel:#}");
    assert_eq!(
        wheel["request-inspection"]["pip.wheel"]["opinion"],
        "Pending"
    );
    assert_eq!(
        wheel["response-inspection"]["pip.wheel"]["annotations"]["record"],
        "3 files checked, 3 of them while the wheel streamed"
    );
    let meta = &wheel["metadata"];
    let served = std::fs::read(s.files.package(WHEEL)).unwrap();
    assert_eq!(meta["sha256"], sha256_hex(&served));
    assert_eq!(meta["size"], served.len());
    assert_eq!(meta["type"], "application/x-wheel+zip");
    assert_eq!(meta["name"], "fg-hello");
    assert_eq!(meta["version"], "1.0");
    assert_eq!(meta["architecture"], "any");
    assert_eq!(meta["license"], "MIT");
    assert_eq!(meta["author"], "Jo Tester");
    assert_eq!(meta["author-email"], "jo@example.org");
    assert_eq!(meta["description"], "says hello");

    let metadata = artifact(&report, &format!("{WHEEL}.metadata"));
    assert_eq!(metadata["result"], "Approved", "{metadata:#}");
    assert_eq!(metadata["metadata"]["name"], "fg-hello");

    let sdist = artifact(&report, SDIST);
    assert_eq!(sdist["result"], "Approved", "{sdist:#}");
    assert_eq!(
        sdist["response-inspection"]["pip.sdist"]["opinion"],
        "Approved"
    );
    assert_eq!(sdist["metadata"]["name"], "fg-src");
    assert_eq!(sdist["metadata"]["version"], "2.0");
    assert_eq!(sdist["metadata"]["license"], "Apache-2.0");
    assert_eq!(sdist["metadata"]["type"], "application/gzip");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wheel_that_is_not_the_one_the_index_lists_is_cut_off() {
    let s = setup().await;
    s.serve_another_build_and_expect_it_cut_off().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_no_project_page_listed_is_refused_at_request_time() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    // Without the project page first, nothing vouches for the wheel.
    let url = format!("{}packages/{WHEEL}", s.origin.base());
    let (_, code, _) = s.d.curl((&id, &token), &url, s.dir.path(), &[]);
    assert_eq!(code, 403);
    let report = s.d.report(&id, &token).await;
    let denied = &report["denied"][0];
    assert_eq!(denied["stage"], "policy", "{report:#}");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("no inspector recognises"),
        "{denied:#}"
    );
}

/// The wheel's report entry in a new session that downloads it with pip.
async fn download_wheel(s: &Setup, dest: &str) -> (Output, serde_json::Value) {
    let (id, token) = s.d.create(json!({})).await;
    let out = s.pip_download((&id, &token), &["fg-hello==1.0"], &s.dir.path().join(dest));
    let report = s.d.report(&id, &token).await;
    (out, artifact(&report, WHEEL).clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wheel_verified_before_is_checked_by_its_sha256_and_a_different_one_in_full() {
    let s = setup().await;
    let (out, first) = download_wheel(&s, "first").await;
    assert_success(&out, "pip download");
    assert_eq!(
        first["response-inspection"]["pip.wheel"]["annotations"]["record"],
        "3 files checked, 3 of them while the wheel streamed"
    );

    // Another session, the same file: the verdict of the full check carries over.
    let (out, again) = download_wheel(&s, "again").await;
    assert_success(&out, "pip download");
    assert_eq!(
        std::fs::read(s.dir.path().join("again").join(WHEEL)).unwrap(),
        std::fs::read(s.files.package(WHEEL)).unwrap()
    );
    assert_eq!(again["result"], "Approved", "{again:#}");
    let inspection = &again["response-inspection"]["pip.wheel"];
    assert_eq!(
        inspection["annotations"]["record"],
        "3 files checked when a download of this sha256 was first verified"
    );
    assert_eq!(
        inspection["annotations"]["sha256"],
        "matches the project page"
    );
    assert_eq!(again["metadata"], first["metadata"]);
    assert_eq!(again["metadata"]["license"], "MIT");
    assert_eq!(s.d.verified_cache("wheel", "miss").await, 1.0);
    assert_eq!(s.d.verified_cache("wheel", "hit").await, 1.0);

    // Remembering the first build's verdict does not let another build through.
    let tampered = s.serve_another_build_and_expect_it_cut_off().await;

    // Once the page lists the new build, it is a file never verified: checked in full.
    s.files.write_pages();
    let (out, rebuilt) = download_wheel(&s, "rebuilt").await;
    assert_success(&out, "pip download");
    assert_eq!(rebuilt["metadata"]["sha256"], sha256_hex(&tampered));
    assert_eq!(
        rebuilt["response-inspection"]["pip.wheel"]["annotations"]["record"],
        "3 files checked, 3 of them while the wheel streamed"
    );
    assert_eq!(s.d.verified_cache("wheel", "hit").await, 2.0);
    assert_eq!(s.d.verified_cache("wheel", "miss").await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_verified_cache_size_0_every_download_of_a_wheel_is_checked_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let files = PyIndex::build(dir.path());
    let (origin, d) = common::trusted_origin(
        dir.path(),
        &files.root,
        true,
        "verified-cache-size = 0\n",
        |base| format!("pip:\n  indexes: [{base}simple]\n"),
    )
    .await;
    let s = Setup {
        dir,
        files,
        origin,
        d,
    };
    for dest in ["first", "again"] {
        let (out, wheel) = download_wheel(&s, dest).await;
        assert_success(&out, "pip download");
        assert_eq!(
            wheel["response-inspection"]["pip.wheel"]["annotations"]["record"],
            "3 files checked, 3 of them while the wheel streamed",
            "{dest}"
        );
    }
    assert!(
        !s.d.metrics_text()
            .await
            .contains("fetchgate_verified_cache_total"),
        "a cache that is off is never asked"
    );
}
