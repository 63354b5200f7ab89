//! The newest artifact index entries, kept in memory until they are ingested as files.
//!
//! Index keys start with a sha256 or a package name, so consecutive downloads land at
//! random places in the key space; inserted one by one into a RocksDB memtable they
//! cost more CPU than the audit records themselves. The writer therefore keeps them here
//! instead: each group commit adds its keys as one sorted run, runs of similar length
//! are merged (so there are only logarithmically many), queries search every run, and
//! once enough entries have gathered the writer freezes them, and an ingest thread
//! writes them as one sorted file per index column family and ingests it (see
//! `rocks::Writer::start_ingest`) while new entries gather beside them.

use std::sync::Arc;

/// The index entries in memory: those gathering, and those being ingested.
#[derive(Default)]
pub(super) struct IndexTail {
    pub(super) active: Entries,
    /// Handed to the ingest thread; still searched until the database has them.
    pub(super) frozen: Option<Arc<Entries>>,
}

impl IndexTail {
    /// The `artifacts` keys that start with `prefix`, appended to `out`.
    pub(super) fn artifacts_with_prefix(&self, prefix: &[u8], out: &mut Vec<[u8; 48]>) {
        for entries in self.all() {
            entries.artifacts.with_prefix(prefix, out);
        }
    }

    /// The `artifact_names` keys that start with `prefix`, appended to `out`.
    pub(super) fn names_with_prefix(&self, prefix: &[u8], out: &mut Vec<Vec<u8>>) {
        for entries in self.all() {
            entries.names.with_prefix(prefix, out);
        }
    }

    fn all(&self) -> impl Iterator<Item = &Entries> {
        std::iter::once(&self.active).chain(self.frozen.as_deref())
    }

    /// Freezes the active entries for an ingest; `None` if one is under way.
    pub(super) fn freeze(&mut self) -> Option<Arc<Entries>> {
        if self.frozen.is_some() {
            return None;
        }
        let frozen = Arc::new(std::mem::take(&mut self.active));
        self.frozen = Some(Arc::clone(&frozen));
        Some(frozen)
    }

    /// After a failed ingest: the frozen entries gather with the active ones again.
    pub(super) fn thaw(&mut self) {
        if let Some(frozen) = self.frozen.take() {
            let frozen = Arc::unwrap_or_clone(frozen);
            self.active.artifacts.absorb(frozen.artifacts);
            self.active.names.absorb(frozen.names);
        }
    }
}

/// Index keys of both families.
#[derive(Clone, Default)]
pub(super) struct Entries {
    pub(super) artifacts: Runs<[u8; 48]>,
    pub(super) names: Runs<Vec<u8>>,
}

impl Entries {
    pub(super) fn len(&self) -> usize {
        self.artifacts.len() + self.names.len()
    }

    /// Adds the index keys of one commit (each list sorted).
    pub(super) fn push(&mut self, artifacts: Vec<[u8; 48]>, names: Vec<Vec<u8>>) {
        self.artifacts.push(artifacts);
        self.names.push(names);
    }

    /// Drops the entries whose key ends with `session` (every index key does).
    pub(super) fn remove_session(&mut self, session: &[u8]) {
        self.artifacts.retain(|k| !k.ends_with(session));
        self.names.retain(|k| !k.ends_with(session));
    }
}

/// Sorted runs of keys; a key may occur more than once.
#[derive(Clone)]
pub(super) struct Runs<K> {
    /// Longest first: every run is more than twice as long as the next one.
    runs: Vec<Vec<K>>,
    len: usize,
}

impl<K> Default for Runs<K> {
    fn default() -> Self {
        Runs {
            runs: Vec::new(),
            len: 0,
        }
    }
}

impl<K: Ord + AsRef<[u8]>> Runs<K> {
    /// Keys held, duplicates included.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds a run; `run` must be sorted.
    pub(super) fn push(&mut self, run: Vec<K>) {
        debug_assert!(run.is_sorted());
        if run.is_empty() {
            return;
        }
        self.len += run.len();
        self.runs.push(run);
        while let [.., older, newer] = &self.runs[..] {
            if older.len() > 2 * newer.len() {
                break;
            }
            let newer = self.runs.pop().unwrap_or_default();
            let older = self.runs.pop().unwrap_or_default();
            self.runs.push(merge(older, newer));
        }
    }

    /// Every key that starts with `prefix`, appended to `out` (unsorted, duplicates kept).
    pub(super) fn with_prefix(&self, prefix: &[u8], out: &mut Vec<K>)
    where
        K: Clone,
    {
        for run in &self.runs {
            let from = run.partition_point(|k| k.as_ref() < prefix);
            out.extend(
                run[from..]
                    .iter()
                    .take_while(|k| k.as_ref().starts_with(prefix))
                    .cloned(),
            );
        }
    }

