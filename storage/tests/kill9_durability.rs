//! An acknowledged append survives `kill -9` of the process that made it.
//!
//! The test re-runs its own binary as a child that appends records as fast as it can
//! and prints each acknowledged sequence number; the parent kills it mid-stream with
//! SIGKILL, reopens the database and checks every acknowledged record is there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fetchgate_storage::rocks::RocksStorage;
use fetchgate_storage::{AuditLog, AuditRecord, Denied, DeniedStage, SessionId, Timestamp};

const CHILD_ENV: &str = "FETCHGATE_KILL9_CHILD_DB";

fn record(n: u64) -> AuditRecord {
    AuditRecord::Denied(Denied {
        time: Timestamp::from_micros(n as i64),
        method: "GET".into(),
        url: format!("http://h/{n}"),
        client_address: "127.0.0.1:1".into(),
        reason: "x".repeat(400),
        stage: DeniedStage::Policy,
    })
}

fn session(i: u64) -> SessionId {
    SessionId::from_bytes([i as u8; 16])
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_appends_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // Child: 8 concurrent appenders over 4 sessions, reporting each ack.
        let store = Arc::new(RocksStorage::open(path.as_ref()).unwrap());
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
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_appends_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    let start = Instant::now();
    for line in stdout.lines() {
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
        assert_eq!(
            store.counters(session(s)).await.unwrap().denied,
            records.len() as u64
        );
    }
}
