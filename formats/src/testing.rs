//! Builders of valid inputs and their hostile variants, for the parsers' tests here and
//! the inspectors' tests in the daemon (the `testing` feature, a dev-dependency only).

use sha1::Digest;

/// Hostile variants of a valid input, for the parsers' no-panic tests: every truncation
/// (in `sample.len() / 64` steps) and `n` copies with a few bytes overwritten
/// (deterministic pseudo-random positions and values).
pub fn mutations(sample: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ sample.len() as u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let step = (sample.len() / 64).max(1);
    let mut out: Vec<Vec<u8>> = (0..sample.len())
        .step_by(step)
        .map(|len| sample[..len].to_vec())
        .collect();
    for _ in 0..n {
        let mut m = sample.to_vec();
        for _ in 0..1 + next() % 4 {
            if !m.is_empty() {
                let at = (next() % m.len() as u64) as usize;
                m[at] = next() as u8;
            }
        }
        out.push(m);
    }
    out
}

/// A gzip-compressed tarball of these files (sdists, crates, npm packages).
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A wheel (zip) of `files` plus a RECORD listing each file's sha256 and size, as
/// `<dist_info>/RECORD`.
pub fn wheel(dist_info: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    use base64::Engine;
    use std::io::Write;
    let options = zip::write::SimpleFileOptions::default();
    let mut record = String::new();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        let digest =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data));
        record.push_str(&format!("{name},sha256={digest},{}\n", data.len()));
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    let record_name = format!("{dist_info}/RECORD");
    record.push_str(&format!("{record_name},,\n"));
    zip.start_file(record_name, options).unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

/// An ar archive member: its 60-byte header, `data`, and the padding byte.
pub fn ar_member(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
        0,
        0,
        0,
        "100644",
        data.len()
    )
    .into_bytes();
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(b'\n');
    }
    out
}

/// An uncompressed `control.tar` holding `./control`.
pub fn control_tar(control: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(control.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "./control", control.as_bytes())
        .unwrap();
    builder.into_inner().unwrap()
}

/// A `.deb` with this control file and `data` as its (uncompressed) `data.tar` member.
pub fn deb(control: &str, data: &[u8]) -> Vec<u8> {
    let mut out = crate::deb::AR_MAGIC.to_vec();
    out.extend(ar_member("debian-binary", b"2.0\n"));
    out.extend(ar_member("control.tar", &control_tar(control)));
    out.extend(ar_member("data.tar", data));
    out
}

/// One pkt-line carrying `data`.
pub fn pkt(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// A git pack holding `objects` (not parsed: any bytes), with its SHA-1 trailer.
pub fn pack(objects: &[u8]) -> Vec<u8> {
    let mut p = b"PACK\x00\x00\x00\x02\x00\x00\x00\x00".to_vec();
    p.extend_from_slice(objects);
    let sum = sha1::Sha1::digest(&p);
    p.extend_from_slice(&sum);
    p
}