    /// Adds every run of `other`.
    pub(super) fn absorb(&mut self, other: Runs<K>) {
        for run in other.runs {
            self.push(run);
        }
    }

    /// Every key once, in order.
    pub(super) fn sorted(&self) -> Vec<&K> {
        let mut all: Vec<&K> = self.runs.iter().flatten().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Drops the keys `keep` says no to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        for run in &mut self.runs {
            run.retain(&mut keep);
        }
        self.runs.retain(|run| !run.is_empty());
        self.len = self.runs.iter().map(Vec::len).sum();
        // Retaining may have upset the length order; one run restores it.
        if self.runs.len() > 1 && self.runs.windows(2).any(|w| w[0].len() <= 2 * w[1].len()) {
            self.collapse();
        }
    }

    /// Merges every run into one, without duplicates.
    fn collapse(&mut self) {
        let mut all = self.runs.drain(..).reduce(merge).unwrap_or_default();
        all.dedup();
        self.len = all.len();
        if !all.is_empty() {
            self.runs.push(all);
        }
    }
}

/// Merges two sorted vectors into one sorted vector.
fn merge<K: Ord>(a: Vec<K>, b: Vec<K>) -> Vec<K> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x <= y => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> [u8; 4] {
        n.to_be_bytes()
    }

    #[test]
    fn runs_stay_few_and_find_every_key() {
        let mut runs = Runs::default();
        let mut all = Vec::new();
        for commit in 0..1000u32 {
            // Commits of 1 to 7 keys, at scattered places, some repeated.
            let mut run: Vec<[u8; 4]> = (0..commit % 7 + 1)
                .map(|i| key((commit * 7919 + i * 104_729) % 5000))
                .collect();
            run.sort_unstable();
            all.extend_from_slice(&run);
            runs.push(run);
            assert!(
                runs.runs.len() <= 2 * (usize::BITS - runs.len().leading_zeros()) as usize,
                "{} runs for {} keys",
                runs.runs.len(),
                runs.len()
            );
        }
        assert_eq!(runs.len(), all.len());
        for probe in [0u32, 7919, 4999, 123] {
            let mut found = Vec::new();
            runs.with_prefix(&key(probe), &mut found);
            let want = all.iter().filter(|k| **k == key(probe)).count();
            assert_eq!(found.len(), want, "key {probe}");
        }
        // A shorter prefix finds every key under it.
        let mut found = Vec::new();
        runs.with_prefix(&[0, 0], &mut found);
        assert_eq!(found.len(), all.iter().filter(|k| k[..2] == [0, 0]).count());

        all.sort_unstable();
        all.dedup();
        assert_eq!(runs.sorted(), all.iter().collect::<Vec<_>>());
        runs.collapse();
        assert_eq!(runs.runs, vec![all.clone()]);
        assert_eq!(runs.len(), all.len());
    }

    #[test]
    fn retain_drops_keys_and_keeps_the_rest_searchable() {
        let mut runs = Runs::default();
        for n in 0..100u32 {
            runs.push(vec![key(n)]);
        }
        runs.retain(|k| u32::from_be_bytes(*k) % 3 != 0);
        assert_eq!(runs.len(), 66);
        let mut found = Vec::new();
        runs.with_prefix(&key(3), &mut found);
        assert!(found.is_empty());
        runs.with_prefix(&key(4), &mut found);
        assert_eq!(found, vec![key(4)]);
        runs.retain(|_| false);
        assert_eq!((runs.len(), runs.runs.len()), (0, 0));
        assert!(runs.sorted().is_empty());
    }

    #[test]
    fn frozen_entries_are_searched_until_dropped_and_come_back_when_thawed() {
        let session = [7u8; 16];
        let key = |n: u8| {
            let mut k = [n; 48];
            k[32..].copy_from_slice(&session);
            k
        };
        let mut tail = IndexTail::default();
        tail.active.push(vec![key(1)], vec![]);
        let frozen = tail.freeze().unwrap();
        assert_eq!(frozen.len(), 1);
        assert!(tail.freeze().is_none(), "one ingest at a time");
        tail.active.push(vec![key(2)], vec![b"name".to_vec()]);
        let mut found = Vec::new();
        tail.artifacts_with_prefix(&[1], &mut found);
        tail.artifacts_with_prefix(&[2], &mut found);
        assert_eq!(found, vec![key(1), key(2)]);

        drop(frozen);
        tail.thaw();
        assert!(tail.frozen.is_none());
        assert_eq!(tail.active.len(), 3);
        tail.active.remove_session(&session);
        assert_eq!(
            tail.active.len(),
            1,
            "the name key does not end with the session"
        );
    }
}
