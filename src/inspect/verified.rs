//! Verdicts that are costly to reach and follow from a file's bytes and name alone (a
//! wheel's every file expanded and hashed against its `RECORD`), remembered across
//! sessions by the file's sha256.
//!
//! A download whose sha256 is known before it starts (the index that listed it gave
//! it) and was verified in full before is then checked by that digest alone: its
//! streamed sha256 must still equal the listed one, which makes its bytes the very bytes
//! verified before, so the verdict carries over. Build farms fetch the same popular
//! files over and over, and each full check costs several times the proxying itself.
//!
//! Only what a complete check approved is remembered, never a rejection, and only under
//! the name it was checked under (a wheel's name is part of its check). In memory, per
//! node, least recently used first out; `[proxy] verified-cache-size` entries, 0 off.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::telemetry::metric;

/// The largest verdict remembered, in bytes of its text (larger ones are checked in
/// full every time), so the cache's memory is bounded by its size times this.
pub const MAX_VERDICT_BYTES: usize = 4096;

/// By the sha256 of a file: the name it was verified under, and the verdict.
type Entries<V> = LruCache<[u8; 32], (String, Arc<V>)>;

/// Verdicts of one kind (`kind` labels the metrics), by the sha256 of the file.
pub struct Verified<V> {
    kind: &'static str,
    /// `None`: turned off.
    entries: Option<Mutex<Entries<V>>>,
}

impl<V> Verified<V> {
    /// Remembers up to `capacity` files; 0 remembers none.
    pub fn new(kind: &'static str, capacity: usize) -> Self {
        Verified {
            kind,
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    /// The verdict on the file with this sha256, if it was verified under this name.
    pub fn get(&self, sha256: &[u8; 32], name: &str) -> Option<Arc<V>> {
        let entries = self.entries.as_ref()?;
        let hit = entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sha256)
            .filter(|(verified_as, _)| verified_as == name)
            .map(|(_, verdict)| Arc::clone(verdict));
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!(metric::VERIFIED_CACHE, "kind" => self.kind, "result" => result)
            .increment(1);
        hit
    }

    /// Remembers that the file with this sha256, under this name, was verified in full
    /// with this verdict, unless its text (`bytes`) is over [`MAX_VERDICT_BYTES`].
    pub fn insert(&self, sha256: [u8; 32], name: &str, verdict: V, bytes: usize) {
        let Some(entries) = &self.entries else { return };
        if bytes > MAX_VERDICT_BYTES {
            return;
        }
        entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(sha256, (name.to_owned(), Arc::new(verdict)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_found_by_sha256_under_the_name_it_was_reached_under() {
        let cache = Verified::new("test", 2);
        cache.insert([1; 32], "a.whl", "first", 5);
        assert_eq!(cache.get(&[1; 32], "a.whl").as_deref(), Some(&"first"));
        assert!(cache.get(&[1; 32], "b.whl").is_none(), "another name");
        assert!(cache.get(&[2; 32], "a.whl").is_none(), "another file");
    }

    #[test]
    fn the_least_recently_used_goes_first_and_large_verdicts_are_not_kept() {
        let cache = Verified::new("test", 2);
        cache.insert([1; 32], "a", 1, 1);
        cache.insert([2; 32], "b", 2, 1);
        assert!(cache.get(&[1; 32], "a").is_some());
        cache.insert([3; 32], "c", 3, 1);
        assert!(cache.get(&[2; 32], "b").is_none(), "least recently used");
        assert!(cache.get(&[1; 32], "a").is_some());
        cache.insert([4; 32], "d", 4, MAX_VERDICT_BYTES + 1);
        assert!(cache.get(&[4; 32], "d").is_none());
    }

    #[test]
    fn size_zero_remembers_nothing() {
        let cache = Verified::new("test", 0);
        cache.insert([1; 32], "a", 1, 1);
        assert!(cache.get(&[1; 32], "a").is_none());
    }
}
