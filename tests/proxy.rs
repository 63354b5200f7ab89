//! The proxy port driven by real clients (curl) against local origin servers (HTTP and
//! HTTPS with their own test CA, trusted by fetchgate as an extra upstream root): every
//! download lands in the report with the right digests, credentials are enforced on
//! every request, and refusals and failures are recorded with their reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Daemon, DaemonOpts, Origin, origin_pki};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Setup {
    dir: tempfile::TempDir,
    d: Daemon,
    http: Origin,
    https: Origin,
    files: PathBuf,
}

/// Deterministic content of `n` bytes.
fn content(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0] ^ seed)
        .collect()
}

async fn setup() -> Setup {
    setup_with("").await
}

/// Like [`setup`], with extra lines for the `[proxy]` section.
async fn setup_with(proxy_toml: &str) -> Setup {
    setup_custom(proxy_toml, |opts| opts).await
}

/// Like [`setup_with`], with the daemon's options customised (more config files,
/// environment, arguments).
async fn setup_custom(proxy_toml: &str, customise: impl FnOnce(DaemonOpts) -> DaemonOpts) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("pool")).unwrap();
    std::fs::write(files.join("pool/a.deb"), content(300_000, 1)).unwrap();
    std::fs::write(files.join("pool/b.whl"), content(12_345, 2)).unwrap();
    let (origin_ca, leaf, key) = origin_pki(dir.path(), "origin");
    let http = Origin::start(&files, None);
    let https = Origin::start(&files, Some((&leaf, &key)));
    let opts = DaemonOpts::new(dir.path()).config_toml(&format!(
        "[proxy]\nupstream-ca-file = \"{}\"\nconnect-timeout = 2\nread-timeout = 5\n{proxy_toml}\n",
        origin_ca.display()
    ));
    // Arbitrary files from local origins: no inspector can verify them, so the
    // sessions here are permissive (strict refusal is pinned down in tests/inspect.rs).
    let d = customise(opts.arg("--permissive-mode")).start().await;
    Setup {
        dir,
        d,
        http,
        https,
        files,
    }
}

impl Setup {
    fn ca(&self) -> PathBuf {
        self.d.opts.spool.join("ca/fetchgate-ca.pem")
    }

    /// curl through the proxy; returns (exit code, HTTP status or refused CONNECT's status,
    /// body bytes).
    fn curl(&self, creds: Option<(&str, &str)>, url: &str, extra: &[&str]) -> (i32, u16, Vec<u8>) {
        let out_file = self.dir.path().join(format!("out-{}", rand_suffix()));
        let proxy = match creds {
            Some((id, token)) => {
                format!("http://{id}:{token}@127.0.0.1:{}", self.d.opts.proxy_port)
            }
            None => format!("http://127.0.0.1:{}", self.d.opts.proxy_port),
        };
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o"])
            .arg(&out_file)
            .args([
                "-w",
                "%{http_code} %{http_connect}",
                "--proxy",
                &proxy,
                "--cacert",
            ])
            .arg(self.ca())
            .args(extra)
            .arg(url)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .expect("curl");
        // A refused CONNECT has no HTTP response, only the proxy's CONNECT status.
        let code = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|c| c.parse::<u16>().unwrap_or(0))
            .find(|&c| c != 0)
            .unwrap_or(0);
        let body = std::fs::read(&out_file).unwrap_or_default();
        (out.status.code().unwrap_or(-1), code, body)
    }

    async fn report(&self, id: &str, token: &str) -> Value {
        assert_eq!(self.d.revoke(id, token).await.status(), 200);
        let r = self
            .d
            .authed(Method::GET, &format!("/session/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn artifact<'a>(report: &'a Value, sha: &str) -> &'a Value {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["metadata"]["sha256"] == sha)
        .unwrap_or_else(|| panic!("no artifact {sha} in {report:#}"))
}

/// The URLs of an artifact's downloads, in order.
fn download_urls<'a>(report: &'a Value, sha: &str) -> Vec<&'a str> {
    artifact(report, sha)["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["url"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn curl_downloads_over_http_and_https_are_in_the_report() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let a = std::fs::read(s.files.join("pool/a.deb")).unwrap();
    let b = std::fs::read(s.files.join("pool/b.whl")).unwrap();

    let plain = format!("http://127.0.0.1:{}/pool/a.deb", s.http.port);
    let (rc, code, body) = s.curl(Some((&id, &token)), &plain, &["-A", "apt/2.6"]);
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    assert_eq!(body, a);

    let tls = format!("https://localhost:{}/pool/b.whl", s.https.port);
    let (rc, code, body) = s.curl(Some((&id, &token)), &tls, &[]);
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    assert_eq!(body, b);
    // The same content again, over an IP-literal CONNECT (no SNI): one artifact, two downloads.
    let tls_ip = format!("https://127.0.0.1:{}/pool/b.whl", s.https.port);
    let (rc, code, body) = s.curl(Some((&id, &token)), &tls_ip, &[]);
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    assert_eq!(body, b);

    let report = s.report(&id, &token).await;
    let art_a = artifact(&report, &sha256_hex(&a));
    assert_eq!(art_a["metadata"]["size"], a.len());
    assert_eq!(art_a["downloads"].as_array().unwrap().len(), 1);
    let dl = &art_a["downloads"][0];
    assert_eq!(dl["url"], plain.as_str());
    assert_eq!(dl["method"], "GET");
    assert_eq!(dl["status-code"], 200);
    assert_eq!(dl["user-agent"], "apt/2.6");
    assert!(dl["request-header"].get("proxy-authorization").is_none());
    assert_eq!(dl["request-header"]["user-agent"], json!(["apt/2.6"]));
    assert_eq!(
        dl["response-header"]["content-length"],
        json!([a.len().to_string()])
    );
    assert!(
        !report.to_string().contains(&token),
        "the token never appears in the report"
    );

    assert_eq!(
        download_urls(&report, &sha256_hex(&b)),
        [tls.as_str(), tls_ip.as_str()]
    );
    assert_eq!(report["artifacts"].as_array().unwrap().len(), 2);
    // Plain and intercepted alike, each download names the builder's own address.
    let all = downloads(&report);
    assert_eq!(all.len(), 3);
    for dl in all {
        let address: std::net::SocketAddr = dl["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not ip:port: {dl:#}"));
        assert_eq!(address.ip().to_string(), "127.0.0.1", "{dl:#}");
        assert_ne!(address.port(), 0, "{dl:#}");
    }
}

