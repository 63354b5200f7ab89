//! A wheel (a zip, read from its spool file): the `.dist-info` directory its file name
//! names, every file's hash checked against `RECORD` (and every `RECORD` entry present),
//! and the core metadata from `METADATA`.
//!
//! Bounded: `RECORD` and `METADATA` are read up to a limit, each file is hashed while it
//! is expanded (never held), and the expanded total is capped against zip bombs.
//!
//! The expensive part, expanding every file, can be done while the wheel streams in:
//! [`stream_entries`] walks the local entries in order and hashes each as it arrives.
//! [`inspect`] then uses such a digest only for an entry whose central directory record
//! names the same local header, name, method, compressed and expanded sizes and CRC as
//! the one streamed, so the bytes hashed are exactly the bytes any zip reader expands;
//! every other entry is expanded from the complete file as before.

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek};

use base64::Engine;
use sha2::Digest;

use super::metadata::{self, CoreMetadata, MAX_METADATA};

/// The most a wheel's files may expand to, together.
const MAX_EXPANDED: u64 = 8 << 30;
/// The largest `RECORD` read.
const MAX_RECORD: u64 = 64 << 20;

/// What a wheel's file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    pub distribution: String,
    pub version: String,
    /// The platform tag (`any`, `manylinux_2_17_x86_64`, ...).
    pub platform: String,
}

/// `{distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl`.
pub fn parse_name(filename: &str) -> Result<WheelName, String> {
    let stem = filename
        .strip_suffix(".whl")
        .ok_or_else(|| format!("{filename:?} is not a .whl name"))?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(5..=6).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "{filename:?} is not `name-version[-build]-python-abi-platform.whl`"
        ));
    }
    Ok(WheelName {
        distribution: parts[0].to_owned(),
        version: parts[1].to_owned(),
        platform: parts[parts.len() - 1].to_owned(),
    })
}

/// What a verified wheel holds.
#[derive(Debug)]
pub struct Wheel {
    pub metadata: CoreMetadata,
    /// Files whose `RECORD` hash was checked.
    pub checked: usize,
    /// Of those, the ones hashed while the wheel streamed in.
    pub streamed: usize,
}

/// A `RECORD` row: hash algorithm and digest, and size when given.
struct Recorded {
    algorithm: String,
    digest: Vec<u8>,
    size: Option<u64>,
}

/// A local entry as [`stream_entries`] read it: its header fields and what its data
/// expanded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedEntry {
    pub name: Vec<u8>,
    /// Stored (0) or deflated (8).
    pub method: u16,
    pub compressed: u64,
    /// From the local header, or from the data descriptor after the data.
    pub crc32: u32,
    /// Expanded size, CRC-32 and sha256 of the expanded bytes.
    pub size: u64,
    pub expanded_crc32: u32,
    pub sha256: [u8; 32],
}

/// The entries [`stream_entries`] read, by the offset of their local header.
#[derive(Debug, Default)]
pub struct Streamed(HashMap<u64, StreamedEntry>);

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;

/// A buffered reader that counts what was consumed: the offset in the zip.
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }
}

