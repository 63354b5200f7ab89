//! Test harness: starts the real `fetchgate` binary on free loopback ports with a
//! private spool, the way craft-application starts it, and talks to it over HTTP.
#![allow(dead_code)] // each test crate uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{Value, json};

pub const AUTH: (&str, &str) = ("craft", "craft");

/// Runs a command, failing the test (with its stderr) if it cannot run or fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run ({e}): run scripts/test.sh to install it"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails the test with a client's output unless it succeeded.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Runs git with only the given configuration (no user or system config, no CA bundle
/// from the environment), `home` as its home.
pub fn git(dir: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git")
}

/// Creates the bare repository `<root>/<name>` with one commit on `main` (a README
/// holding `readme`), made in a scratch clone under `home`; returns the commit id.
pub fn bare_repository(root: &Path, home: &Path, name: &str, readme: &str) -> String {
    let work = home.join(format!("work-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    ok(git(root, home, &["init", "-q", "--bare", name]));
    ok(git(&work, home, &["init", "-q", "-b", "main"]));
    std::fs::write(work.join("README"), readme).unwrap();
    ok(git(&work, home, &["add", "README"]));
    let identity = ["-c", "user.name=t", "-c", "user.email=t@example.org"];
    ok(git(
        &work,
        home,
        &[&identity[..], &["commit", "-q", "-m", "first"]].concat(),
    ));
    let bare = root.join(name);
    ok(git(
        &work,
        home,
        &["push", "-q", &bare.display().to_string(), "main"],
    ));
    ok(git(
        &bare,
        home,
        &["symbolic-ref", "HEAD", "refs/heads/main"],
    ));
    ok(git(&work, home, &["rev-parse", "HEAD"]))
        .trim()
        .to_owned()
}

/// The artifact of a report downloaded from a URL ending with `url_end` (its first
/// download's URL).
pub fn artifact<'a>(report: &'a Value, url_end: &str) -> &'a Value {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["downloads"][0]["url"]
                .as_str()
                .is_some_and(|u| u.ends_with(url_end))
        })
        .unwrap_or_else(|| panic!("no artifact from …{url_end} in {report:#}"))
}

/// Asserts that a strict session cut off the artifact downloaded from `url_end`: it is
/// `content` (what the origin served), `Rejected`, `inspector`'s reason contains
/// `reason`, and its download failed at stage `policy`.
pub fn assert_cut_off(
    report: &Value,
    url_end: &str,
    content: &[u8],
    inspector: &str,
    reason: &str,
) {
    let a = artifact(report, url_end);
    assert_eq!(a["result"], "Rejected", "{a:#}");
    assert_eq!(a["metadata"]["sha256"], sha256_hex(content), "{a:#}");
    let got = a["response-inspection"][inspector]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(got.contains(reason), "{a:#}");
    assert_eq!(a["downloads"][0]["error"]["stage"], "policy", "{a:#}");
}

/// What a test built to serve (a package index, a registry): where its files are.
pub trait Tree {
    fn root(&self) -> &Path;
}

/// A temporary directory, the files a test built there, the local HTTPS origin serving
/// them and a daemon trusting that origin.
pub struct Served<T> {
    pub dir: tempfile::TempDir,
    pub files: T,
    pub origin: Origin,
    pub d: Daemon,
}

/// Builds the files in a new temporary directory with `build`, serves them over HTTPS
/// and starts a daemon with `inspectors_yaml(origin base URL)` (see [`trusted_origin`]).
pub async fn serve_trusted<T: Tree>(
    build: impl FnOnce(&Path) -> T,
    inspectors_yaml: impl FnOnce(&str) -> String,
) -> Served<T> {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    let (origin, d) = trusted_origin(dir.path(), files.root(), true, "", inspectors_yaml).await;
    Served {
        dir,
        files,
        origin,
        d,
    }
}

/// A local origin serving `files` (over HTTPS with its own test CA when `tls`) and a
/// daemon trusting it: the origin's CA upstream, `inspectors_yaml(origin base URL)` as
/// its `inspectors.yaml`, `more_toml` appended to its `fetchgate.toml`, permissive
/// sessions allowed.
pub async fn trusted_origin(
    dir: &Path,
    files: &Path,
    tls: bool,
    more_toml: &str,
    inspectors_yaml: impl FnOnce(&str) -> String,
) -> (Origin, Daemon) {
    trusted_origin_at(
        ("127.0.0.1", 0),
        dir,
        files,
        tls,
        more_toml,
        inspectors_yaml,
    )
    .await
}

/// A name of the origin's leaf certificate that is not `localhost` (the go command
/// never sends requests for `localhost` or a loopback address through a proxy); the
/// test script maps it to [`GO_ADDRESS`] in `/etc/hosts`.
pub const GO_HOST: &str = "go.fetchgate.test";
/// Where [`GO_HOST`] points.
pub const GO_ADDRESS: &str = "127.0.0.77";

