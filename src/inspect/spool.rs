//! Keeping a response body while it streams, for inspectors that must read it whole
//! once it is complete: small documents (Release files, index pages) in memory up to a
//! limit ([`Buffer`]); large ones (Packages indexes, zip wheels that need random access,
//! tarballs) in an unnamed temporary file in `<spool>/inspect/` ([`Spool`]), so memory
//! stays bounded and nothing is left behind when the download ends, however it ends.
//! Which content coding a recognised request may ask the origin for follows from what
//! can be read back ([`readable_encoding`]). Another thread can read a spool file while
//! it is written ([`Spool::tail`]), to do its work as the body streams.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

/// The read buffer of [`Spool::into_reader`].
const READ_BUFFER: usize = 256 << 10;

/// A body being written to an unnamed temporary file, up to a size limit.
#[derive(Debug)]
pub struct Spool {
    state: Result<File, String>,
    written: u64,
    limit: u64,
    /// Told of every write, when a [`SpoolTail`] reads along.
    tail: Option<Arc<TailState>>,
}

/// How far a spool file is written, and whether it will grow any more.
#[derive(Debug, Default)]
struct TailState {
    /// (bytes written, no more to come)
    progress: Mutex<(u64, bool)>,
    grown: Condvar,
}

impl TailState {
    fn update(&self, change: impl FnOnce(&mut (u64, bool))) {
        change(&mut self.progress.lock().unwrap_or_else(|p| p.into_inner()));
        self.grown.notify_all();
    }
}

impl Spool {
    /// A new spool file in `dir` that refuses bodies larger than `limit` bytes.
    pub fn new(dir: &Path, limit: u64) -> Self {
        Spool {
            state: tempfile::tempfile_in(dir).map_err(|e| format!("cannot spool the body: {e}")),
            written: 0,
            limit,
            tail: None,
        }
    }

    /// A reader of this spool's file for another thread, which waits for each byte to
    /// be written and ends where the body ends (or where the spool is abandoned or
    /// dropped). `None` if the file cannot be shared.
    pub fn tail(&mut self) -> Option<SpoolTail> {
        let file = self.state.as_ref().ok()?.try_clone().ok()?;
        let state = Arc::new(TailState::default());
        state.update(|p| p.0 = self.written);
        self.tail = Some(Arc::clone(&state));
        Some(SpoolTail { file, at: 0, state })
    }

    /// Appends the next chunk; past the limit (or on a write error) the spool is
    /// abandoned and [`Self::into_file`] says why.
    pub fn write(&mut self, bytes: &[u8]) {
        let Ok(file) = &mut self.state else {
            return;
        };
        self.written += bytes.len() as u64;
        if self.written > self.limit {
            self.state = Err(format!("larger than {} bytes", self.limit));
            self.end_tail();
        } else if let Err(e) = file.write_all(bytes) {
            self.state = Err(format!("cannot spool the body: {e}"));
            self.end_tail();
        } else if let Some(tail) = &self.tail {
            let written = self.written;
            tail.update(|p| p.0 = written);
        }
    }

    /// A reading tail stops waiting: nothing more will be written.
    fn end_tail(&mut self) {
        if let Some(tail) = self.tail.take() {
            tail.update(|p| p.1 = true);
        }
    }

    /// The complete body, rewound to its start.
    pub fn into_file(mut self) -> Result<File, String> {
        self.end_tail();
        let mut file = std::mem::replace(&mut self.state, Err(String::new()))?;
        file.rewind()
            .map_err(|e| format!("cannot read the spooled body: {e}"))?;
        Ok(file)
    }

    /// [`Self::into_file`] behind a large read buffer (archive readers read in small
    /// pieces).
    pub fn into_reader(self) -> Result<BufReader<File>, String> {
        Ok(BufReader::with_capacity(READ_BUFFER, self.into_file()?))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.end_tail();
    }
}

/// Reads a [`Spool`]'s file while it is written ([`Spool::tail`]), at its own offset.
#[derive(Debug)]
pub struct SpoolTail {
    file: File,
    at: u64,
    state: Arc<TailState>,
}

impl Read for SpoolTail {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = {
            let mut progress = self
                .state
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            while progress.0 <= self.at && !progress.1 {
                progress = self
                    .state
                    .grown
                    .wait(progress)
                    .unwrap_or_else(|p| p.into_inner());
            }
            progress.0.saturating_sub(self.at)
        };
        let n = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// A body kept in memory, up to a size limit.
#[derive(Debug)]
pub struct Buffer {
    bytes: Vec<u8>,
    limit: usize,
    too_big: bool,
}

impl Buffer {
    pub fn new(limit: usize) -> Self {
        Buffer {
            bytes: Vec::new(),
            limit,
            too_big: false,
        }
    }