/// Reads a zip from its first byte, in order, as it arrives, and expands and hashes each
/// local entry. Stops, keeping what it has, at the central directory or at the first
/// entry it cannot follow without the central directory (encrypted, zip64 sizes, a
/// method other than stored or deflated, a stored entry with a data descriptor), at the
/// end of the input, and once [`MAX_EXPANDED`] bytes were expanded. Never an error:
/// whatever it did not read, [`inspect`] expands from the complete file.
pub fn stream_entries(reader: impl BufRead) -> Streamed {
    let mut input = Counted {
        inner: reader,
        pos: 0,
    };
    let mut found = HashMap::new();
    let mut expanded = 0u64;
    while let Some((offset, entry)) = next_entry(&mut input, MAX_EXPANDED - expanded) {
        expanded += entry.size;
        found.insert(offset, entry);
    }
    Streamed(found)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The next local entry, expanded within `budget` bytes.
fn next_entry<R: BufRead>(input: &mut Counted<R>, budget: u64) -> Option<(u64, StreamedEntry)> {
    let offset = input.pos;
    let mut head = [0u8; 30];
    input.read_exact(&mut head).ok()?;
    if le32(&head, 0) != LOCAL_HEADER {
        return None;
    }
    let (flags, method) = (le16(&head, 6), le16(&head, 8));
    let (crc32, compressed, size) = (le32(&head, 14), le32(&head, 18), le32(&head, 22));
    let mut name = vec![0u8; usize::from(le16(&head, 26))];
    input.read_exact(&mut name).ok()?;
    let extra = u64::from(le16(&head, 28));
    if std::io::copy(&mut (&mut *input).take(extra), &mut std::io::sink()).ok()? != extra {
        return None;
    }
    let descriptor = flags & 0x8 != 0;
    if flags & 0x1 != 0 || compressed == u32::MAX || size == u32::MAX {
        return None;
    }
    let data_start = input.pos;
    let digest = match (method, descriptor) {
        (0, false) => expand(&mut (&mut *input).take(u64::from(compressed)), budget),
        (8, false) => {
            let mut data = (&mut *input).take(u64::from(compressed));
            let digest = expand(&mut flate2::bufread::DeflateDecoder::new(&mut data), budget);
            // A deflate stream that ends early: its data region still runs to the size.
            std::io::copy(&mut data, &mut std::io::sink()).ok()?;
            digest
        }
        (8, true) => expand(
            &mut flate2::bufread::DeflateDecoder::new(&mut *input),
            budget,
        ),
        _ => return None,
    }?;
    let compressed = input.pos - data_start;
    let crc32 = if descriptor {
        read_descriptor(input, compressed)?
    } else {
        crc32
    };
    let entry = StreamedEntry {
        name,
        method,
        compressed,
        crc32,
        size: digest.size,
        expanded_crc32: digest.crc32,
        sha256: digest.sha256,
    };
    Some((offset, entry))
}

/// The data descriptor after an entry's data (its signature is optional): its CRC-32,
/// if its compressed size is the one read.
fn read_descriptor<R: BufRead>(input: &mut Counted<R>, compressed: u64) -> Option<u32> {
    let mut first = [0u8; 4];
    input.read_exact(&mut first).ok()?;
    let mut rest = [0u8; 8];
    let crc32 = if le32(&first, 0) == DATA_DESCRIPTOR {
        let mut crc = [0u8; 4];
        input.read_exact(&mut crc).ok()?;
        le32(&crc, 0)
    } else {
        le32(&first, 0)
    };
    input.read_exact(&mut rest).ok()?;
    (u64::from(le32(&rest, 0)) == compressed).then_some(crc32)
}

/// What an entry's data expanded to.
struct Expanded {
    size: u64,
    crc32: u32,
    sha256: [u8; 32],
}

/// Reads `data` to its end, at most `budget` bytes, with its CRC-32 and sha256.
fn expand(data: &mut impl Read, budget: u64) -> Option<Expanded> {
    let mut sha = sha2::Sha256::new();
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = data.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > budget {
            return None;
        }
        sha.update(&buf[..n]);
        crc.update(&buf[..n]);
    }
    Some(Expanded {
        size,
        crc32: crc.sum(),
        sha256: sha.finalize().into(),
    })
}

impl Streamed {
    /// The streamed sha256 and size of the central directory's entry `file`, if the
    /// entry streamed is that very entry.
    fn digest_of<R: Read>(&self, file: &zip::read::ZipFile<'_, R>) -> Option<([u8; 32], u64)> {
        let e = self.0.get(&file.header_start())?;
        let method = match file.compression() {
            zip::CompressionMethod::Stored => 0,
            zip::CompressionMethod::Deflated => 8,
            _ => return None,
        };
        // The central directory may mark encrypted an entry whose local header does not;
        // a zip reader then refuses it, and so must the digest taken while streaming.
        let same = !file.encrypted()
            && e.name == file.name_raw()
            && e.method == method
            && e.compressed == file.compressed_size()
            && e.size == file.size()
            && e.crc32 == file.crc32()
            && e.expanded_crc32 == file.crc32();
        same.then_some((e.sha256, e.size))
    }
}

