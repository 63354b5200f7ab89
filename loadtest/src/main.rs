//! `fetchgate-loadtest`: the command line over the harness library. It parses and
//! checks the arguments, raises the open-files limit, runs one scenario and prints
//! its table (and JSON, when asked).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fetchgate_loadtest::apt_repo;
use fetchgate_loadtest::client::ConnMode;
use fetchgate_loadtest::completions::CompletionLog;
use fetchgate_loadtest::content::{index_pages, load_files};
use fetchgate_loadtest::harness::Harness;
use fetchgate_loadtest::origin::OriginBehaviour;
use fetchgate_loadtest::progress::Progress;
use fetchgate_loadtest::stats::Live;
use fetchgate_loadtest::target::TargetSpec;
use fetchgate_loadtest::tls::OriginPki;
use fetchgate_loadtest::units::parse_size;
use fetchgate_loadtest::workload::{self, Mix, ObjectSize, SchemeMix, Workload};
use fetchgate_loadtest::{idle, revocation};

/// mimalloc, as the daemon uses: the harness shares the cores with the proxy under test,
/// and glibc's allocator was a sixth of its CPU at 1 KiB objects (report JSON, request
/// heads, histograms), taken from whichever proxy it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fetchgate-loadtest",
    version,
    about = "Load-test fetchgate (or any forward proxy) with simulated builders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulated builders running complete sessions (or plain fetches through a proxy).
    Run(RunArgs),
    /// N idle keep-alive connections through the proxy: memory per connection.
    Idle(IdleArgs),
    /// HA pair: revoke tokens through one node's control API (--control) and time how
    /// long another node's proxy (--proxy) keeps accepting them.
    Revocation(RevocationArgs),
    /// Create (or keep) the origin's test CA in DIR and print its certificate's path,
    /// for configuring a proxy to trust the origin before a run.
    OriginCa {
        /// Directory for origin-ca.pem and origin-ca.key.pem.
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    /// No proxy: the machine's ceiling.
    Direct,
    /// Start fetchgate from --fetchgate-bin.
    Spawn,
    /// A running fetchgate: --proxy, --control, --control-auth, --ca.
    Fetchgate,
    /// Any plain HTTP forward proxy at --proxy (squid); no sessions.
    Proxy,
}

#[derive(Args)]
struct TargetArgs {
    /// What the builders send their traffic to.
    #[arg(long, value_enum, default_value = "spawn")]
    target: TargetKind,
    /// fetchgate binary to start (--target spawn).
    #[arg(long, default_value = "target/release/fetchgate")]
    fetchgate_bin: PathBuf,
    /// Extra argument for the started fetchgate (repeatable).
    #[arg(long = "fetchgate-arg", allow_hyphen_values = true)]
    fetchgate_args: Vec<String>,
    /// Proxy address, e.g. 127.0.0.1:9988 (--target fetchgate or proxy).
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// Control API address, e.g. 127.0.0.1:9999 (--target fetchgate).
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Control API credentials (--target fetchgate).
    #[arg(long, value_name = "USER:PASSWORD")]
    control_auth: Option<String>,
    /// CA certificate the proxy intercepts TLS with (fetchgate: required; proxy: for
    /// ssl-bump).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Pid of a proxy process to measure (repeatable; summed), for proxies the harness
    /// did not start.
    #[arg(long = "proxy-pid")]
    proxy_pids: Vec<u32>,
    /// Keep the origin's test CA here (created if missing), so a proxy configured once
    /// can trust it across runs.
    #[arg(long)]
    origin_ca_dir: Option<PathBuf>,
    /// Host name for the origin in URLs, CONNECT and TLS (127.0.0.1 or localhost).
    #[arg(long, default_value = "127.0.0.1", value_parser = ["127.0.0.1", "localhost"])]
    origin_host: String,
    /// Session policy (permissive needs fetchgate's --permissive-mode; the harness starts
    /// it so).
    #[arg(long, default_value = "permissive", value_parser = ["permissive", "strict"])]
    policy: String,
}