#[tokio::test]
async fn credentials_are_checked_on_every_request_and_connect() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let plain = format!("http://127.0.0.1:{}/pool/b.whl", s.http.port);
    let tls = format!("https://localhost:{}/pool/b.whl", s.https.port);

    for creds in [
        None,
        Some((id.as_str(), "wrong-token")),
        Some(("not-a-session", token.as_str())),
    ] {
        let (_, code, _) = s.curl(creds, &plain, &[]);
        assert_eq!(code, 407, "plain {creds:?}");
        let (_, code, _) = s.curl(creds, &tls, &[]);
        assert_eq!(code, 407, "CONNECT {creds:?}");
    }
    let (_, code, _) = s.curl(Some((&id, &token)), &plain, &[]);
    assert_eq!(code, 200);
    assert_eq!(s.d.revoke(&id, &token).await.status(), 200);
    // Refused on the very next request, plain and CONNECT.
    let (_, code, _) = s.curl(Some((&id, &token)), &plain, &[]);
    assert_eq!(code, 407);
    let (_, code, _) = s.curl(Some((&id, &token)), &tls, &[]);
    assert_eq!(code, 407);

    let report: Value = s.d.get_json(&format!("/session/{id}")).await;
    let denied = report["denied"].as_array().unwrap();
    assert_eq!(
        denied.len(),
        2,
        "uses of the revoked token are recorded: {report:#}"
    );
    assert!(denied.iter().all(|d| d["stage"] == "auth"));
    assert_eq!(report["artifacts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_control_port_and_denied_ranges_are_unreachable() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let control = s.d.opts.control_port;
    let (_, code, _) = s.curl(
        Some((&id, &token)),
        &format!("http://127.0.0.1:{control}/status"),
        &[],
    );
    assert_eq!(code, 403);
    let (rc, _, _) = s.curl(
        Some((&id, &token)),
        &format!("https://127.0.0.1:{control}/status"),
        &[],
    );
    assert_ne!(rc, 0, "CONNECT to the control port must fail");
    let (_, code, _) = s.curl(
        Some((&id, &token)),
        &format!("http://localhost:{control}/sessions"),
        &[],
    );
    assert_eq!(code, 403, "also through a name resolving to loopback");
    let report = s.report(&id, &token).await;
    let denied = report["denied"].as_array().unwrap();
    assert_eq!(denied.len(), 3, "{report:#}");
    assert!(denied.iter().all(|d| d["stage"] == "acl"));
    assert!(report["artifacts"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_redirect_to_the_control_port_is_refused_when_the_builder_follows_it() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let control = s.d.opts.control_port;
    // fetchgate never follows redirects itself: the builder's next request is checked
    // like any other, whatever sent it there.
    for target in [
        format!("http://127.0.0.1:{control}/metrics"),
        format!("http://localhost:{control}/sessions"),
    ] {
        let url = format!("http://127.0.0.1:{}/redirect?to={target}", s.http.port);
        let (_, code, body) = s.curl(Some((&id, &token)), &url, &["-L"]);
        assert_eq!(code, 403, "{target}");
        assert!(body.starts_with(b"{\"error\""), "{target}");
    }
    let report = s.report(&id, &token).await;
    let denied = denials(&report);
    assert_eq!(denied.len(), 2, "{report:#}");
    assert!(denied.iter().all(|(stage, _, _)| stage == "acl"));
    assert!(denied[0].2.ends_with("/metrics"), "{denied:?}");
    // The redirects themselves were fetched and recorded.
    let redirects = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["downloads"].as_array().unwrap())
        .filter(|d| d["url"].as_str().unwrap().contains("/redirect?"))
        .count();
    assert_eq!(redirects, 2, "{report:#}");
}

/// The `denied` entries of a report as (stage, reason, url).
fn denials(report: &Value) -> Vec<(String, String, String)> {
    report["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (field("stage"), field("reason"), field("url"))
        })
        .collect()
}

#[tokio::test]
async fn toml_host_globs_and_cidr_rules_refuse_with_403_and_allow_holes_pass() {
    let s = setup_custom(
        "[acl]\ndeny-hosts = [\"LocalHost\"]\ndeny = [\"127.0.0.2/31\"]\nallow = [\"127.0.0.3\"]\n",
        |o| {
            let security = o.spool.with_file_name("security.log");
            o.arg(&format!("--security-log-file={}", security.display()))
        },
    )
    .await;
    let denied_origin = Origin::start_on("127.0.0.2", &s.files, None);
    let hole_origin = Origin::start_on("127.0.0.3", &s.files, None);
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let creds = Some((id.as_str(), token.as_str()));
    let b = std::fs::read(s.files.join("pool/b.whl")).unwrap();

    for url in [
        format!("http://localhost:{}/pool/b.whl", s.http.port),
        format!("https://LOCALHOST:{}/pool/b.whl", s.https.port),
        format!("http://127.0.0.2:{}/pool/b.whl", denied_origin.port),
    ] {
        let (_, code, body) = s.curl(creds, &url, &[]);
        assert_eq!(code, 403, "{url}; log:\n{}", s.d.log());
        assert!(url.starts_with("https") || body.starts_with(b"{\"error\""));
    }
    for url in [
        format!("http://127.0.0.3:{}/pool/b.whl", hole_origin.port),
        format!("http://127.0.0.1:{}/pool/b.whl", s.http.port),
    ] {
        let (rc, code, body) = s.curl(creds, &url, &[]);
        assert_eq!((rc, code), (0, 200), "{url}; log:\n{}", s.d.log());
        assert_eq!(body, b);
    }

    let report = s.report(&id, &token).await;
    let denied = denials(&report);
    assert_eq!(denied.len(), 3, "{report:#}");
    assert!(denied.iter().all(|(stage, _, _)| stage == "acl"));
    assert!(
        denied[0].1.contains("deny-hosts in fetchgate.toml"),
        "{denied:?}"
    );
    assert!(
        denied[1].1.contains("deny-hosts in fetchgate.toml"),
        "{denied:?}"
    );
    assert!(
        denied[2]
            .1
            .contains("127.0.0.2/31, denied by acl.deny in fetchgate.toml"),
        "{denied:?}"
    );
    assert_eq!(
        artifact(&report, &sha256_hex(&b))["downloads"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let security = std::fs::read_to_string(s.dir.path().join("security.log")).unwrap();
    let events: Vec<Value> = security
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{security}");
    assert!(
        events.iter().all(|e| e["fields"]["event"] == "acl-denial"),
        "{security}"
    );
}

#[tokio::test]
async fn acl_yaml_in_the_references_format_is_loaded_from_the_config_dir() {
    let acl_yaml = "http-proxy:\n  policy: allow\n  allow-hosts: [\"127.0.0.*\"]\n  rules:\n    - dst: [127.0.0.2]\n      access: deny\n    - dst: [\"127.0.0.0/8\"]\n      access: allow\n";
    let s = setup_custom("", |o| o.config_file("acl.yaml", acl_yaml)).await;
    let denied_origin = Origin::start_on("127.0.0.2", &s.files, None);
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let creds = Some((id.as_str(), token.as_str()));

    let (_, code, _) = s.curl(
        creds,
        &format!("http://localhost:{}/pool/b.whl", s.http.port),
        &[],
    );
    assert_eq!(code, 403, "localhost is not in the allowed host globs");
    let (_, code, _) = s.curl(
        creds,
        &format!("http://127.0.0.2:{}/pool/b.whl", denied_origin.port),
        &[],
    );
    assert_eq!(code, 403, "the first matching rule denies 127.0.0.2");
    let (rc, code, _) = s.curl(
        creds,
        &format!("http://127.0.0.1:{}/pool/b.whl", s.http.port),
        &[],
    );
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    let (_, code, _) = s.curl(
        creds,
        &format!("http://127.0.0.1:{}/status", s.d.opts.control_port),
        &[],
    );
    assert_eq!(
        code, 403,
        "an allow rule never opens the daemon's own ports"
    );

    let report = s.report(&id, &token).await;
    let denied = denials(&report);
    assert_eq!(denied.len(), 3, "{report:#}");
    assert!(
        denied[0]
            .1
            .contains("matches none of the allow-hosts globs"),
        "{denied:?}"
    );
    assert!(
        denied[1].1.contains("http-proxy.rules[0] in acl.yaml"),
        "{denied:?}"
    );
    assert!(denied[2].1.contains("own listening socket"), "{denied:?}");
}

#[tokio::test]
async fn a_bad_acl_rule_stops_the_daemon_at_start_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, expected) in [
        (
            "http-proxy:\n  rules:\n    - dst: [\"10.0.0.0/33\"]\n      access: deny\n",
            "http-proxy.rules[0].dst[0]: \"10.0.0.0/33\" is not an IP address or CIDR range",
        ),
        ("http-proxy:\n  rulez: []\n", "rulez"),
        (
            "http-proxy:\n  rules:\n    - dst: [10.0.0.1]\n      access: maybe\n",
            "maybe",
        ),
        (
            "http-proxy:\n  deny-hosts: [\"http://x/\"]\n",
            "http-proxy.deny-hosts[0]",
        ),
        ("http-proxy: [\n", ""),
    ] {
        let opts = DaemonOpts::new(dir.path());
        std::fs::write(opts.config.join("acl.yaml"), yaml).unwrap();
        let out = opts.command().output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{yaml:?}: {stderr}");
        assert!(
            stderr.contains("ERROR:") && stderr.contains("acl.yaml"),
            "{yaml:?}: {stderr}"
        );
        assert!(stderr.contains(expected), "{yaml:?}: {stderr}");
    }
    let opts = DaemonOpts::new(dir.path()).config_toml("[acl]\nallow = [\"nope\"]\n");
    std::fs::remove_file(opts.config.join("acl.yaml")).unwrap();
    let out = opts.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fetchgate.toml: acl.allow[0]: \"nope\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn upstream_failures_are_502_and_recorded() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    // An origin whose certificate fetchgate does not trust.
    let (_, leaf, key) = origin_pki(s.dir.path(), "rogue");
    let rogue = Origin::start(&s.files, Some((&leaf, &key)));
    let (_, code, _) = s.curl(
        Some((&id, &token)),
        &format!("https://localhost:{}/pool/b.whl", rogue.port),
        &[],
    );
    assert_eq!(code, 502);
    // An origin that is down.
    let dead = common::free_port();
    let (_, code, _) = s.curl(
        Some((&id, &token)),
        &format!("http://127.0.0.1:{dead}/x"),
        &[],
    );
    assert_eq!(code, 502);
    // Non-200 answers are downloads too.
    let (_, code, _) = s.curl(
        Some((&id, &token)),
        &format!("http://127.0.0.1:{}/status/404", s.http.port),
        &[],
    );
    assert_eq!(code, 404);

    let report = s.report(&id, &token).await;
    let downloads = downloads(&report);
    assert_eq!(downloads.len(), 3, "{report:#}");
    assert_eq!(downloads[0]["error"]["stage"], "upstream-tls");
    assert_eq!(downloads[1]["error"]["stage"], "upstream-connect");
    assert_eq!(downloads[2]["status-code"], 404);
    assert!(downloads[2].get("error").is_none());
}

/// tinyproxy (Debian's `tinyproxy-bin`) on a free loopback port, standing in for a
/// corporate proxy; killed when dropped.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Tinyproxy {
    /// Starts it with a config written into `dir`, optionally requiring Basic auth.
    fn start(dir: &Path, basic_auth: Option<(&str, &str)>) -> Tinyproxy {
        let port = common::free_port();
        let log = dir.join(format!("tinyproxy-{port}.log"));
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 50\n",
            log.display()
        );
        if let Some((user, password)) = basic_auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy is installed (scripts/test.sh installs tinyproxy-bin)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tinyproxy did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Tinyproxy { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every download of a report, in order.
fn downloads(report: &Value) -> Vec<&Value> {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["downloads"].as_array().unwrap())
        .collect()
}

#[tokio::test]
async fn plain_and_https_go_through_the_upstream_proxy_and_no_proxy_goes_direct() {
    let work = tempfile::tempdir().unwrap();
    let up = Tinyproxy::start(work.path(), None);
    let s = setup_custom("", |o| {
        o.env("HTTP_PROXY", &format!("http://127.0.0.1:{}", up.port))
            // The lowercase form, without a scheme, as Go accepts it.
            .env("https_proxy", &format!("127.0.0.1:{}", up.port))
            .env("no_proxy", "127.0.0.3, .example.invalid")
    })
    .await;
    let direct = Origin::start_on("127.0.0.3", &s.files, None);
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let creds = Some((id.as_str(), token.as_str()));
    let a = std::fs::read(s.files.join("pool/a.deb")).unwrap();
    let b = std::fs::read(s.files.join("pool/b.whl")).unwrap();

    let plain = format!("http://127.0.0.1:{}/pool/a.deb", s.http.port);
    let (rc, code, body) = s.curl(creds, &plain, &[]);
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    assert_eq!(body, a);
    let tls = format!("https://localhost:{}/pool/b.whl", s.https.port);
    let (rc, code, body) = s.curl(creds, &tls, &[]);
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    assert_eq!(body, b);
    let bypass = format!("http://127.0.0.3:{}/pool/b.whl", direct.port);
    let (rc, code, body) = s.curl(creds, &bypass, &[]);
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    assert_eq!(body, b);
    // Same SNI, same proxy, another port: a pooled tunnel to the first must not be reused.
    let other_files = work.path().join("other");
    std::fs::create_dir_all(other_files.join("pool")).unwrap();
    let c = content(5_000, 9);
    std::fs::write(other_files.join("pool/b.whl"), &c).unwrap();
    let leaf = (
        s.dir.path().join("origin.pem"),
        s.dir.path().join("origin.key"),
    );
    let other = Origin::start(&other_files, Some((&leaf.0, &leaf.1)));
    let (rc, code, body) = s.curl(
        creds,
        &format!("https://localhost:{}/pool/b.whl", other.port),
        &[],
    );
    assert_eq!((rc, code), (0, 200), "log:\n{}", s.d.log());
    assert!(
        body == c,
        "the other origin's content, not a reused tunnel's"
    );
    // The ACL applies before any proxy is asked.
    let control = format!("http://127.0.0.1:{}/status", s.d.opts.control_port);
    let (_, code, _) = s.curl(creds, &control, &[]);
    assert_eq!(code, 403);

    let log = up.log();
    assert!(
        log.contains(&format!("GET http://127.0.0.1:{}/pool/a.deb", s.http.port)),
        "{log}"
    );
    assert!(
        log.contains(&format!("CONNECT localhost:{}", s.https.port)),
        "{log}"
    );
    assert!(
        log.contains(&format!("CONNECT localhost:{}", other.port)),
        "{log}"
    );
    assert!(!log.contains("127.0.0.3"), "NO_PROXY goes direct: {log}");
    assert!(
        !log.contains(&format!(":{}/status", s.d.opts.control_port)),
        "{log}"
    );

    let report = s.report(&id, &token).await;
    assert_eq!(
        artifact(&report, &sha256_hex(&a))["metadata"]["size"],
        a.len()
    );
    assert_eq!(
        download_urls(&report, &sha256_hex(&b)),
        [tls.as_str(), bypass.as_str()]
    );
    assert_eq!(denials(&report).len(), 1);
}

#[tokio::test]
async fn upstream_proxy_credentials_work_and_proxy_failures_are_502_and_recorded() {
    let work = tempfile::tempdir().unwrap();
    let up = Tinyproxy::start(work.path(), Some(("builder", "s3cret")));
    let with_auth = format!("http://builder:s3cret@127.0.0.1:{}", up.port);
    let s = setup_custom("", |o| {
        o.env("HTTP_PROXY", &with_auth)
            .env("HTTPS_PROXY", &with_auth)
    })
    .await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let creds = Some((id.as_str(), token.as_str()));
    let plain = format!("http://127.0.0.1:{}/pool/a.deb", s.http.port);
    let tls = format!("https://localhost:{}/pool/b.whl", s.https.port);
    for url in [&plain, &tls] {
        let (rc, code, _) = s.curl(creds, url, &[]);
        assert_eq!((rc, code), (0, 200), "{url}; log:\n{}", s.d.log());
    }
    let log = up.log();
    assert!(
        log.contains("GET http://127.0.0.1") && log.contains("CONNECT localhost"),
        "{log}"
    );
    let report = s.report(&id, &token).await;
    assert_eq!(downloads(&report).len(), 2, "{report:#}");
    for text in [report.to_string(), s.d.log()] {
        assert!(!text.contains("s3cret") && !text.contains("YnVpbGRlcjpzM2NyZXQ"));
    }

    // No credentials (407 from the proxy to a plain request), wrong ones (tinyproxy
    // answers the CONNECT with 401), and a proxy that is down.
    let dead = common::free_port();
    let bad = setup_custom("", |o| {
        o.env("HTTP_PROXY", &format!("http://127.0.0.1:{}", up.port))
            .env(
                "HTTPS_PROXY",
                &format!("http://builder:wrong@127.0.0.1:{}", up.port),
            )
    })
    .await;
    let down = setup_custom("", |o| {
        o.env("https_proxy", &format!("http://127.0.0.1:{dead}"))
    })
    .await;
    for (s, url, reason) in [
        (
            &bad,
            format!("http://127.0.0.1:{}/pool/a.deb", bad.http.port),
            "407",
        ),
        (
            &bad,
            format!("https://localhost:{}/pool/b.whl", bad.https.port),
            "401",
        ),
        (
            &down,
            format!("https://localhost:{}/pool/b.whl", down.https.port),
            "cannot connect",
        ),
    ] {
        let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
        let (_, code, _) = s.curl(Some((&id, &token)), &url, &[]);
        assert_eq!(code, 502, "{url}");
        let report = s.report(&id, &token).await;
        let dl = downloads(&report);
        assert_eq!(dl.len(), 1, "{report:#}");
        assert_eq!(dl[0]["url"], url.as_str());
        assert_eq!(dl[0]["error"]["stage"], "upstream-proxy", "{report:#}");
        let why = dl[0]["error"]["reason"].as_str().unwrap();
        assert!(why.contains(reason) && !why.contains("wrong"), "{why}");
    }
}

#[tokio::test]
async fn launchpads_connect_with_connection_close_still_tunnels() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/launchpad_connect.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            &s.d.opts.proxy_port.to_string(),
            &id,
            &token,
            &s.ca().display().to_string(),
            "localhost",
            &s.https.port.to_string(),
            "/pool/b.whl",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = std::fs::read(s.files.join("pool/b.whl")).unwrap();
    let (status, body) = out
        .stdout
        .split_at(out.stdout.iter().position(|&c| c == b'\n').unwrap() + 1);
    assert_eq!(String::from_utf8_lossy(status).trim(), "HTTP/1.1 200 OK");
    assert_eq!(body, b.as_slice());
    let report = s.report(&id, &token).await;
    assert_eq!(
        artifact(&report, &sha256_hex(&b))["downloads"][0]["status-code"],
        200
    );
}

