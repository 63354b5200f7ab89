//! `git.smart-http`: repositories under a trusted git host fetched over git's smart
//! HTTP protocol (v0 and v2):
//!
//! - `GET <repo>/info/refs?service=git-upload-pack`: the ref (or capability)
//!   advertisement must be well-formed pkt-lines;
//! - `POST <repo>/git-upload-pack`: the wanted commits are read from the request body,
//!   and the response is demultiplexed as it streams (side-band: pack data, progress,
//!   errors); the pack must start with `PACK` and end with the SHA-1 of everything
//!   before it, and the remote must report no error.
//!
//! Metadata: the repository URL as `name`, the wanted commits as `version`. Memory is
//! bounded: one pkt-line (≤ 64 KiB) and the pack's last 20 bytes are held.

use std::collections::BTreeMap;
use std::sync::Arc;

use fetchgate_formats::git::{UploadPackResponse, advertisement, parse_request};
use fetchgate_storage::BodyDigest;

use super::spool::Buffer;
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const ID: &str = "git.smart-http";

/// The largest ref advertisement read.
const MAX_ADVERTISEMENT: usize = 64 << 20;
/// The largest upload-pack request body read.
const MAX_REQUEST: usize = 16 << 20;

/// What a smart HTTP request is.
#[derive(Debug, PartialEq, Eq)]
enum Exchange {
    Advertisement,
    UploadPack,
}

/// The repository (URL) a request under a trusted host is for, and which exchange.
fn classify(session: &SessionInspection, req: &RequestInfo<'_>) -> Option<(String, Exchange)> {
    let (repo, exchange) = match req.method {
        "GET" => (
            req.url.strip_suffix("/info/refs?service=git-upload-pack")?,
            Exchange::Advertisement,
        ),
        "POST" => (
            req.url.strip_suffix("/git-upload-pack")?,
            Exchange::UploadPack,
        ),
        _ => return None,
    };
    let trusted = session.trust.git.iter().any(|base| {
        repo.strip_prefix(base.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|r| {
                !r.is_empty()
                    && !r.contains('?')
                    && r.split('/').all(|s| !s.is_empty() && s != "..")
            })
    });
    trusted.then(|| (repo.to_owned(), exchange))
}

/// `git.smart-http`.
pub struct SmartHttpInspector;

impl Inspector for SmartHttpInspector {
    fn id(&self) -> &'static str {
        ID
    }

    fn request(&self, req: &RequestInfo<'_>, session: &Arc<SessionInspection>) -> RequestFinding {
        let Some((repo, exchange)) = classify(session, req) else {
            return RequestFinding::unknown();
        };
        let observer: Box<dyn BodyObserver> = match exchange {
            Exchange::Advertisement => Box::new(AdvertisementObserver {
                repo: repo.clone(),
                body: Buffer::new(MAX_ADVERTISEMENT),
            }),
            Exchange::UploadPack => Box::new(UploadPackObserver {
                repo: repo.clone(),
                request: Buffer::new(MAX_REQUEST),
                response: UploadPackResponse::default(),
            }),
        };
        RequestFinding::pending(observer).note("repository", repo)
    }
}

fn repository_metadata(repo: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("name".to_owned(), repo.to_owned())])
}

struct AdvertisementObserver {
    repo: String,
    body: Buffer,
}

impl BodyObserver for AdvertisementObserver {
    fn chunk(&mut self, bytes: &[u8]) {
        self.body.write(bytes);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        match self.body.into_expanded().and_then(|b| advertisement(&b)) {
            Ok((protocol, refs)) => {
                let mut finding = ResponseFinding::approved()
                    .note("protocol", protocol.to_string())
                    .note("refs", refs.to_string());
                finding.metadata = repository_metadata(&self.repo);
                finding
            }
            Err(e) => ResponseFinding::rejected(format!("ref advertisement: {e}")),
        }
    }
}

struct UploadPackObserver {
    repo: String,
    request: Buffer,
    response: UploadPackResponse,
}

impl BodyObserver for UploadPackObserver {
    fn request_chunk(&mut self, bytes: &[u8]) {
        self.request.write(bytes);
    }

