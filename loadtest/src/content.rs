//! What the origin serves. Synthetic artifacts: deterministic content keyed by the
//! request path, so the origin never stores a file and the builders know every
//! artifact's sha256 and size without downloading it first. Content is a splitmix64
//! stream seeded by an FNV-1a hash of the path; it is cheap to generate at several GB/s
//! and does not compress. Real files ([`ServedFile`], `--files DIR`): package files
//! such as `.deb`s and wheels, held in memory, so inspectors see what they see in
//! production.

use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Bytes generated per step when hashing or serving an artifact.
pub const CHUNK: usize = 64 * 1024;

/// One synthetic artifact: `/artifact/<size>/<index>` on the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Artifact {
    pub size: u64,
    pub index: u32,
}

impl Artifact {
    /// The origin path that serves this artifact.
    pub fn path(&self) -> String {
        format!("/artifact/{}/{}", self.size, self.index)
    }

    /// Parses a path produced by [`Artifact::path`].
    pub fn from_path(path: &str) -> Option<Artifact> {
        let rest = path.strip_prefix("/artifact/")?;
        let (size, index) = rest.split_once('/')?;
        Some(Artifact {
            size: size.parse().ok()?,
            index: index.parse().ok()?,
        })
    }

    /// The seed of this artifact's content stream.
    pub fn seed(&self) -> u64 {
        fnv1a(self.path().as_bytes())
    }