#[tokio::test]
async fn session_secrets_are_injected_upstream_and_never_recorded() {
    let s = setup().await;
    let (id, token) =
        s.d.create(json!({"policy": "permissive", "secrets": [{
            "type": "basic-auth",
            "url": format!("https://localhost:{}/echo-*", s.https.port),
            "basic-credentials": "robot:s3cret-value",
        }]}))
        .await;
    let url = format!("https://localhost:{}/echo-auth", s.https.port);
    let (_, code, body) = s.curl(Some((&id, &token)), &url, &[]);
    assert_eq!(code, 200);
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("robot:s3cret-value")
    );
    assert_eq!(String::from_utf8_lossy(&body), expected);
    // Not matching the glob: nothing injected.
    let (_, _, body) = s.curl(
        Some((&id, &token)),
        &format!("http://127.0.0.1:{}/echo-auth", s.http.port),
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&body), "none");
    let report = s.report(&id, &token).await.to_string();
    assert!(
        !report.contains("s3cret") && !report.contains(&expected["Basic ".len()..]),
        "{report}"
    );
}

#[tokio::test]
async fn plain_requests_reuse_one_connection_with_per_request_auth() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let a = format!("http://127.0.0.1:{}/pool/a.deb", s.http.port);
    let b = format!("http://127.0.0.1:{}/pool/b.whl", s.http.port);
    // One curl, two URLs: the second request goes over the kept-alive connection.
    let out = Command::new("curl")
        .args(["-sS", "-v", "-o", "/dev/null", "-o", "/dev/null", "--proxy"])
        .arg(format!(
            "http://{id}:{token}@127.0.0.1:{}",
            s.d.opts.proxy_port
        ))
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(out.status.success());
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("Re-using existing connection") || verbose.contains("Reusing existing"),
        "{verbose}"
    );
    let report = s.report(&id, &token).await;
    assert_eq!(
        report["artifacts"].as_array().unwrap().len(),
        2,
        "{report:#}"
    );
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_slow_20_mib_download_streams_without_buffering() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    // Warm up the pipeline so the measurement sees steady state, not first-use growth.
    s.curl(
        Some((&id, &token)),
        &format!("http://127.0.0.1:{}/pool/b.whl", s.http.port),
        &[],
    );
    let before = peak_rss_kib(s.d.pid());
    let total = 20 * 1024 * 1024;
    // 320 chunks of 64 KiB, 15 ms apart: about five seconds at the origin.
    let url = format!("https://localhost:{}/slow/{total}?ms=15", s.https.port);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download}",
        ])
        .arg("--proxy")
        .arg(format!(
            "http://{id}:{token}@127.0.0.1:{}",
            s.d.opts.proxy_port
        ))
        .arg("--cacert")
        .arg(s.ca())
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = w.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let (first_byte, whole, size) = (v[0], v[1], v[2] as usize);
    assert_eq!(size, total);
    assert!(
        first_byte < whole / 2.0,
        "first byte after {first_byte}s of {whole}s: the proxy buffered"
    );
    let grown_kib = peak_rss_kib(s.d.pid()).saturating_sub(before);
    assert!(
        grown_kib < 12 * 1024,
        "peak RSS grew by {grown_kib} KiB while streaming 20 MiB"
    );
    let report = s.report(&id, &token).await;
    let expected: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        artifact(&report, &sha256_hex(&expected))["metadata"]["size"],
        total
    );
}

