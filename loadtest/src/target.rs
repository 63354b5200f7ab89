//! What the builders send their traffic to: nothing (direct to the origin, the machine's
//! ceiling), a fetchgate the harness starts itself (private spool and config dir, free
//! loopback ports, a controlled environment, the origin's CA as its extra upstream
//! root), a fetchgate already running, or any plain HTTP forward proxy such as squid
//! (no sessions: the same fetch traffic without the control API steps).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Route;
use crate::control::{ControlClient, SessionCredentials};
use crate::procstat::{self, Usage};

/// How to reach (or start) the system under test.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// No proxy: builders talk to the origin.
    Direct,
    /// Start the fetchgate binary at this path, with these extra arguments.
    Spawn {
        binary: PathBuf,
        extra_args: Vec<String>,
    },
    /// A running fetchgate.
    Fetchgate {
        proxy: SocketAddr,
        control: SocketAddr,
        user: String,
        password: String,
        ca: PathBuf,
        pids: Vec<u32>,
    },
    /// A plain forward proxy; `ca` is its interception CA if it bumps TLS.
    Proxy {
        addr: SocketAddr,
        ca: Option<PathBuf>,
        pids: Vec<u32>,
    },
}

/// Why the target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot prepare fetchgate's directories: {0}")]
    Setup(std::io::Error),
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("fetchgate exited ({status}) before it was ready; its log ends with:\n{log}")]
    Exited { status: String, log: String },
    #[error("fetchgate's control API did not answer within {0:?}; its log ends with:\n{1}")]
    NotReady(Duration, String),
}

/// How many times a spawned fetchgate is started on fresh ports when one was taken.
const PORT_ATTEMPTS: u32 = 3;

/// How long a started fetchgate may take to answer `GET /status`.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// A target ready for traffic.
pub struct Target {
    proxy: Option<SocketAddr>,
    control: Option<ControlClient>,
    ca: Option<PathBuf>,
    pids: Vec<u32>,
    spawned: Option<Spawned>,
}

impl Target {
    /// Prepares the target; a spawned fetchgate trusts `origin_ca` upstream.
    pub async fn start(spec: &TargetSpec, origin_ca: &Path) -> Result<Target, TargetError> {
        Ok(match spec {
            TargetSpec::Direct => Target {
                proxy: None,
                control: None,
                ca: None,
                pids: vec![],
                spawned: None,
            },
            TargetSpec::Spawn { binary, extra_args } => {
                // The ports are free when picked but another process may bind one before
                // fetchgate does; that costs a retry with fresh ports, not the run.
                let mut attempt = 1;
                let (spawned, control) = loop {
                    let mut spawned = Spawned::start(binary, extra_args, origin_ca)?;
                    let control =
                        ControlClient::new(spawned.control, "loadtest", &spawned.password);
                    match spawned.wait_ready(&control).await {
                        Ok(()) => break (spawned, control),
                        Err(TargetError::Exited { log, .. })
                            if attempt < PORT_ATTEMPTS
                                && log.contains("bind: address already in use") =>
                        {
                            attempt += 1;
                        }
                        Err(e) => return Err(e),
                    }
                };
                Target {
                    proxy: Some(spawned.proxy),
                    control: Some(control),
                    ca: Some(spawned.dir.path().join("spool/ca/fetchgate-ca.pem")),
                    pids: vec![spawned.child.id()],
                    spawned: Some(spawned),
                }
            }
            TargetSpec::Fetchgate {
                proxy,
                control,
                user,
                password,
                ca,
                pids,
            } => Target {
                proxy: Some(*proxy),
                control: Some(ControlClient::new(*control, user, password)),
                ca: Some(ca.clone()),
                pids: pids.clone(),
                spawned: None,
            },
            TargetSpec::Proxy { addr, ca, pids } => Target {
                proxy: Some(*addr),
                control: None,
                ca: ca.clone(),
                pids: pids.clone(),
                spawned: None,
            },
        })
    }

