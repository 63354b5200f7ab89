//! An acknowledged append survives `kill -9` of the process that made it, and so do
//! the artifact index entries it made, though those wait in memory before they are
//! written out.
//!
//! Each test re-runs its own binary as a child that appends records and prints each
//! acknowledged sequence number; the parent kills it with SIGKILL, reopens the database
//! and checks every acknowledged record is there and indexed.

#[path = "support/records.rs"]
mod records;

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fetchgate_storage::rocks::{OpenOptions, RocksStorage};
use fetchgate_storage::{AuditLog, AuditRecord, Denied, DeniedStage, SessionId, Timestamp};

const CHILD_ENV: &str = "FETCHGATE_KILL9_CHILD_DB";

/// The sha256 of record `n`'s download.
fn sha(n: u64) -> [u8; 32] {
    let mut sha = [0xAB; 32];
    sha[..8].copy_from_slice(&n.to_be_bytes());
    sha
}

/// Record `n`: a download of `n`'s content (named `p<n>`, version 1) when `n` is even,
/// else a denial.
fn record(n: u64) -> AuditRecord {
    if n % 2 == 1 {
        return AuditRecord::Denied(Denied {
            time: Timestamp::from_micros(n as i64),
            method: "GET".into(),
            url: format!("http://h/{n}"),
            client_address: "127.0.0.1:1".into(),
            reason: "x".repeat(400),
            stage: DeniedStage::Policy,
        });
    }
    records::named_download(n as i64, sha(n), n, &format!("p{n}"))
}

/// Runs the test `name` of this binary again as a child on database `db`.
fn spawn_child(name: &str, db: &std::path::Path) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, stdout)
}

/// Checks that every acknowledged download of `session` (record numbers `ns`) is found
/// by both artifact queries.
async fn assert_indexed(store: &RocksStorage, session: SessionId, ns: impl Iterator<Item = u64>) {
    for n in ns.filter(|n| n % 2 == 0) {
        assert!(
            store
                .sessions_with_artifact(sha(n))
                .await
                .unwrap()
                .contains(&session),
            "the artifact of record {n} is not indexed"
        );
        assert_eq!(
            store
                .artifacts_named(&format!("p{n}"), "1", None)
                .await
                .unwrap(),
            vec![(sha(n), session)],
            "the name of record {n} is not indexed"
        );
    }
}

fn session(i: u64) -> SessionId {
    SessionId::from_bytes([i as u8; 16])
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_appends_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // Child: 8 concurrent appenders over 4 sessions, reporting each ack; the index
        // tail is small, so some entries are written out and some wait in memory.
        let options = OpenOptions {
            index_tail_entries: 1000,
            ..OpenOptions::default()
        };
        let store = Arc::new(RocksStorage::open_with(path.as_ref(), options).unwrap());
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let n = t * 1_000_000 + i;
                    let seq = store.append(session(t % 4), record(n)).await.unwrap();
                    println!("ack {} {seq} {n}", t % 4);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let (mut child, stdout) = spawn_child("acknowledged_appends_survive_kill_9", dir.path());
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    let start = Instant::now();
    for line in stdout {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ack ") else {
            continue;
        };
        let v: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
        acked.push((v[0], v[1], v[2]));
        if acked.len() >= 3000 || start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap(); // SIGKILL
            break;
        }
    }
    child.wait().unwrap();
    assert!(
        acked.len() >= 100,
        "child acknowledged only {} appends",
        acked.len()
    );

    let store = RocksStorage::open(dir.path()).unwrap();
    for s in 0..4 {
        let records = store.scan(session(s)).await.unwrap();
        for &(_, seq, n) in acked.iter().filter(|a| a.0 == s) {
            assert_eq!(
                records.get(seq as usize),
                Some(&record(n)),
                "session {s} seq {seq} lost"
            );
        }
        // Whatever was written is numbered without gaps.
        let counters = store.counters(session(s)).await.unwrap();
        assert_eq!(counters.denied + counters.downloads, records.len() as u64);
        assert_indexed(
            &store,
            session(s),
            acked.iter().filter(|a| a.0 == s).map(|a| a.2),
        )
        .await;
    }
}

/// Index entries that were only in memory when the process was killed are rebuilt from
/// the audit log on the next open, and written out at the next clean stop.
#[tokio::test(flavor = "multi_thread")]
async fn index_entries_waiting_in_memory_are_rebuilt_after_kill_9() {
    let name = "index_entries_waiting_in_memory_are_rebuilt_after_kill_9";
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // Child: two entries per download, an ingest at every fourth entry: after
        // records 0..14 (seven downloads) the last download's entries wait in memory.
        let options = OpenOptions {
            index_tail_entries: 4,
            ..OpenOptions::default()
        };
        let store = RocksStorage::open_with(path.as_ref(), options).unwrap();
        for n in 0..14 {
            store.append(session(1), record(n)).await.unwrap();
        }
        println!("appended all 14");
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdout) = spawn_child(name, dir.path());
    // (libtest may print its own text before the child's on the same line.)
    let done = stdout.find(|line| line.as_ref().is_ok_and(|l| l.ends_with("appended all 14")));
    assert!(
        done.is_some(),
        "the child stopped before appending everything"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = RocksStorage::open(dir.path()).unwrap();
    assert_eq!(store.scan(session(1)).await.unwrap().len(), 14);
    assert_indexed(&store, session(1), 0..14).await;
    drop(store);
    // Written out at the clean stop: found again with nothing to rebuild.
    let store = RocksStorage::open(dir.path()).unwrap();
    assert_indexed(&store, session(1), 0..14).await;
}
