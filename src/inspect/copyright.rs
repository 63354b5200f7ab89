//! The license of a Debian package, from the machine-readable (DEP-5)
//! `usr/share/doc/<package>/copyright` inside its `data.tar`, found while the package
//! streams: the data member's bytes go to a worker thread that decompresses the tar
//! and stops at the first copyright file.
//!
//! Best effort by design, and never a brake on the download: a package without a DEP-5
//! copyright file, one whose data arrives faster than it can be scanned (more than
//! [`MAX_BACKLOG`] queued: the scan is then abandoned at once), or one whose license has
//! no SPDX name here gets no `license`. Never an error. A package smaller than the
//! backlog is always scanned to the end (the verdict waits for it); a large one only if
//! it streams no faster than it decompresses (xz is the slow case: see
//! `docs/performance.md`, "Inspection of real packages").

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use fetchgate_formats::copyright::{Copyright, parse};

/// Bytes of the data member queued for the scanner at most.
pub const MAX_BACKLOG: usize = 256 << 10;
/// The most of the data tar decompressed while looking.
const MAX_DATA_TAR: u64 = 16 << 30;
/// The largest copyright file read.
const MAX_COPYRIGHT: u64 = 1 << 20;

/// The bytes of the data member, read by the scanner thread.
struct Chunks {
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    backlog: Arc<AtomicUsize>,
    /// Set when the scan is abandoned: the data ends here.
    abandoned: Arc<AtomicBool>,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(0);
        }
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.backlog.fetch_sub(chunk.len(), Ordering::Relaxed);
                    self.current = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Looks for the copyright file in a data member as it streams.
#[derive(Default)]
pub struct CopyrightScan {
    tx: Option<Sender<Vec<u8>>>,
    worker: Option<JoinHandle<Option<Copyright>>>,
    backlog: Arc<AtomicUsize>,
    /// Tells the scanner to stop reading.
    abandoned: Arc<AtomicBool>,
    /// The scan was abandoned (backlog too long, or the thread could not start).
    given_up: bool,
}

impl Drop for CopyrightScan {
    /// A download that ends without [`CopyrightScan::finish`] (cut off, failed) stops
    /// its scanner too.
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

impl CopyrightScan {
    /// The next bytes of the data member `member` (`data.tar.xz`, ...).
    pub fn feed(&mut self, member: &str, bytes: &[u8]) {
        if self.given_up {
            return;
        }
        if self.tx.is_none() && self.worker.is_none() {
            self.start(member);
        }
        let Some(tx) = &self.tx else { return };
        if self.backlog.load(Ordering::Relaxed) + bytes.len() > MAX_BACKLOG {
            self.give_up();
            return;
        }
        self.backlog.fetch_add(bytes.len(), Ordering::Relaxed);
        if tx.send(bytes.to_vec()).is_err() {
            // The scanner is done (found it, or gave up on the data): stop sending.
            self.tx = None;
        }
    }

    fn start(&mut self, member: &str) {
        let (tx, rx) = channel();
        let chunks = Chunks {
            rx,
            current: Vec::new(),
            at: 0,
            backlog: Arc::clone(&self.backlog),
            abandoned: Arc::clone(&self.abandoned),
        };
        let member = member.to_owned();
        match std::thread::Builder::new()
            .name("deb-copyright".into())
            .spawn(move || scan(&member, chunks))
        {
            Ok(worker) => {
                self.tx = Some(tx);
                self.worker = Some(worker);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the copyright scanner");
                self.given_up = true;
            }
        }
    }

    fn give_up(&mut self) {
        self.given_up = true;
        self.tx = None;
        // The worker stops at its next read; nobody waits for it.
        self.abandoned.store(true, Ordering::Relaxed);
        self.worker = None;
    }

    /// The package is complete: what the scan found, or that it gave up.
    pub fn finish(mut self) -> Scanned {
        self.tx = None;
        if self.given_up {
            return Scanned::GaveUp;
        }
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(found)) => Scanned::Read(found),
            // No data member, or a scanner that panicked.
            None | Some(Err(_)) => Scanned::Read(None),
        }
    }
}

/// What a [`CopyrightScan`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// The data member was read as far as needed: the copyright file's license, or
    /// `None` (no DEP-5 copyright file with a license known here, or unreadable data),
    /// which the same bytes would give again.
    Read(Option<Copyright>),
    /// Abandoned: the data arrived faster than it could be scanned.
    GaveUp,
}