#[tokio::test]
async fn every_download_a_client_completed_survives_kill_9() {
    let Setup {
        dir,
        d,
        http,
        https: _https,
        files,
    } = setup().await;
    let (id, token) = d.create(json!({"policy": "permissive"})).await;
    let proxy = format!("http://{id}:{token}@127.0.0.1:{}", d.opts.proxy_port);
    let url = format!("http://127.0.0.1:{}/pool/a.deb", http.port);
    let a = std::fs::read(files.join("pool/a.deb")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (proxy, url, stop, out) = (
                proxy.clone(),
                url.clone(),
                stop.clone(),
                dir.path().join(format!("burst-{w}")),
            );
            let expected = a.len();
            std::thread::spawn(move || {
                let mut completed = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let ok = Command::new("curl")
                        .args(["-sS", "--fail", "--max-time", "10", "--proxy", &proxy, "-o"])
                        .arg(&out)
                        .arg(&url)
                        .output()
                        .map(|o| o.status.success())
                        .unwrap_or(false);
                    if !ok {
                        break;
                    }
                    assert_eq!(std::fs::metadata(&out).unwrap().len() as usize, expected);
                    completed += 1;
                }
                completed
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let opts = d.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let completed: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(completed > 0, "no download completed before the kill");

    let d = opts.start().await;
    assert_eq!(d.revoke(&id, &token).await.status(), 200);
    let report: Value = d.get_json(&format!("/session/{id}")).await;
    let recorded = artifact(&report, &sha256_hex(&a))["downloads"]
        .as_array()
        .unwrap()
        .len() as u32;
    assert!(
        recorded >= completed,
        "clients completed {completed} downloads, the report has {recorded}"
    );
}

#[tokio::test]
async fn pip_downloads_from_a_simple_index_over_https() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/simple_index.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&s.files)
        .args(["fetchgate-demo", "1.0.0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel_name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dest = s.dir.path().join("pip-dest");
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--isolated",
        ])
        .args([
            "--index-url",
            &format!("https://localhost:{}/simple/", s.https.port),
        ])
        .args([
            "--proxy",
            &format!("http://{id}:{token}@127.0.0.1:{}", s.d.opts.proxy_port),
        ])
        .arg("--cert")
        .arg(s.ca())
        .arg("--dest")
        .arg(&dest)
        .arg("fetchgate-demo==1.0.0")
        // Only what the test sets: CA bundles in the environment (REQUESTS_CA_BUNDLE ...)
        // would override --cert, and pip config could add side traffic.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", s.dir.path())
        .env("PIP_CONFIG_FILE", "/dev/null")
        .envs(std::env::var_os("PYENV_ROOT").map(|v| ("PYENV_ROOT", v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel = std::fs::read(dest.join(&wheel_name)).unwrap();
    let report = s.report(&id, &token).await;
    let art = artifact(&report, &sha256_hex(&wheel));
    assert_eq!(art["metadata"]["size"], wheel.len());
    let url = art["downloads"][0]["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://localhost:{}/packages/{wheel_name}", s.https.port)
    );
    // The index page pip read is in the report too.
    let urls: Vec<String> = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| {
            a["downloads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["url"].as_str().unwrap().to_owned())
        })
        .collect();
    assert!(
        urls.contains(&format!(
            "https://localhost:{}/simple/fetchgate-demo/",
            s.https.port
        )),
        "{urls:?}"
    );
}

#[tokio::test]
async fn a_silent_origin_times_out_and_an_aborted_download_is_recorded() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    // An origin that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (_, code, _) = s.curl(
        Some((&id, &token)),
        &format!("http://127.0.0.1:{silent_port}/never"),
        &[],
    );
    assert_eq!(code, 504, "read-timeout is 5 s in this setup");
    // A client that gives up half way through a slow download.
    let slow = format!("http://127.0.0.1:{}/slow/4194304?ms=100", s.http.port);
    let (rc, _, _) = s.curl(Some((&id, &token)), &slow, &["--max-time", "1"]);
    assert_ne!(rc, 0, "curl was meant to give up");
    // The abort is recorded once the proxy notices, when it next writes to the client.
    let mut stages = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let v: Value = s.d.get_json("/sessions").await;
        if v["sessions"][0]["downloads"] == 2 {
            break;
        }
    }
    let report = s.report(&id, &token).await;
    for a in report["artifacts"].as_array().unwrap() {
        for d in a["downloads"].as_array().unwrap() {
            stages.push((
                d["url"].as_str().unwrap().to_owned(),
                d["error"]["stage"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    assert_eq!(stages.len(), 2, "{report:#}");
    assert_eq!(stages[0].1, "upstream-timeout");
    assert_eq!(stages[1], (slow, "client-abort".to_owned()));
    drop(silent);
}

#[tokio::test]
async fn connection_and_per_session_limits_answer_503() {
    let s = setup_with("max-connections = 2\nmax-requests-per-session = 1").await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let small = format!("http://127.0.0.1:{}/pool/b.whl", s.http.port);

    // One slow download holds the session's only place.
    let slow = format!("http://127.0.0.1:{}/slow/2097152?ms=100", s.http.port);
    let proxy = format!("http://{id}:{token}@127.0.0.1:{}", s.d.opts.proxy_port);
    let mut holder = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--proxy", &proxy, &slow])
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, code, body) = s.curl(Some((&id, &token)), &small, &[]);
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("in flight"));
    assert!(holder.wait().unwrap().success());

    // With both connections taken (by clients that say nothing), the next one is refused.
    // The connections above are closed; give the proxy a moment to notice.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.d.opts.proxy_port)).unwrap())
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let headers = s.dir.path().join("refused-headers");
    let dump = headers.display().to_string();
    let (_, code, body) = s.curl(Some((&id, &token)), &small, &["-D", &dump]);
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("too many connections"));
    // Refused before a request was read, so in no report: Proxy-Status says so.
    let head = std::fs::read_to_string(&headers).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-status: fetchgate; error=connection_limit_reached"),
        "{head}"
    );
    drop(idle);

    let report = s.report(&id, &token).await;
    let limited: Vec<&Value> = downloads(&report)
        .into_iter()
        .filter(|d| d["status-code"] == 503)
        .collect();
    assert_eq!(
        limited.len(),
        1,
        "the per-session refusal is recorded: {report:#}"
    );
    assert_eq!(limited[0]["error"]["stage"], "limit");
}

