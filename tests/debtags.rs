//! Debtags: `GET /debtags/{suite}/{component}` on the real daemon with an upstream stub
//! that answers, stalls past the timeout, says 404 or is down; and the
//! `fetchgate debtags` subcommand.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the upstream stub does with the next requests.
#[derive(Clone)]
enum Mode {
    Answer(String),
    Stall,
    NotFound,
}

/// A tiny HTTP server on 127.0.0.1 standing in for the upstream debtags service;
/// records the request lines it saw.
async fn upstream_stub(mode: Arc<Mutex<Mode>>, seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mode = mode.lock().unwrap().clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(head.clone());
                let (status, body) = match mode {
                    Mode::Answer(b) => ("200 OK", b),
                    Mode::NotFound => ("404 Not Found", "{\"error\":\"unknown\"}".into()),
                    Mode::Stall => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    }
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    port
}

fn write(root: &Path, rel: &str, text: &str) -> std::path::PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// An archive with amd64 (plain: brace groups, continuation lines, CRLF, a malformed
/// stanza, a package without tags) and arm64 (.xz) Packages files.
fn archive(root: &Path) {
    write(
        root,
        "dists/noble/main/binary-amd64/Packages",
        "Package: vim\nVersion: 2:9.1\nTag: works-with::{text,image},\n role::program\n\n\
         Package: broken\nthis line is junk\nTag: x\n\n\
         Package: libfoo1\r\nTag: role::shared-lib\r\n\r\n\
         Package: untagged\nVersion: 1\n",
    );
    let xz = write(
        root,
        "dists/noble/main/binary-arm64/Packages",
        "Package: vim\nTag: role::program, works-with::image, works-with::text\n\n\
         Package: arm-tool\nTAG: hardware::embedded\n",
    );
    let st = std::process::Command::new("xz").arg(&xz).status().unwrap();
    assert!(st.success());
}

async fn error_of(r: reqwest::Response) -> String {
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "errors are JSON"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    v["error"].as_str().unwrap().to_owned()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()[name].to_str().unwrap()
}