/// Reads and verifies a wheel named `name`.
pub fn inspect<R: Read + Seek>(reader: R, name: &WheelName) -> Result<Wheel, String> {
    inspect_streamed(reader, name, &Streamed::default())
}

/// [`inspect`], taking the digests of the entries `streamed` read as the wheel arrived.
pub fn inspect_streamed<R: Read + Seek>(
    reader: R,
    name: &WheelName,
    streamed: &Streamed,
) -> Result<Wheel, String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a zip archive: {e}"))?;
    if zip.has_duplicate_names() {
        return Err("the zip archive holds two files of the same name".into());
    }
    let names: Vec<String> = (0..zip.len())
        .map(|i| {
            zip.by_index_raw(i)
                .and_then(|f| f.name().map(|n| n.into_owned()))
                .map_err(|e| format!("zip entry {i}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    for n in &names {
        if n.starts_with('/') || n.contains('\\') || n.split('/').any(|s| s == "..") {
            return Err(format!("unsafe path {n:?} in the wheel"));
        }
    }
    let dist_info = dist_info_dir(&names, name)?;
    let record_path = format!("{dist_info}/RECORD");
    let mut expanded = 0u64;
    let record_text = read_entry(&mut zip, &record_path, MAX_RECORD, &mut expanded)?;
    let record = parse_record(&record_text)?;
    let meta_text = read_entry(
        &mut zip,
        &format!("{dist_info}/METADATA"),
        MAX_METADATA,
        &mut expanded,
    )?;
    let metadata = metadata::parse(&meta_text).map_err(|e| format!("METADATA: {e}"))?;
    metadata.matches(&name.distribution, &name.version)?;

    let unrecorded = |n: &str| {
        n == record_path || n == format!("{record_path}.jws") || n == format!("{record_path}.p7s")
    };
    let mut checked = 0;
    let mut streamed_count = 0;
    for (i, n) in names.iter().enumerate() {
        if n.ends_with('/') || unrecorded(n) {
            continue;
        }
        let Some(row) = record.get(n.as_str()) else {
            return Err(format!("{n} is not listed in RECORD"));
        };
        let known = match row.algorithm.as_str() {
            "sha256" => {
                let raw = zip.by_index_raw(i).map_err(|e| format!("{n}: {e}"))?;
                streamed.digest_of(&raw)
            }
            _ => None,
        };
        let (digest, size) = match known {
            Some((digest, size)) => {
                streamed_count += 1;
                (digest.to_vec(), size)
            }
            None => {
                let mut file = zip.by_index(i).map_err(|e| format!("{n}: {e}"))?;
                let limit = row
                    .size
                    .unwrap_or(MAX_EXPANDED)
                    .min(MAX_EXPANDED - expanded);
                hash(&mut (&mut file).take(limit + 1), &row.algorithm)
                    .map_err(|e| format!("{n}: {e}"))?
            }
        };
        expanded += size;
        if expanded > MAX_EXPANDED {
            return Err(format!(
                "the wheel expands to more than {MAX_EXPANDED} bytes"
            ));
        }
        if row.size.is_some_and(|s| s != size) || digest != row.digest {
            return Err(format!("{n} does not match its RECORD entry"));
        }
        checked += 1;
    }
    let present: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    if let Some(missing) = record.keys().find(|p| !present.contains(p.as_str())) {
        return Err(format!(
            "{missing} is listed in RECORD but not in the wheel"
        ));
    }
    Ok(Wheel {
        metadata,
        checked,
        streamed: streamed_count,
    })
}

/// The one top-level `{name}-{version}.dist-info` directory for this wheel name.
fn dist_info_dir(names: &[String], wheel: &WheelName) -> Result<String, String> {
    let mut found: Vec<&str> = names
        .iter()
        .filter_map(|n| n.split_once('/').map(|(top, _)| top))
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    found.sort_unstable();
    found.dedup();
    let wanted = metadata::normalise_name(&wheel.distribution);
    let matching: Vec<&str> = found
        .into_iter()
        .filter(|top| {
            top.strip_suffix(".dist-info")
                .and_then(|s| s.rsplit_once('-'))
                .is_some_and(|(n, v)| metadata::normalise_name(n) == wanted && v == wheel.version)
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(format!(
            "no {}-{}.dist-info directory in the wheel",
            wheel.distribution, wheel.version
        )),
        _ => Err("more than one .dist-info directory for this distribution".into()),
    }
}

/// An entry's expanded bytes, at most `limit`.
fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &str,
    limit: u64,
    expanded: &mut u64,
) -> Result<Vec<u8>, String> {
    let file = zip.by_name(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{path}: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("{path} is larger than {limit} bytes"));
    }
    *expanded += out.len() as u64;
    Ok(out)
}

/// Hashes a reader with a RECORD algorithm; returns (digest, bytes read).
fn hash(reader: &mut impl Read, algorithm: &str) -> Result<(Vec<u8>, u64), String> {
    fn run<D: Digest>(reader: &mut impl Read) -> std::io::Result<(Vec<u8>, u64)> {
        let mut hasher = D::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok((hasher.finalize().to_vec(), total));
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
    }
    let result = match algorithm {
        "sha256" => run::<sha2::Sha256>(reader),
        "sha384" => run::<sha2::Sha384>(reader),
        "sha512" => run::<sha2::Sha512>(reader),
        other => return Err(format!("RECORD hash algorithm {other:?} is not accepted")),
    };
    result.map_err(|e| e.to_string())
}

/// `RECORD`: CSV rows `path,algorithm=urlsafe-base64-digest,size`. Rows without a hash
/// (`RECORD` itself) are left out.
fn parse_record(text: &[u8]) -> Result<HashMap<String, Recorded>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "RECORD is not UTF-8".to_string())?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            csv_fields(line).ok_or_else(|| format!("RECORD line {}: bad quoting", i + 1))?;
        let [path, hash, size] = fields.as_slice() else {
            return Err(format!("RECORD line {}: expected 3 fields", i + 1));
        };
        if hash.is_empty() {
            continue;
        }
        let (algorithm, encoded) = hash
            .split_once('=')
            .ok_or_else(|| format!("RECORD line {}: hash without an algorithm", i + 1))?;
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| format!("RECORD line {}: bad base64 digest", i + 1))?;
        let size = match size.as_str() {
            "" => None,
            s => Some(
                s.parse()
                    .map_err(|_| format!("RECORD line {}: bad size {s:?}", i + 1))?,
            ),
        };
        let row = Recorded {
            algorithm: algorithm.to_owned(),
            digest,
            size,
        };
        if out.insert(path.clone(), row).is_some() {
            return Err(format!("RECORD lists {path} twice"));
        }
    }
    Ok(out)
}