#[derive(Args)]
struct OutputArgs {
    /// Name of the scenario in the table and JSON.
    #[arg(long, default_value = "load test")]
    label: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Concurrent builders.
    #[arg(long, short = 'c', default_value_t = 8)]
    builders: usize,
    /// Seconds to run (sessions in progress at the end are completed).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many sessions in all.
    #[arg(long)]
    sessions: Option<u64>,
    /// Requests per session.
    #[arg(long, default_value_t = 20)]
    requests_per_session: usize,
    /// Artifact size in the mix, with an optional relative weight: 1KiB, 10MiB:2
    /// (repeatable; default 1KiB).
    #[arg(long = "object", value_parser = parse_object)]
    objects: Vec<ObjectSize>,
    /// Distinct artifacts per size.
    #[arg(long, default_value_t = 8)]
    distinct: u32,
    /// Fetch the real files in DIR (say `.deb`s and wheels) instead of synthetic
    /// artifacts: the origin serves each at /files/<name>, held in memory, and builders
    /// pick them uniformly. No inspector recognises them unless --trust-files.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["objects", "distinct"])]
    files: Option<PathBuf>,
    /// Sessions trust the origin (inspectors-configuration): /files as an apt
    /// repository (a Packages index listing the `.deb`s, which must be named
    /// package_version_architecture.deb, and an InRelease signed with a key made at
    /// start) and /simple/ as a Python index whose project pages list the wheels and
    /// sdists. Every session fetches those index files first, so its packages and
    /// wheels are verified in full.
    #[arg(long, requires = "files")]
    trust_files: bool,
    /// Origin scheme: http (absolute-form), https (CONNECT, intercepted), mixed.
    #[arg(long, value_enum, default_value = "http")]
    scheme: SchemeMix,
    /// Connection use: keep-alive, close (a connection per request), per-request
    /// (also `Connection: close` on CONNECT, like Launchpad's builder-side forwarder).
    #[arg(long, value_enum, default_value = "keep-alive")]
    connection: ConnMode,
    /// Hash every body on the builder side too (costs CPU next to the proxy).
    #[arg(long)]
    hash_bodies: bool,
    /// Origin slow mode: bytes per second per response, e.g. 1MiB.
    #[arg(long, value_parser = parse_size)]
    bandwidth: Option<u64>,
    /// Origin error mode: fraction of requests answered 404 or 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Seconds a request may take.
    #[arg(long, default_value_t = 60.0)]
    request_timeout: f64,
    /// Exit with status 3 if any error or report-verification failure was counted.
    #[arg(long)]
    fail_on_error: bool,
    /// Log every download a builder received whole to FILE, one JSON line each
    /// (session-id, url, sha256, size), written as it completes (bodies are hashed).
    #[arg(long, value_name = "FILE")]
    completions: Option<PathBuf>,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Idle connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Intercepted TLS (CONNECT + TLS) instead of plain HTTP.
    #[arg(long)]
    tls: bool,
}

#[derive(Args)]
struct RevocationArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Sessions to create, use and revoke, one after another.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

fn parse_object(s: &str) -> Result<ObjectSize, String> {
    let (size, weight) = match s.split_once(':') {
        Some((size, w)) => (
            size,
            w.parse()
                .ok()
                .filter(|w| *w > 0)
                .ok_or_else(|| format!("{s:?}: the weight after ':' must be a positive integer"))?,
        ),
        None => (s, 1),
    };
    Ok(ObjectSize {
        size: parse_size(size)?,
        weight,
    })
}

fn positive_secs(flag: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag} must be a positive number of seconds, not {secs}"))
}

impl TargetArgs {
    fn spec(&self) -> Result<TargetSpec, String> {
        let need_proxy = |kind: &str| {
            self.proxy
                .ok_or_else(|| format!("--target {kind} needs --proxy ADDR"))
        };
        Ok(match self.target {
            TargetKind::Direct => TargetSpec::Direct,
            TargetKind::Spawn => {
                if !self.fetchgate_bin.is_file() {
                    return Err(format!(
                        "--fetchgate-bin {}: no such file (build it, or pass the path of a fetchgate binary)",
                        self.fetchgate_bin.display()
                    ));
                }
                TargetSpec::Spawn {
                    binary: self.fetchgate_bin.clone(),
                    extra_args: self.fetchgate_args.clone(),
                }
            }
            TargetKind::Fetchgate => {
                let proxy = need_proxy("fetchgate")?;
                let control = self
                    .control
                    .ok_or("--target fetchgate needs --control ADDR")?;
                let auth = self
                    .control_auth
                    .as_deref()
                    .ok_or("--target fetchgate needs --control-auth USER:PASSWORD")?;
                let (user, password) = auth
                    .split_once(':')
                    .ok_or("--control-auth must be USER:PASSWORD")?;
                let ca = self.ca.clone().ok_or(
                    "--target fetchgate needs --ca FILE (its <spool>/ca/fetchgate-ca.pem)",
                )?;
                TargetSpec::Fetchgate {
                    proxy,
                    control,
                    user: user.to_owned(),
                    password: password.to_owned(),
                    ca,
                    pids: self.proxy_pids.clone(),
                }
            }
            TargetKind::Proxy => TargetSpec::Proxy {
                addr: need_proxy("proxy")?,
                ca: self.ca.clone(),
                pids: self.proxy_pids.clone(),
            },
        })
    }
}

impl TargetArgs {
    /// The origin and `spec`'s target, with the origin named as `--origin-host` says.
    async fn harness(
        &self,
        spec: &TargetSpec,
        behaviour: OriginBehaviour,
    ) -> Result<Harness, String> {
        let mut harness = Harness::start(spec, behaviour, self.origin_ca_dir.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        harness.origin_host = self.origin_host.clone();
        Ok(harness)
    }
}

/// Lets the harness (and the fetchgate it starts) open as many sockets as allowed.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn write_json(path: &Option<PathBuf>, value: &impl serde::Serialize) -> Result<(), String> {
    let Some(path) = path else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))
}

