//! `fetchgate ctl`: the operator's client of a running daemon's control API (create,
//! list, show, revoke, end, delete-resources). Readable tables by default, the API's
//! JSON verbatim with `--json`. It never opens the daemon's storage: everything goes
//! through the control API, so it works the same against a remote node.

mod client;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use http::Method;
use serde_json::{Value, json};

pub use self::client::{ClientError, ControlClient};

/// `fetchgate ctl [--url URL] [--auth USER:PASS] [--json] <command>`.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Base URL of the control API.
    #[arg(
        long,
        value_name = "URL",
        env = "FETCHGATE_CONTROL_URL",
        default_value = "http://127.0.0.1:9999"
    )]
    pub url: String,
    /// Control API credentials, `user:password`.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "FETCH_SERVICE_AUTH",
        hide_env_values = true
    )]
    pub auth: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on an answer after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Paging of a listing.
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// At most this many rows (1–1000; the daemon's default is 100).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Continue after a previous page (its `next` value).
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<String>,
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `path?k=v&...` for the given (key, value) pairs and the page, values percent-encoded.
fn with_query(path: &str, pairs: &[(&str, Option<String>)], page: &PageArgs) -> String {
    let paging = [
        ("limit", page.limit.map(|l| l.to_string())),
        ("cursor", page.cursor.clone()),
    ];
    let query: Vec<String> = pairs
        .iter()
        .chain(&paging)
        .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", query_value(v))))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// A session's policy, as the API names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    Strict,
    Permissive,
}

/// A session state to filter a listing by.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    Active,
    Revoked,
    Ended,
    Expired,
}

/// What to ask the daemon.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Create a session; prints its id and token.
    Create {
        #[arg(long, value_enum)]
        policy: Option<PolicyArg>,
        /// Time to live in seconds (the daemon's default when absent).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Who the session is for (shown in listings and artifact queries).
        #[arg(long)]
        owner: Option<String>,
        /// A label, `key=value`; may be repeated.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List sessions, newest first.
    List {
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[arg(long, value_enum)]
        policy: Option<PolicyArg>,
        /// Only sessions created with this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only sessions with this label, `key=value`.
        #[arg(long, value_name = "KEY=VALUE")]
        label: Option<String>,
        /// Only sessions started at or after this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only sessions started before this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Which retained sessions fetched an artifact: by --sha256, or by --name and
    /// --version (and --type), newest first.
    Artifacts {
        #[arg(long, value_name = "HEX", conflicts_with_all = ["name", "version", "kind"])]
        sha256: Option<String>,
        #[arg(long, requires = "version")]
        name: Option<String>,
        #[arg(long, requires = "name")]
        version: Option<String>,
        /// The metadata type (e.g. application/vnd.debian.binary-package).
        #[arg(long = "type", value_name = "TYPE", requires = "name")]
        kind: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a session's report (after revocation), or with --final the retained report
    /// of an ended session.
    Show {
        session_id: String,
        #[arg(long = "final")]
        final_report: bool,
    },
    /// Revoke a session's token (the token is the credential, not --auth).
    Revoke {
        session_id: String,
        #[arg(long, value_name = "TOKEN")]
        token: String,
    },
    /// End a session.
    End { session_id: String },
    /// Delete an ended session's spool files (the report is kept).
    DeleteResources { session_id: String },
}

impl PolicyArg {
    fn as_str(self) -> &'static str {
        match self {
            PolicyArg::Strict => "strict",
            PolicyArg::Permissive => "permissive",
        }
    }
}

impl StateArg {
    fn as_str(self) -> &'static str {
        match self {
            StateArg::Active => "active",
            StateArg::Revoked => "revoked",
            StateArg::Ended => "ended",
            StateArg::Expired => "expired",
        }
    }
}

/// Why `fetchgate ctl` failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no control API credentials: pass --auth USER:PASSWORD or set FETCH_SERVICE_AUTH")]
    NoCredentials,
    #[error("invalid session id {0:?}: expected 32 lowercase hex characters")]
    SessionId(String),
    #[error("invalid label {0:?}: use --label key=value")]
    Label(String),
    #[error("say which artifact: --sha256 HEX, or --name NAME --version VERSION")]
    NoArtifact,
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs `fetchgate ctl` and prints the answer; errors go to stderr.
pub fn main(args: CtlArgs) -> ExitCode {
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::from(1)
        }
    }
}

/// Session ids travel inside URL paths: refuse anything else before sending it.
fn session_path(id: &str) -> Result<&str, CtlError> {
    if id.len() == 32
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        Ok(id)
    } else {
        Err(CtlError::SessionId(id.to_owned()))
    }
}