#[tokio::test]
async fn git_clone_over_smart_https_is_recorded() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let home = s.dir.path().join("git-home");
    common::bare_repository(&s.files, &home, "demo.git", "fetched through fetchgate\n");
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr))
    };

    let url = format!("https://localhost:{}/git/demo.git", s.https.port);
    let proxy = format!(
        "http.proxy=http://{id}:{token}@127.0.0.1:{}",
        s.d.opts.proxy_port
    );
    let ca = format!("http.sslCAInfo={}", s.ca().display());
    ok(common::git(
        s.dir.path(),
        &home,
        &["-c", &proxy, "-c", &ca, "clone", "-q", &url, "cloned"],
    ));
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("cloned/README")).unwrap(),
        "fetched through fetchgate\n"
    );

    let report = s.report(&id, &token).await;
    let requests: Vec<(String, String)> = downloads(&report)
        .into_iter()
        .map(|d| {
            (
                d["method"].as_str().unwrap().to_owned(),
                d["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        requests.contains(&(
            "GET".into(),
            format!("{url}/info/refs?service=git-upload-pack")
        )),
        "{requests:?}"
    );
    assert!(
        requests.contains(&("POST".into(), format!("{url}/git-upload-pack"))),
        "{requests:?}"
    );
}

/// Builds `hello-fetchgate_1.0_all.deb` and an unsigned apt repository
/// (`dists/stable/main/binary-all/Packages`, `Release`) under `root`; returns the .deb bytes.
fn apt_repository(root: &Path) -> Vec<u8> {
    let pkg = root.join("build/hello-fetchgate");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/doc/hello-fetchgate")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: hello-fetchgate\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test package\n",
    )
    .unwrap();
    std::fs::write(pkg.join("usr/share/doc/hello-fetchgate/README"), "hello\n").unwrap();
    let pool = root.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    let deb_path = pool.join("hello-fetchgate_1.0_all.deb");
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(&deb_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read(&deb_path).unwrap();
    let packages = format!(
        "Package: hello-fetchgate\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nFilename: pool/main/hello-fetchgate_1.0_all.deb\nSize: {}\nSHA256: {}\nDescription: test package\n\n",
        deb.len(),
        sha256_hex(&deb)
    );
    let dist = root.join("dists/stable");
    std::fs::create_dir_all(dist.join("main/binary-all")).unwrap();
    std::fs::write(dist.join("main/binary-all/Packages"), &packages).unwrap();
    let release = format!(
        "Suite: stable\nCodename: stable\nArchitectures: all amd64\nComponents: main\nSHA256:\n {} {} main/binary-all/Packages\n",
        sha256_hex(packages.as_bytes()),
        packages.len()
    );
    std::fs::write(dist.join("Release"), release).unwrap();
    deb
}

