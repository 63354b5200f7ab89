//! Verdicts that are costly to reach and follow from a file's bytes alone, remembered
//! across sessions under the name the file was fetched by, with the sha256 of the bytes
//! they were reached on:
//!
//! - `wheel`: a wheel whose every file was expanded and hashed against its `RECORD`, by
//!   file name. The project page gives a wheel's sha256 before it streams, so a wheel
//!   listed with the remembered sha256 is neither spooled nor expanded again: it is
//!   approved when its streamed sha256 equals the page's, which makes its bytes the very
//!   bytes verified before.
//! - `deb`: the license a `.deb`'s data member gave when it was scanned to the end, by
//!   URL. A `.deb`'s sha256 is known only once it has streamed, so a remembered URL is
//!   not scanned, and its license is taken only if the streamed sha256 is the remembered
//!   one (otherwise the entry is dropped, and the next download is scanned again).
//!
//! Build farms fetch the same files over and over, and each of these checks costs
//! several times the proxying itself. Only what a complete check reached is remembered,
//! never a rejection or an abandoned scan. In memory, per node, least recently used first
//! out; `[proxy] verified-cache-size` entries of each kind, 0 off.
//!
//! Builders often fetch the same new file at once. While a wheel is being checked
//! ([`Verified::begin`]), later downloads of the same name and sha256 only spool it and
//! take that check's verdict ([`Checking::wait`]), checking their own copy only if it
//! approved nothing or took too long.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::telemetry::metric;

/// The largest entry remembered, in bytes of its name and verdict text (larger ones are
/// checked in full every time), so the cache's memory is bounded by its size times this.
pub const MAX_ENTRY_BYTES: usize = 8192;

/// A verdict and the sha256 of the bytes it was reached on.
pub struct Remembered<V> {
    pub sha256: [u8; 32],
    pub verdict: Arc<V>,
}

/// By name: what was reached on the bytes fetched by that name last.
type Entries<V> = LruCache<String, ([u8; 32], Arc<V>)>;
/// By name: the check under way, and the sha256 of the file it checks.
type Running<V> = HashMap<String, ([u8; 32], Arc<Checking<V>>)>;

/// Verdicts of one kind (`kind` labels the metrics).
pub struct Verified<V> {
    kind: &'static str,
    /// `None`: turned off.
    entries: Option<Mutex<Entries<V>>>,
    /// The checks under way, by name, with the sha256 of the file checked.
    checking: Mutex<Running<V>>,
}

/// How a download of a file whose sha256 is known before it streams is to be checked.
pub enum Begun<V> {
    /// Verified before: by its sha256 alone.
    Remembered(Arc<V>),
    /// Another download of it is being checked: take that verdict when it comes.
    Checking(Arc<Checking<V>>),
    /// In full, for the downloads that start meanwhile too.
    Check(Leader<V>),
}

/// A complete check under way, as the downloads waiting for it see it.
pub struct Checking<V> {
    /// `None` while it runs; then the approval, or `None` if there was none.
    verdict: Mutex<Option<Option<Arc<V>>>>,
    ended: Condvar,
}

