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
    },
    /// List sessions, newest first.
    List {
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[arg(long, value_enum)]
        policy: Option<PolicyArg>,
        /// At most this many rows (1–1000; the daemon's default is 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue after a previous page (its `next` value).
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
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
    #[error("invalid cursor {0:?}: pass the `next` value of a previous page")]
    Cursor(String),
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
        CtlCommand::Create { policy, timeout } => {
            let mut body = json!({});
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
            limit,
            cursor,
        } => {
            let mut query = Vec::new();
            if let Some(s) = state {
                query.push(format!("state={}", s.as_str()));
            }
            if let Some(p) = policy {
                query.push(format!("policy={}", p.as_str()));
            }
            if let Some(l) = limit {
                query.push(format!("limit={l}"));
            }
            if let Some(c) = cursor {
                // Cursors are `<micros>-<hex id>`; anything else would break the query.
                if !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(CtlError::Cursor(c.clone()));
                }
                query.push(format!("cursor={c}"));
            }
            let path = if query.is_empty() {
                "/sessions".to_owned()
            } else {
                format!("/sessions?{}", query.join("&"))
            };
            (Method::GET, path, None)
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
        CtlCommand::List { .. } => list_table(answer),
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

/// The listing's columns: API key and header.
const LIST_COLUMNS: [(&str, &str); 8] = [
    ("session-id", "SESSION-ID"),
    ("state", "STATE"),
    ("policy", "POLICY"),
    ("start-time", "START-TIME"),
    ("end-time", "END-TIME"),
    ("timeout", "TIMEOUT"),
    ("downloads", "DOWNLOADS"),
    ("denied", "DENIED"),
];

fn list_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["sessions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            LIST_COLUMNS
                .iter()
                .map(|(k, _)| table::cell(&r[*k]))
                .collect()
        })
        .collect();
    let mut out = table::render(&LIST_COLUMNS.map(|(_, h)| h), &rows);
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
            limit: Some(5),
            cursor: None,
        })
        .unwrap();
        assert_eq!(m, Method::GET);
        assert_eq!(path, "/sessions?state=revoked&policy=strict&limit=5");
        assert!(body.is_none());
    }

    #[test]
    fn a_cursor_that_would_break_the_query_is_refused() {
        let e = request(&CtlCommand::List {
            state: None,
            policy: None,
            limit: None,
            cursor: Some("1-ab&state=ended".into()),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid cursor \"1-ab&state=ended\""), "{e}");
    }

    #[test]
    fn a_listing_becomes_a_table_with_a_cursor_hint() {
        let answer = json!({"sessions": [{"session-id": "ab", "state": "active", "policy": "strict",
            "start-time": "t", "end-time": null, "timeout": 60, "downloads": 2, "denied": 0}],
            "next": "1-ab"});
        let text = list_table(&answer);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SESSION-ID  STATE   POLICY"), "{text}");
        assert!(
            lines[1].contains("active") && lines[1].contains(" - "),
            "{text}"
        );
        assert_eq!(lines[2], "(more: --cursor 1-ab)");
    }
}
