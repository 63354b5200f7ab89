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

use fetchgate_storage::BodyDigest;
use sha1::Digest;

use super::spool::Buffer;
use super::{
    BodyObserver, Inspector, RequestFinding, RequestInfo, ResponseFinding, SessionInspection,
};

pub const ID: &str = "git.smart-http";

/// The largest ref advertisement read.
const MAX_ADVERTISEMENT: usize = 64 << 20;
/// The largest upload-pack request body read.
const MAX_REQUEST: usize = 16 << 20;
/// The largest pkt-line (git's `LARGE_PACKET_MAX`).
const MAX_PKT: usize = 65520;

/// One pkt-line.
#[derive(Debug, PartialEq, Eq)]
enum Pkt<'a> {
    Flush,
    Delim,
    ResponseEnd,
    Data(&'a [u8]),
}

/// A push parser for pkt-lines (a 4-hex-digit length, itself included, then data).
#[derive(Debug, Default)]
struct PktLines {
    head: Vec<u8>,
    /// Data still expected for the current line.
    need: usize,
    data: Vec<u8>,
    error: Option<String>,
}

impl PktLines {
    fn feed(&mut self, mut bytes: &[u8], on: &mut dyn FnMut(Pkt<'_>)) {
        while !bytes.is_empty() && self.error.is_none() {
            if self.need == 0 {
                let take = (4 - self.head.len()).min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.head.len() < 4 {
                    return;
                }
                let head = std::mem::take(&mut self.head);
                let len = std::str::from_utf8(&head)
                    .ok()
                    .and_then(|h| usize::from_str_radix(h, 16).ok());
                match len {
                    Some(0) => on(Pkt::Flush),
                    Some(1) => on(Pkt::Delim),
                    Some(2) => on(Pkt::ResponseEnd),
                    Some(n) if (5..=MAX_PKT).contains(&n) => self.need = n - 4,
                    _ => {
                        self.error = Some(format!(
                            "not pkt-line framed (length {:?})",
                            String::from_utf8_lossy(&head)
                        ))
                    }
                }
                continue;
            }
            let take = self.need.min(bytes.len());
            self.data.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.need -= take;
            if self.need == 0 {
                on(Pkt::Data(&self.data));
                self.data.clear();
            }
        }
    }

    /// Whether the input ended between lines.
    fn finish(self) -> Result<(), String> {
        match self.error {
            Some(e) => Err(e),
            None if self.need > 0 || !self.head.is_empty() => {
                Err("the stream ends inside a pkt-line".into())
            }
            None => Ok(()),
        }
    }
}

/// A pack as it streams: `PACK`, then objects, then the SHA-1 of all that.
#[derive(Default)]
struct PackCheck {
    hasher: sha1::Sha1,
    /// The last 20 bytes seen (not hashed yet: they may be the trailer).
    tail: Vec<u8>,
    magic: Vec<u8>,
    size: u64,
}

impl PackCheck {
    fn feed(&mut self, bytes: &[u8]) {
        let want = 4usize.saturating_sub(self.magic.len()).min(bytes.len());
        self.magic.extend_from_slice(&bytes[..want]);
        self.size += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 20 {
            let n = self.tail.len() - 20;
            self.hasher.update(&self.tail[..n]);
            self.tail.drain(..n);
        }
    }

    fn finish(self) -> Result<u64, String> {
        if self.magic != b"PACK" || self.size < 32 {
            return Err("the pack does not start with PACK".into());
        }
        if self.hasher.finalize().as_slice() != self.tail.as_slice() {
            return Err("the pack's trailing SHA-1 does not match its content".into());
        }
        Ok(self.size)
    }
}

/// What an upload-pack request body (v0 or v2) asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    /// The wanted object ids, each once.
    wants: Vec<String>,
    /// The v2 command (`fetch`, `ls-refs`).
    command: Option<String>,
    /// The client said `done`: the answer must carry the pack.
    done: bool,
}

/// Parses an upload-pack request body.
fn parse_request(body: &[u8]) -> Result<Request, String> {
    let mut lines = PktLines::default();
    let mut request = Request::default();
    lines.feed(body, &mut |pkt| {
        let Pkt::Data(d) = pkt else {
            return;
        };
        let text = String::from_utf8_lossy(d);
        let text = text.trim_end();
        if let Some(rest) = text.strip_prefix("want ") {
            let oid = rest.split(' ').next().unwrap_or_default();
            let oid = oid.to_ascii_lowercase();
            let valid =
                (oid.len() == 40 || oid.len() == 64) && oid.bytes().all(|b| b.is_ascii_hexdigit());
            // A commit wanted by two refs is listed twice.
            if valid && !request.wants.contains(&oid) {
                request.wants.push(oid);
            }
        } else if let Some(c) = text.strip_prefix("command=") {
            request.command = Some(c.to_owned());
        } else if text == "done" {
            request.done = true;
        }
    });
    lines.finish().map_err(|e| format!("request: {e}"))?;
    Ok(request)
}

