//! `fetchgate ctl` driven as an operator types it, against the real daemon: a whole
//! session lifecycle in tables and in JSON, and the errors an operator meets.

mod common;

use std::process::{Command, Output};

use common::DaemonOpts;
use serde_json::Value;

/// Runs `fetchgate ctl --url <daemon> <args>` with only the given environment.
fn ctl(control_port: u16, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fetchgate"))
        .env_clear()
        .envs(env.iter().copied())
        .arg("ctl")
        .arg(format!("--url=http://127.0.0.1:{control_port}"))
        .args(args)
        .output()
        .expect("run fetchgate ctl")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());
    String::from_utf8(out.stderr.clone()).unwrap()
}

const CREDS: (&str, &str) = ("FETCH_SERVICE_AUTH", "craft:craft");

/// A table's header cells and its rows' cells (cells hold no spaces in these tests).
fn cells(table: &str) -> (Vec<&str>, Vec<Vec<&str>>) {
    let mut lines = table.lines().map(|l| l.split_whitespace().collect());
    (lines.next().unwrap_or_default(), lines.collect())
}

#[tokio::test]
async fn a_session_lifecycle_in_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let port = d.opts.control_port;

    // Credentials from the environment, as the daemon itself reads them.
    let created: Value = serde_json::from_str(&ok(&ctl(
        port,
        &[CREDS],
        &["--json", "create", "--timeout", "600"],
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();

    // The table form of create names both.
    let text = ok(&ctl(port, &[], &["--auth=craft:craft", "create"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id ") && lines[0].len() > 32, "{text}");
    assert!(lines[1].starts_with("token "), "{text}");
    let second = lines[0].split_whitespace().nth(1).unwrap().to_owned();

    let table = ok(&ctl(port, &[CREDS], &["list", "--state", "active"]));
    let (header, rows) = cells(&table);
    assert_eq!(
        header,
        [
            "SESSION-ID",
            "OWNER",
            "STATE",
            "POLICY",
            "START-TIME",
            "END-TIME",
            "TIMEOUT",
            "DOWNLOADS",
            "DENIED"
        ]
    );
    assert_eq!(rows.len(), 2, "{table}");
    // Newest first.
    assert_eq!(rows[0][0], second);
    let first = &rows[1];
    assert_eq!(first[0], id);
    assert_eq!(&first[1..4], ["-", "active", "strict"]);
    assert_eq!(first[5], "-", "no end time while active");
    assert_eq!(first[6], "600");

    // The report is refused while the token is active: the API's reason reaches the operator.
    let e = failed(&ctl(port, &[CREDS], &["show", &id]));
    assert!(
        e.contains("400") && e.contains("still active") && e.contains(&id),
        "{e}"
    );

    // Revoking needs the token, not the control credentials.
    let e = failed(&ctl(port, &[], &["revoke", &id, "--token", "wrong"]));
    assert!(e.contains("400"), "{e}");
    let text = ok(&ctl(port, &[], &["revoke", &id, "--token", &token]));
    assert!(text.starts_with(&format!("session-id  {id}\n")), "{text}");
    assert!(text.contains("spool-path"), "{text}");

    let text = ok(&ctl(port, &[CREDS], &["show", &id]));
    assert!(text.contains(&format!("session-id  {id}")), "{text}");
    assert!(text.contains("policy      strict"), "{text}");
    assert!(
        text.contains("\nartifacts: 0\n") && text.contains("\ndenied: 0\n"),
        "{text}"
    );
    let report: Value =
        serde_json::from_str(&ok(&ctl(port, &[CREDS], &["show", &id, "--json"]))).unwrap();
    assert_eq!(report["session-id"], id.as_str());
    assert!(
        report["generator"]
            .as_str()
            .unwrap()
            .starts_with("fetchgate ")
    );

    // Resources cannot go while the session is live; after end they can.
    let e = failed(&ctl(port, &[CREDS], &["delete-resources", &id]));
    assert!(e.contains("409"), "{e}");
    let text = ok(&ctl(port, &[CREDS], &["end", &id]));
    assert_eq!(text, format!("session-id  {id}\nstate       ended\n"));
    let text = ok(&ctl(port, &[CREDS], &["delete-resources", &id]));
    assert!(text.contains("resources   deleted"), "{text}");

    let e = failed(&ctl(port, &[CREDS], &["show", &id]));
    assert!(
        e.contains("404"),
        "an ended session has no live report: {e}"
    );
    let fin: Value = serde_json::from_str(&ok(&ctl(
        port,
        &[CREDS],
        &["--json", "show", "--final", &id],
    )))
    .unwrap();
    assert_eq!(fin["session-id"], id.as_str());

    let listing: Value = serde_json::from_str(&ok(&ctl(
        port,
        &[CREDS],
        &["list", "--state", "ended", "--json"],
    )))
    .unwrap();
    let ids: Vec<&str> = listing["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session-id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
}

#[tokio::test]
async fn credentials_and_addresses_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let port = d.opts.control_port;

    let e = failed(&ctl(port, &[], &["list"]));
    assert!(e.contains("FETCH_SERVICE_AUTH"), "{e}");
    let e = failed(&ctl(
        port,
        &[("FETCH_SERVICE_AUTH", "craft:nope")],
        &["list"],
    ));
    assert!(e.contains("401"), "{e}");
    let e = failed(&ctl(port, &[CREDS], &["end", "../status"]));
    assert!(e.contains("invalid session id \"../status\""), "{e}");

    // Once the daemon is gone, the error names the URL it tried.
    drop(d);
    let e = failed(&ctl(port, &[CREDS], &["list"]));
    assert!(
        e.contains(&format!("http://127.0.0.1:{port}")) && e.contains("cannot connect"),
        "{e}"
    );
}

#[tokio::test]
async fn artifacts_and_owner_listings_as_an_operator_sees_them() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("a.bin"), b"an artifact").unwrap();
    let sha = hex::encode(Sha256::digest(b"an artifact"));
    let origin = common::Origin::start(&files, None);
    let d = DaemonOpts::new(dir.path())
        .arg("--permissive-mode")
        .start()
        .await;
    let port = d.opts.control_port;
    let created = ok(&ctl(
        port,
        &[CREDS],
        &[
            "--json",
            "create",
            "--policy",
            "permissive",
            "--owner",
            "farm",
            "--label",
            "arch=amd64",
        ],
    ));
    let created: Value = serde_json::from_str(&created).unwrap();
    let (id, token) = (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    );
    let (other, _) = d.create(serde_json::json!({})).await;
    let url = format!("{}a.bin", origin.base());
    assert_eq!(d.proxy_get(&url, Some((&id, &token))).await, 200);

    let table = ok(&ctl(port, &[CREDS], &["artifacts", "--sha256", &sha]));
    let (header, rows) = cells(&table);
    assert_eq!(
        header.join(" "),
        "SESSION-ID OWNER STATE POLICY START-TIME END-TIME RESULT"
    );
    assert_eq!(rows.len(), 1, "{table}");
    assert_eq!(&rows[0][..4], [id.as_str(), "farm", "active", "permissive"]);

    let json: Value = serde_json::from_str(&ok(&ctl(
        port,
        &[CREDS],
        &["--json", "artifacts", "--sha256", &sha],
    )))
    .unwrap();
    assert_eq!(json["sessions"][0]["labels"]["arch"], "amd64");

    let listed = ok(&ctl(
        port,
        &[CREDS],
        &["list", "--owner", "farm", "--label", "arch=amd64"],
    ));
    assert!(listed.contains(&id) && !listed.contains(&other), "{listed}");

    let e = failed(&ctl(port, &[CREDS], &["artifacts"]));
    assert!(e.contains("--sha256"), "{e}");
    let e = failed(&ctl(port, &[CREDS], &["artifacts", "--sha256", "xyz"]));
    assert!(
        e.contains("400") && e.contains("64 lowercase hexadecimal"),
        "{e}"
    );
}