/// One CSV line's fields (`"` quoting with `""` escapes); `None` when a quote is open.
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let field = fields.last_mut()?;
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(String::new()),
            (_, c) => field.push(c),
        }
    }
    (!quoted).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data))
    }

    /// A wheel with these files plus METADATA and a RECORD over all of them;
    /// `tamper` rewrites the RECORD text before it is stored.
    fn wheel(files: &[(&str, &[u8])], tamper: impl Fn(String) -> String) -> Vec<u8> {
        let metadata = b"Metadata-Version: 2.1\nName: fg-hello\nVersion: 1.0\nLicense: MIT\n";
        let mut all: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect();
        all.push(("fg_hello-1.0.dist-info/METADATA".into(), metadata.to_vec()));
        let mut record = String::new();
        for (n, d) in &all {
            record.push_str(&format!("{n},sha256={},{}\n", b64(d), d.len()));
        }
        record.push_str("fg_hello-1.0.dist-info/RECORD,,\n");
        all.push((
            "fg_hello-1.0.dist-info/RECORD".into(),
            tamper(record).into_bytes(),
        ));
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (n, d) in all {
            out.start_file(n, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(&d).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    fn name() -> WheelName {
        parse_name("fg_hello-1.0-py3-none-any.whl").unwrap()
    }

    #[test]
    fn a_consistent_wheel_is_verified() {
        let w = wheel(&[("fg_hello/__init__.py", b"print('hi')\n")], |r| r);
        let got = inspect(Cursor::new(w), &name()).unwrap();
        assert_eq!(got.metadata.name, "fg-hello");
        assert_eq!(got.metadata.license.as_deref(), Some("MIT"));
        assert_eq!(got.checked, 2);
        assert_eq!(name().platform, "any");
    }

    /// A wheel written the way a streaming writer writes it: deflated entries followed by
    /// data descriptors, sizes unknown in their local headers.
    fn streamed_wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new_stream(Vec::new());
        let metadata = b"Metadata-Version: 2.1\nName: fg-hello\nVersion: 1.0\n".to_vec();
        let mut all: Vec<(&str, &[u8])> = files.to_vec();
        all.push(("fg_hello-1.0.dist-info/METADATA", &metadata));
        let mut record = String::new();
        for (n, d) in &all {
            record.push_str(&format!("{n},sha256={},{}\n", b64(d), d.len()));
        }
        record.push_str("fg_hello-1.0.dist-info/RECORD,,\n");
        all.push(("fg_hello-1.0.dist-info/RECORD", record.as_bytes()));
        for (n, d) in all {
            out.start_file(n, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(d).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    #[test]
    fn entries_hashed_while_streaming_are_the_ones_a_zip_reader_expands() {
        let code = b"print('hi')\n".repeat(10_000);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut seekable = zip::ZipWriter::new(Cursor::new(Vec::new()));
        seekable.start_file("fg_hello/data.bin", stored).unwrap();
        seekable.write_all(&[7u8; 3000]).unwrap();
        let seekable = seekable.finish().unwrap().into_inner();
        let streamed = stream_entries(&seekable[..]);
        let data = streamed.0.get(&0).expect("the stored entry at offset 0");
        assert_eq!((data.method, data.size), (0, 3000));
        assert_eq!(
            data.sha256,
            <[u8; 32]>::from(sha2::Sha256::digest([7u8; 3000]))
        );

        for w in [
            wheel(&[("fg_hello/__init__.py", &code)], |r| r),
            streamed_wheel(&[("fg_hello/__init__.py", &code)]),
        ] {
            let streamed = stream_entries(&w[..]);
            assert_eq!(streamed.0.len(), 3, "every entry, descriptors or not");
            let mut zip = zip::ZipArchive::new(Cursor::new(w.clone())).unwrap();
            for i in 0..zip.len() {
                let raw = zip.by_index_raw(i).unwrap();
                let (sha, size) = streamed.digest_of(&raw).expect("the same entry");
                assert_eq!(size, raw.size());
                drop(raw);
                let mut expanded = Vec::new();
                zip.by_index(i).unwrap().read_to_end(&mut expanded).unwrap();
                assert_eq!(sha, <[u8; 32]>::from(sha2::Sha256::digest(&expanded)));
            }
            let got = inspect_streamed(Cursor::new(w), &name(), &streamed).unwrap();
            assert_eq!((got.checked, got.streamed), (2, 2));
        }
    }

    #[test]
    fn a_streamed_digest_counts_only_for_the_very_entry_the_central_directory_names() {
        let w = wheel(&[("fg_hello/__init__.py", b"print('hi')\n")], |r| r);
        let honest = stream_entries(&w[..]);
        let (&offset, entry) = honest
            .0
            .iter()
            .find(|(_, e)| e.name == b"fg_hello/__init__.py")
            .unwrap();

        // Same entry, another digest: it is used, so the file no longer matches RECORD.
        let mut lying = Streamed::default();
        let mut forged = entry.clone();
        forged.sha256 = [0; 32];
        lying.0.insert(offset, forged.clone());
        let e = inspect_streamed(Cursor::new(w.clone()), &name(), &lying).unwrap_err();
        assert!(e.contains("does not match its RECORD entry"), "{e}");

        // Any field that differs from the central directory's: not that entry, so the
        // file is expanded again and verifies.
        let mut other_size = forged.clone();
        other_size.compressed += 1;
        let mut other_crc = forged.clone();
        other_crc.expanded_crc32 ^= 1;
        let mut other_name = forged;
        other_name.name = b"fg_hello/other.py".to_vec();
        for entry in [other_size, other_crc, other_name] {
            let mut mismatched = Streamed::default();
            mismatched.0.insert(offset, entry);
            assert!(inspect_streamed(Cursor::new(w.clone()), &name(), &mismatched).is_ok());
        }
        let mut elsewhere = Streamed::default();
        elsewhere.0.insert(offset + 1, entry.clone());
        assert!(inspect_streamed(Cursor::new(w.clone()), &name(), &elsewhere).is_ok());
    }

    #[test]
    fn an_entry_the_central_directory_marks_encrypted_is_refused_however_it_streamed() {
        let mut w = wheel(&[("fg_hello/__init__.py", b"print('hi')\n")], |r| r);
        // Found by the fuzzer: set the encryption flag in the first central directory
        // record only (its general purpose flags are 8 bytes in); the local header
        // still says plain.
        let cd = w.windows(4).position(|s| s == b"PK\x01\x02").unwrap();
        w[cd + 8] |= 1;
        let streamed = stream_entries(&w[..]);
        assert!(!streamed.0.is_empty(), "the local headers still stream");
        let whole = inspect(Cursor::new(w.clone()), &name()).unwrap_err();
        let both = inspect_streamed(Cursor::new(w.clone()), &name(), &streamed).unwrap_err();
        assert!(whole.contains("Password required"), "{whole}");
        assert_eq!(whole, both);
    }

    #[test]
    fn streaming_stops_at_what_it_cannot_follow_and_never_panics() {
        assert!(stream_entries(&b""[..]).0.is_empty());
        assert!(stream_entries(&b"PK\x03\x04short"[..]).0.is_empty());
        let w = wheel(&[("fg_hello/__init__.py", b"x")], |r| r);
        for cut in [1, 29, 30, 40, w.len() / 2, w.len() - 1] {
            let _ = stream_entries(&w[..cut]);
        }
        let mut bomb = w.clone();
        // A local header claiming a huge stored entry: the read runs out, nothing kept.
        bomb[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(stream_entries(&bomb[..]).0.is_empty());
    }

    #[test]
    fn a_file_that_does_not_match_record_is_refused() {
        let w = wheel(&[("fg_hello/__init__.py", b"print('hi')\n")], |r| {
            r.replacen("sha256=", "sha256=AAAA", 1)
        });
        let e = inspect(Cursor::new(w), &name()).unwrap_err();
        assert!(e.contains("does not match its RECORD entry"), "{e}");
        let w = wheel(&[("fg_hello/__init__.py", b"x")], |r| {
            r.lines().skip(1).map(|l| format!("{l}\n")).collect()
        });
        let e = inspect(Cursor::new(w), &name()).unwrap_err();
        assert!(e.contains("not listed in RECORD"), "{e}");
        let w = wheel(&[], |r| format!("{r}gone.py,sha256={},1\n", b64(b"x")));
        let e = inspect(Cursor::new(w), &name()).unwrap_err();
        assert!(e.contains("not in the wheel"), "{e}");
    }

    #[test]
    fn hostile_wheels_give_a_reason() {
        let e = inspect(Cursor::new(b"PK\x03\x04garbage".to_vec()), &name()).unwrap_err();
        assert!(e.contains("not a zip"), "{e}");
        let w = wheel(&[("../evil", b"x")], |r| r);
        let e = inspect(Cursor::new(w), &name()).unwrap_err();
        assert!(e.contains("unsafe path"), "{e}");
        let w = wheel(&[], |r| r);
        let other = parse_name("other-1.0-py3-none-any.whl").unwrap();
        let e = inspect(Cursor::new(w), &other).unwrap_err();
        assert!(e.contains("no other-1.0.dist-info"), "{e}");
        assert!(parse_name("x.whl").is_err());
        assert!(parse_name("a-1-py3-none-any.zip").is_err());
        assert!(csv_fields("\"a,b\",c").unwrap() == ["a,b", "c"]);
        assert!(csv_fields("\"open").is_none());
    }

    #[test]
    fn mutated_wheels_never_panic() {
        let w = wheel(&[("fg_hello/__init__.py", b"print('hi')\n")], |r| r);
        for m in crate::testing::mutations(&w, 500) {
            let _ = inspect(Cursor::new(m), &name());
        }
    }
}
