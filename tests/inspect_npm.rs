//! npm inspectors end to end: a static registry (one packument, one tarball) built in a
//! temporary directory, served over HTTPS by a local origin, fetched by a real
//! `npm pack` through the proxy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use common::{artifact, assert_success, sha256_hex};
use serde_json::json;
use sha2::Digest;

const PACKAGE: &str = "fg-hello";
const VERSION: &str = "1.0.0";

/// The registry's files: the packument `fg-hello` and `tarballs/`.
struct Registry {
    root: PathBuf,
}

impl Registry {
    fn build(dir: &Path) -> Registry {
        let registry = Registry {
            root: dir.join("npm"),
        };
        std::fs::create_dir_all(registry.root.join("tarballs")).unwrap();
        registry.write_tarball("module.exports = 'hello';\n");
        registry
    }

    fn tarball(&self) -> PathBuf {
        self.root
            .join("tarballs")
            .join(format!("{PACKAGE}-{VERSION}.tgz"))
    }

    /// Writes the tarball with this `index.js`.
    fn write_tarball(&self, code: &str) {
        let package = json!({"name": PACKAGE, "version": VERSION, "license": "ISC",
            "description": "says hello", "author": "Jo Tester <jo@example.org>",
            "main": "index.js"})
        .to_string();
        let bytes = fetchgate_formats::testing::tar_gz(&[
            ("package/package.json", package.as_bytes()),
            ("package/index.js", code.as_bytes()),
        ]);
        std::fs::write(self.tarball(), bytes).unwrap();
    }

    /// Writes the packument over the tarball as it is now, served from `base`.
    fn write_packument(&self, base: &str) {
        let bytes = std::fs::read(self.tarball()).unwrap();
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&bytes))
        );
        let shasum = hex::encode(sha1::Sha1::digest(&bytes));
        let packument = json!({
            "name": PACKAGE,
            "dist-tags": {"latest": VERSION},
            "versions": {VERSION: {
                "name": PACKAGE, "version": VERSION,
                "dist": {"tarball": format!("{base}tarballs/{PACKAGE}-{VERSION}.tgz"),
                         "integrity": integrity, "shasum": shasum},
            }},
        });
        std::fs::write(self.root.join(PACKAGE), packument.to_string()).unwrap();
    }
}

impl common::Tree for Registry {
    fn root(&self) -> &Path {
        &self.root
    }
}

type Setup = common::Served<Registry>;

async fn setup() -> Setup {
    let s = common::serve_trusted(Registry::build, |base| {
        format!("npm:\n  registries: [{base}]\n")
    })
    .await;
    s.files.write_packument(&s.origin.base());
    s
}

impl Setup {
    /// `npm pack fg-hello@1.0.0` through the proxy into `dest`, with a private cache and
    /// no user configuration.
    fn npm_pack(&self, session: (&str, &str), dest: &Path) -> Output {
        std::fs::create_dir_all(dest).unwrap();
        let proxy = self.d.proxy_url(session.0, session.1);
        let npmrc = self.dir.path().join("npmrc");
        std::fs::write(&npmrc, "").unwrap();
        Command::new("npm")
            .current_dir(dest)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .arg("pack")
            .arg(format!("{PACKAGE}@{VERSION}"))
            .args(["--registry", &self.origin.base()])
            .args(["--proxy", &proxy, "--https-proxy", &proxy])
            .arg("--cafile")
            .arg(self.d.ca_file())
            .arg("--cache")
            .arg(self.dir.path().join("npm-cache"))
            .arg("--userconfig")
            .arg(&npmrc)
            .args(["--no-audit", "--no-fund", "--fetch-retries", "0"])
            .output()
            .expect("npm is installed (scripts/test.sh)")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_approves_a_package_from_a_trusted_registry() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let dest = s.dir.path().join("packed");
    assert_success(&s.npm_pack((&id, &token), &dest), "npm pack");
    let served = std::fs::read(s.files.tarball()).unwrap();
    assert_eq!(
        std::fs::read(dest.join(format!("{PACKAGE}-{VERSION}.tgz"))).unwrap(),
        served
    );

    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"], json!([]), "{report:#}");
    let packument = artifact(&report, &format!("/{PACKAGE}"));
    assert_eq!(packument["result"], "Approved", "{packument:#}");
    assert_eq!(
        packument["response-inspection"]["npm.metadata"]["annotations"]["versions"],
        "1"
    );
    let tarball = artifact(&report, &format!("{PACKAGE}-{VERSION}.tgz"));
    assert_eq!(tarball["result"], "Approved", "{tarball:#}");
    assert_eq!(
        tarball["response-inspection"]["npm.tarball"]["annotations"]["digest"],
        "matches the packument's integrity"
    );
    let meta = &tarball["metadata"];
    assert_eq!(meta["sha256"], sha256_hex(&served));
    assert_eq!(meta["name"], PACKAGE);
    assert_eq!(meta["version"], VERSION);
    assert_eq!(meta["license"], "ISC");
    assert_eq!(meta["author"], "Jo Tester");
    assert_eq!(meta["author-email"], "jo@example.org");
    assert_eq!(meta["description"], "says hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tarball_that_does_not_match_its_integrity_is_cut_off() {
    let s = setup().await;
    s.files.write_tarball("module.exports = 'tampered';\n");
    let tampered = std::fs::read(s.files.tarball()).unwrap();
    let (id, token) = s.d.create(json!({})).await;
    let dest = s.dir.path().join("packed");
    let out = s.npm_pack((&id, &token), &dest);
    assert!(!out.status.success(), "npm accepted a tampered tarball");

    let report = s.d.report(&id, &token).await;
    common::assert_cut_off(
        &report,
        &format!("{PACKAGE}-{VERSION}.tgz"),
        &tampered,
        "npm.tarball",
        "does not match the packument's integrity",
    );
}