    /// Appends the next chunk; past the limit the bytes are dropped.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.bytes.len() + bytes.len() > self.limit {
            self.too_big = true;
            self.bytes = Vec::new();
        } else if !self.too_big {
            self.bytes.extend_from_slice(bytes);
        }
    }

    /// The complete body, unless it was larger than the limit.
    pub fn into_bytes(self) -> Result<Vec<u8>, String> {
        if self.too_big {
            return Err(format!("larger than {} bytes", self.limit));
        }
        Ok(self.bytes)
    }

    /// [`Self::into_bytes`], expanded when it is gzip-compressed (an origin answering
    /// `Content-Encoding: gzip`: the proxy passes bodies on as they come), up to the
    /// same limit.
    pub fn into_expanded(self) -> Result<Vec<u8>, String> {
        let limit = self.limit;
        let bytes = self.into_bytes()?;
        if !bytes.starts_with(b"\x1f\x8b") {
            return Ok(bytes);
        }
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip-compressed body: {e}"))?;
        if out.len() > limit {
            return Err(format!("expands to more than {limit} bytes"));
        }
        Ok(out)
    }
}

/// The `Accept-Encoding` to send upstream for a recognised request, given the
/// client's: `gzip` when the client takes it ([`Buffer::into_expanded`] reads it), else
/// none, so the origin answers unencoded. Codings inspectors cannot read (br, zstd,
/// deflate) are never asked for: a body in one could not be verified.
pub fn readable_encoding(client: Option<&str>) -> Option<&'static str> {
    let accepts_gzip = client.is_some_and(|value| {
        value.split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip"))
                && !refused
        })
    });
    accepts_gzip.then_some("gzip")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_body_is_read_back_whole_and_a_large_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path(), 10);
        spool.write(b"hello ");
        spool.write(b"you");
        let mut text = String::new();
        spool
            .into_file()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello you");

        let mut spool = Spool::new(dir.path(), 10);
        spool.write(b"hello ");
        spool.write(b"world");
        let e = spool.into_file().unwrap_err();
        assert!(e.contains("larger than 10 bytes"), "{e}");
    }

    #[test]
    fn a_tail_reads_along_while_the_body_is_written_and_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path(), 1 << 20);
        spool.write(b"early ");
        let mut tail = spool.tail().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            tail.read_to_string(&mut all).map(|_| all)
        });
        for piece in ["bytes ", "keep ", "coming"] {
            std::thread::sleep(std::time::Duration::from_millis(20));
            spool.write(piece.as_bytes());
        }
        assert!(!reader.is_finished(), "the tail ends only with the body");
        let mut whole = String::new();
        spool
            .into_file()
            .unwrap()
            .read_to_string(&mut whole)
            .unwrap();
        assert_eq!(whole, "early bytes keep coming");
        assert_eq!(reader.join().unwrap().unwrap(), whole);

        // A spool dropped half way (the download failed) ends its tail too.
        let mut spool = Spool::new(dir.path(), 1 << 20);
        let mut tail = spool.tail().unwrap();
        spool.write(b"half");
        drop(spool);
        let mut got = Vec::new();
        tail.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"half");
    }

    #[test]
    fn only_gzip_is_asked_for_and_only_when_the_client_takes_it() {
        assert_eq!(readable_encoding(Some("gzip, deflate, br")), Some("gzip"));
        assert_eq!(
            readable_encoding(Some("br;q=1.0, GZIP;q=0.5")),
            Some("gzip")
        );
        assert_eq!(readable_encoding(Some("gzip;q=0, br")), None);
        assert_eq!(readable_encoding(Some("br, zstd")), None);
        assert_eq!(readable_encoding(None), None);
    }

    #[test]
    fn a_buffer_keeps_a_body_up_to_its_limit() {
        let mut buffer = Buffer::new(4);
        buffer.write(b"ab");
        buffer.write(b"cd");
        assert_eq!(buffer.into_bytes().unwrap(), b"abcd");
        let mut buffer = Buffer::new(4);
        buffer.write(b"abc");
        buffer.write(b"de");
        buffer.write(b"f");
        assert_eq!(buffer.into_bytes().unwrap_err(), "larger than 4 bytes");
    }

    #[test]
    fn a_gzip_compressed_buffer_is_expanded_within_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[b'x'; 100]).unwrap();
        let gz = gz.finish().unwrap();
        let mut buffer = Buffer::new(100);
        buffer.write(&gz);
        assert_eq!(buffer.into_expanded().unwrap(), [b'x'; 100]);
        let mut buffer = Buffer::new(99);
        buffer.write(&gz);
        let e = buffer.into_expanded().unwrap_err();
        assert!(e.contains("expands to more than 99"), "{e}");
        let mut buffer = Buffer::new(99);
        buffer.write(b"\x1f\x8b\x08\x00garbage");
        assert!(buffer.into_expanded().unwrap_err().contains("gzip"));
        let mut buffer = Buffer::new(99);
        buffer.write(b"plain");
        assert_eq!(buffer.into_expanded().unwrap(), b"plain");
    }
}