    /// The sha256 of the whole content, computed by generating it.
    pub fn sha256(&self) -> [u8; 32] {
        let seed = self.seed();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0;
        while offset < self.size {
            let n = (self.size - offset).min(CHUNK as u64) as usize;
            fill(seed, offset, &mut buf[..n]);
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        hasher.finalize().into()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64: one well-mixed word per input; also used for cheap random choices.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes the content bytes `offset .. offset + buf.len()` of the stream `seed`: byte
/// `p` is byte `p % 8` of `splitmix64(seed ^ (p / 8))` in little-endian order.
///
/// The origin calls this for every byte it serves, beside the proxy under test on the
/// same cores, so whole words are stored as words (a copy of a run-time length per word
/// is a `memcpy` call, and once was most of the origin's CPU).
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let word = |pos: u64| splitmix64(seed ^ (pos / 8)).to_le_bytes();
    // The rest of the word `offset` falls in.
    let skip = (offset % 8) as usize;
    let head = if skip == 0 {
        0
    } else {
        (8 - skip).min(buf.len())
    };
    let (first, rest) = buf.split_at_mut(head);
    first.copy_from_slice(&word(offset)[skip..skip + head]);
    let mut pos = offset + head as u64;
    let mut words = rest.chunks_exact_mut(8);
    for out in &mut words {
        out.copy_from_slice(&word(pos));
        pos += 8;
    }
    let tail = words.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&word(pos)[..n]);
}

/// A real file the origin serves, held in memory: a package file at `/files/<name>`
/// or a generated index page.
#[derive(Debug, Clone)]
pub struct ServedFile {
    /// The origin path that serves it.
    pub path: String,
    pub bytes: Bytes,
    pub sha256: [u8; 32],
}

impl ServedFile {
    pub(crate) fn new(path: String, bytes: Bytes) -> ServedFile {
        ServedFile {
            path,
            sha256: Sha256::digest(&bytes).into(),
            bytes,
        }
    }
}

/// Reads every regular file directly in `dir` (in name order), with its sha256, to be
/// served at `/files/<name>`.
pub fn load_files(dir: &Path) -> Result<Vec<ServedFile>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("--files {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("--files {}: {e}", dir.display()))?;
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        if kind.is_file() {
            paths.push(entry.path());
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in &paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| {
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
            })
            .ok_or_else(|| {
                format!(
                    "{}: only letters, digits and ._+~- can be served in a URL path",
                    path.display()
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(ServedFile::new(
            format!("/files/{name}"),
            Bytes::from(bytes),
        ));
    }
    if files.is_empty() {
        return Err(format!("--files {}: no files in it", dir.display()));
    }
    Ok(files)
}

/// The PEP 503 project pages (`/simple/<project>/`) listing the wheels and sdists among
/// `files` with their sha256, as a Python index serves them: a pip inspector verifies
/// only what a page fetched in the same session listed.
pub fn index_pages(files: &[ServedFile]) -> Vec<ServedFile> {
    let mut projects: std::collections::BTreeMap<String, String> = Default::default();
    for f in files {
        let Some(name) = f.path.strip_prefix("/files/") else {
            continue;
        };
        let Some(project) = python_project(name) else {
            continue;
        };
        projects.entry(project).or_default().push_str(&format!(
            "<a href=\"../../files/{name}#sha256={}\">{name}</a><br/>\n",
            hex::encode(f.sha256)
        ));
    }
    projects
        .into_iter()
        .map(|(project, links)| {
            let page = format!("<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n");
            ServedFile::new(format!("/simple/{project}/"), Bytes::from(page))
        })
        .collect()
}

/// The normalised project name of a wheel (`name-version-...whl`) or an sdist
/// (`name-version.tar.gz`) file name.
fn python_project(file: &str) -> Option<String> {
    let name = if let Some(stem) = file.strip_suffix(".whl") {
        stem.split('-').next()?
    } else {
        file.strip_suffix(".tar.gz")?.rsplit_once('-')?.0
    };
    let mut normalised = String::new();
    for part in name.split(['-', '_', '.']).filter(|p| !p.is_empty()) {
        if !normalised.is_empty() {
            normalised.push('-');
        }
        normalised.push_str(&part.to_ascii_lowercase());
    }
    (!normalised.is_empty()).then_some(normalised)
}

/// A small, fast pseudo-random generator for the builders' choices (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_each_positions_byte_of_its_word() {
        let seed = 0x1234_5678_9abc_def0;
        for offset in [0u64, 1, 7, 8, 9, 15, 4093] {
            for len in [0usize, 1, 3, 7, 8, 9, 16, 17, 100] {
                let mut buf = vec![0u8; len];
                fill(seed, offset, &mut buf);
                let expected: Vec<u8> = (offset..offset + len as u64)
                    .map(|p| splitmix64(seed ^ (p / 8)).to_le_bytes()[(p % 8) as usize])
                    .collect();
                assert_eq!(buf, expected, "offset {offset}, length {len}");
            }
        }
    }

    #[test]
    fn content_does_not_depend_on_how_it_is_sliced() {
        let seed = Artifact {
            size: 100,
            index: 3,
        }
        .seed();
        let mut whole = vec![0u8; 100];
        fill(seed, 0, &mut whole);
        let mut pieces = vec![0u8; 100];
        let (a, rest) = pieces.split_at_mut(13);
        let (b, c) = rest.split_at_mut(51);
        fill(seed, 0, a);
        fill(seed, 13, b);
        fill(seed, 64, c);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn artifacts_differ_by_path_and_digest_matches_content() {
        let a = Artifact {
            size: 1000,
            index: 0,
        };
        let b = Artifact {
            size: 1000,
            index: 1,
        };
        assert_ne!(a.sha256(), b.sha256());
        let mut bytes = vec![0u8; 1000];
        fill(a.seed(), 0, &mut bytes);
        assert_eq!(a.sha256(), <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(Artifact::from_path(&a.path()), Some(a));
        assert_eq!(Artifact::from_path("/artifact/x/1"), None);
    }

    #[test]
    fn files_are_served_in_name_order_under_their_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b_1.0_all.deb"), b"second").unwrap();
        std::fs::write(dir.path().join("a-1.0-py3-none-any.whl"), b"first").unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let own = load_files(dir.path()).unwrap();
        let paths: Vec<_> = own.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/files/a-1.0-py3-none-any.whl", "/files/b_1.0_all.deb"]
        );
        assert_eq!(own[1].bytes, Bytes::from_static(b"second"));
        assert_eq!(own[1].sha256, <[u8; 32]>::from(Sha256::digest(b"second")));

        std::fs::write(dir.path().join("with space.deb"), b"x").unwrap();
        let err = load_files(dir.path()).unwrap_err();
        assert!(err.contains("with space.deb"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = load_files(empty.path()).unwrap_err();
        assert!(err.contains("no files"), "{err}");
    }

    #[test]
    fn index_pages_list_each_projects_wheels_and_sdists_with_their_digests() {
        let file = |name: &str, body: &'static [u8]| {
            ServedFile::new(format!("/files/{name}"), Bytes::from_static(body))
        };
        let files = [
            file("Foo_Bar-1.0-py3-none-any.whl", b"w1"),
            file("foo.bar-1.1.tar.gz", b"s1"),
            file("baz-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", b"w2"),
            file("hello_1.0_all.deb", b"d"),
        ];
        let pages = index_pages(&files);
        let paths: Vec<_> = pages.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["/simple/baz/", "/simple/foo-bar/"]);
        let foo = std::str::from_utf8(&pages[1].bytes).unwrap();
        assert!(foo.contains(&format!(
            "<a href=\"../../files/Foo_Bar-1.0-py3-none-any.whl#sha256={}\">",
            hex::encode(Sha256::digest(b"w1"))
        )));
        assert!(
            foo.contains("../../files/foo.bar-1.1.tar.gz#sha256="),
            "{foo}"
        );
        assert_eq!(pages[1].sha256, <[u8; 32]>::from(Sha256::digest(foo)));
    }
}
