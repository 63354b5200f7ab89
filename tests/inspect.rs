//! Inspectors end to end: a signed apt repository built in a temporary directory (real
//! `dpkg-deb`, `dpkg-scanpackages`, `gpg`), served by a local origin, fetched by a real
//! `apt-get update` / `apt-get download` through the proxy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Daemon, DaemonOpts, Origin, artifact, assert_success, run, sha256_hex};
use serde_json::{Value, json};

const PACKAGE: &str = "fg-hello";
const VERSION: &str = "1.2-3";
const SUITE: &str = "stable";
/// `apt-get update`, failing on any index it could not fetch or verify.
const UPDATE: &[&str] = &["update", "--error-on=any"];

/// A throwaway OpenPGP signing key in its own GnuPG home.
struct SigningKey {
    home: PathBuf,
}

impl SigningKey {
    fn generate(dir: &Path, name: &str) -> SigningKey {
        Self::generate_expiring(dir, name, "never")
    }

    /// A key that expires (`expire` as gpg takes it: `never`, `seconds=N`, ...).
    fn generate_expiring(dir: &Path, name: &str, expire: &str) -> SigningKey {
        let home = dir.join(format!("gnupg-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = SigningKey { home };
        run(key.gpg().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <{name}@example.invalid>"),
            "ed25519",
            "sign",
            expire,
        ]));
        key
    }

    /// Revokes the key with the revocation certificate gpg made for it.
    fn revoke(&self) {
        let dir = self.home.join("openpgp-revocs.d");
        let cert = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        // gpg guards the certificate against accidental import with a leading colon.
        let text = std::fs::read_to_string(&cert)
            .unwrap()
            .replace("\n:-----BEGIN", "\n-----BEGIN");
        let text = text.strip_prefix(':').unwrap_or(&text).to_owned();
        let armored = self.home.join("revocation.asc");
        std::fs::write(&armored, text).unwrap();
        run(self.gpg().arg("--import").arg(&armored));
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.arg("--batch")
            .arg("--homedir")
            .arg(&self.home)
            .env_remove("GPG_AGENT_INFO");
        cmd
    }

    /// The public key, armored.
    fn armored(&self) -> String {
        String::from_utf8(run(self.gpg().args(["--armor", "--export"])).stdout).unwrap()
    }

    /// The public key as a binary keyring file (what apt's `signed-by` takes).
    fn keyring(&self, path: &Path) {
        std::fs::write(path, run(self.gpg().arg("--export")).stdout).unwrap();
    }
}

/// A signed apt repository: `dists/stable/{InRelease,Release,Release.gpg}`, main's
/// Packages (plain, .gz, .xz) for this machine's architecture, one package in `pool/`.
struct Repo {
    root: PathBuf,
    arch: String,
    deb: PathBuf,
}

impl Repo {
    fn build(dir: &Path, key: &SigningKey) -> Repo {
        let arch = String::from_utf8(run(Command::new("dpkg").arg("--print-architecture")).stdout)
            .unwrap()
            .trim()
            .to_owned();
        let root = dir.join("repo");
        let deb = build_deb(dir, &root, VERSION);
        let repo = Repo { root, arch, deb };
        repo.index(key);
        repo
    }

    fn dists(&self) -> PathBuf {
        self.root.join("dists").join(SUITE)
    }

    fn binary_dir(&self) -> String {
        format!("main/binary-{}", self.arch)
    }

    /// (Re)writes Packages from the pool, and a signed Release over it.
    fn index(&self, key: &SigningKey) {
        let packages = run(Command::new("dpkg-scanpackages")
            .args(["--multiversion", "pool", "/dev/null"])
            .current_dir(&self.root))
        .stdout;
        self.write_packages(&packages);
        self.sign(key);
    }

    /// Writes `Packages` and its compressed forms.
    fn write_packages(&self, text: &[u8]) {
        let dir = self.dists().join(self.binary_dir());
        std::fs::create_dir_all(&dir).unwrap();
        for ext in ["", ".gz", ".xz"] {
            let _ = std::fs::remove_file(dir.join(format!("Packages{ext}")));
        }
        std::fs::write(dir.join("Packages"), text).unwrap();
        run(Command::new("gzip")
            .args(["-kn9"])
            .arg(dir.join("Packages")));
        run(Command::new("xz").args(["-k"]).arg(dir.join("Packages")));
    }

    /// Writes Release listing the index files, `InRelease` and `Release.gpg`.
    fn sign(&self, key: &SigningKey) {
        self.sign_with(key, "");
    }

