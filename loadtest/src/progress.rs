//! The live progress line on stderr (indicatif): elapsed time, requests, request rate,
//! throughput, errors and sessions. Off when stderr is not a terminal or when asked.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::Live;

/// A running progress line; [`Progress::finish`] clears it.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts the line for `label` unless `quiet` or stderr is not a terminal.
    pub fn start(live: Arc<Live>, label: &str, quiet: bool) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                task: None,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_owned());
        let shown = bar.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                let requests = live.requests.load(Ordering::Relaxed);
                let bytes = live.bytes.load(Ordering::Relaxed);
                shown.set_message(format!(
                    "{secs:.1} s  {requests} req  {:.0} req/s  {:.1} MB/s  errors {}  sessions {}",
                    requests as f64 / secs,
                    bytes as f64 / 1e6 / secs,
                    live.errors.load(Ordering::Relaxed),
                    live.sessions.load(Ordering::Relaxed),
                ));
                shown.tick();
            }
        });
        Progress {
            bar: Some(bar),
            task: Some(task),
        }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
