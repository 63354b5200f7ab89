//! The Packages-file side of debtags: finds a component's `Packages` indexes under an
//! archive root, parses each file once and keeps its tags keyed by (path, size,
//! modification time), so a rewritten file is parsed again on the next lookup and an
//! unchanged one never is. The merged answer for a component is cached too, so a warm
//! lookup is a few `stat` calls and a map read.
//!
//! Synchronous on purpose: the CLI uses it without a runtime; the daemon calls it from a
//! blocking task.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::telemetry::metric;
use fetchgate_formats::deb822::{Compression, Item, Paragraphs};
use fetchgate_formats::debtags::{self as tags, Overrides, TagMap, stanza_tags};

/// A file's identity for caching: a rewrite changes its size or modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: SystemTime,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| Stamp {
        len: m.len(),
        mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// Tags read from somewhere, and when they were read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tags: Arc<TagMap>,
    pub read_at: SystemTime,
}

struct Parsed<T> {
    stamp: Stamp,
    value: Arc<T>,
    read_at: SystemTime,
}

/// What a merged component answer was built from.
#[derive(PartialEq)]
struct Inputs {
    files: Vec<(PathBuf, Stamp)>,
    /// Changes whenever an index is fed from the proxy.
    fed_generation: u64,
}

/// A component lookup: archive root, suite, component, architecture (or all).
type ComponentKey = (PathBuf, String, String, Option<String>);

#[derive(Default)]
struct Maps {
    files: HashMap<PathBuf, Parsed<TagMap>>,
    overrides: HashMap<PathBuf, Parsed<Overrides>>,
    merged: HashMap<ComponentKey, (Inputs, Snapshot)>,
    /// Indexes fed from the proxy.
    fed: HashMap<FedIndex, Snapshot>,
    fed_generation: u64,
}

/// Parsed Packages files and overrides, shared by every lookup.
#[derive(Default)]
pub struct PackagesCache {
    maps: Mutex<Maps>,
    parses: AtomicU64,
}

/// Index file names in order of preference when several forms of one index exist.
const FORMS: [&str; 3] = ["Packages", "Packages.gz", "Packages.xz"];

impl PackagesCache {
    /// A new, empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many Packages files have been parsed so far (for tests and metrics).
    pub fn parse_count(&self) -> u64 {
        self.parses.load(Ordering::Relaxed)
    }

    /// The tags of `suite`/`component` under `root` (all architectures, or only `arch`),
    /// or `None` when the archive has no Packages index for it.
    pub fn lookup(
        &self,
        root: &Path,
        suite: &str,
        component: &str,
        arch: Option<&str>,
    ) -> io::Result<Option<Snapshot>> {
        let files = find_indexes(&root.join("dists").join(suite).join(component), arch)?;
        let key: ComponentKey = (
            root.to_path_buf(),
            suite.to_owned(),
            component.to_owned(),
            arch.map(str::to_owned),
        );
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let fed: Vec<(String, Snapshot)> = maps
            .fed
            .iter()
            .filter(|(i, _)| {
                i.suite == suite && i.component == component && arch.is_none_or(|a| a == i.arch)
            })
            .map(|(i, snap)| {
                (
                    format!("an index fetched through the proxy ({})", i.dir),
                    snap.clone(),
                )
            })
            .collect();
        if files.is_empty() && fed.is_empty() {
            return Ok(None);
        }
        let inputs = Inputs {
            files,
            fed_generation: maps.fed_generation,
        };
        if let Some((built_from, snap)) = maps.merged.get(&key)
            && *built_from == inputs
        {
            metrics::counter!(metric::DEBTAGS_CACHE, "result" => "hit").increment(1);
            return Ok(Some(snap.clone()));
        }
        metrics::counter!(metric::DEBTAGS_CACHE, "result" => "miss").increment(1);
        // Every source with its age; oldest first, so the newest value wins on a conflict.
        let mut sources: Vec<(SystemTime, String, Snapshot)> = Vec::new();
        for (path, st) in &inputs.files {
            let (tags, read_at) = self.file(&mut maps, path, *st)?;
            sources.push((
                st.mtime,
                path.display().to_string(),
                Snapshot { tags, read_at },
            ));
        }
        sources.extend(
            fed.into_iter()
                .map(|(what, snap)| (snap.read_at, what, snap)),
        );
        sources.sort_by_key(|(t, _, _)| *t);
        if let [(_, _, only)] = sources.as_slice() {
            // One index (the common `?arch=` case): share its map rather than copy it.
            maps.merged.insert(key, (inputs, only.clone()));
            return Ok(Some(only.clone()));
        }
        let mut merged = TagMap::new();
        let mut read_at = SystemTime::UNIX_EPOCH;
        for (_, origin, snap) in &sources {
            read_at = read_at.max(snap.read_at);
            for (pkg, t) in snap.tags.iter() {
                match merged.get(pkg) {
                    Some(old) if old != t => {
                        tracing::warn!(
                            package = %pkg, source = %origin, old = %old, new = %t,
                            "debtags differ between architectures; the newest index wins"
                        );
                        merged.insert(pkg.clone(), t.clone());
                    }
                    Some(_) => {}
                    None => {
                        merged.insert(pkg.clone(), t.clone());
                    }
                }
            }
        }
        let snap = Snapshot {
            tags: Arc::new(merged),
            read_at,
        };
        maps.merged.insert(key, (inputs, snap.clone()));
        Ok(Some(snap))
    }