impl<V> Checking<V> {
    /// The approval the check reached, waiting for it at most `limit`; `None` if it
    /// approved nothing, ended without a verdict, or is still running.
    pub fn wait(&self, limit: Duration) -> Option<Arc<V>> {
        let deadline = Instant::now() + limit;
        let mut verdict = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(ended) = &*verdict {
                return ended.clone();
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            verdict = self
                .ended
                .wait_timeout(verdict, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn end(&self, approval: Option<Arc<V>>) {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(approval);
        self.ended.notify_all();
    }
}

/// The download doing a complete check; ending it without [`Leader::approve`] (rejected,
/// cut off, failed) tells those waiting that there is no approval.
pub struct Leader<V> {
    verified: Arc<Verified<V>>,
    name: String,
    sha256: [u8; 32],
    /// `None`: not registered (the cache is off, or another file of this name is being
    /// checked), so nobody waits for it.
    checking: Option<Arc<Checking<V>>>,
}

impl<V> Leader<V> {
    /// The check approved the file: remember the verdict (as [`Verified::insert`]) and
    /// give it to the downloads waiting.
    pub fn approve(mut self, verdict: V, bytes: usize) {
        let verdict = Arc::new(verdict);
        self.verified
            .remember(&self.name, self.sha256, Arc::clone(&verdict), bytes);
        self.end(Some(verdict));
    }

    fn end(&mut self, approval: Option<Arc<V>>) {
        let Some(checking) = self.checking.take() else {
            return;
        };
        let mut running = self.verified.checking_lock();
        if running
            .get(&self.name)
            .is_some_and(|(_, c)| Arc::ptr_eq(c, &checking))
        {
            running.remove(&self.name);
        }
        drop(running);
        checking.end(approval);
    }
}

impl<V> Drop for Leader<V> {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl<V> Verified<V> {
    /// Remembers up to `capacity` names; 0 remembers none.
    pub fn new(kind: &'static str, capacity: usize) -> Self {
        Verified {
            kind,
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            checking: Mutex::default(),
        }
    }

    fn checking_lock(&self) -> std::sync::MutexGuard<'_, Running<V>> {
        self.checking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How to check a download of the file with this sha256 fetched by this name: by
    /// its remembered verdict, by the verdict of the check of it under way, or in full.
    pub fn begin(self: &Arc<Self>, name: &str, sha256: [u8; 32]) -> Begun<V> {
        let mut leader = Leader {
            verified: Arc::clone(self),
            name: name.to_owned(),
            sha256,
            checking: None,
        };
        if self.entries.is_none() {
            return Begun::Check(leader);
        }
        if let Some(known) = self.lookup(name, Some(&sha256)) {
            self.count("hit");
            return Begun::Remembered(known.verdict);
        }
        let mut running = self.checking_lock();
        match running.get(name) {
            Some((checked, checking)) if *checked == sha256 => {
                self.count("shared");
                Begun::Checking(Arc::clone(checking))
            }
            Some(_) => {
                self.count("miss");
                Begun::Check(leader)
            }
            None => {
                self.count("miss");
                let checking = Arc::new(Checking {
                    verdict: Mutex::new(None),
                    ended: Condvar::new(),
                });
                running.insert(name.to_owned(), (sha256, Arc::clone(&checking)));
                leader.checking = Some(checking);
                Begun::Check(leader)
            }
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Entries<V>>> {
        let entries = self.entries.as_ref()?;
        Some(entries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// What was reached on the file fetched by this name, if it is the file with sha256
    /// `expected` (any file when `None`: the caller then checks [`Remembered::sha256`]).
    pub fn get(&self, name: &str, expected: Option<&[u8; 32]>) -> Option<Remembered<V>> {
        let hit = self.lookup(name, expected);
        self.count(if hit.is_some() { "hit" } else { "miss" });
        hit
    }

    fn lookup(&self, name: &str, expected: Option<&[u8; 32]>) -> Option<Remembered<V>> {
        self.lock()?
            .get(name)
            .filter(|(sha256, _)| expected.is_none_or(|e| e == sha256))
            .map(|(sha256, verdict)| Remembered {
                sha256: *sha256,
                verdict: Arc::clone(verdict),
            })
    }

    fn count(&self, result: &'static str) {
        metrics::counter!(metric::VERIFIED_CACHE, "kind" => self.kind, "result" => result)
            .increment(1);
    }

    /// Remembers the verdict a complete check reached on the file with this sha256,
    /// fetched by this name, unless name and verdict text (`bytes`) are over
    /// [`MAX_ENTRY_BYTES`].
    pub fn insert(&self, name: &str, sha256: [u8; 32], verdict: V, bytes: usize) {
        self.remember(name, sha256, Arc::new(verdict), bytes);
    }

    fn remember(&self, name: &str, sha256: [u8; 32], verdict: Arc<V>, bytes: usize) {
        if name.len() + bytes > MAX_ENTRY_BYTES {
            return;
        }
        if let Some(mut entries) = self.lock() {
            entries.put(name.to_owned(), (sha256, verdict));
        }
    }

    /// Forgets the verdict remembered for this name (its file has changed).
    pub fn forget(&self, name: &str) {
        if let Some(mut entries) = self.lock() {
            entries.pop(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict<V: Copy>(r: Option<Remembered<V>>) -> Option<V> {
        r.map(|r| *r.verdict)
    }

    #[test]
    fn a_verdict_is_found_by_name_for_the_bytes_it_was_reached_on() {
        let cache = Verified::new("test", 2);
        cache.insert("a.whl", [1; 32], "first", 5);
        assert_eq!(verdict(cache.get("a.whl", Some(&[1; 32]))), Some("first"));
        assert!(cache.get("a.whl", Some(&[2; 32])).is_none(), "other bytes");
        assert!(cache.get("b.whl", Some(&[1; 32])).is_none(), "another name");
        let any = cache.get("a.whl", None).unwrap();
        assert_eq!((any.sha256, *any.verdict), ([1; 32], "first"));
        cache.insert("a.whl", [2; 32], "rebuilt", 7);
        assert!(cache.get("a.whl", Some(&[1; 32])).is_none(), "replaced");
        cache.forget("a.whl");
        assert!(cache.get("a.whl", None).is_none());
    }

    #[test]
    fn the_least_recently_used_goes_first_and_large_entries_are_not_kept() {
        let cache = Verified::new("test", 2);
        cache.insert("a", [1; 32], 1, 1);
        cache.insert("b", [2; 32], 2, 1);
        assert!(cache.get("a", None).is_some());
        cache.insert("c", [3; 32], 3, 1);
        assert!(cache.get("b", None).is_none(), "least recently used");
        assert!(cache.get("a", None).is_some());
        cache.insert("d", [4; 32], 4, MAX_ENTRY_BYTES);
        assert!(cache.get("d", None).is_none());
        cache.insert("d", [4; 32], 4, MAX_ENTRY_BYTES - 1);
        assert!(cache.get("d", None).is_some());
    }

    #[test]
    fn downloads_that_start_during_a_check_take_its_verdict() {
        let cache = Arc::new(Verified::new("test", 4));
        let Begun::Check(leader) = cache.begin("a.whl", [1; 32]) else {
            panic!("the first download checks");
        };
        let Begun::Checking(waiting) = cache.begin("a.whl", [1; 32]) else {
            panic!("the second waits");
        };
        assert!(
            matches!(cache.begin("a.whl", [2; 32]), Begun::Check(_)),
            "other bytes are checked on their own"
        );
        assert!(
            waiting.wait(Duration::from_millis(1)).is_none(),
            "still running"
        );
        let waiter = {
            let waiting = Arc::clone(&waiting);
            std::thread::spawn(move || waiting.wait(Duration::from_secs(10)).map(|v| *v))
        };
        leader.approve("verdict", 7);
        assert_eq!(waiter.join().unwrap(), Some("verdict"));
        assert_eq!(waiting.wait(Duration::ZERO).as_deref(), Some(&"verdict"));
        assert!(matches!(
            cache.begin("a.whl", [1; 32]),
            Begun::Remembered(v) if *v == "verdict"
        ));
    }

    #[test]
    fn a_check_that_ends_without_approval_lets_the_next_download_check() {
        let cache = Arc::new(Verified::<&str>::new("test", 4));
        let Begun::Check(leader) = cache.begin("a.whl", [1; 32]) else {
            panic!("the first download checks");
        };
        let Begun::Checking(waiting) = cache.begin("a.whl", [1; 32]) else {
            panic!("the second waits");
        };
        drop(leader);
        assert!(waiting.wait(Duration::from_secs(10)).is_none());
        assert!(matches!(cache.begin("a.whl", [1; 32]), Begun::Check(_)));
    }

    #[test]
    fn size_zero_remembers_nothing() {
        let cache = Arc::new(Verified::new("test", 0));
        cache.insert("a", [1; 32], 1, 1);
        assert!(cache.get("a", None).is_none());
        let _first = cache.begin("a", [1; 32]);
        assert!(
            matches!(cache.begin("a", [1; 32]), Begun::Check(_)),
            "every download checks its own"
        );
    }
}