fn run(args: &CtlArgs) -> Result<String, CtlError> {
    let needs_auth = !matches!(args.command, CtlCommand::Revoke { .. });
    let auth = args.auth.as_deref().filter(|a| !a.is_empty());
    if needs_auth && auth.is_none() {
        return Err(CtlError::NoCredentials);
    }
    let client = ControlClient::new(&args.url, auth, Duration::from_secs(args.timeout))?;
    let (method, path, body) = request(&args.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)?;
    let answer = runtime.block_on(client.call(method, &path, body.as_ref()))?;
    Ok(if args.json {
        format!("{answer:#}\n")
    } else {
        readable(&args.command, &answer)
    })
}

/// The API call a command makes.
fn request(command: &CtlCommand) -> Result<(Method, String, Option<Value>), CtlError> {
    Ok(match command {
        CtlCommand::Create {
            policy,
            timeout,
            owner,
            labels,
        } => {
            let mut body = json!({});
            if let Some(o) = owner {
                body["owner"] = json!(o);
            }
            if !labels.is_empty() {
                let mut map = serde_json::Map::new();
                for l in labels {
                    let (k, v) = l
                        .split_once('=')
                        .ok_or_else(|| CtlError::Label(l.clone()))?;
                    map.insert(k.to_owned(), json!(v));
                }
                body["labels"] = Value::Object(map);
            }
            if let Some(p) = policy {
                body["policy"] = json!(p.as_str());
            }
            if let Some(t) = timeout {
                body["timeout"] = json!(t);
            }
            (Method::POST, "/session".to_owned(), Some(body))
        }
        CtlCommand::List {
            state,
            policy,
            owner,
            label,
            since,
            until,
            page,
        } => {
            let pairs = [
                ("state", state.map(|s| s.as_str().to_owned())),
                ("policy", policy.map(|p| p.as_str().to_owned())),
                ("owner", owner.clone()),
                ("label", label.clone()),
                ("since", since.clone()),
                ("until", until.clone()),
            ];
            (Method::GET, with_query("/sessions", &pairs, page), None)
        }
        CtlCommand::Artifacts {
            sha256,
            name,
            version,
            kind,
            page,
        } => {
            if sha256.is_none() && name.is_none() {
                return Err(CtlError::NoArtifact);
            }
            let pairs = [
                ("sha256", sha256.clone()),
                ("name", name.clone()),
                ("version", version.clone()),
                ("type", kind.clone()),
            ];
            (Method::GET, with_query("/artifacts", &pairs, page), None)
        }
        CtlCommand::Show {
            session_id,
            final_report,
        } => {
            let id = session_path(session_id)?;
            let prefix = if *final_report { "reports" } else { "session" };
            (Method::GET, format!("/{prefix}/{id}"), None)
        }
        CtlCommand::Revoke { session_id, token } => (
            Method::DELETE,
            format!("/session/{}/token", session_path(session_id)?),
            Some(json!({ "token": token })),
        ),
        CtlCommand::End { session_id } => (
            Method::DELETE,
            format!("/session/{}", session_path(session_id)?),
            None,
        ),
        CtlCommand::DeleteResources { session_id } => (
            Method::DELETE,
            format!("/resources/{}", session_path(session_id)?),
            None,
        ),
    })
}

/// The answer as a table or `key  value` lines.
fn readable(command: &CtlCommand, answer: &Value) -> String {
    match command {
        CtlCommand::Create { .. } => table::key_values(answer, &["id", "token"]),
        CtlCommand::List { .. } => list_table(answer, &LIST_COLUMNS),
        CtlCommand::Artifacts { .. } => list_table(answer, &ARTIFACT_COLUMNS),
        CtlCommand::Show { .. } => report_tables(answer),
        CtlCommand::Revoke { .. } => table::key_values(
            answer,
            &["session-id", "start-time", "end-time", "spool-path"],
        ),
        CtlCommand::End { .. } => table::key_values(answer, &["session-id", "state"]),
        CtlCommand::DeleteResources { .. } => {
            table::key_values(answer, &["session-id", "resources"])
        }
    }
}

/// The artifact query's columns: API key and header.
const ARTIFACT_COLUMNS: [(&str, &str); 7] = [
    ("session-id", "SESSION-ID"),
    ("owner", "OWNER"),
    ("state", "STATE"),
    ("policy", "POLICY"),
    ("start-time", "START-TIME"),
    ("end-time", "END-TIME"),
    ("result", "RESULT"),
];

/// The listing's columns: API key and header.
const LIST_COLUMNS: [(&str, &str); 9] = [
    ("session-id", "SESSION-ID"),
    ("owner", "OWNER"),
    ("state", "STATE"),
    ("policy", "POLICY"),
    ("start-time", "START-TIME"),
    ("end-time", "END-TIME"),
    ("timeout", "TIMEOUT"),
    ("downloads", "DOWNLOADS"),
    ("denied", "DENIED"),
];

