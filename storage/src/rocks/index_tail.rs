//! The newest artifact index entries, kept in memory until they are ingested as files.
//!
//! Index keys start with a sha256 or a package name, so consecutive downloads land at
//! random places in the key space; inserted one by one into a RocksDB memtable they
//! cost more CPU than the audit records themselves. The writer therefore keeps them here
//! instead: each group commit adds its keys as one sorted run, runs of similar length
//! are merged (so there are only logarithmically many), queries search every run, and
//! once enough entries have gathered the writer writes them as one sorted file per index
//! column family and ingests it (see `rocks::Writer::ingest`).

/// Sorted runs of keys; a key may occur more than once.
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
    pub(super) fn collapse(&mut self) {
        let mut all = self.runs.drain(..).reduce(merge).unwrap_or_default();
        all.dedup();
        self.len = all.len();
        if !all.is_empty() {
            self.runs.push(all);
        }
    }

    /// The keys in order, once [`Runs::collapse`] has run (else those of the longest run).
    pub(super) fn first_run(&self) -> &[K] {
        self.runs.first().map_or(&[], Vec::as_slice)
    }

    pub(super) fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
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
        runs.collapse();
        assert_eq!(runs.first_run(), &all[..]);
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
        runs.collapse();
        assert!(runs.first_run().is_empty());
    }
}