    /// Feeds the tags of a Packages index that reached fetchgate some other way (a
    /// builder fetched it through the proxy and the apt inspector verified and parsed
    /// it). It replaces the previous index fed for the same place and joins every
    /// archive's Packages-cache answer for its component.
    pub fn feed(&self, index: &FedIndex, tags: TagMap) {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        maps.fed.insert(
            index.clone(),
            Snapshot {
                tags: Arc::new(tags),
                read_at: SystemTime::now(),
            },
        );
        maps.fed_generation += 1;
    }

    fn file(
        &self,
        maps: &mut Maps,
        path: &Path,
        st: Stamp,
    ) -> io::Result<(Arc<TagMap>, SystemTime)> {
        if let Some(p) = maps.files.get(path)
            && p.stamp == st
        {
            return Ok((Arc::clone(&p.value), p.read_at));
        }
        let started = Instant::now();
        let tags = Arc::new(parse_packages(path)?);
        metrics::histogram!(metric::DEBTAGS_PARSE_SECONDS).record(started.elapsed().as_secs_f64());
        self.parses.fetch_add(1, Ordering::Relaxed);
        let read_at = SystemTime::now();
        maps.files.insert(
            path.to_path_buf(),
            Parsed {
                stamp: st,
                value: Arc::clone(&tags),
                read_at,
            },
        );
        Ok((tags, read_at))
    }

    /// The overrides file, parsed again only when it changed; empty when it is absent.
    pub fn overrides(&self, path: &Path) -> io::Result<Arc<Overrides>> {
        let Some(st) = stamp(path) else {
            return Ok(Arc::default());
        };
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = maps.overrides.get(path)
            && p.stamp == st
        {
            return Ok(Arc::clone(&p.value));
        }
        let text = std::fs::read_to_string(path)?;
        let (map, bad) = tags::parse_overrides(&text);
        for b in bad {
            tracing::warn!(file = %path.display(), line = b.line, reason = b.reason, "debtags override line skipped");
        }
        let value = Arc::new(map);
        maps.overrides.insert(
            path.to_path_buf(),
            Parsed {
                stamp: st,
                value: Arc::clone(&value),
                read_at: SystemTime::now(),
            },
        );
        Ok(value)
    }
}

/// The Packages indexes of one component directory: `binary-<arch>/` and
/// `debian-installer/binary-<arch>/`, one form per index (the newest, ties broken by
/// [`FORMS`] order).
fn find_indexes(dir: &Path, arch: Option<&str>) -> io::Result<Vec<(PathBuf, Stamp)>> {
    let mut found = Vec::new();
    for base in [dir.to_path_buf(), dir.join("debian-installer")] {
        let arch_dirs: Vec<PathBuf> = match arch {
            Some(a) => vec![base.join(format!("binary-{a}"))],
            None => match std::fs::read_dir(&base) {
                Ok(entries) => {
                    let mut v: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("binary-"))
                        .map(|e| e.path())
                        .collect();
                    v.sort();
                    v
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(e),
            },
        };
        for d in arch_dirs {
            let best = FORMS
                .iter()
                .filter_map(|f| {
                    let p = d.join(f);
                    stamp(&p).map(|s| (p, s))
                })
                .reduce(|a, b| if b.1.mtime > a.1.mtime { b } else { a });
            found.extend(best);
        }
    }
    Ok(found)
}

