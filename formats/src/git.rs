//! git's smart HTTP protocol (v0 and v2) as fetchgate reads it: pkt-lines (a
//! 4-hex-digit length, itself included, then data), the ref advertisement of
//! `info/refs?service=git-upload-pack`, the wants of an upload-pack request, and the
//! side-band response whose pack must start with `PACK` and end with the SHA-1 of
//! everything before it.
//!
//! Memory is bounded: one pkt-line (at most [`MAX_PKT`] bytes) and the pack's last 20
//! bytes are held, whatever the stream's length.

use sha1::Digest;

/// The largest pkt-line (git's `LARGE_PACKET_MAX`).
pub const MAX_PKT: usize = 65520;

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
    /// Feeds the next bytes; `on` sees each complete pkt-line.
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
#[derive(Debug, Default)]
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
pub struct Request {
    /// The wanted object ids, each once.
    pub wants: Vec<String>,
    /// The v2 command (`fetch`, `ls-refs`).
    pub command: Option<String>,
    /// The client said `done`: the answer must carry the pack.
    pub done: bool,
}

/// Parses an upload-pack request body.
pub fn parse_request(body: &[u8]) -> Result<Request, String> {
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
pub fn advertisement(body: &[u8]) -> Result<(u8, usize), String> {
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

/// An upload-pack response as it streams: pkt-lines demultiplexed by side-band (1: pack
/// data, checked by [`PackCheck`]; 2: progress, ignored; 3: an error from the remote).
#[derive(Debug, Default)]
pub struct UploadPackResponse {
    lines: PktLines,
    pack: Option<PackCheck>,
    remote_error: Option<String>,
}

impl UploadPackResponse {
    /// Feeds the next bytes of the response body.
    pub fn feed(&mut self, bytes: &[u8]) {
        let UploadPackResponse {
            lines,
            pack,
            remote_error,
        } = self;
        lines.feed(bytes, &mut |pkt| match pkt {
            Pkt::Data([1, data @ ..]) => pack.get_or_insert_with(PackCheck::default).feed(data),
            Pkt::Data([3, message @ ..]) => {
                *remote_error = Some(String::from_utf8_lossy(message).trim().to_owned());
            }
            _ => {}
        });
    }

    /// At the end of the body: the size of the verified pack (`None` when the response
    /// carried none), or why the response is refused.
    pub fn finish(self) -> Result<Option<u64>, String> {
        self.lines.finish().map_err(|e| format!("response: {e}"))?;
        if let Some(e) = self.remote_error {
            return Err(format!("the remote reported an error: {e}"));
        }
        self.pack.map(PackCheck::finish).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pack, pkt};

    #[test]
    fn wants_are_read_once_each_with_the_command_and_done() {
        let oid = "A".repeat(40);
        let mut body = pkt(b"command=fetch\n");
        body.extend(b"0001");
        body.extend(pkt(format!("want {oid} side-band-64k\n").as_bytes()));
        body.extend(pkt(
            format!("want {}\n", oid.to_ascii_lowercase()).as_bytes()
        ));
        body.extend(pkt(b"want short\n"));
        body.extend(pkt(b"done\n"));
        body.extend(b"0000");
        let request = parse_request(&body).unwrap();
        assert_eq!(request.wants, ["a".repeat(40)]);
        assert_eq!(request.command.as_deref(), Some("fetch"));
        assert!(request.done);
        assert!(parse_request(b"00").unwrap_err().contains("ends inside"));
    }

    #[test]
    fn side_band_errors_and_bad_packs_refuse_the_response() {
        let mut good = pkt(b"NAK\n");
        let mut data = vec![1u8];
        data.extend(pack(b"objects"));
        good.extend(pkt(&data));
        good.extend(pkt(b"\x02progress\n"));
        good.extend(b"0000");
        let mut response = UploadPackResponse::default();
        for c in good.chunks(3) {
            response.feed(c);
        }
        assert_eq!(response.finish(), Ok(Some(data.len() as u64 - 1)));
        let mut failed = good.clone();
        failed.extend(pkt(b"\x03not our ref\n"));
        let mut response = UploadPackResponse::default();
        response.feed(&failed);
        assert!(response.finish().unwrap_err().contains("not our ref"));
        let mut response = UploadPackResponse::default();
        response.feed(&good[..good.len() - 2]);
        assert!(response.finish().unwrap_err().starts_with("response: "));
        let mut response = UploadPackResponse::default();
        response.feed(&pkt(b"NAK\n"));
        assert_eq!(response.finish(), Ok(None));
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
    fn mutated_exchanges_never_panic() {
        let oid = "c".repeat(40);
        let mut advertised = pkt(b"# service=git-upload-pack\n");
        advertised.extend(b"0000");
        advertised.extend(pkt(format!("{oid} HEAD\0side-band-64k\n").as_bytes()));
        advertised.extend(b"0000");
        for m in crate::testing::mutations(&advertised, 300) {
            let _ = advertisement(&m);
            let _ = parse_request(&m);
        }
        let mut stream = pkt(b"NAK\n");
        let mut data = vec![1u8];
        data.extend(pack(b"objects"));
        stream.extend(pkt(&data));
        stream.extend(b"0000");
        for m in crate::testing::mutations(&stream, 300) {
            let mut response = UploadPackResponse::default();
            response.feed(&m);
            let _ = response.finish();
        }
    }
}
