//! The daemon's command line as craft-application uses it: the reference's flags with
//! no subcommand, an openssl-made CA, readiness within 100 ms per probe, SIGTERM,
//! taken ports, idle shutdown, log files.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{DaemonOpts, openssl};
use reqwest::Method;
use serde_json::{Value, json};

/// A CA the way craft-application makes one: RSA-4096 via `openssl genrsa` + `openssl rsa`,
/// self-signed with CN=root@localhost.
fn craft_ca(dir: &Path) -> (String, String) {
    openssl(dir, &["genrsa", "-out", "raw.key", "4096"]);
    openssl(dir, &["rsa", "-in", "raw.key", "-out", "ca.key.pem"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ca.key.pem",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=root@localhost",
        ],
    );
    (
        dir.join("ca.pem").display().to_string(),
        dir.join("ca.key.pem").display().to_string(),
    )
}

#[tokio::test]
async fn started_exactly_as_craft_starts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = craft_ca(dir.path());
    let opts = DaemonOpts::new(dir.path())
        .arg(&format!("--cert={cert}"))
        .arg(&format!("--key={key}"))
        .arg("--permissive-mode")
        .arg("--idle-shutdown=300");
    let mut d = opts.start().await;

    // craft's readiness probe has a 0.1 s timeout.
    let probe = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..20 {
        let t = Instant::now();
        let v: Value = probe
            .get(d.url("/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v.get("uptime").is_some());
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "status took {:?}",
            t.elapsed()
        );
    }
    let (id, token) = d.create(json!({"policy": "permissive"})).await;
    assert_eq!(d.revoke(&id, &token).await.status(), 200);

    // SIGTERM: exit 0 well within the second craft waits before SIGKILL.
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(1))
        .expect("exited within 1 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(d.log().contains("SIGTERM"));
}

#[tokio::test]
async fn a_pkcs1_rsa_key_and_an_ec_key_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    openssl(p, &["genrsa", "-traditional", "-out", "rsa1.key", "2048"]);
    assert!(
        std::fs::read_to_string(p.join("rsa1.key"))
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    openssl(
        p,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "rsa1.key",
            "-out",
            "rsa1.pem",
            "-days",
            "30",
            "-subj",
            "/CN=root@localhost",
        ],
    );
    openssl(
        p,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ],
    );
    assert!(
        std::fs::read_to_string(p.join("ec.key"))
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    openssl(
        p,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ec.key",
            "-out",
            "ec.pem",
            "-days",
            "30",
            "-subj",
            "/CN=root@localhost",
        ],
    );
    openssl(
        p,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ec.key", "-out", "ec8.key",
        ],
    );
    for (cert, key) in [
        ("rsa1.pem", "rsa1.key"),
        ("ec.pem", "ec.key"),
        ("ec.pem", "ec8.key"),
    ] {
        let sub = p.join(key);
        let opts = DaemonOpts::new(&p.join(format!("d-{key}")))
            .arg(&format!("--cert={}", p.join(cert).display()))
            .arg(&format!("--key={}", sub.display()));
        let d = opts.start().await;
        assert!(
            d.log().contains("loaded CA certificate"),
            "{key}: {}",
            d.log()
        );
    }
}

#[tokio::test]
async fn a_certificate_that_does_not_match_the_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    openssl(
        p,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "a.key",
        ],
    );
    openssl(
        p,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "b.key",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "a.key",
            "-out",
            "a.pem",
            "-days",
            "30",
            "-subj",
            "/CN=root@localhost",
        ],
    );
    let opts = DaemonOpts::new(p)
        .arg(&format!("--cert={}", p.join("a.pem").display()))
        .arg(&format!("--key={}", p.join("b.key").display()));
    let out = opts.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not belong to the private key") && stderr.contains("b.key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_open_files_limit_is_raised_to_the_hard_limit_at_start() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = DaemonOpts::new(dir.path()).command();
    // SAFETY: setrlimit is async-signal-safe; the child calls nothing else before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 8192,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let raised = loop {
        let text = std::fs::read_to_string(&limits).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_default()
            .to_owned();
        if line.split_whitespace().nth(3) == Some("8192") || std::time::Instant::now() > deadline {
            break line;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        raised
            .split_whitespace()
            .skip(3)
            .take(2)
            .collect::<Vec<_>>(),
        ["8192", "8192"],
        "{raised}"
    );
}

