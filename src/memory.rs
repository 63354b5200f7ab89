//! Returning freed memory to the system while the daemon is quiet.
//!
//! The daemon allocates with mimalloc (`main.rs`), which hands pages that became free
//! back to the kernel only during later allocator calls on the thread that owns them,
//! once their purge delay has passed. A worker that goes quiet after a burst (a thousand
//! builders connect, fetch, and keep their connections open) would keep the burst's
//! freed buffers in the resident set for as long as it stays quiet. So each runtime
//! worker asks the allocator to collect when it parks (has nothing to run), at most once
//! a second: under load that is a few calls a second, each touching only that thread's
//! heap (`docs/performance.md`, idle connections).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The shortest time between two collections on one thread.
const INTERVAL: Duration = Duration::from_secs(1);

// mimalloc's own function, linked through the `mimalloc` crate (`libmimalloc-sys`
// declares it only behind a feature that brings in one more crate).
unsafe extern "C" {
    fn mi_collect(force: bool);
}

/// For `tokio::runtime::Builder::on_thread_park`: collects the calling thread's heap
/// unless it did less than [`INTERVAL`] ago. Not forced: pages freed within their purge
/// delay stay for the next collection, so a busy worker does not give back and fault in
/// the same pages over and over.
pub fn on_worker_park() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    LAST.with(|last| {
        let now = Instant::now();
        if last
            .get()
            .is_some_and(|at| now.duration_since(at) < INTERVAL)
        {
            return;
        }
        last.set(Some(now));
        // SAFETY: mi_collect has no preconditions: it works on the calling thread's heap
        // (and frees nothing a live allocation uses).
        unsafe { mi_collect(false) };
    });
}