/// Parses a ref advertisement: (protocol version, refs advertised).
fn advertisement(body: &[u8]) -> Result<(u8, usize), String> {
    let mut lines = PktLines::default();
    let mut data: Vec<Vec<u8>> = Vec::new();
    lines.feed(body, &mut |pkt| {
        if let Pkt::Data(d) = pkt {
            data.push(d.to_vec());
        }
    });
    lines.finish()?;
    let mut rest = data.as_slice();
    if let [first, after @ ..] = rest
        && first.starts_with(b"# service=")
    {
        if first.trim_ascii_end() != b"# service=git-upload-pack" {
            return Err("not an upload-pack advertisement".into());
        }
        rest = after;
    }
    match rest {
        [first, ..] if first.trim_ascii_end() == b"version 2" => Ok((2, 0)),
        refs => {
            for r in refs {
                let oid = r.split(|b| *b == b' ').next().unwrap_or_default();
                if !(oid.len() == 40 || oid.len() == 64) || !oid.iter().all(u8::is_ascii_hexdigit) {
                    return Err(format!(
                        "bad ref line {:?}",
                        String::from_utf8_lossy(&r[..r.len().min(80)])
                    ));
                }
            }
            Ok((0, refs.len()))
        }
    }
}

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
                lines: PktLines::default(),
                pack: None,
                remote_error: None,
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
    lines: PktLines,
    pack: Option<PackCheck>,
    remote_error: Option<String>,
}

impl BodyObserver for UploadPackObserver {
    fn request_chunk(&mut self, bytes: &[u8]) {
        self.request.write(bytes);
    }

    fn chunk(&mut self, bytes: &[u8]) {
        let UploadPackObserver {
            lines,
            pack,
            remote_error,
            ..
        } = self;
        lines.feed(bytes, &mut |pkt| match pkt {
            Pkt::Data([1, data @ ..]) => pack.get_or_insert_with(PackCheck::default).feed(data),
            Pkt::Data([3, message @ ..]) => {
                *remote_error = Some(String::from_utf8_lossy(message).trim().to_owned());
            }
            _ => {}
        });
    }

    fn finish(self: Box<Self>, _body: &BodyDigest) -> ResponseFinding {
        let UploadPackObserver {
            repo,
            request,
            lines,
            pack,
            remote_error,
        } = *self;
        let request = match request.into_expanded().and_then(|b| parse_request(&b)) {
            Ok(r) => r,
            Err(e) => return ResponseFinding::rejected(e),
        };
        if let Err(e) = lines.finish() {
            return ResponseFinding::rejected(format!("response: {e}"));
        }
        if let Some(e) = remote_error {
            return ResponseFinding::rejected(format!("the remote reported an error: {e}"));
        }
        let mut finding = ResponseFinding::approved();
        if let Some(c) = request.command {
            finding = finding.note("command", c);
        }
        match pack {
            Some(pack) => match pack.finish() {
                Ok(size) => finding = finding.note("pack", format!("{size} bytes, SHA-1 verified")),
                Err(e) => return ResponseFinding::rejected(e),
            },
            None if request.done && !request.wants.is_empty() => {
                return ResponseFinding::rejected("no pack in the answer to a completed fetch");
            }
            None => {}
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

    fn pkt(data: &[u8]) -> Vec<u8> {
        let mut out = format!("{:04x}", data.len() + 4).into_bytes();
        out.extend_from_slice(data);
        out
    }

    fn pack(objects: &[u8]) -> Vec<u8> {
        let mut p = b"PACK\x00\x00\x00\x02\x00\x00\x00\x00".to_vec();
        p.extend_from_slice(objects);
        let sum = sha1::Sha1::digest(&p);
        p.extend_from_slice(&sum);
        p
    }

    fn observer() -> UploadPackObserver {
        UploadPackObserver {
            repo: "https://h:443/r.git".into(),
            request: Buffer::new(MAX_REQUEST),
            lines: PktLines::default(),
            pack: None,
            remote_error: None,
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
    fn advertisements_of_both_protocols_parse_and_junk_does_not() {
        let oid = "b".repeat(40);
        let mut v0 = pkt(b"# service=git-upload-pack\n");
        v0.extend(b"0000");
        v0.extend(pkt(format!("{oid} HEAD\0side-band-64k\n").as_bytes()));
        v0.extend(pkt(format!("{oid} refs/heads/main\n").as_bytes()));
        v0.extend(b"0000");
        assert_eq!(advertisement(&v0), Ok((0, 2)));
        let mut v2 = pkt(b"version 2\n");
        v2.extend(pkt(b"ls-refs\n"));
        v2.extend(b"0000");
        assert_eq!(advertisement(&v2), Ok((2, 0)));
        assert!(advertisement(b"<html>").unwrap_err().contains("pkt-line"));
        assert!(
            advertisement(&pkt(b"zz HEAD\n"))
                .unwrap_err()
                .contains("bad ref")
        );
        assert!(
            advertisement(b"0010abc")
                .unwrap_err()
                .contains("ends inside")
        );
        let receive = pkt(b"# service=git-receive-pack\n");
        assert!(advertisement(&receive).is_err());
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

    #[test]
    fn mutated_exchanges_never_panic() {
        let oid = "c".repeat(40);
        let mut advertised = pkt(b"# service=git-upload-pack\n");
        advertised.extend(b"0000");
        advertised.extend(pkt(format!("{oid} HEAD\0side-band-64k\n").as_bytes()));
        advertised.extend(b"0000");
        for m in crate::inspect::mutations(&advertised, 300) {
            let _ = advertisement(&m);
            let _ = parse_request(&m);
        }
        let mut stream = pkt(b"NAK\n");
        let mut data = vec![1u8];
        data.extend(pack(b"objects"));
        stream.extend(pkt(&data));
        stream.extend(b"0000");
        for m in crate::inspect::mutations(&stream, 300) {
            let mut o = observer();
            o.chunk(&m);
            let _ = Box::new(o).finish(&BodyDigest {
                sha1: [0; 20],
                sha256: [0; 32],
                size: 0,
            });
        }
    }
}
