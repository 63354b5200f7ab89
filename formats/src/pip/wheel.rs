//! A wheel (a zip, read from its spool file): the `.dist-info` directory its file name
//! names, every file's hash checked against `RECORD` (and every `RECORD` entry present),
//! and the core metadata from `METADATA`.
//!
//! Bounded: `RECORD` and `METADATA` are read up to a limit, each file is hashed while it
//! is expanded (never held), and the expanded total is capped against zip bombs.

use std::collections::HashMap;
use std::io::{Read, Seek};

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
}

/// A `RECORD` row: hash algorithm and digest, and size when given.
struct Recorded {
    algorithm: String,
    digest: Vec<u8>,
    size: Option<u64>,
}

/// Reads and verifies a wheel named `name`.
pub fn inspect<R: Read + Seek>(reader: R, name: &WheelName) -> Result<Wheel, String> {
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
    for (i, n) in names.iter().enumerate() {
        if n.ends_with('/') || unrecorded(n) {
            continue;
        }
        let Some(row) = record.get(n.as_str()) else {
            return Err(format!("{n} is not listed in RECORD"));
        };
        let mut file = zip.by_index(i).map_err(|e| format!("{n}: {e}"))?;
        let limit = row
            .size
            .unwrap_or(MAX_EXPANDED)
            .min(MAX_EXPANDED - expanded);
        let (digest, size) = hash(&mut (&mut file).take(limit + 1), &row.algorithm)
            .map_err(|e| format!("{n}: {e}"))?;
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
    Ok(Wheel { metadata, checked })
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
