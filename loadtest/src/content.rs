//! Synthetic artifacts: deterministic content keyed by the request path, so the origin
//! never stores a file and the builders know every artifact's sha256 and size without
//! downloading it first. Content is a splitmix64 stream seeded by an FNV-1a hash of the
//! path; it is cheap to generate at several GB/s and does not compress.

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

/// Writes the content bytes `offset .. offset + buf.len()` of the stream `seed`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut out = buf;
    while !out.is_empty() {
        let word = splitmix64(seed ^ (pos / 8)).to_le_bytes();
        let skip = (pos % 8) as usize;
        let n = (8 - skip).min(out.len());
        out[..n].copy_from_slice(&word[skip..skip + n]);
        out = &mut out[n..];
        pos += n as u64;
    }
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
}