    /// [`Self::sign`] with more fields in the Release file.
    fn sign_with(&self, key: &SigningKey, fields: &str) {
        let mut release = format!(
            "Origin: fetchgate-tests\nSuite: {SUITE}\nCodename: {SUITE}\nDate: Thu, 01 Jan 2026 00:00:00 UTC\n{fields}Architectures: {}\nComponents: main\nSHA256:\n",
            self.arch
        );
        for ext in ["", ".gz", ".xz"] {
            let rel = format!("{}/Packages{ext}", self.binary_dir());
            let bytes = std::fs::read(self.dists().join(&rel)).unwrap();
            release.push_str(&format!(" {} {} {rel}\n", sha256_hex(&bytes), bytes.len()));
        }
        let dists = self.dists();
        for f in ["Release", "InRelease", "Release.gpg"] {
            let _ = std::fs::remove_file(dists.join(f));
        }
        std::fs::write(dists.join("Release"), release).unwrap();
        run(key
            .gpg()
            .arg("--clearsign")
            .arg("-o")
            .arg(dists.join("InRelease"))
            .arg(dists.join("Release")));
        run(key
            .gpg()
            .args(["--armor", "--detach-sign"])
            .arg("-o")
            .arg(dists.join("Release.gpg"))
            .arg(dists.join("Release")));
    }
}

/// Builds version `version` of the test package into `root`'s pool; returns its path.
fn build_deb(dir: &Path, root: &Path, version: &str) -> PathBuf {
    build_deb_licensed(dir, root, version, "GPL-2+")
}