#[tokio::test]
async fn debtags_endpoint_falls_back_to_the_packages_cache() {
    let dir = tempfile::tempdir().unwrap();
    let main_root = dir.path().join("archive");
    archive(&main_root);
    let ppa_root = dir.path().join("ppa");
    std::fs::create_dir_all(ppa_root.join("dists/noble/main")).unwrap();
    let overrides = write(
        dir.path(),
        "overrides",
        "# local\nlocal-pkg, vim: role::{program,documentation}\nlibfoo1:\n",
    );
    let mode = Arc::new(Mutex::new(Mode::Answer(
        r#"{"vim": "use::editing, role::{program}", "emacs": "role::program", "none": ""}"#.into(),
    )));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = upstream_stub(Arc::clone(&mode), Arc::clone(&seen)).await;
    let down = common::free_port();
    let config = format!(
        "[[debtags.archive]]\nname = \"primary\"\nroot = \"{}\"\nupstream = \"http://craft:craft@127.0.0.1:{port}/\"\ntimeout-ms = 300\noverrides = \"{}\"\n\n\
         [[debtags.archive]]\nname = \"ppa\"\nroot = \"{}\"\nupstream = \"http://127.0.0.1:{down}\"\n\n\
         [[debtags.archive]]\nname = \"local\"\nroot = \"{}\"\n",
        main_root.display(),
        overrides.display(),
        ppa_root.display(),
        ppa_root.display(),
    );
    let d = common::DaemonOpts::new(dir.path())
        .config_toml(&config)
        .start()
        .await;
    let get = |path: &str| d.authed(Method::GET, path).send();

    // 1. The upstream answers: its tags, normalised, with the overrides on top.
    let r = get("/debtags/noble/main").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-debtags-source"), "upstream");
    assert_eq!(header(&r, "x-debtags-age"), "0");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "emacs": "role::program",
            "local-pkg": "role::documentation, role::program",
            "vim": "role::documentation, role::program",
        })
    );
    let request = seen.lock().unwrap().last().unwrap().clone();
    assert!(
        request.starts_with("GET /debtags/noble/main HTTP/1.1"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: basic y3jhznq6y3jhznq="),
        "{request}"
    );

    // 2. The upstream stalls past the timeout: the Packages cache answers, quickly.
    *mode.lock().unwrap() = Mode::Stall;
    let started = std::time::Instant::now();
    let r = get("/debtags/noble/main?format=text").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-debtags-source"), "packages-cache");
    assert!(header(&r, "x-debtags-age").parse::<u64>().unwrap() < 60);
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        r.text().await.unwrap(),
        "arm-tool: hardware::embedded\n\
         local-pkg: role::documentation, role::program\n\
         vim: role::documentation, role::program\n"
    );
    assert!(
        d.log().contains("this line is junk") || d.log().contains("line=7"),
        "the malformed stanza is named in the log:\n{}",
        d.log()
    );

    // 3. One architecture, Accept: text/plain.
    let r = d
        .authed(
            Method::GET,
            "/debtags/noble/main?arch=amd64&archive=primary",
        )
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("arm-tool"), "{text}");
    assert!(text.contains("vim: "), "{text}");

    // 4. A rewritten Packages file is read again.
    write(
        &main_root,
        "dists/noble/main/binary-amd64/Packages",
        "Package: newcomer\nTag: role::{app-data}\n",
    );
    let v: serde_json::Value = get("/debtags/noble/main?arch=amd64")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["newcomer"], "role::app-data");

    // 5. Upstream stalls and no Packages data: 503; the upstream does not know and
    //    neither do the files: 404.
    let r = get("/debtags/plucky/main").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(error_of(r).await.contains("no Packages data"));
    *mode.lock().unwrap() = Mode::NotFound;
    let r = get("/debtags/plucky/main").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(error_of(r).await.contains("plucky/main"));

    // 6. Upstream down, the component exists but has no Packages yet: 503; with no
    //    upstream at all it is answered from the (empty) overrides.
    let r = get("/debtags/noble/main?archive=ppa").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(error_of(r).await.contains("connect to 127.0.0.1"));
    let r = get("/debtags/noble/main?archive=local").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-debtags-source"), "overrides-only");
    assert_eq!(r.text().await.unwrap(), "{}");
    let r = get("/debtags/noble/universe?archive=local").await.unwrap();
    assert_eq!(r.status(), 404);

    // 7. Bad input: precise 400s with JSON bodies; credentials required.
    for (path, want) in [
        (
            "/debtags/noble/main?archive=nope",
            "no archive named \"nope\"",
        ),
        ("/debtags/noble/main?format=yaml", "unknown format"),
        ("/debtags/noble/main?colour=red", "unknown query parameter"),
        ("/debtags/noble/main?arch=../x", "invalid arch"),
        ("/debtags/..%2F..%2Fetc/main", "invalid suite"),
        ("/debtags/.hidden/main", "invalid suite"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let e = error_of(r).await;
        assert!(e.contains(want), "{path}: {e}");
    }
    let r = d
        .anon(Method::GET, "/debtags/noble/main")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // 8. Metrics count lookups by source.
    let m = d.metrics_text().await;
    for source in ["upstream", "packages-cache", "overrides-only"] {
        assert!(
            m.contains(&format!(
                "fetchgate_debtags_lookups_total{{source=\"{source}\"}}"
            )),
            "{m}"
        );
    }
    assert!(m.contains("fetchgate_debtags_parse_seconds"), "{m}");
}

#[tokio::test]
async fn a_bad_debtags_config_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::DaemonOpts::new(dir.path())
        .config_toml("[[debtags.archive]]\nname = \"main\"\nroot = \"/nonexistent/archive\"\n");
    let out = opts.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("debtags.archive[0].root"), "{err}");
}

#[test]
fn debtags_subcommand_prints_the_text_form() {
    let dir = tempfile::tempdir().unwrap();
    archive(dir.path());
    let overrides = write(dir.path(), "ov", "extra: use::{a,b}\nnot-an-override\n");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fetchgate"))
            .env_clear()
            .arg("debtags")
            .args(args)
            .output()
            .unwrap()
    };
    let root = dir.path().to_str().unwrap();
    let out = run(&[
        root,
        "noble",
        "main",
        "--overrides",
        overrides.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "arm-tool: hardware::embedded\n\
         extra: use::a, use::b\n\
         libfoo1: role::shared-lib\n\
         vim: role::program, works-with::image, works-with::text\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2: expected"));
    let out = run(&[root, "noble", "main", "--arch", "arm64"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "arm-tool: hardware::embedded\nvim: role::program, works-with::image, works-with::text\n"
    );
    let out = run(&[root, "noble", "universe"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Packages index for noble/universe"));
    let out = run(&[root, "../etc", "main"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid suite"));
}