    fn chunk(&mut self, bytes: &[u8]) {
        self.response.feed(bytes);
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let UploadPackObserver {
            repo,
            request,
            response,
        } = *self;
        let request = match request.into_expanded().and_then(|b| parse_request(&b)) {
            Ok(r) => r,
            Err(e) => return ResponseFinding::rejected(e),
        };
        let mut finding = ResponseFinding::approved();
        if let Some(c) = request.command {
            finding = finding.note("command", c);
        }
        match response.finish() {
            Ok(Some(size)) => {
                finding = finding.note("pack", format!("{size} bytes, SHA-1 verified"))
            }
            Ok(None) if request.done && !request.wants.is_empty() => {
                return ResponseFinding::rejected("no pack in the answer to a completed fetch");
            }
            Ok(None) => {}
            Err(e) => return ResponseFinding::rejected(e),
        }
        finding.metadata = repository_metadata(&repo);
        if !request.wants.is_empty() {
            finding
                .metadata
                .insert("version".into(), request.wants.join(" "));
            finding = finding.note("wants", request.wants.len().to_string());
        }
        finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::config::Trust;
    use fetchgate_formats::testing::{pack, pkt};

    fn observer() -> UploadPackObserver {
        UploadPackObserver {
            repo: "https://h:443/r.git".into(),
            request: Buffer::new(MAX_REQUEST),
            response: UploadPackResponse::default(),
        }
    }

    /// An upload-pack response carrying `pack` on side-band 1, in `chunk`-byte pieces.
    fn respond(pack: &[u8], error: Option<&str>, chunk: usize) -> ResponseFinding {
        let mut stream = pkt(b"NAK\n");
        stream.extend(pkt(b"\x02Counting objects\n"));
        for part in pack.chunks(1000) {
            let mut d = vec![1u8];
            d.extend_from_slice(part);
            stream.extend(pkt(&d));
        }
        if let Some(e) = error {
            stream.extend(pkt(format!("\x03{e}").as_bytes()));
        }
        stream.extend(b"0000");
        let mut o = Box::new(observer());
        let oid = "a".repeat(40);
        let mut request = pkt(format!("want {oid} side-band-64k\n").as_bytes());
        request.extend(pkt(format!("want {oid}\n").as_bytes()));
        request.extend(b"0000");
        request.extend(pkt(b"done\n"));
        o.request_chunk(&request);
        for c in stream.chunks(chunk) {
            o.chunk(c);
        }
        o.finish(&BodyDigest {
            sha1: [0; 20],
            sha256: [0; 32],
            size: 0,
        })
    }

    #[test]
    fn a_pack_is_verified_whatever_the_chunking() {
        let p = pack(&[7u8; 5000]);
        for chunk in [1, 3, 4096, 1 << 20] {
            let f = respond(&p, None, chunk);
            assert_eq!(
                f.opinion,
                crate::inspect::ResponseOpinion::Approved,
                "{chunk}"
            );
            assert_eq!(f.metadata["version"], "a".repeat(40));
            assert_eq!(f.metadata["name"], "https://h:443/r.git");
        }
    }

    #[test]
    fn a_corrupt_pack_or_a_remote_error_is_rejected() {
        let mut p = pack(&[7u8; 5000]);
        p[100] ^= 1;
        let f = respond(&p, None, 4096);
        assert!(
            matches!(f.opinion, crate::inspect::ResponseOpinion::Rejected(r) if r.contains("SHA-1"))
        );
        let f = respond(&pack(b""), Some("upload-pack: not our ref"), 4096);
        assert!(
            matches!(f.opinion, crate::inspect::ResponseOpinion::Rejected(r) if r.contains("not our ref"))
        );
        let f = respond(b"", None, 4096);
        assert!(
            matches!(f.opinion, crate::inspect::ResponseOpinion::Rejected(r) if r.contains("no pack"))
        );
        let f = respond(b"JUNKJUNKJUNKJUNKJUNKJUNKJUNKJUNKJUNK", None, 4096);
        assert!(
            matches!(f.opinion, crate::inspect::ResponseOpinion::Rejected(r) if r.contains("PACK"))
        );
    }

    #[test]
    fn only_upload_pack_under_a_trusted_host_is_recognised() {
        let s = SessionInspection::new(Trust {
            git: vec!["https://h:443/team".into()],
            ..Default::default()
        });
        let what = |method: &str, url: &str| {
            crate::inspect::with_request(method, url, |req| classify(&s, req))
        };
        assert_eq!(
            what(
                "GET",
                "https://h:443/team/r.git/info/refs?service=git-upload-pack"
            ),
            Some(("https://h:443/team/r.git".into(), Exchange::Advertisement))
        );
        assert_eq!(
            what("POST", "https://h:443/team/a/r/git-upload-pack"),
            Some(("https://h:443/team/a/r".into(), Exchange::UploadPack))
        );
        for (m, u) in [
            (
                "GET",
                "https://h:443/team/r.git/info/refs?service=git-receive-pack",
            ),
            ("POST", "https://h:443/team/r.git/git-receive-pack"),
            (
                "GET",
                "https://h:443/other/r.git/info/refs?service=git-upload-pack",
            ),
            (
                "GET",
                "https://h:443/team/info/refs?service=git-upload-pack",
            ),
            ("POST", "https://h:443/team/../x/git-upload-pack"),
        ] {
            assert_eq!(what(m, u), None, "{m} {u}");
        }
    }
}
