//! Concurrency limits: connections to the proxy port overall, and requests in flight
//! per session, so one builder (or a flood of connections) cannot starve the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fetchgate_storage::SessionId;

/// Requests in flight per session, bounded.
pub struct SessionLimiter {
    max: usize,
    inflight: Mutex<HashMap<SessionId, usize>>,
}

/// One request's place in its session's budget; released when dropped.
pub struct InFlight {
    limiter: Arc<SessionLimiter>,
    session: SessionId,
}

impl SessionLimiter {
    /// At most `max` concurrent requests per session.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SessionLimiter {
            max,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for a request of `session`, or `None` when its budget is spent.
    pub fn try_acquire(self: &Arc<Self>, session: SessionId) -> Option<InFlight> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(session).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(InFlight {
            limiter: Arc::clone(self),
            session,
        })
    }

    /// The configured budget.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self
            .limiter
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_per_session_and_released_on_drop() {
        let l = SessionLimiter::new(2);
        let a = SessionId::from_bytes([1; 16]);
        let b = SessionId::from_bytes([2; 16]);
        let a1 = l.try_acquire(a).unwrap();
        let _a2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        assert!(l.try_acquire(b).is_some(), "other sessions are unaffected");
        drop(a1);
        assert!(l.try_acquire(a).is_some());
    }
}
