//! `default`: runs last on every response and names its type from its first bytes
//! (magic numbers), so every artifact carries a `type` even when no other inspector
//! recognised it. The digests and size are the pipeline's (`audit::digest`). It never
//! approves or rejects anything.

use std::sync::Arc;

use fetchgate_storage::BodyDigest;

use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const ID: &str = "default";

/// Bytes kept for sniffing.
const HEAD: usize = 512;

/// The MIME type the first bytes of a body show, if any.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 12] = [
        (b"!<arch>\ndebian-binary", super::deb::MIME),
        (b"!<arch>\n", "application/x-archive"),
        (b"\x1f\x8b", "application/gzip"),
        (b"\xfd7zXZ\x00", "application/x-xz"),
        (b"\x28\xb5\x2f\xfd", "application/zstd"),
        (b"BZh", "application/x-bzip2"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x7fELF", "application/x-executable"),
        (b"-----BEGIN PGP SIGNED MESSAGE-----", "text/plain"),
        (
            b"-----BEGIN PGP SIGNATURE-----",
            "application/pgp-signature",
        ),
        (
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "application/pgp-keys",
        ),
        (b"%PDF-", "application/pdf"),
    ];
    if let Some((_, mime)) = MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
        return Some(mime);
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Some("application/x-tar");
    }
    None
}

/// `default`.
pub struct DefaultInspector;

impl Inspector for DefaultInspector {
    fn id(&self) -> &'static str {
        ID
    }

    fn request(&self, _req: &RequestInfo<'_>, _session: &Arc<SessionInspection>) -> RequestFinding {
        RequestFinding {
            observer: Some(Box::new(Sniffer { head: Vec::new() })),
            ..RequestFinding::unknown()
        }
    }
}

struct Sniffer {
    head: Vec<u8>,
}

impl BodyObserver for Sniffer {
    fn chunk(&mut self, bytes: &[u8]) {
        let take = HEAD.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..take]);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let mut finding = ResponseFinding::unknown();
        if let Some(mime) = sniff(&self.head) {
            finding.metadata.insert("type".into(), mime.to_owned());
        }
        finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_name_the_type() {
        assert_eq!(
            sniff(b"!<arch>\ndebian-binary   "),
            Some(super::super::deb::MIME)
        );
        assert_eq!(sniff(b"\x1f\x8b\x08"), Some("application/gzip"));
        assert_eq!(sniff(b"\xfd7zXZ\x00\x00"), Some("application/x-xz"));
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"hello"), None);
    }
}