#[tokio::test]
async fn an_unreadable_ca_key_stops_start_up_with_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=root@localhost",
        ],
    );
    // Root reads any file whatever its mode: a directory is what cannot be read.
    let key = p.join("unreadable.key");
    std::fs::create_dir(&key).unwrap();
    let out = DaemonOpts::new(p)
        .arg(&format!("--cert={}", p.join("ca.pem").display()))
        .arg(&format!("--key={}", key.display()))
        .command()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR:")
            && stderr.contains("cannot read")
            && stderr.contains("unreadable.key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_a_ca_one_is_generated_once_with_a_private_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let ca_dir = d.opts.spool.join("ca");
    let key = ca_dir.join("fetchgate-ca.key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cert = std::fs::read(ca_dir.join("fetchgate-ca.pem")).unwrap();
    assert!(d.log().contains("generated CA certificate"));
    let opts = d.kill9();
    let d = opts.start().await;
    assert_eq!(
        std::fs::read(ca_dir.join("fetchgate-ca.pem")).unwrap(),
        cert,
        "reused on the next start"
    );
    assert!(d.log().contains("reusing generated CA certificate"));
}

#[tokio::test]
async fn without_credentials_random_ones_are_generated_and_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DaemonOpts::new(dir.path());
    opts.env.clear();
    let d = opts.start().await;
    let path = d.opts.spool.join("control-auth");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pair = std::fs::read_to_string(&path).unwrap();
    let (user, password) = pair.trim().split_once(':').unwrap();
    assert!(password.len() >= 20);
    let r = d
        .anon(Method::POST, "/session")
        .basic_auth("craft", Some("craft"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .anon(Method::POST, "/session")
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_taken_proxy_port_exits_1_and_a_taken_control_port_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap().port();

    let mut opts = DaemonOpts::new(&dir.path().join("a"));
    opts.proxy_port = taken;
    let out = opts.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = std::fs::read_to_string(opts.log_path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR:"))
        .expect("an ERROR: line in the log file");
    assert!(
        line.contains("bind: address already in use") && line.contains(&taken.to_string()),
        "{line}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR:") && stderr.contains("bind: address already in use"),
        "{stderr}"
    );

    let mut opts = DaemonOpts::new(&dir.path().join("b"));
    opts.control_port = taken;
    let out = opts.command().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let log = std::fs::read_to_string(opts.log_path()).unwrap();
    assert!(
        log.lines().any(|l| l.contains("ERROR:")
            && l.contains("bind: address already in use")
            && l.contains(&taken.to_string())),
        "{log}"
    );
}

#[tokio::test]
async fn idle_daemon_shuts_down_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = DaemonOpts::new(dir.path())
        .arg("--idle-shutdown=2")
        .start()
        .await;
    // Activity postpones the shutdown; status probes do not count.
    let t = Instant::now();
    d.create(json!({})).await;
    for _ in 0..10 {
        d.anon(Method::GET, "/status").send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = d.wait_exit(Duration::from_secs(5)).expect("idle shutdown");
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "shut down after {:?}",
        t.elapsed()
    );
    assert!(d.log().contains("idle shutdown"));
}

#[tokio::test]
async fn sigusr1_reopens_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let log = d.opts.log_path();
    let rotated = dir.path().join("fetchgate.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(Instant::now() < deadline, "log file not reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.create(json!({})).await;
    // The line reaches the file when the logger flushes: wait for it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("session created")
    {
        assert!(
            Instant::now() < deadline,
            "no log line in the reopened file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("session created")
    );
}

#[tokio::test]
async fn serve_subcommand_runs_the_same_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DaemonOpts::new(dir.path());
    opts.serve_subcommand = true;
    let d = opts.start().await;
    d.create(json!({})).await;
}

#[tokio::test]
async fn security_events_go_to_their_own_json_log() {
    let dir = tempfile::tempdir().unwrap();
    let security = dir.path().join("security.log");
    let d = DaemonOpts::new(dir.path())
        .arg(&format!("--security-log-file={}", security.display()))
        .start()
        .await;
    let r = d
        .anon(Method::POST, "/session")
        .basic_auth("craft", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    d.create(json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = std::fs::read_to_string(&security).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["fields"]["event"], "control-auth-failure");
    assert_eq!(events[0]["fields"]["path"], "/session");
    assert!(!text.contains("guess"), "credentials never logged");
}

#[tokio::test]
async fn revoked_token_use_and_bad_proxy_credentials_are_security_events() {
    let dir = tempfile::tempdir().unwrap();
    let security = dir.path().join("security.log");
    let d = DaemonOpts::new(dir.path())
        .arg(&format!("--security-log-file={}", security.display()))
        .start()
        .await;
    let (id, token) = d.create(json!({})).await;
    assert_eq!(d.revoke(&id, &token).await.status(), 200);
    assert_eq!(
        d.proxy_get("http://127.0.0.1:9/x", Some((&id, &token)))
            .await,
        407
    );
    assert_eq!(
        d.proxy_get("http://127.0.0.1:9/x", Some((&id, "not-the-token")))
            .await,
        407
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = std::fs::read_to_string(&security).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["fields"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["revoked-token-use", "proxy-auth-failure"], "{text}");
    assert!(
        events[0]["fields"]["session"]
            .as_str()
            .unwrap()
            .contains(&id)
    );
    assert!(!text.contains(&token), "tokens are never logged");
}

#[tokio::test]
async fn log_format_json_flag_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    // The flag wins over the file.
    let d = DaemonOpts::new(dir.path())
        .config_toml("[logging]\nformat = \"text\"\n")
        .arg("--log-format=json")
        .start()
        .await;
    d.create(json!({})).await;
    let log = d.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "session created"),
        "{log}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string()));
}

#[test]
fn version_and_wrong_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_fetchgate"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("fetchgate {}", env!("CARGO_PKG_VERSION"))
    );
    for bad in [
        vec!["--no-such-flag"],
        vec!["--proxy-port=notaport"],
        vec!["--cert=/x.pem"],
        vec!["--verbosity=loud"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fetchgate"))
            .args(&bad)
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
    }
}

#[tokio::test]
async fn a_bad_config_file_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DaemonOpts::new(dir.path()).config_toml("[storage]\nretentoin = 5\n");
    let out = opts.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fetchgate.toml") && stderr.contains("retentoin"),
        "{stderr}"
    );
}