/// [`build_deb`], its copyright file giving `license` for `Files: *`.
fn build_deb_licensed(dir: &Path, root: &Path, version: &str, license: &str) -> PathBuf {
    let pkg = dir.join(format!("pkg-{version}"));
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/doc").join(PACKAGE)).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\nMaintainer: Jo Tester <jo@example.org>\nSource: fg-hello-src\nDescription: a tiny package for tests\n It says hello.\n"
        ),
    )
    .unwrap();
    // Incompressible, so the package streams in several chunks; smaller than the
    // copyright scan's backlog, so its license is always found.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..150_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(pkg.join("usr/share/doc").join(PACKAGE).join("data"), noise).unwrap();
    std::fs::write(
        pkg.join("usr/share/doc").join(PACKAGE).join("copyright"),
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 2026 Jo Tester\nLicense: {license}\n\nFiles: debian/*\nCopyright: 2026 Someone Else\nLicense: Expat\n"
        ),
    )
    .unwrap();
    let pool = root.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    let deb = pool.join(format!("{PACKAGE}_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["-Zxz", "--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(&deb));
    deb
}

/// A repository, its origin, and a daemon trusting it through `inspectors.yaml`.
struct Setup {
    dir: tempfile::TempDir,
    key: SigningKey,
    repo: Repo,
    origin: Origin,
    d: Daemon,
}

async fn setup() -> Setup {
    setup_over(false).await
}

/// [`setup`], with the repository served over HTTPS when `tls` (its own test CA, which
/// the daemon trusts upstream).
async fn setup_over(tls: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(dir.path(), "repo");
    let repo = Repo::build(dir.path(), &key);
    let key_file = dir.path().join("repo-key.asc");
    std::fs::write(&key_file, key.armored()).unwrap();
    // A debtags archive without Packages files of its own: only the indexes builders
    // fetch through the proxy can answer for it.
    let archive = dir.path().join("debtags-archive");
    std::fs::create_dir_all(&archive).unwrap();
    let debtags = format!(
        "\n[[debtags.archive]]\nname = \"local\"\nroot = \"{}\"\n",
        archive.display()
    );
    let (origin, d) = common::trusted_origin(dir.path(), &repo.root, tls, &debtags, |base| {
        format!(
            "apt:\n  repositories:\n    - url: {base}\n      suites: [{SUITE}]\n      components: [main]\n      keys: [{}]\n",
            key_file.display()
        )
    })
    .await;
    Setup {
        dir,
        key,
        repo,
        origin,
        d,
    }
}

impl Setup {
    /// `apt-get <args>` with private state, through the proxy; `cwd` receives downloads.
    fn apt_get(&self, session: (&str, &str), args: &[&str], cwd: &Path) -> Output {
        let apt = self.dir.path().join("apt");
        for sub in [
            "state/lists/partial",
            "cache/archives/partial",
            "etc/parts",
            "etc/sources.d",
            "etc/prefs.d",
        ] {
            std::fs::create_dir_all(apt.join(sub)).unwrap();
        }
        let keyring = apt.join("repo.gpg");
        self.key.keyring(&keyring);
        let sources = apt.join("etc/sources.list");
        std::fs::write(
            &sources,
            format!(
                "deb [signed-by={}] {} {SUITE} main\n",
                keyring.display(),
                self.origin.base()
            ),
        )
        .unwrap();
        std::fs::write(apt.join("state/status"), "").unwrap();
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        Command::new("apt-get")
            .current_dir(cwd)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.dir.path())
            .arg("-q")
            .args(["-o", &opt("Dir::Etc::sourcelist", &sources)])
            .args([
                "-o",
                &opt("Dir::Etc::sourceparts", &apt.join("etc/sources.d")),
            ])
            .args(["-o", &opt("Dir::Etc::parts", &apt.join("etc/parts"))])
            .args([
                "-o",
                &opt("Dir::Etc::preferencesparts", &apt.join("etc/prefs.d")),
            ])
            .args(["-o", &opt("Dir::State", &apt.join("state"))])
            .args(["-o", &opt("Dir::State::status", &apt.join("state/status"))])
            .args(["-o", &opt("Dir::Cache", &apt.join("cache"))])
            .args([
                "-o",
                &format!(
                    "Acquire::http::Proxy={}",
                    self.d.proxy_url(session.0, session.1)
                ),
            ])
            .args([
                "-o",
                &format!(
                    "Acquire::https::Proxy={}",
                    self.d.proxy_url(session.0, session.1)
                ),
            ])
            .args(["-o", &opt("Acquire::https::CaInfo", &self.d.ca_file())])
            .args(["-o", "Acquire::Languages=none"])
            .args(["-o", "Acquire::Retries=0"])
            .args(["-o", &format!("APT::Architecture={}", self.repo.arch)])
            .args(["-o", &format!("APT::Architectures={}", self.repo.arch)])
            .args(["-o", "APT::Sandbox::User=root"])
            .args(["-o", "Debug::NoLocking=1"])
            .args(args)
            .output()
            .expect("apt-get is installed")
    }

    /// curl through the proxy; returns (exit code, HTTP status, body).
    fn curl(&self, session: (&str, &str), url: &str) -> (i32, u16, Vec<u8>) {
        self.curl_with(session, url, &[])
    }

    /// [`Self::curl`] with more arguments.
    fn curl_with(&self, session: (&str, &str), url: &str, extra: &[&str]) -> (i32, u16, Vec<u8>) {
        self.d.curl(session, url, self.dir.path(), extra)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin.base())
    }
}

/// `GET /debtags/{SUITE}/main` on the control port: (status, source header, body).
async fn debtags(d: &Daemon) -> (u16, Option<String>, Value) {
    let r = d
        .authed(reqwest::Method::GET, &format!("/debtags/{SUITE}/main"))
        .send()
        .await
        .unwrap();
    let source = r
        .headers()
        .get("x-debtags-source")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), source, r.json().await.unwrap())
}

impl Setup {
    /// `apt-get update` and `apt-get download` of `version` in a new session, in a new
    /// directory `cwd`; its id and the package's report entry.
    async fn download_in_a_new_session(&self, cwd: &str, version: &str) -> (String, Value) {
        let (id, token) = self.d.create(json!({})).await;
        // Each session fetches the indexes itself (its inspectors verify them).
        let _ = std::fs::remove_dir_all(self.dir.path().join("apt/state/lists"));
        let cwd = self.dir.path().join(cwd);
        std::fs::create_dir_all(&cwd).unwrap();
        assert_success(&self.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");
        let want = format!("{PACKAGE}={version}");
        assert_success(
            &self.apt_get((&id, &token), &["download", &want], &cwd),
            "apt-get download",
        );
        let report = self.d.report(&id, &token).await;
        let deb = artifact(&report, ".deb").clone();
        (id, deb)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_approves_a_signed_repository_and_its_package() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let downloads = s.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();

    assert_success(
        &s.apt_get((&id, &token), UPDATE, &downloads),
        "apt-get update",
    );
    assert_success(
        &s.apt_get((&id, &token), &["download", PACKAGE], &downloads),
        "apt-get download",
    );
    let served = std::fs::read(&s.repo.deb).unwrap();
    let got = std::fs::read(downloads.join(format!("{PACKAGE}_{VERSION}_all.deb"))).unwrap();
    assert_eq!(got, served);

    let report = s.d.report(&id, &token).await;
    assert_eq!(
        report["inspectors"],
        json!([
            "apt.release",
            "apt.packages",
            "deb",
            "pip.simple-index",
            "pip.wheel",
            "pip.sdist",
            "pip.metadata",
            "cargo.index",
            "cargo.crate",
            "npm.metadata",
            "npm.tarball",
            "go.module",
            "git.smart-http",
            "default"
        ])
    );
    assert_eq!(report["denied"], json!([]), "{report:#}");

    let in_release = artifact(&report, "/dists/stable/InRelease");
    assert_eq!(in_release["result"], "Approved", "{in_release:#}");
    assert_eq!(
        in_release["request-inspection"]["apt.release"]["opinion"],
        "Pending"
    );
    assert_eq!(
        in_release["response-inspection"]["apt.release"]["opinion"],
        "Approved"
    );
    assert_eq!(
        in_release["response-inspection"]["apt.release"]["annotations"]["signature"],
        "verified"
    );

    let packages = artifact(&report, &format!("/{}/Packages.xz", s.repo.binary_dir()));
    assert_eq!(packages["result"], "Approved", "{packages:#}");
    assert_eq!(
        packages["response-inspection"]["apt.packages"]["annotations"]["packages"],
        "1"
    );

    let deb = artifact(&report, ".deb");
    assert_eq!(deb["result"], "Approved", "{deb:#}");
    assert_eq!(deb["request-inspection"]["deb"]["opinion"], "Pending");
    assert_eq!(deb["request-inspection"]["default"]["opinion"], "Unknown");
    assert_eq!(deb["response-inspection"]["deb"]["opinion"], "Approved");
    let meta = &deb["metadata"];
    assert_eq!(meta["type"], "application/vnd.debian.binary-package");
    assert_eq!(meta["name"], PACKAGE);
    assert_eq!(meta["version"], VERSION);
    assert_eq!(meta["architecture"], "all");
    assert_eq!(meta["author"], "Jo Tester");
    assert_eq!(meta["author-email"], "jo@example.org");
    assert_eq!(meta["description"], "a tiny package for tests");
    assert_eq!(meta["source-package"], "fg-hello-src");
    assert_eq!(meta["apt-suite"], SUITE);
    assert_eq!(meta["vendor"], "fetchgate-tests");
    assert_eq!(meta["sha256"], sha256_hex(&served));
    assert_eq!(meta["size"], served.len());
    assert_eq!(meta["license"], "GPL-2.0-or-later");
    assert_eq!(meta["copyright"], "2026 Jo Tester");

    // The name + version side of the artifact index finds the session, with or
    // without the type; another version or another type finds nothing.
    for query in [
        format!("name={PACKAGE}&version={VERSION}"),
        format!("name={PACKAGE}&version={VERSION}&type=application/vnd.debian.binary-package"),
    ] {
        let rows = s.d.get_json(&format!("/artifacts?{query}")).await;
        let rows = rows["sessions"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{query}: {rows:?}");
        assert_eq!(rows[0]["session-id"], id.as_str());
        assert_eq!(rows[0]["result"], "Approved");
        assert_eq!(rows[0]["sha256"], sha256_hex(&served));
    }
    for query in [
        format!("name={PACKAGE}&version=1.2-4"),
        format!("name={PACKAGE}&version={VERSION}&type=text/plain"),
    ] {
        let rows = s.d.get_json(&format!("/artifacts?{query}")).await;
        assert_eq!(rows["sessions"], json!([]), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_release_signature_is_verified_when_there_is_no_inrelease() {
    let s = setup().await;
    std::fs::remove_file(s.repo.dists().join("InRelease")).unwrap();
    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().to_owned();
    assert_success(&s.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");
    let report = s.d.report(&id, &token).await;
    for file in ["/dists/stable/Release", "/dists/stable/Release.gpg"] {
        let a = artifact(&report, file);
        assert_eq!(a["result"], "Approved", "{a:#}");
    }
    let sig = artifact(&report, "/dists/stable/Release.gpg");
    assert_eq!(
        sig["response-inspection"]["apt.release"]["annotations"]["signature"],
        "verified"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_package_is_cut_off_and_recorded_as_rejected() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().join("downloads");
    std::fs::create_dir_all(&cwd).unwrap();
    assert_success(&s.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");

    // Same size, one byte changed near the end (inside data.tar): not the listed package.
    let mut bytes = std::fs::read(&s.repo.deb).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    std::fs::write(&s.repo.deb, &bytes).unwrap();

    let out = s.apt_get((&id, &token), &["download", PACKAGE], &cwd);
    assert!(
        !out.status.success(),
        "apt-get download of a tampered package succeeded"
    );
    let kept = std::fs::read(cwd.join(format!("{PACKAGE}_{VERSION}_all.deb"))).unwrap_or_default();
    assert!(
        kept.len() < bytes.len(),
        "apt-get received the whole tampered package"
    );
    // A plain client sees the connection cut before the last bytes: never a clean end.
    let url = s.url(&format!("pool/main/{PACKAGE}_{VERSION}_all.deb"));
    let (exit, code, body) = s.curl((&id, &token), &url);
    assert_eq!(code, 200);
    assert_ne!(
        exit,
        0,
        "curl saw a complete download: {} of {} bytes",
        body.len(),
        bytes.len()
    );
    assert!(
        body.len() < bytes.len(),
        "{} of {} bytes arrived",
        body.len(),
        bytes.len()
    );

    let report = s.d.report(&id, &token).await;
    let deb = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["metadata"]["sha256"] == sha256_hex(&bytes))
        .unwrap_or_else(|| panic!("no tampered artifact in {report:#}"));
    assert_eq!(deb["result"], "Rejected");
    let inspection = &deb["response-inspection"]["deb"];
    assert_eq!(inspection["opinion"], "Rejected");
    assert!(
        inspection["reason"]
            .as_str()
            .unwrap()
            .contains("is not listed in any Packages index"),
        "{inspection:#}"
    );
    assert_eq!(deb["downloads"][0]["error"]["stage"], "policy", "{deb:#}");
    // The series exists from start (at 0): the cut-off must have counted.
    let metrics = s.d.metrics_text().await;
    let cut_off = metrics
        .lines()
        .find(|l| {
            l.starts_with("fetchgate_inspected_downloads_total{")
                && l.contains("result=\"rejected\"")
                && l.contains("action=\"cut-off\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(cut_off.is_some_and(|n| n >= 1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_packages_index_is_cut_off_and_recorded_as_rejected() {
    let s = setup().await;
    // The Release file (signed) lists the real indexes; the origin then serves others
    // of the same sizes (so apt cannot tell by the length alone): one letter changed.
    let dir = s.repo.dists().join(s.repo.binary_dir());
    let sizes = |d: &Path| {
        ["Packages", "Packages.gz", "Packages.xz"]
            .map(|f| std::fs::metadata(d.join(f)).unwrap().len())
    };
    let original = std::fs::read(dir.join("Packages")).unwrap();
    let before = sizes(&dir);
    let at = original
        .windows(4)
        .position(|w| w == b"tiny")
        .expect("the synopsis is in Packages");
    let same_size = (b'a'..=b'z').any(|c| {
        let mut text = original.clone();
        text[at] = c;
        if text == original {
            return false;
        }
        s.repo.write_packages(&text);
        sizes(&dir) == before
    });
    assert!(same_size, "no same-size tampered Packages found");

    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().to_owned();
    let out = s.apt_get((&id, &token), UPDATE, &cwd);
    assert!(
        !out.status.success(),
        "apt-get update accepted a tampered index"
    );

    let report = s.d.report(&id, &token).await;
    let packages = artifact(&report, &format!("/{}/Packages.xz", s.repo.binary_dir()));
    assert_eq!(packages["result"], "Rejected", "{packages:#}");
    let inspection = &packages["response-inspection"]["apt.packages"];
    assert_eq!(inspection["opinion"], "Rejected");
    assert!(
        inspection["reason"]
            .as_str()
            .unwrap()
            .contains("does not match the Release file"),
        "{inspection:#}"
    );
    assert_eq!(packages["downloads"][0]["error"]["stage"], "policy");
}

#[tokio::test(flavor = "multi_thread")]
async fn release_signed_by_an_untrusted_key_is_rejected() {
    let s = setup().await;
    let other = SigningKey::generate(s.dir.path(), "intruder");
    s.repo.sign(&other);
    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().to_owned();
    let out = s.apt_get((&id, &token), UPDATE, &cwd);
    assert!(!out.status.success());
    let report = s.d.report(&id, &token).await;
    let in_release = artifact(&report, "/dists/stable/InRelease");
    assert_eq!(in_release["result"], "Rejected");
    assert_eq!(
        in_release["response-inspection"]["apt.release"]["reason"],
        "InRelease: no signature by a trusted key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_session_refuses_an_unrecognised_download_with_403() {
    let s = setup().await;
    std::fs::write(s.repo.root.join("notes.txt"), "not a package").unwrap();
    let (id, token) = s.d.create(json!({})).await;
    let url = s.url("notes.txt");
    let (_, code, body) = s.curl((&id, &token), &url);
    assert_eq!(code, 403);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no inspector recognises"),
        "{body}"
    );
    let report = s.d.report(&id, &token).await;
    assert_eq!(report["artifacts"], json!([]));
    let denied = &report["denied"][0];
    assert_eq!(denied["stage"], "policy");
    assert_eq!(
        denied["url"],
        format!("http://127.0.0.1:{}/notes.txt", s.origin.port)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn permissive_session_passes_an_unknown_artifact_and_records_it() {
    let s = setup().await;
    let gz = s.repo.dists().join(s.repo.binary_dir()).join("Packages.gz");
    std::fs::copy(&gz, s.repo.root.join("blob.gz")).unwrap();
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let (_, code, body) = s.curl((&id, &token), &s.url("blob.gz"));
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read(&gz).unwrap());
    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"], json!([]));
    let a = artifact(&report, "/blob.gz");
    for inspector in ["apt.release", "apt.packages", "deb", "default"] {
        assert_eq!(
            a["request-inspection"][inspector]["opinion"], "Unknown",
            "{a:#}"
        );
    }
    assert_eq!(a["response-inspection"]["default"]["opinion"], "Unknown");
    assert_eq!(a["metadata"]["type"], "application/gzip");
    assert_eq!(a["result"], "Rejected", "nothing approved it");
    // Revoking finished the session: one summary line, not one per request.
    let log = s.d.log();
    assert_eq!(log.matches("strict would have blocked").count(), 1, "{log}");
    assert!(log.contains("would_refuse=1 would_cut_off=1"), "{log}");
    assert!(log.contains("/blob.gz"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn inspectors_configuration_of_a_session_is_checked_and_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(dir.path(), "session");
    let repo = Repo::build(dir.path(), &key);
    let origin = Origin::start(&repo.root, None);
    let d = DaemonOpts::new(dir.path()).start().await;
    let bad = d
        .authed(reqwest::Method::POST, "/session")
        .json(&json!({"inspectors-configuration": {"apt": {"repositories": [{"url": "ftp://x/", "suites": ["s"], "keys": []}]}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let config = json!({"apt": {"repositories": [{
        "url": origin.base(), "suites": [SUITE], "keys": [key.armored()],
    }]}});
    let (id, token) = d.create(json!({"inspectors-configuration": config})).await;
    let s = Setup {
        dir,
        key,
        repo,
        origin,
        d,
    };
    let cwd = s.dir.path().to_owned();
    assert_success(&s.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");
    let report = s.d.report(&id, &token).await;
    assert_eq!(
        artifact(&report, "/dists/stable/InRelease")["result"],
        "Approved"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn indexes_fetched_by_hash_are_verified() {
    let s = setup().await;
    let dir = s.repo.dists().join(s.repo.binary_dir());
    let by_hash = dir.join("by-hash/SHA256");
    std::fs::create_dir_all(&by_hash).unwrap();
    for f in ["Packages", "Packages.gz", "Packages.xz"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        std::fs::write(by_hash.join(sha256_hex(&bytes)), bytes).unwrap();
    }
    s.repo.sign_with(&s.key, "Acquire-By-Hash: yes\n");
    let xz = sha256_hex(&std::fs::read(dir.join("Packages.xz")).unwrap());

    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().join("downloads");
    std::fs::create_dir_all(&cwd).unwrap();
    assert_success(&s.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");
    assert_success(
        &s.apt_get((&id, &token), &["download", PACKAGE], &cwd),
        "apt-get download",
    );
    let report = s.d.report(&id, &token).await;
    let index = artifact(&report, &format!("/by-hash/SHA256/{xz}"));
    assert_eq!(index["result"], "Approved", "{index:#}");
    assert_eq!(
        index["response-inspection"]["apt.packages"]["annotations"]["release-path"],
        format!("{}/Packages.xz", s.repo.binary_dir())
    );
    assert_eq!(artifact(&report, ".deb")["result"], "Approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_release_is_rejected() {
    let s = setup().await;
    s.repo
        .sign_with(&s.key, "Valid-Until: Fri, 02 Jan 2026 00:00:00 UTC\n");
    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().to_owned();
    assert!(!s.apt_get((&id, &token), UPDATE, &cwd).status.success());
    let report = s.d.report(&id, &token).await;
    let in_release = artifact(&report, "/dists/stable/InRelease");
    assert_eq!(in_release["result"], "Rejected");
    let reason = in_release["response-inspection"]["apt.release"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn permissive_session_passes_a_tampered_package_and_records_it_rejected() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let cwd = s.dir.path().join("downloads");
    std::fs::create_dir_all(&cwd).unwrap();
    assert_success(&s.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");
    let mut bytes = std::fs::read(&s.repo.deb).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    std::fs::write(&s.repo.deb, &bytes).unwrap();

    let url = s.url(&format!("pool/main/{PACKAGE}_{VERSION}_all.deb"));
    let (exit, code, body) = s.curl((&id, &token), &url);
    assert_eq!((exit, code), (0, 200));
    assert_eq!(body, bytes, "permissive must pass the bytes unchanged");

    let report = s.d.report(&id, &token).await;
    let deb = artifact(&report, ".deb");
    assert_eq!(deb["result"], "Rejected");
    assert_eq!(deb["response-inspection"]["deb"]["opinion"], "Rejected");
    assert!(deb["downloads"][0].get("error").is_none(), "{deb:#}");
    let log = s.d.log();
    assert_eq!(log.matches("strict would have blocked").count(), 1, "{log}");
    assert!(log.contains("would_refuse=0 would_cut_off=1"), "{log}");
    assert!(log.contains(&format!("first_url={url}")), "{log}");
}

/// A daemon with no `inspectors.yaml`, and a repository signed by `key`, trusted by a
/// session's own configuration.
async fn session_trusting(
    dir: tempfile::TempDir,
    key: SigningKey,
    repo: Repo,
) -> (Setup, String, String) {
    let origin = Origin::start(&repo.root, None);
    let d = DaemonOpts::new(dir.path()).start().await;
    let config = json!({"apt": {"repositories": [{
        "url": origin.base(), "suites": [SUITE], "keys": [key.armored()],
    }]}});
    let (id, token) = d.create(json!({"inspectors-configuration": config})).await;
    let s = Setup {
        dir,
        key,
        repo,
        origin,
        d,
    };
    (s, id, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn release_signed_by_a_revoked_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(dir.path(), "revoked");
    let repo = Repo::build(dir.path(), &key);
    key.revoke();
    let (s, id, token) = session_trusting(dir, key, repo).await;
    let cwd = s.dir.path().to_owned();
    assert!(!s.apt_get((&id, &token), UPDATE, &cwd).status.success());
    let report = s.d.report(&id, &token).await;
    let in_release = artifact(&report, "/dists/stable/InRelease");
    assert_eq!(in_release["result"], "Rejected");
    assert_eq!(
        in_release["response-inspection"]["apt.release"]["reason"],
        "InRelease: signed by a trusted key that is expired or revoked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn release_signed_by_an_expired_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_expiring(dir.path(), "expiring", "seconds=2");
    let repo = Repo::build(dir.path(), &key);
    let (s, id, token) = session_trusting(dir, key, repo).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let cwd = s.dir.path().to_owned();
    assert!(!s.apt_get((&id, &token), UPDATE, &cwd).status.success());
    let report = s.d.report(&id, &token).await;
    let in_release = artifact(&report, "/dists/stable/InRelease");
    assert_eq!(
        in_release["response-inspection"]["apt.release"]["reason"],
        "InRelease: signed by a trusted key that is expired or revoked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_request_for_a_recognised_artifact_is_fetched_whole_and_verified() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().to_owned();
    assert_success(&s.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");
    let url = s.url(&format!("pool/main/{PACKAGE}_{VERSION}_all.deb"));
    let served = std::fs::read(&s.repo.deb).unwrap();

    // The origin honours ranges (a plain curl of it gets 206), but a part cannot be
    // verified: the proxy asks for the whole package.
    let direct = Command::new("curl")
        .env_clear()
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-r",
            "100-",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "206");
    let (exit, code, body) = s.curl_with((&id, &token), &url, &["-r", "100-"]);
    assert_eq!((exit, code), (0, 200));
    assert_eq!(body, served);

    let report = s.d.report(&id, &token).await;
    assert_eq!(artifact(&report, ".deb")["result"], "Approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_repository_is_verified_inside_the_connect_tunnel() {
    let s = setup_over(true).await;
    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path().join("downloads");
    std::fs::create_dir_all(&cwd).unwrap();
    assert_success(&s.apt_get((&id, &token), UPDATE, &cwd), "apt-get update");
    assert_success(
        &s.apt_get((&id, &token), &["download", PACKAGE], &cwd),
        "apt-get download",
    );
    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"], json!([]), "{report:#}");
    let deb = artifact(&report, ".deb");
    assert_eq!(deb["result"], "Approved", "{deb:#}");
    assert!(
        deb["downloads"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("https://localhost:{}/pool/", s.origin.port)),
        "{deb:#}"
    );
}

#[tokio::test]
async fn a_bad_inspectors_yaml_stops_the_daemon_at_start_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, expected) in [
        (
            "apt:\n  repositories:\n    - url: ftp://x/\n      suites: [s]\n      keys: [k]\n",
            "apt.repositories[0].url \"ftp://x/\": the scheme must be http or https",
        ),
        (
            "apt:\n  repositories:\n    - url: http://x/\n      suites: [s]\n      keys: [/nonexistent/key.gpg]\n",
            "apt.repositories[0].keys[0]: cannot read /nonexistent/key.gpg",
        ),
        ("apt:\n  repos: []\n", "repos"),
    ] {
        let opts = DaemonOpts::new(dir.path()).config_file("inspectors.yaml", yaml);
        let out = opts.command().output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{yaml:?}: {stderr}");
        assert!(
            stderr.contains("ERROR:") && stderr.contains("inspectors.yaml"),
            "{yaml:?}: {stderr}"
        );
        assert!(stderr.contains(expected), "{yaml:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_requested_before_its_release_is_refused_at_once() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({})).await;
    let url = s.url(&format!("dists/stable/{}/Packages.xz", s.repo.binary_dir()));
    let (_, code, body) = s.curl((&id, &token), &url);
    assert_eq!(code, 403);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("apt.packages: no verified Release file for suite stable"),
        "{body}"
    );
    let report = s.d.report(&id, &token).await;
    assert_eq!(report["denied"][0]["stage"], "policy");
    assert_eq!(report["artifacts"], json!([]));
}

#[tokio::test]
async fn verified_packages_indexes_feed_the_debtags_lookup_and_unverified_ones_do_not() {
    let s = setup().await;
    // dpkg-scanpackages writes no Tag field: add one and sign the index again.
    let index = s.repo.dists().join(s.repo.binary_dir()).join("Packages");
    let scanned = std::fs::read_to_string(&index).unwrap();
    let with_tags =
        |tags: &str| scanned.replacen("\nVersion:", &format!("\nTag: {tags}\nVersion:"), 1);
    s.repo
        .write_packages(with_tags("works-with::{text,image}, role::program").as_bytes());
    s.repo.sign(&s.key);
    let (status, _, body) = debtags(&s.d).await;
    assert_eq!(
        status, 404,
        "nothing known before a builder fetched the index: {body}"
    );

    let (id, token) = s.d.create(json!({})).await;
    let cwd = s.dir.path();
    assert_success(&s.apt_get((&id, &token), UPDATE, cwd), "apt-get update");
    let (status, source, body) = debtags(&s.d).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(source.as_deref(), Some("packages-cache"));
    assert_eq!(
        body,
        json!({ PACKAGE: "role::program, works-with::image, works-with::text" })
    );

    // An index that does not match the signed Release is passed by a permissive session
    // but never feeds the cache.
    s.repo.write_packages(with_tags("role::hacked").as_bytes());
    // apt would skip indexes it already has.
    std::fs::remove_dir_all(s.dir.path().join("apt/state/lists")).unwrap();
    let (id, token) = s.d.create(json!({ "policy": "permissive" })).await;
    let out = s.apt_get((&id, &token), UPDATE, cwd);
    assert!(
        !out.status.success(),
        "apt itself refuses the tampered index"
    );
    let report = s.d.report(&id, &token).await;
    let packages = artifact(&report, &format!("/{}/Packages.xz", s.repo.binary_dir()));
    assert_eq!(packages["result"], "Rejected", "{packages:#}");
    let (_, _, body) = debtags(&s.d).await;
    assert_eq!(
        body,
        json!({ PACKAGE: "role::program, works-with::image, works-with::text" })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_in_three_sessions_and_another_version_in_a_fourth_are_found_by_sha256_and_name()
{
    let s = setup().await;
    let newer = "1.2-4";
    let newer_deb = build_deb(s.dir.path(), &s.repo.root, newer);
    s.repo.index(&s.key);
    let mut sessions = Vec::new();
    for (i, version) in [VERSION, VERSION, VERSION, newer].into_iter().enumerate() {
        let (id, deb) = s
            .download_in_a_new_session(&format!("session-{i}"), version)
            .await;
        assert_eq!(deb["metadata"]["version"], version);
        sessions.push(id);
    }
    let ids = |rows: &Value| -> Vec<String> {
        rows["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|r| assert_eq!(r["result"], "Approved", "{r}"))
            .map(|r| r["session-id"].as_str().unwrap().to_owned())
            .collect()
    };
    let older_sha = sha256_hex(&std::fs::read(&s.repo.deb).unwrap());
    let newer_sha = sha256_hex(&std::fs::read(&newer_deb).unwrap());
    let first_three: Vec<String> = sessions[..3].iter().rev().cloned().collect();

    // By sha256, newest first, in pages of two.
    let page =
        s.d.get_json(&format!("/artifacts?sha256={older_sha}&limit=2"))
            .await;
    assert_eq!(ids(&page), first_three[..2]);
    let cursor = page["next"].as_str().expect("a second page").to_owned();
    let page =
        s.d.get_json(&format!(
            "/artifacts?sha256={older_sha}&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&page), first_three[2..]);
    assert_eq!(page["next"], Value::Null);
    let page =
        s.d.get_json(&format!("/artifacts?sha256={newer_sha}"))
            .await;
    assert_eq!(ids(&page), [sessions[3].clone()]);

    // By name and version: the same sets.
    let page =
        s.d.get_json(&format!("/artifacts?name={PACKAGE}&version={VERSION}"))
            .await;
    assert_eq!(ids(&page), first_three);
    let page =
        s.d.get_json(&format!("/artifacts?name={PACKAGE}&version={newer}"))
            .await;
    assert_eq!(ids(&page), [sessions[3].clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packages_license_is_remembered_by_url_and_given_only_to_the_same_bytes() {
    let s = setup().await;
    let (_, first) = s.download_in_a_new_session("first", VERSION).await;
    assert_eq!(first["metadata"]["license"], "GPL-2.0-or-later");
    assert_eq!(s.d.verified_cache("deb", "miss").await, 1.0);

    // Fetched again: not scanned, the license scanned before.
    let (_, again) = s.download_in_a_new_session("again", VERSION).await;
    assert_eq!(again["result"], "Approved", "{again:#}");
    assert_eq!(again["metadata"], first["metadata"]);
    assert_eq!(s.d.verified_cache("deb", "hit").await, 1.0);

    // Another build under the same URL, listed by a re-signed index: the remembered
    // license was for other bytes, so this download gets none, and the next is
    // scanned again.
    build_deb_licensed(s.dir.path(), &s.repo.root, VERSION, "MIT");
    s.repo.index(&s.key);
    let rebuilt_sha = sha256_hex(&std::fs::read(&s.repo.deb).unwrap());
    let (_, changed) = s.download_in_a_new_session("changed", VERSION).await;
    assert_eq!(changed["result"], "Approved", "{changed:#}");
    assert_eq!(changed["metadata"]["sha256"], rebuilt_sha);
    assert!(changed["metadata"].get("license").is_none(), "{changed:#}");
    assert_eq!(s.d.verified_cache("deb", "hit").await, 2.0);
    let (_, rescanned) = s.download_in_a_new_session("rescanned", VERSION).await;
    assert_eq!(rescanned["metadata"]["license"], "MIT", "{rescanned:#}");
    assert_eq!(s.d.verified_cache("deb", "miss").await, 2.0);
}