async fn run(args: RunArgs) -> Result<ExitCode, String> {
    let spec = args.target.spec()?;
    let duration = positive_secs("--duration", args.duration)?;
    let request_timeout = positive_secs("--request-timeout", args.request_timeout)?;
    if !(0.0..=1.0).contains(&args.error_rate) {
        return Err(format!(
            "--error-rate must be between 0 and 1, not {}",
            args.error_rate
        ));
    }
    if args.builders == 0 || args.requests_per_session == 0 {
        return Err("--builders and --requests-per-session must be at least 1".into());
    }
    let (mix, served, apt_key) = match &args.files {
        Some(dir) => {
            let files = load_files(dir)?;
            let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
            let (first, apt_key) = if args.trust_files {
                let repo = apt_repo::build(&files)?;
                let first: Vec<_> = repo.files.into_iter().chain(index_pages(&files)).collect();
                (first, Some(repo.key))
            } else {
                (Vec::new(), None)
            };
            eprintln!(
                "serving {} files ({:.1} MiB) from {}{}",
                files.len(),
                bytes as f64 / (1 << 20) as f64,
                dir.display(),
                if args.trust_files {
                    format!(
                        ", trusted; {} index files first (a signed apt repository's, Python project pages)",
                        first.len()
                    )
                } else {
                    String::new()
                }
            );
            let served = files.iter().chain(&first).cloned().collect();
            (Mix::Files { files, first }, served, apt_key)
        }
        None => {
            let objects = if args.objects.is_empty() {
                vec![ObjectSize {
                    size: 1024,
                    weight: 1,
                }]
            } else {
                args.objects
            };
            let distinct = args.distinct;
            (Mix::Synthetic { objects, distinct }, Vec::new(), None)
        }
    };
    let behaviour = OriginBehaviour {
        bandwidth: args.bandwidth,
        error_rate: args.error_rate,
        files: served,
    };
    let completions = match &args.completions {
        Some(path) => {
            Some(Arc::new(CompletionLog::create(path).map_err(|e| {
                format!("--completions {}: {e}", path.display())
            })?))
        }
        None => None,
    };
    let harness = Arc::new(args.target.harness(&spec, behaviour).await?);
    let workload = Arc::new(Workload {
        builders: args.builders,
        duration,
        max_sessions: args.sessions,
        requests_per_session: args.requests_per_session,
        mix,
        session_trust: apt_key.map(|key| harness.trust_origin(&key)),
        scheme: args.scheme,
        connection: args.connection,
        hash_bodies: args.hash_bodies,
        policy: args.target.policy.clone(),
        request_timeout,
        completions,
    });
    let live = Arc::new(Live::default());
    let progress = Progress::start(live.clone(), &args.output.label, args.output.quiet);
    let summary =
        workload::run_and_summarise(harness.clone(), workload, live, &args.output.label).await;
    progress.finish();
    if let Ok(h) = Arc::try_unwrap(harness) {
        h.stop();
    }
    print!("{}", summary.table());
    write_json(&args.output.json, &summary)?;
    let failed = summary.error_total > 0 || summary.report_verification_failures > 0;
    Ok(if args.fail_on_error && failed {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

async fn idle(args: IdleArgs) -> Result<ExitCode, String> {
    let spec = args.target.spec()?;
    if matches!(spec, TargetSpec::Direct) {
        return Err(
            "idle measures a proxy's memory: use --target spawn, fetchgate or proxy".into(),
        );
    }
    let harness = args
        .target
        .harness(&spec, OriginBehaviour::default())
        .await?;
    let summary = idle::run(
        &harness,
        args.connections,
        args.tls,
        &args.target.policy,
        &args.output.label,
    )
    .await;
    harness.stop();
    print!("{}", summary.table());
    write_json(&args.output.json, &summary)?;
    Ok(ExitCode::SUCCESS)
}

async fn revocation(args: RevocationArgs) -> Result<ExitCode, String> {
    let spec = args.target.spec()?;
    if matches!(spec, TargetSpec::Direct | TargetSpec::Proxy { .. }) {
        return Err("revocation needs sessions: use --target fetchgate (or spawn)".into());
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let harness = args
        .target
        .harness(&spec, OriginBehaviour::default())
        .await?;
    let summary = revocation::run(
        &harness,
        args.rounds,
        &args.target.policy,
        &args.output.label,
    )
    .await;
    harness.stop();
    print!("{}", summary.table());
    write_json(&args.output.json, &summary)?;
    Ok(if summary.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fetchgate-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Idle(args) => idle(args).await,
            Command::Revocation(args) => revocation(args).await,
            Command::OriginCa { dir } => OriginPki::load_or_generate(&dir)
                .map(|pki| {
                    println!("{}", pki.ca_cert_path().display());
                    ExitCode::SUCCESS
                })
                .map_err(|e| format!("{}: {e}", dir.display())),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fetchgate-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