fn list_table(answer: &Value, columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = answer["sessions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| columns.iter().map(|(k, _)| table::cell(&r[*k])).collect())
        .collect();
    let headers: Vec<&str> = columns.iter().map(|(_, h)| *h).collect();
    let mut out = table::render(&headers, &rows);
    if let Some(next) = answer["next"].as_str() {
        out.push_str(&format!("(more: --cursor {})\n", table::cell(&json!(next))));
    }
    out
}

fn report_tables(report: &Value) -> String {
    let mut out = table::key_values(
        report,
        &[
            "session-id",
            "policy",
            "start-time",
            "end-time",
            "spool-path",
        ],
    );
    let empty = Vec::new();
    let artifacts = report["artifacts"].as_array().unwrap_or(&empty);
    out.push_str(&format!("\nartifacts: {}\n", artifacts.len()));
    if !artifacts.is_empty() {
        let rows: Vec<Vec<String>> = artifacts
            .iter()
            .map(|a| {
                let m = &a["metadata"];
                vec![
                    table::cell(&a["result"]),
                    table::cell(&m["name"]),
                    table::cell(&m["version"]),
                    table::cell(&m["size"]),
                    table::cell(&a["downloads"][0]["url"]),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["RESULT", "NAME", "VERSION", "SIZE", "URL"],
            &rows,
        ));
    }
    let denied = report["denied"].as_array().unwrap_or(&empty);
    out.push_str(&format!("\ndenied: {}\n", denied.len()));
    if !denied.is_empty() {
        let rows: Vec<Vec<String>> = denied
            .iter()
            .map(|d| {
                ["time", "stage", "method", "url", "reason"]
                    .iter()
                    .map(|k| table::cell(&d[*k]))
                    .collect()
            })
            .collect();
        out.push_str(&table::render(
            &["TIME", "STAGE", "METHOD", "URL", "REASON"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked_before_they_reach_a_path() {
        assert!(session_path("0123456789abcdef0123456789abcdef").is_ok());
        let e = session_path("../status").unwrap_err().to_string();
        assert!(e.contains("\"../status\""), "{e}");
        assert!(session_path("0123456789ABCDEF0123456789ABCDEF").is_err());
    }

    #[test]
    fn list_builds_its_query_from_the_filters() {
        let (m, path, body) = request(&CtlCommand::List {
            state: Some(StateArg::Revoked),
            policy: Some(PolicyArg::Strict),
            owner: Some("farm a".into()),
            label: Some("arch=amd64".into()),
            since: None,
            until: None,
            page: PageArgs {
                limit: Some(5),
                cursor: None,
            },
        })
        .unwrap();
        assert_eq!(m, Method::GET);
        assert_eq!(
            path,
            "/sessions?state=revoked&policy=strict&owner=farm%20a&label=arch%3Damd64&limit=5"
        );
        assert!(body.is_none());
    }

    #[test]
    fn create_sends_owner_and_labels() {
        let create = |labels: &[&str]| {
            request(&CtlCommand::Create {
                policy: None,
                timeout: None,
                owner: Some("farm".into()),
                labels: labels.iter().map(|l| l.to_string()).collect(),
            })
        };
        let (_, _, body) = create(&["arch=amd64", "build=1=2"]).unwrap();
        assert_eq!(
            body.unwrap(),
            json!({"owner": "farm", "labels": {"arch": "amd64", "build": "1=2"}})
        );
        let e = create(&["nolabel"]).unwrap_err().to_string();
        assert!(e.contains("\"nolabel\""), "{e}");
    }

    #[test]
    fn query_values_cannot_break_the_query() {
        let (_, path, _) = request(&CtlCommand::Artifacts {
            sha256: None,
            name: Some("libc6&x".into()),
            version: Some("2.36+deb12u1".into()),
            kind: None,
            page: PageArgs {
                limit: None,
                cursor: Some("1-ab&state=ended".into()),
            },
        })
        .unwrap();
        assert_eq!(
            path,
            "/artifacts?name=libc6%26x&version=2.36%2Bdeb12u1&cursor=1-ab%26state%3Dended"
        );
    }

    #[test]
    fn a_listing_becomes_a_table_with_a_cursor_hint() {
        let answer = json!({"sessions": [{"session-id": "ab", "state": "active", "policy": "strict",
            "start-time": "t", "end-time": null, "timeout": 60, "downloads": 2, "denied": 0}],
            "next": "1-ab"});
        let text = list_table(&answer, &LIST_COLUMNS);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("SESSION-ID  OWNER  STATE   POLICY"),
            "{text}"
        );
        assert!(
            lines[1].contains("active") && lines[1].contains(" - "),
            "{text}"
        );
        assert_eq!(lines[2], "(more: --cursor 1-ab)");
    }
}