    /// The control API, when the target has sessions.
    pub fn control(&self) -> Option<&ControlClient> {
        self.control.as_ref()
    }

    /// The route for a builder, authenticated as `session` if there is one.
    pub fn route(&self, session: Option<&SessionCredentials>) -> Route {
        match (self.proxy, session) {
            (None, _) => Route::Direct,
            (Some(addr), Some(s)) => Route::proxy_with_basic(addr, &s.id, &s.token),
            (Some(addr), None) => Route::Proxy {
                addr,
                authorization: None,
            },
        }
    }

    /// The CA builders trust for HTTPS: the proxy's interception CA, or the origin's
    /// when nothing intercepts.
    pub fn trusted_ca<'a>(&'a self, origin_ca: &'a Path) -> &'a Path {
        self.ca.as_deref().unwrap_or(origin_ca)
    }

    /// The proxy's memory and CPU so far, when its processes are known.
    pub fn usage(&self) -> Option<Usage> {
        if self.pids.is_empty() {
            return None;
        }
        procstat::usage(&self.pids).ok()
    }

    /// Stops a fetchgate the harness started (SIGTERM, then SIGKILL after 2 s).
    pub fn stop(mut self) {
        if let Some(s) = self.spawned.take() {
            s.stop();
        }
    }
}

/// A fetchgate process started by the harness, with its private directory.
struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    control: SocketAddr,
    password: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(hex::encode(bytes))
}

impl Spawned {
    fn start(
        binary: &Path,
        extra_args: &[String],
        origin_ca: &Path,
    ) -> Result<Spawned, TargetError> {
        let dir = tempfile::Builder::new()
            .prefix("fetchgate-loadtest.")
            .tempdir()
            .map_err(TargetError::Setup)?;
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).map_err(TargetError::Setup)?;
        // A TOML basic string: escape backslashes and quotes of the path.
        let ca = origin_ca
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        std::fs::write(
            config.join("fetchgate.toml"),
            format!("[proxy]\nupstream-ca-file = \"{ca}\"\n"),
        )
        .map_err(TargetError::Setup)?;
        let password = random_hex().map_err(TargetError::Setup)?;
        let proxy_port = free_port().map_err(TargetError::Setup)?;
        let mut control_port = free_port().map_err(TargetError::Setup)?;
        while control_port == proxy_port {
            control_port = free_port().map_err(TargetError::Setup)?;
        }
        let stderr =
            std::fs::File::create(dir.path().join("stderr.log")).map_err(TargetError::Setup)?;
        // Nothing from our environment: no proxy variables, no CA bundle overrides.
        let child = Command::new(binary)
            .env_clear()
            .env("FETCH_SERVICE_AUTH", format!("loadtest:{password}"))
            .arg(format!("--control-port={control_port}"))
            .arg(format!("--proxy-port={proxy_port}"))
            .arg("--bind=127.0.0.1")
            .arg(format!("--config={}", config.display()))
            .arg(format!("--spool={}", dir.path().join("spool").display()))
            .arg(format!(
                "--log-file={}",
                dir.path().join("fetchgate.log").display()
            ))
            .arg("--permissive-mode")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| TargetError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        Ok(Spawned {
            child,
            dir,
            proxy: SocketAddr::from((Ipv4Addr::LOCALHOST, proxy_port)),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, control_port)),
            password,
        })
    }

    /// The last lines of its log file and of its stderr (argument errors land there).
    fn log_tail(&self) -> String {
        let mut tail = String::new();
        for file in ["fetchgate.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(20)..] {
                tail.push_str(line);
                tail.push('\n');
            }
        }
        tail
    }

    async fn wait_ready(&mut self, control: &ControlClient) -> Result<(), TargetError> {
        let started = Instant::now();
        while !control.ready().await {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TargetError::Exited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if started.elapsed() > READY_LIMIT {
                return Err(TargetError::NotReady(READY_LIMIT, self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
