//! The command line: the reference daemon's flags (with no subcommand they run the
//! daemon, as craft-application starts it) plus fetchgate's own subcommands.
//!
//! Exit status: 0 on a normal stop or idle shutdown, 1 for wrong arguments or
//! configuration (and an unbindable proxy port), 2 when the control port cannot be
//! bound or the service fails.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::daemon;

/// A recording, verifying forward proxy for build farms.
#[derive(Debug, Parser)]
#[command(name = "fetchgate", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands; none means `serve`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Print the debtags of one suite/component from an archive's Packages files
    /// (`package: tag, tag` lines), without starting the daemon.
    Debtags(DebtagsArgs),
    /// Operate a running daemon through its control API: create, list, show, revoke,
    /// end and delete-resources.
    Ctl(crate::ctl::CtlArgs),
}

/// `fetchgate debtags <archive-root> <suite> <component>`.
#[derive(Debug, Clone, Args)]
pub struct DebtagsArgs {
    /// The archive directory holding `dists/`.
    pub archive_root: PathBuf,
    pub suite: String,
    pub component: String,
    /// Only this architecture's Packages file.
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// An overrides file (`pkg[, pkg]: tag, tag` lines) applied on top.
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
}

/// Runs `fetchgate debtags`: reads the Packages files only (no upstream, no database).
fn debtags(args: DebtagsArgs) -> ExitCode {
    use std::io::Write;

    use crate::debtags::{cache::PackagesCache, valid_name};
    use fetchgate_formats::debtags as tags;

    for (what, v) in [("suite", &args.suite), ("component", &args.component)]
        .into_iter()
        .chain(args.arch.as_ref().map(|a| ("arch", a)))
    {
        if !valid_name(v) {
            eprintln!("ERROR: invalid {what} {v:?}: use letters, digits and . + _ -");
            return ExitCode::from(1);
        }
    }
    let cache = PackagesCache::new();
    let found = cache.lookup(
        &args.archive_root,
        &args.suite,
        &args.component,
        args.arch.as_deref(),
    );
    // The cache is not needed any more; dropping it leaves the answer unshared, so the
    // overrides below change it in place instead of copying 60,000 entries.
    drop(cache);
    let mut t = match found {
        Ok(Some(snap)) => snap.tags,
        Ok(None) => {
            eprintln!(
                "ERROR: no Packages index for {}/{} under {}",
                args.suite,
                args.component,
                args.archive_root.join("dists").display()
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(path) = &args.overrides {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (o, bad) = tags::parse_overrides(&text);
                for b in bad {
                    eprintln!("warning: {}:{}: {}", path.display(), b.line, b.reason);
                }
                tags::apply(std::sync::Arc::make_mut(&mut t), &o);
            }
            Err(e) => {
                eprintln!("ERROR: cannot read {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    match out
        .write_all(tags::to_text(&t).as_bytes())
        .and_then(|()| out.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: writing the answer: {e}");
            ExitCode::from(1)
        }
    }
}

/// The daemon's flags, named as the reference fetch-service names them.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Control API port.
    #[arg(long, value_name = "N", default_value_t = 9999)]
    pub control_port: u16,
    /// Proxy port.
    #[arg(short = 'p', long, value_name = "N", default_value_t = 9988)]
    pub proxy_port: u16,
    /// Listen address for both ports.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Directory holding fetchgate.toml [default: /etc/fetchgate, or $SNAP_DATA/conf in the snap].
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Spool directory: per-session files, the database, a generated CA
    /// [default: /var/lib/fetchgate, or $SNAP_COMMON/spool in the snap].
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// CA certificate (PEM) used to intercept HTTPS; generated under the spool if absent.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key of the CA (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Allow permissive sessions.
    #[arg(long)]
    pub permissive_mode: bool,
    /// Exit after this many seconds without activity (0 = never).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub idle_shutdown: u64,
    /// Log to this file instead of stderr; SIGUSR1 reopens it.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Also write security events (auth failures, revoked tokens, ACL denials) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub security_log_file: Option<PathBuf>,
    /// Log level.
    #[arg(long, value_enum, default_value_t = Verbosity::Info)]
    pub verbosity: Verbosity,
    /// Log line format [default: `logging.format` in fetchgate.toml, else text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The flags of a node of an HA pair.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Keep sessions and tokens in this Redis (`redis://host:port[/db]`), shared by the
    /// nodes of an HA pair, instead of the embedded store.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Prefix of every Redis key [default: fetchgate:].
    #[arg(long, value_name = "PREFIX", requires = "redis")]
    pub redis_key_prefix: Option<String>,
    /// This node's name in an HA pair (letters, digits, . _ -); required with --redis.
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
    /// Control API URL (`http://host:port`) of another node of the pair; repeatable.
    #[arg(long = "peer", value_name = "URL")]
    pub peers: Vec<String>,
}

/// How log lines are written (`--log-format`, `logging.format` in fetchgate.toml).
pub use fetchgate_config::file::LogFormat;

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verbosity {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Parses the command line and runs what it asks for.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout and are not failures; everything else is a
            // wrong argument, which the reference reports with status 1 (clap uses 2).
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Debtags(args)) => return debtags(args),
        Some(Command::Ctl(args)) => return crate::ctl::main(args),
        None => cli.serve,
    };
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(1);
        }
    };
    match daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(e.exit_code()),
    }
}