/// Reads one Packages file into package → normalised tags, skipping (with a warning
/// naming the file and line) malformed stanzas and leaving out packages without tags.
pub fn parse_packages(path: &Path) -> io::Result<TagMap> {
    let file = std::fs::File::open(path)?;
    let paragraphs = Paragraphs::new(Compression::from_path(path).reader(file));
    parse_stream(paragraphs, &path.display().to_string())
}

/// Where a Packages index fetched through the proxy sits in its archive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FedIndex {
    pub suite: String,
    pub component: String,
    pub arch: String,
    /// Its directory under `dists/<suite>/` (`main/binary-amd64`,
    /// `main/debian-installer/binary-amd64`): indexes of one component and architecture
    /// in different directories are kept side by side.
    pub dir: String,
}

impl FedIndex {
    /// The index at `path` under `dists/<suite>/` (`main/binary-amd64/Packages.xz`), if
    /// that is where a Packages index of a component and architecture sits.
    pub fn at(suite: &str, path: &str) -> Option<FedIndex> {
        let (dir, _file) = path.rsplit_once('/')?;
        let (component, arch_dir) = dir.rsplit_once('/')?;
        let arch = arch_dir.strip_prefix("binary-")?;
        let component = component
            .strip_suffix("/debian-installer")
            .unwrap_or(component);
        if arch.is_empty() || component.is_empty() {
            return None;
        }
        Some(FedIndex {
            suite: suite.to_owned(),
            component: component.to_owned(),
            arch: arch.to_owned(),
            dir: dir.to_owned(),
        })
    }
}