/// [`trusted_origin`] with the origin listening on this address and port.
pub async fn trusted_origin_at(
    (bind, port): (&str, u16),
    dir: &Path,
    files: &Path,
    tls: bool,
    more_toml: &str,
    inspectors_yaml: impl FnOnce(&str) -> String,
) -> (Origin, Daemon) {
    let (origin_ca, leaf, leaf_key) = origin_pki(dir, "origin");
    let origin = Origin::start_at(bind, port, files, tls.then_some((&*leaf, &*leaf_key)));
    let d = DaemonOpts::new(dir)
        .config_toml(&format!(
            "[proxy]\nupstream-ca-file = \"{}\"\n{more_toml}",
            origin_ca.display()
        ))
        .config_file("inspectors.yaml", &inspectors_yaml(&origin.base()))
        .arg("--permissive-mode")
        .start()
        .await;
    (origin, d)
}

/// Runs `openssl` in `dir` and fails the test if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a leaf for 127.0.0.1/localhost signed by it; returns (ca, leaf, key).
pub fn origin_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let leaf = format!("{name}.pem");
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &ca_key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
        ],
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName=DNS:localhost,DNS:{GO_HOST},IP:127.0.0.1\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &leaf,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(ca), dir.join(leaf), dir.join(key))
}

/// A loopback port nobody listens on right now, for a daemon to bind a moment later.
///
/// Ports come from below the kernel's ephemeral range (32768 and up on Linux), so no
/// outgoing connection of any test can be given the port in that moment, as happened
/// with `bind(0)`. A counter seeded by the process id keeps parallel tests of one
/// binary, and consecutive test binaries, on different ports.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive loopback ports nobody listens on right now, handed out
/// together so that no other caller in this process gets one of them.
pub fn free_ports(n: u16) -> u16 {
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let first = NEXT.fetch_add(u32::from(n), Ordering::Relaxed) % SPAN;
        if first + u32::from(n) > SPAN {
            continue;
        }
        let base = (FIRST + first) as u16;
        if (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!(
        "no {n} free loopback ports between {FIRST} and {}",
        FIRST + SPAN
    );
}

/// A local origin server (`tests/support/origin.py`); killed when dropped.
pub struct Origin {
    child: Child,
    pub port: u16,
    tls: bool,
}

impl Origin {
    /// Serves `files` on 127.0.0.1, over HTTPS with this leaf and key when given.
    pub fn start(files: &Path, tls: Option<(&Path, &Path)>) -> Origin {
        Origin::start_on("127.0.0.1", files, tls)
    }

    /// An origin listening on another loopback address (`127.0.0.x`).
    pub fn start_on(bind: &str, files: &Path, tls: Option<(&Path, &Path)>) -> Origin {
        Origin::start_at(bind, 0, files, tls)
    }

    /// An origin listening on this address and port (0: any free one).
    pub fn start_at(bind: &str, port: u16, files: &Path, tls: Option<(&Path, &Path)>) -> Origin {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/origin.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--bind", bind, "--port", &port.to_string()])
            .arg("--dir")
            .arg(files)
            .arg("--git-root")
            .arg(files);
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("origin said {line:?}"));
        Origin {
            child,
            port,
            tls: tls.is_some(),
        }
    }

    /// `http://127.0.0.1:<port>/`, or `https://localhost:<port>/` (the leaf's name).
    pub fn base(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/", self.port)
        } else {
            format!("http://127.0.0.1:{}/", self.port)
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start a daemon.
#[derive(Clone)]
pub struct DaemonOpts {
    pub spool: PathBuf,
    pub config: PathBuf,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub control_port: u16,
    pub proxy_port: u16,
    /// Start as `fetchgate serve ...` instead of the bare reference form.
    pub serve_subcommand: bool,
}

impl DaemonOpts {
    /// Defaults inside `dir`: craft's credentials, fresh ports, a log file.
    pub fn new(dir: &Path) -> Self {
        let spool = dir.join("spool");
        let config = dir.join("config");
        std::fs::create_dir_all(&config).unwrap();
        DaemonOpts {
            spool,
            config,
            extra_args: vec![],
            env: vec![("FETCH_SERVICE_AUTH".into(), "craft:craft".into())],
            control_port: free_port(),
            proxy_port: free_port(),
            serve_subcommand: false,
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra_args.push(a.to_owned());
        self
    }

    /// Writes `fetchgate.toml` in the config dir.
    pub fn config_toml(self, text: &str) -> Self {
        self.config_file("fetchgate.toml", text)
    }

    /// Writes a file (`acl.yaml`, ...) in the config dir.
    pub fn config_file(self, name: &str, text: &str) -> Self {
        std::fs::write(self.config.join(name), text).unwrap();
        self
    }

    /// Adds a variable to the daemon's environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn log_path(&self) -> PathBuf {
        self.spool.parent().unwrap().join("fetchgate.log")
    }

    /// The command line, as craft passes it (`--flag=value`), with an environment
    /// holding nothing but the given variables (no PATH, no HOME).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fetchgate"));
        if self.serve_subcommand {
            cmd.arg("serve");
        }
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg(format!("--control-port={}", self.control_port))
            .arg(format!("--proxy-port={}", self.proxy_port))
            .arg("--bind=127.0.0.1")
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--spool={}", self.spool.display()))
            .arg(format!("--log-file={}", self.log_path().display()))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the daemon and waits until `/status` answers.
    pub async fn start(self) -> Daemon {
        let child = self.command().spawn().expect("spawn fetchgate");
        let mut d = Daemon {
            child: Some(child),
            opts: self,
            client: Client::builder().no_proxy().build().unwrap(),
        };
        d.wait_ready().await;
        d
    }
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub opts: DaemonOpts,
    pub client: Client,
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.opts.control_port, path)
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.url("/status")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "fetchgate exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "fetchgate not ready after 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.opts.log_path()).unwrap_or_default()
    }

    /// A request with the control credentials.
    pub fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .basic_auth(AUTH.0, Some(AUTH.1))
    }

    /// `GET path` with the control credentials, expecting JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.authed(Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// `GET /metrics` (no credentials), as text.
    pub async fn metrics_text(&self) -> String {
        let r = self.anon(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// A series' value in `/metrics` (`name` or `name{labels}`), if it is there.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    }

    /// `fetchgate_verified_cache_total` of this kind and result (0 before the first).
    pub async fn verified_cache(&self, kind: &str, result: &str) -> f64 {
        let series =
            format!("fetchgate_verified_cache_total{{kind=\"{kind}\",result=\"{result}\"}}");
        self.metric(&series).await.unwrap_or(0.0)
    }

    /// The proxy URL with a session's credentials.
    pub fn proxy_url(&self, id: &str, token: &str) -> String {
        format!("http://{id}:{token}@127.0.0.1:{}", self.opts.proxy_port)
    }

    /// The CA that signs intercepted HTTPS (clients trust it).
    pub fn ca_file(&self) -> PathBuf {
        self.opts.spool.join("ca/fetchgate-ca.pem")
    }

    /// curl through the proxy with a session's credentials, trusting the daemon's CA,
    /// the body saved under `dir`; returns (exit code, HTTP status, body).
    pub fn curl(
        &self,
        session: (&str, &str),
        url: &str,
        dir: &Path,
        extra: &[&str],
    ) -> (i32, u16, Vec<u8>) {
        let out_file = dir.join("curl-out");
        let _ = std::fs::remove_file(&out_file);
        let out = Command::new("curl")
            .env_clear()
            .args(["-s", "-o"])
            .arg(&out_file)
            .arg("--cacert")
            .arg(self.ca_file())
            .args([
                "-w",
                "%{http_code}",
                "--proxy",
                &self.proxy_url(session.0, session.1),
                url,
            ])
            .args(extra)
            .output()
            .expect("curl is installed");
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let body = std::fs::read(&out_file).unwrap_or_default();
        (out.status.code().unwrap_or(-1), code, body)
    }

    /// Revokes the session's token and returns its report.
    pub async fn report(&self, id: &str, token: &str) -> Value {
        assert_eq!(self.revoke(id, token).await.status(), 200);
        self.get_json(&format!("/session/{id}")).await
    }

    /// Creates a session; returns (id, token).
    pub async fn create(&self, body: Value) -> (String, String) {
        let r = self
            .authed(Method::POST, "/session")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn revoke(&self, id: &str, token: &str) -> Response {
        self.anon(Method::DELETE, &format!("/session/{id}/token"))
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap()
    }

    /// Sends one absolute-form `GET` through the proxy, with `id:token` as proxy
    /// credentials when given, and returns the status code.
    pub async fn proxy_get(&self, url: &str, credentials: Option<(&str, &str)>) -> u16 {
        use base64::Engine;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.opts.proxy_port))
            .await
            .unwrap();
        let host = url.split('/').nth(2).unwrap();
        let mut head = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let Some((id, token)) = credentials {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"));
            head.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        text.split(' ').nth(1).unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9` and reap; returns the options to start it again on the same spool.
    pub fn kill9(mut self) -> DaemonOpts {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let mut opts = self.opts.clone();
        opts.control_port = free_port();
        opts.proxy_port = free_port();
        opts
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
