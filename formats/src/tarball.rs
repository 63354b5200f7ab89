//! Reading one file out of a gzip-compressed tarball (an sdist's `PKG-INFO`, a crate's
//! `Cargo.toml`, an npm package's `package.json`) in bounded memory: the archive is
//! expanded as a stream up to a limit, and only the wanted file is kept, up to its own.

use std::io::Read;

/// The first file whose path (without a leading `./`) is `{top}/{name}`, for any single
/// top-level directory `top` accepted by `top_ok`: its bytes, at most `max_file`.
/// `None` when the archive has no such file within `max_expanded` expanded bytes.
pub(crate) fn find_top_level_file(
    reader: impl Read,
    name: &str,
    top_ok: impl Fn(&str) -> bool,
    max_expanded: u64,
    max_file: u64,
) -> Result<Option<Vec<u8>>, String> {
    let expanded = flate2::read::GzDecoder::new(reader).take(max_expanded);
    let mut archive = tar::Archive::new(expanded);
    let entries = archive.entries().map_err(|e| format!("tar: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("tar: {e}"))?;
        let path = entry.path_bytes().into_owned();
        let path = path.strip_prefix(b"./").unwrap_or(&path);
        let mut parts = path.split(|b| *b == b'/');
        let wanted = match (parts.next(), parts.next(), parts.next()) {
            (Some(top), Some(file), None) => {
                file == name.as_bytes()
                    && std::str::from_utf8(top).is_ok_and(|t| !t.is_empty() && top_ok(t))
            }
            _ => false,
        };
        if !wanted {
            continue;
        }
        let mut text = Vec::new();
        entry
            .take(max_file + 1)
            .read_to_end(&mut text)
            .map_err(|e| format!("{name}: {e}"))?;
        if text.len() as u64 > max_file {
            return Err(format!("{name} is larger than {max_file} bytes"));
        }
        return Ok(Some(text));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tar_gz;

    #[test]
    fn only_the_file_directly_under_an_accepted_top_directory_is_read() {
        let t = tar_gz(&[
            ("a-1/sub/PKG-INFO", b"deep".as_slice()),
            ("other/PKG-INFO", b"wrong top"),
            ("./a-1/PKG-INFO", b"this"),
        ]);
        let got = find_top_level_file(&t[..], "PKG-INFO", |t| t == "a-1", 1 << 20, 10).unwrap();
        assert_eq!(got.as_deref(), Some(&b"this"[..]));
        let e = find_top_level_file(&t[..], "PKG-INFO", |t| t == "a-1", 1 << 20, 2).unwrap_err();
        assert!(e.contains("larger than 2 bytes"), "{e}");
        assert_eq!(
            find_top_level_file(&t[..], "setup.py", |_| true, 1 << 20, 10).unwrap(),
            None
        );
        let e = find_top_level_file(&b"\x1f\x8b\x08\x00junk"[..], "x", |_| true, 1 << 20, 10)
            .unwrap_err();
        assert!(e.contains("tar"), "{e}");
    }
}