/// Package → normalised tags from a stream of stanzas; `name` is used in warnings.
fn parse_stream<R: BufRead>(mut paragraphs: Paragraphs<R>, name: &str) -> io::Result<TagMap> {
    let mut out = TagMap::new();
    while let Some(item) = paragraphs
        .next_item()
        .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?
    {
        match item {
            Item::Stanza(s) => out.extend(stanza_tags(s)),
            Item::Malformed(m) => {
                tracing::warn!(file = %name, line = m.line, reason = m.reason, "malformed Packages stanza skipped");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn compress(path: &Path, tool: &str) {
        let st = std::process::Command::new(tool)
            .arg("-f")
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "{tool} failed");
    }

    #[test]
    fn plain_gz_and_xz_indexes_are_merged_over_architectures() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "dists/s/main/binary-amd64/Packages",
            "Package: vim\nTag: role::program, use::{editing,viewing}\n\nPackage: notags\n",
        );
        let gz = write(
            root,
            "dists/s/main/binary-arm64/Packages",
            "Package: arm-only\nTag: hardware::embedded\n",
        );
        compress(&gz, "gzip");
        let xz = write(
            root,
            "dists/s/main/debian-installer/binary-amd64/Packages",
            "Package: udeb\r\nTag: special::d-i\r\n",
        );
        compress(&xz, "xz");
        let cache = PackagesCache::new();
        let snap = cache.lookup(root, "s", "main", None).unwrap().unwrap();
        assert_eq!(
            tags::to_text(&snap.tags),
            "arm-only: hardware::embedded\nudeb: special::d-i\nvim: role::program, use::editing, use::viewing\n"
        );
        assert_eq!(cache.parse_count(), 3);
        let arm = cache
            .lookup(root, "s", "main", Some("arm64"))
            .unwrap()
            .unwrap();
        assert_eq!(arm.tags.keys().collect::<Vec<_>>(), ["arm-only"]);
        assert_eq!(cache.parse_count(), 3, "files are parsed once");
        assert!(cache.lookup(root, "s", "contrib", None).unwrap().is_none());
        assert!(
            cache
                .lookup(root, "s", "main", Some("riscv64"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_rewritten_file_is_parsed_again_an_unchanged_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = write(
            root,
            "dists/s/main/binary-amd64/Packages",
            "Package: a\nTag: x\n",
        );
        let cache = PackagesCache::new();
        for _ in 0..3 {
            cache.lookup(root, "s", "main", None).unwrap().unwrap();
        }
        assert_eq!(cache.parse_count(), 1);
        std::fs::write(&p, "Package: a\nTag: y, x\n\nPackage: b\nTag: z\n").unwrap();
        let snap = cache.lookup(root, "s", "main", None).unwrap().unwrap();
        assert_eq!(cache.parse_count(), 2);
        assert_eq!(tags::to_text(&snap.tags), "a: x, y\nb: z\n");
        cache.lookup(root, "s", "main", None).unwrap().unwrap();
        assert_eq!(cache.parse_count(), 2);
    }

    #[test]
    fn the_newest_file_wins_when_architectures_disagree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = write(
            root,
            "dists/s/main/binary-i386/Packages",
            "Package: a\nTag: old\n",
        );
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        write(
            root,
            "dists/s/main/binary-amd64/Packages",
            "Package: a\nTag: new\n",
        );
        let cache = PackagesCache::new();
        let snap = cache.lookup(root, "s", "main", None).unwrap().unwrap();
        assert_eq!(snap.tags["a"], "new");
    }

    #[test]
    fn indexes_fed_from_the_proxy_join_the_component() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = PackagesCache::new();
        assert!(cache.lookup(root, "s", "main", None).unwrap().is_none());
        write(
            root,
            "dists/s/main/binary-amd64/Packages",
            "Package: a\nTag: x\n",
        );
        let fed = |path: &str, text: &str| {
            let index = FedIndex::at("s", path).unwrap();
            let tags = parse_stream(Paragraphs::new(text.as_bytes()), "fed").unwrap();
            cache.feed(&index, tags);
        };
        fed(
            "main/binary-arm64/Packages.xz",
            "Package: b\nTag: y::{1,2}\n\nPackage: a\nTag: x\n",
        );
        let snap = cache.lookup(root, "s", "main", None).unwrap().unwrap();
        assert_eq!(tags::to_text(&snap.tags), "a: x\nb: y::1, y::2\n");
        let amd64 = cache
            .lookup(root, "s", "main", Some("amd64"))
            .unwrap()
            .unwrap();
        assert_eq!(amd64.tags.len(), 1);
        fed("main/binary-arm64/Packages.gz", "Package: b\nTag: z\n");
        let snap = cache.lookup(root, "s", "main", None).unwrap().unwrap();
        assert_eq!(
            snap.tags["b"], "z",
            "a newer feed replaces the cached answer"
        );
        // The installer's index of the same component and architecture joins it.
        fed(
            "main/debian-installer/binary-arm64/Packages",
            "Package: c-udeb\nTag: role::program\n",
        );
        let only_fed = cache
            .lookup(root, "s", "main", Some("arm64"))
            .unwrap()
            .unwrap();
        assert_eq!(
            tags::to_text(&only_fed.tags),
            "b: z\nc-udeb: role::program\n"
        );
        assert!(cache.lookup(root, "s", "contrib", None).unwrap().is_none());
        assert_eq!(
            cache.parse_count(),
            1,
            "fed indexes are parsed by the feeder"
        );
    }

    #[test]
    fn fed_index_places_come_from_the_path_under_dists() {
        let at = |p| FedIndex::at("bookworm", p).map(|i| (i.component, i.arch, i.dir));
        assert_eq!(
            at("main/binary-amd64/Packages.xz"),
            Some(("main".into(), "amd64".into(), "main/binary-amd64".into()))
        );
        assert_eq!(
            at("non-free/debian-installer/binary-arm64/Packages"),
            Some((
                "non-free".into(),
                "arm64".into(),
                "non-free/debian-installer/binary-arm64".into()
            ))
        );
        assert_eq!(
            at("updates/main/binary-i386/Packages.gz").map(|i| i.0),
            Some("updates/main".into())
        );
        for bad in [
            "Packages",
            "binary-amd64/Packages",
            "main/source/Sources",
            "main/binary-/Packages",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_corrupt_compressed_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "dists/s/main/binary-amd64/Packages.xz",
            "not xz at all",
        );
        let err = PackagesCache::new()
            .lookup(root, "s", "main", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Packages.xz"), "{err}");
    }
}