impl Scanned {
    /// The license found, if any.
    pub fn copyright(self) -> Option<Copyright> {
        match self {
            Scanned::Read(found) => found,
            Scanned::GaveUp => None,
        }
    }
}

/// The scanner thread: decompress, walk the tar, read the first DEP-5 copyright file.
fn scan(member: &str, input: Chunks) -> Option<Copyright> {
    let reader: Box<dyn Read> = match member {
        "data.tar" => Box::new(input),
        "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(input)),
        "data.tar.xz" => Box::new(lzma_rust2::XzReader::new(input, true)),
        "data.tar.zst" => Box::new(zstd::stream::read::Decoder::new(input).ok()?),
        _ => return None,
    };
    let mut archive = tar::Archive::new(reader.take(MAX_DATA_TAR));
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path_bytes();
        let path = path.strip_prefix(b"./").unwrap_or(&path);
        let is_copyright = path.starts_with(b"usr/share/doc/")
            && path.ends_with(b"/copyright")
            && path.iter().filter(|&&b| b == b'/').count() == 4;
        if is_copyright {
            let mut text = Vec::new();
            entry.take(MAX_COPYRIGHT).read_to_end(&mut text).ok()?;
            return parse(&text);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: 2020 Jo Tester\nLicense: GPL-2+\n long text\n\nFiles: debian/*\nCopyright: 2021 Someone\nLicense: MIT\n";

    fn data_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn the_scanner_finds_the_copyright_file_whatever_the_chunking() {
        let tar = data_tar(&[
            ("./usr/bin/x", &[7u8; 5000]),
            ("./usr/share/doc/x/copyright", DEP5.as_bytes()),
        ]);
        for size in [1, 511, 4096] {
            let mut scan = CopyrightScan::default();
            for chunk in tar.chunks(size) {
                scan.feed("data.tar", chunk);
            }
            assert_eq!(
                scan.finish().copyright().unwrap().license,
                "GPL-2.0-or-later"
            );
        }
    }

    #[test]
    fn data_after_the_copyright_file_does_not_make_the_scan_give_up() {
        let tar = data_tar(&[("./usr/share/doc/x/copyright", DEP5.as_bytes())]);
        let mut scan = CopyrightScan::default();
        scan.feed("data.tar", &tar);
        // Once the scanner has found the file, more data must not count as backlog.
        while !scan.worker.as_ref().is_some_and(|w| w.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let tail = vec![0u8; 64 << 10];
        for _ in 0..2 * MAX_BACKLOG / tail.len() {
            scan.feed("data.tar", &tail);
        }
        assert_eq!(
            scan.finish().copyright().unwrap().license,
            "GPL-2.0-or-later"
        );
    }

    #[test]
    fn data_arriving_faster_than_it_is_scanned_abandons_the_scan_at_once() {
        let tar = data_tar(&[
            ("./usr/bin/x", &vec![7u8; 3 * MAX_BACKLOG][..]),
            ("./usr/share/doc/x/copyright", DEP5.as_bytes()),
        ]);
        let mut scan = CopyrightScan::default();
        // More than the backlog at once: the scanner cannot have read it yet.
        let (first, rest) = tar.split_at(MAX_BACKLOG + 1);
        scan.feed("data.tar", first);
        assert!(scan.given_up);
        scan.feed("data.tar", rest);
        assert!(
            scan.abandoned.load(Ordering::Relaxed),
            "the worker is told to stop"
        );
        assert_eq!(scan.finish(), Scanned::GaveUp);

        // An abandoned scanner reads no more of what was queued for it.
        let (tx, rx) = channel();
        tx.send(vec![1u8; 16]).unwrap();
        let abandoned = Arc::new(AtomicBool::new(true));
        let mut chunks = Chunks {
            rx,
            current: Vec::new(),
            at: 0,
            backlog: Arc::default(),
            abandoned,
        };
        assert_eq!(chunks.read(&mut [0u8; 16]).unwrap(), 0);
    }

    #[test]
    fn garbage_data_gives_no_license_and_no_panic() {
        for member in [
            "data.tar",
            "data.tar.gz",
            "data.tar.xz",
            "data.tar.zst",
            "data.tar.bz2",
        ] {
            let mut scan = CopyrightScan::default();
            scan.feed(member, b"\xfd7zXZ\x00 this is not what it claims");
            assert_eq!(scan.finish(), Scanned::Read(None), "{member}");
        }
        assert_eq!(CopyrightScan::default().finish(), Scanned::Read(None));
    }
}
