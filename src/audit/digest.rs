//! The streaming body digest: sha1, sha256 and size, updated chunk by chunk as a
//! response streams to the builder, so no artifact is ever held in memory whole.

use fetchgate_storage::BodyDigest;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Digests of the bytes seen so far.
#[derive(Clone, Default)]
pub struct BodyHasher {
    sha1: Sha1,
    sha256: Sha256,
    size: u64,
}

impl BodyHasher {
    /// Adds a chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha1.update(chunk);
        self.sha256.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of everything seen.
    pub fn finish(self) -> BodyDigest {
        BodyDigest {
            sha1: self.sha1.finalize().into(),
            sha256: self.sha256.finalize().into(),
            size: self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_digest_equals_whole_digest() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut h = BodyHasher::default();
        for chunk in data.chunks(4093) {
            h.update(chunk);
        }
        let d = h.finish();
        assert_eq!(d.size, 100_000);
        assert_eq!(d.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(d.sha1, <[u8; 20]>::from(Sha1::digest(&data)));
    }

    #[test]
    fn empty_body_has_the_empty_digests() {
        let d = BodyHasher::default().finish();
        assert_eq!(
            hex::encode(d.sha256),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(d.sha1),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