#[tokio::test]
async fn apt_get_download_through_the_proxy_is_recorded() {
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let deb = apt_repository(&s.files.join("debian"));
    // apt with private state, lists and sources: nothing of the machine's own apt is used.
    let apt = s.dir.path().join("apt");
    for d in [
        "etc/apt.conf.d",
        "etc/preferences.d",
        "state/lists/partial",
        "cache/archives/partial",
        "out",
    ] {
        std::fs::create_dir_all(apt.join(d)).unwrap();
    }
    std::fs::write(
        apt.join("etc/sources.list"),
        format!(
            "deb [trusted=yes arch=amd64] http://127.0.0.1:{}/debian stable main\n",
            s.http.port
        ),
    )
    .unwrap();
    std::fs::write(apt.join("state/status"), "").unwrap();
    let opts = [
        format!("Dir::Etc={}", apt.join("etc").display()),
        format!(
            "Dir::Etc::SourceList={}",
            apt.join("etc/sources.list").display()
        ),
        "Dir::Etc::SourceParts=/nonexistent".to_owned(),
        format!("Dir::State={}", apt.join("state").display()),
        format!("Dir::State::status={}", apt.join("state/status").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "APT::Sandbox::User=root".to_owned(),
        "APT::Architecture=amd64".to_owned(),
        "APT::Architectures=amd64,all".to_owned(),
        "Acquire::Languages=none".to_owned(),
        "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".to_owned(),
        format!(
            "Acquire::http::Proxy=http://{id}:{token}@127.0.0.1:{}",
            s.d.opts.proxy_port
        ),
    ];
    let apt_get = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(apt.join("out"));
        for o in &opts {
            cmd.arg("-o").arg(o);
        }
        let out = cmd
            .args(args)
            .env("APT_CONFIG", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apt-get {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    apt_get(&["-q", "update"]);
    apt_get(&["-q", "download", "hello-fetchgate"]);
    assert_eq!(
        std::fs::read(apt.join("out/hello-fetchgate_1.0_all.deb")).unwrap(),
        deb
    );

    let report = s.report(&id, &token).await;
    let art = artifact(&report, &sha256_hex(&deb));
    assert_eq!(
        art["downloads"][0]["url"],
        format!(
            "http://127.0.0.1:{}/debian/pool/main/hello-fetchgate_1.0_all.deb",
            s.http.port
        )
        .as_str()
    );
    let urls = report.to_string();
    assert!(
        urls.contains("/debian/dists/stable/InRelease")
            || urls.contains("/debian/dists/stable/Release"),
        "{report:#}"
    );
}

#[tokio::test]
async fn a_request_for_another_scheme_is_400_and_recorded() {
    use base64::Engine;
    use std::io::{Read, Write};
    let s = setup().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.d.opts.proxy_port)).unwrap();
    write!(
        conn,
        "GET ftp://127.0.0.1:21/pub/file HTTP/1.1\r\nHost: 127.0.0.1:21\r\nProxy-Authorization: Basic {creds}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("only http://"), "{response}");
    let report = s.report(&id, &token).await;
    let d = &report["artifacts"][0]["downloads"][0];
    assert_eq!(d["url"], "ftp://127.0.0.1:21/pub/file");
    assert_eq!(d["status-code"], 400);
    assert_eq!(d["error"]["stage"], "request");
}

/// An origin answering every request with a 2-byte body after 300 ms, over kept-alive
/// connections, and counting the connections it accepted.
async fn counting_origin() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn upstream_connections_are_kept_for_reuse_as_many_as_the_pool_holds() {
    use std::sync::atomic::Ordering;
    // Two waves of three builders at once: the first opens three upstream connections,
    // and the second reuses as many of them as the pool kept. With a pool of one, the
    // second wave opens two (five in all), or sometimes one (seen once in CI): when the
    // three connections come back at once, Pingora's pool can evict one before it is
    // filed and close it only when its idle watcher runs, so the next request may still
    // take it.
    for (proxy_toml, connections) in [("", 3..=3), ("upstream-keepalive-pool = 1", 4..=5)] {
        let s = setup_with(proxy_toml).await;
        let (port, accepted) = counting_origin().await;
        let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
        for wave in 0..2 {
            let get = |i| {
                let url = format!("http://127.0.0.1:{port}/w{wave}/r{i}");
                let (d, id, token) = (&s.d, &id, &token);
                async move { d.proxy_get(&url, Some((id, token))).await }
            };
            let statuses = tokio::join!(get(0), get(1), get(2));
            assert_eq!(statuses, (200, 200, 200));
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!(
            connections.contains(&opened),
            "{opened} upstream connections opened with [proxy] {proxy_toml:?}, expected {connections:?}"
        );
    }
}

#[tokio::test]
async fn an_upstream_connection_idle_longer_than_idle_timeout_is_closed_not_reused() {
    use std::sync::atomic::Ordering;
    let s = setup_with("idle-timeout = 1").await;
    let (port, accepted) = counting_origin().await;
    let (id, token) = s.d.create(json!({"policy": "permissive"})).await;
    let get = |i: usize| {
        let url = format!("http://127.0.0.1:{port}/r{i}");
        let (d, id, token) = (&s.d, &id, &token);
        async move { d.proxy_get(&url, Some((id, token))).await }
    };
    assert_eq!(get(0).await, 200);
    assert_eq!(get(1).await, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "reused within the timeout"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(get(2).await, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a connection idle past idle-timeout was reused"
    );
}
