//! The builders' own log of completed downloads (`--completions FILE`): one JSON line
//! per download a builder received whole, with the status 200, the artifact's size and
//! the sha256 the builder computed over the bytes it got, written as soon as the body
//! ends. It is the ground truth a crash test counts the proxy's reports against: a
//! download in this log was acknowledged to the builder, so its record must survive
//! whatever happens to the proxy afterwards. Never holds a session token.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::verify::{Expected, Outcome};

/// One download a builder saw complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Completion {
    /// The session it was made in; none against a target without sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The normalised URL, as the report shows it.
    pub url: String,
    /// Hex sha256 of the body as received.
    pub sha256: String,
    pub size: u64,
}

impl Completion {
    /// What a report must say about this download.
    pub fn expected(&self) -> Result<Expected, CompletionsError> {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut sha256)
            .map_err(|e| CompletionsError::Malformed(format!("sha256 {:?}: {e}", self.sha256)))?;
        Ok(Expected {
            url: self.url.clone(),
            outcome: Outcome::Body {
                sha256,
                size: self.size,
            },
        })
    }
}

/// Why the log cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CompletionsError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a completion line: {0}")]
    Malformed(String),
}

/// The log, shared by every builder; each line is written with one `write` call on an
/// unbuffered file, so what a builder logged is in the file even if the harness is
/// killed right after.
#[derive(Debug)]
pub struct CompletionLog {
    file: Mutex<File>,
}

impl CompletionLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: &Path) -> Result<CompletionLog, CompletionsError> {
        Ok(CompletionLog {
            file: Mutex::new(File::create(path)?),
        })
    }

    /// Appends one completion.
    pub fn record(&self, completion: &Completion) -> Result<(), CompletionsError> {
        let mut line = serde_json::to_vec(completion)
            .map_err(|e| CompletionsError::Malformed(e.to_string()))?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        Ok(file.write_all(&line)?)
    }
}

/// Reads a log, grouped by session (completions without a session under `None`). A
/// last line cut short (the harness killed mid-write) is ignored; any other bad line
/// is an error.
pub fn read(path: &Path) -> Result<BTreeMap<Option<String>, Vec<Completion>>, CompletionsError> {
    let mut by_session: BTreeMap<Option<String>, Vec<Completion>> = BTreeMap::new();
    let mut lines = BufReader::new(File::open(path)?).lines().peekable();
    while let Some(line) = lines.next() {
        let line = line?;
        match serde_json::from_str::<Completion>(&line) {
            Ok(c) => by_session.entry(c.session_id.clone()).or_default().push(c),
            Err(_) if lines.peek().is_none() => {}
            Err(e) => return Err(CompletionsError::Malformed(format!("{line:?}: {e}"))),
        }
    }
    Ok(by_session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_round_trip_grouped_by_session_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = CompletionLog::create(&path).unwrap();
        let c = |session: &str, n: u64| Completion {
            session_id: Some(session.into()),
            url: format!("http://127.0.0.1:1/artifact/{n}/0"),
            sha256: "ab".repeat(32),
            size: n,
        };
        for completion in [c("s1", 1), c("s2", 2), c("s1", 3)] {
            log.record(&completion).unwrap();
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"session-id\":\"s3\",\"u").unwrap();
        let read = read(&path).unwrap();
        assert_eq!(read[&Some("s1".to_owned())], [c("s1", 1), c("s1", 3)]);
        assert_eq!(read[&Some("s2".to_owned())], [c("s2", 2)]);
        assert_eq!(read.len(), 2);
        assert!(matches!(
            read[&Some("s2".to_owned())][0].expected().unwrap().outcome,
            Outcome::Body { size: 2, .. }
        ));
    }

    #[test]
    fn a_bad_line_before_the_last_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(
            &path,
            "nonsense\n{\"url\":\"u\",\"sha256\":\"00\",\"size\":1}\n",
        )
        .unwrap();
        assert!(matches!(read(&path), Err(CompletionsError::Malformed(_))));
    }
}
