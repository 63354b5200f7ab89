//! Idle shutdown: remembers when the daemon last did something for a client, so it
//! can exit after `--idle-shutdown` seconds of nothing. Health checks and metrics
//! scrapes do not count as activity; a session that sees no requests does not keep the
//! daemon alive either, because only requests touch the clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The time of the last client activity.
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Records activity now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last activity (or since start, if none).
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Resolves once the daemon has been idle for `limit`.
pub async fn wait_until_idle(activity: &Activity, limit: Duration) {
    loop {
        let idle = activity.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep((limit - idle).max(Duration::from_millis(50))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn activity_postpones_idleness() {
        let a = Activity::default();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(a.idle_for() >= Duration::from_millis(60));
        a.touch();
        assert!(a.idle_for() < Duration::from_millis(50));
        let t = Instant::now();
        wait_until_idle(&a, Duration::from_millis(100)).await;
        assert!(t.elapsed() >= Duration::from_millis(90));
    }
}
