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

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

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

/// Verdicts of one kind (`kind` labels the metrics).
pub struct Verified<V> {
    kind: &'static str,
    /// `None`: turned off.
    entries: Option<Mutex<Entries<V>>>,
}

impl<V> Verified<V> {
    /// Remembers up to `capacity` names; 0 remembers none.
    pub fn new(kind: &'static str, capacity: usize) -> Self {
        Verified {
            kind,
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Entries<V>>> {
        let entries = self.entries.as_ref()?;
        Some(entries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// What was reached on the file fetched by this name, if it is the file with sha256
    /// `expected` (any file when `None`: the caller then checks [`Remembered::sha256`]).
    pub fn get(&self, name: &str, expected: Option<&[u8; 32]>) -> Option<Remembered<V>> {
        let hit = self
            .lock()?
            .get(name)
            .filter(|(sha256, _)| expected.is_none_or(|e| e == sha256))
            .map(|(sha256, verdict)| Remembered {
                sha256: *sha256,
                verdict: Arc::clone(verdict),
            });
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!(metric::VERIFIED_CACHE, "kind" => self.kind, "result" => result)
            .increment(1);
        hit
    }

    /// Remembers the verdict a complete check reached on the file with this sha256,
    /// fetched by this name, unless name and verdict text (`bytes`) are over
    /// [`MAX_ENTRY_BYTES`].
    pub fn insert(&self, name: &str, sha256: [u8; 32], verdict: V, bytes: usize) {
        if name.len() + bytes > MAX_ENTRY_BYTES {
            return;
        }
        if let Some(mut entries) = self.lock() {
            entries.put(name.to_owned(), (sha256, Arc::new(verdict)));
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
    fn size_zero_remembers_nothing() {
        let cache = Verified::new("test", 0);
        cache.insert("a", [1; 32], 1, 1);
        assert!(cache.get("a", None).is_none());
    }
}
