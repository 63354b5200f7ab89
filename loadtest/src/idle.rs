//! The idle-connections scenario: N keep-alive connections through the proxy, each having
//! completed one small request (plain, or inside an intercepted CONNECT tunnel) and then
//! left open, to measure what an idle connection costs the proxy in memory: the growth
//! of its resident set divided by the number of connections. Then N more: the growth
//! they cause, per connection, leaves out what the first N paid once for the process
//! (allocator arenas, the audit memtable), which varies by several MiB from run to run.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::{ConnMode, ErrorKind, Fetcher, Scheme};
use crate::content::Artifact;
use crate::harness::Harness;
use crate::stats::IdleSummary;

/// Connections opened at once while building up the idle set.
const BATCH: usize = 64;
/// The proxy's memory is read every `SETTLE_STEP` until it has held within
/// `SETTLED_KIB` for `SETTLED_FOR` (at most `SETTLE_MAX`): an allocator may give the
/// buffers of the requests that opened the connections back a second or two later, and
/// what is measured is the connections held, not that transient.
const SETTLE_STEP: Duration = Duration::from_millis(250);
const SETTLED_FOR: Duration = Duration::from_secs(2);
const SETTLED_KIB: u64 = 256;
const SETTLE_MAX: Duration = Duration::from_secs(10);

/// The last readings of the proxy's resident set, enough to span `SETTLED_FOR`.
struct Readings(std::collections::VecDeque<u64>);

impl Readings {
    const WINDOW: usize = (SETTLED_FOR.as_millis() / SETTLE_STEP.as_millis()) as usize + 1;

    fn new() -> Self {
        Readings(std::collections::VecDeque::with_capacity(Self::WINDOW + 1))
    }

    /// Adds a reading; true once the readings span `SETTLED_FOR` within `SETTLED_KIB`.
    fn push(&mut self, rss_kib: u64) -> bool {
        self.0.push_back(rss_kib);
        if self.0.len() > Self::WINDOW {
            self.0.pop_front();
        }
        let (min, max) = self
            .0
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        self.0.len() == Self::WINDOW && max - min <= SETTLED_KIB
    }
}

/// Waits for the proxy's memory to settle and returns its usage then (`None` when the
/// proxy's processes are not known: after one step).
async fn settled(harness: &Harness) -> Option<crate::procstat::Usage> {
    let start = std::time::Instant::now();
    let mut readings = Readings::new();
    loop {
        tokio::time::sleep(SETTLE_STEP).await;
        let usage = harness.target.usage()?;
        if readings.push(usage.rss_kib) || start.elapsed() >= SETTLE_MAX {
            return Some(usage);
        }
    }
}

/// Opens `connections` idle keep-alive connections (`tls`: intercepted HTTPS) and
/// reports the proxy's memory per connection. The session, if any, is ended afterwards.
pub async fn run(
    harness: &Harness,
    connections: usize,
    tls: bool,
    policy: &str,
    label: &str,
) -> IdleSummary {
    let mut errors: BTreeMap<ErrorKind, u64> = BTreeMap::new();
    let control = harness.target.control();
    let session = match control {
        Some(c) => match c.create_session(policy, None).await {
            Ok(s) => Some(s),
            Err(_) => {
                *errors.entry(ErrorKind::Control).or_default() += 1;
                None
            }
        },
        None => None,
    };
    let scheme = if tls { Scheme::Https } else { Scheme::Http };
    let origin = harness.endpoint(scheme);
    let path = Artifact {
        size: 1024,
        index: 0,
    }
    .path();
    let fetcher = || {
        Fetcher::new(
            harness.target.route(session.as_ref()),
            ConnMode::KeepAlive,
            harness.tls.clone(),
            Duration::from_secs(30),
            false,
        )
    };
    // One connection first, so one-time costs (leaf certificate, upstream pool, lazily
    // allocated buffers) are paid before the baseline is read.
    let mut warm = fetcher();
    if let Err(e) = warm.get(scheme, &origin, &path).await {
        *errors.entry(e.kind).or_default() += 1;
    }
    let mut open = Vec::with_capacity(2 * connections);
    let before = settled(harness).await;
    // Two equal batches: the first also pays the proxy's one-off growth at this scale
    // (allocator arenas, the audit memtable); the second shows what each connection
    // adds to a process already holding N.
    let mut after = [None, None];
    let mut established_in = [0; 2];
    for (batch_no, reading) in after.iter_mut().enumerate() {
        let opened_before = open.len();
        let mut remaining = connections;
        while remaining > 0 {
            let n = remaining.min(BATCH);
            remaining -= n;
            let batch = (0..n).map(|_| {
                let mut f = fetcher();
                let (path, origin) = (path.clone(), origin.clone());
                async move { f.get(scheme, &origin, &path).await.map(|_| f) }
            });
            let handles: Vec<_> = batch.map(tokio::spawn).collect();
            for h in handles {
                match h.await {
                    Ok(Ok(f)) => open.push(f),
                    Ok(Err(e)) => *errors.entry(e.kind).or_default() += 1,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => {}
                }
            }
        }
        *reading = settled(harness).await;
        established_in[batch_no] = open.len() - opened_before;
    }
    let established = established_in[0];
    drop((warm, open));
    if let (Some(c), Some(s)) = (control, &session) {
        let ended = async {
            c.revoke(s).await?;
            c.end(s).await
        };
        if ended.await.is_err() {
            *errors.entry(ErrorKind::Control).or_default() += 1;
        }
    }
    let rss = |u: Option<crate::procstat::Usage>| u.map(|u| u.rss_kib);
    let (rss_before_kib, rss_after_kib, rss_after_second_kib) =
        (rss(before), rss(after[0]), rss(after[1]));
    let per = |from: Option<u64>, to: Option<u64>, n: usize| match (from, to) {
        (Some(b), Some(a)) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    IdleSummary {
        label: label.to_owned(),
        tls,
        connections,
        established,
        errors,
        rss_before_kib,
        rss_after_kib,
        rss_after_second_kib,
        kib_per_connection: per(rss_before_kib, rss_after_kib, established),
        kib_per_added_connection: per(rss_after_kib, rss_after_second_kib, established_in[1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_settled_only_after_holding_steady_for_the_whole_window() {
        let mut r = Readings::new();
        // A burst's buffers given back a second in: not settled before, nor until the
        // lower level has held for the whole window.
        for _ in 0..4 {
            assert!(!r.push(70_000));
        }
        for i in 1..Readings::WINDOW {
            assert!(
                !r.push(60_000 + (i as u64 % 2) * SETTLED_KIB),
                "reading {i}"
            );
        }
        assert!(r.push(60_000));
        // A step beyond the tolerance starts the wait again.
        assert!(!r.push(60_000 + SETTLED_KIB + 1));
    }
}
