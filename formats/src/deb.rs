//! A Debian binary package (`.deb`): a push parser for its ar container ([`ArReader`]),
//! fed chunks as they arrive, that keeps only the control member (bounded) and hands the
//! data member's bytes to the caller without holding them; and the fields of the
//! `control` file inside `control.tar.{gz,xz,zst}` ([`control_fields`]). Hostile input
//! gives an error string, never a panic.

use std::collections::BTreeMap;
use std::io::Read;

use crate::deb822::{Item, Paragraphs};

/// The ar archive's magic.
pub const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: usize = 60;
/// The largest control member kept (real ones are a few KiB).
pub const MAX_CONTROL_MEMBER: u64 = 16 << 20;
/// The most the control member may expand to.
const MAX_CONTROL_TAR: u64 = 64 << 20;
/// The largest control file read.
const MAX_CONTROL_FILE: u64 = 1 << 20;
/// What happens to a member's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Skip,
    /// Kept in `buf` (the control member).
    Keep,
    /// Handed to the caller (the data member).
    Stream,
}

/// Where the ar parser is.
#[derive(Debug)]
enum ArState {
    Magic,
    Header,
    /// Inside a member: data bytes left, then a padding byte if `pad`.
    Member {
        left: u64,
        pad: bool,
        route: Route,
    },
    Padding,
}

/// A push parser for the ar container of a `.deb`: keeps the control member and hands
/// the data member's bytes to the caller as they arrive.
#[derive(Debug)]
pub struct ArReader {
    state: ArState,
    buf: Vec<u8>,
    /// The name of the member being read.
    member: String,
    /// The control member's name and bytes, once complete.
    control: Option<(String, Vec<u8>)>,
    members: usize,
    error: Option<String>,
}

impl Default for ArReader {
    fn default() -> Self {
        ArReader {
            state: ArState::Magic,
            buf: Vec::new(),
            member: String::new(),
            control: None,
            members: 0,
            error: None,
        }
    }
}

impl ArReader {
    /// Feeds the next bytes of the package; `on_data(member name, bytes)` receives the
    /// data member's bytes.
    pub fn feed(&mut self, mut bytes: &[u8], on_data: &mut dyn FnMut(&str, &[u8])) {
        while !bytes.is_empty() && self.error.is_none() {
            match &mut self.state {
                ArState::Magic | ArState::Header => {
                    let need = if matches!(self.state, ArState::Magic) {
                        AR_MAGIC.len()
                    } else {
                        AR_HEADER
                    };
                    let take = (need - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buf.len() == need {
                        let head = std::mem::take(&mut self.buf);
                        if let Err(e) = self.header(&head) {
                            self.error = Some(e);
                        }
                    }
                }
                ArState::Padding => {
                    bytes = &bytes[1..];
                    self.state = ArState::Header;
                }
                ArState::Member { left, pad, route } => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    match route {
                        Route::Keep => self.buf.extend_from_slice(&bytes[..take]),
                        Route::Stream => on_data(&self.member, &bytes[..take]),
                        Route::Skip => {}
                    }
                    bytes = &bytes[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        if *route == Route::Keep {
                            self.control =
                                Some((self.member.clone(), std::mem::take(&mut self.buf)));
                        }
                        self.state = if *pad {
                            ArState::Padding
                        } else {
                            ArState::Header
                        };
                    }
                }
            }
        }
    }

    fn header(&mut self, head: &[u8]) -> Result<(), String> {
        if matches!(self.state, ArState::Magic) {
            if head != AR_MAGIC {
                return Err("not an ar archive (bad magic)".into());
            }
            self.state = ArState::Header;
            return Ok(());
        }
        if &head[58..60] != b"`\n" {
            return Err(format!(
                "ar member {}: bad header terminator",
                self.members + 1
            ));
        }
        let name = std::str::from_utf8(&head[..16])
            .map_err(|_| "ar member name is not UTF-8".to_string())?
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: u64 = std::str::from_utf8(&head[48..58])
            .ok()
            .and_then(|s| s.trim_end().parse().ok())
            .ok_or_else(|| format!("ar member {name:?}: bad size"))?;
        self.members += 1;
        let route = match (self.members, name.as_str()) {
            (1, "debian-binary") => Route::Skip,
            (1, _) => return Err(format!("first member is {name:?}, not debian-binary")),
            (_, n) if n.starts_with("control.tar") => {
                if size > MAX_CONTROL_MEMBER {
                    return Err(format!("{name} is larger than {MAX_CONTROL_MEMBER} bytes"));
                }
                Route::Keep
            }
            (_, n) if n.starts_with("data.tar") && self.control.is_none() => {
                return Err("data.tar comes before control.tar".into());
            }
            (_, n) if n.starts_with("data.tar") => Route::Stream,
            _ => Route::Skip,
        };
        self.member = name;
        self.state = if size == 0 {
            ArState::Header
        } else {
            ArState::Member {
                left: size,
                pad: size % 2 == 1,
                route,
            }
        };
        Ok(())
    }

    /// The control file's fields, once the control member was read.
    pub fn control(&self) -> Result<BTreeMap<String, String>, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let Some((name, member)) = &self.control else {
            return Err("no control.tar member".into());
        };
        control_fields(name, member)
    }
}

/// Decompresses a control member and parses its `control` file.
pub fn control_fields(
    member_name: &str,
    member: &[u8],
) -> Result<BTreeMap<String, String>, String> {
    let reader: Box<dyn Read + '_> = match member_name {
        "control.tar" => Box::new(member),
        "control.tar.gz" => Box::new(flate2::read::GzDecoder::new(member)),
        "control.tar.xz" => Box::new(lzma_rust2::XzReader::new(member, true)),
        "control.tar.zst" => Box::new(
            zstd::stream::read::Decoder::with_buffer(member)
                .map_err(|e| format!("{member_name}: {e}"))?,
        ),
        other => return Err(format!("unsupported control member {other}")),
    };
    let mut archive = tar::Archive::new(reader.take(MAX_CONTROL_TAR));
    let entries = archive
        .entries()
        .map_err(|e| format!("{member_name}: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{member_name}: {e}"))?;
        let is_control = entry
            .path_bytes()
            .strip_prefix(b"./")
            .unwrap_or(&entry.path_bytes())
            == b"control";
        if !is_control {
            continue;
        }
        let mut text = Vec::new();
        entry
            .take(MAX_CONTROL_FILE)
            .read_to_end(&mut text)
            .map_err(|e| format!("{member_name}: control: {e}"))?;
        let mut paragraphs = Paragraphs::new(&text[..]);
        return match paragraphs.next_item() {
            Ok(Some(Item::Stanza(s))) => Ok(s
                .fields()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()),
            Ok(Some(Item::Malformed(m))) => Err(format!("control line {}: {}", m.line, m.reason)),
            Ok(None) => Err("the control file is empty".into()),
            Err(e) => Err(format!("control: {e}")),
        };
    }
    Err(format!("{member_name} has no control file"))
}

/// The control fields of a complete package.
pub fn control_of(deb: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut ar = ArReader::default();
    ar.feed(deb, &mut |_, _| {});
    ar.control()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{ar_member, control_tar};

    fn deb(control: &str) -> Vec<u8> {
        crate::testing::deb(control, &[0u8; 1025])
    }

    #[test]
    fn control_fields_are_read_whatever_the_chunking() {
        let pkg =
            deb("Package: hello\nVersion: 1:1.0\nArchitecture: all\nDescription: says hi\n more\n");
        for size in [1, 7, 60, 4096] {
            let mut ar = ArReader::default();
            for chunk in pkg.chunks(size) {
                ar.feed(chunk, &mut |_, _| {});
            }
            let fields = ar.control().unwrap();
            assert_eq!(fields["Package"], "hello");
            assert_eq!(fields["Version"], "1:1.0");
            assert_eq!(fields["Description"], "says hi\n more");
        }
        assert_eq!(control_of(&pkg).unwrap()["Architecture"], "all");
        assert!(control_of(b"not a package").is_err());
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let pkg = deb("Package: hello\nVersion: 1.0\nArchitecture: all\n");
        for m in crate::testing::mutations(&pkg, 300) {
            let _ = control_of(&m);
        }
    }

    #[test]
    fn exactly_the_data_member_is_streamed_without_its_padding() {
        let pkg = deb("Package: hello\nVersion: 1.0\nArchitecture: all\n");
        for size in [1, 61, 4096] {
            let mut ar = ArReader::default();
            let mut data = Vec::new();
            for chunk in pkg.chunks(size) {
                ar.feed(chunk, &mut |member, bytes| {
                    assert_eq!(member, "data.tar");
                    data.extend_from_slice(bytes);
                });
            }
            assert_eq!(data, vec![0u8; 1025]);
            assert!(ar.control().is_ok());
        }
    }

    #[test]
    fn hostile_packages_are_rejected_with_a_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04not a deb".to_vec(), "bad magic"),
            (
                [AR_MAGIC.as_slice(), &ar_member("evil", b"x")].concat(),
                "not debian-binary",
            ),
            (
                [
                    AR_MAGIC.as_slice(),
                    b"debian-binary   0           0     0     100644  zz        `\n",
                ]
                .concat(),
                "bad size",
            ),
            (
                [
                    AR_MAGIC.as_slice(),
                    &ar_member("debian-binary", b"2.0\n"),
                    &ar_member("control.tar.xz", b"\xfd7zXZ\x00junk"),
                ]
                .concat(),
                "control.tar.xz",
            ),
            (
                [
                    AR_MAGIC.as_slice(),
                    &ar_member("debian-binary", b"2.0\n"),
                    &ar_member("control.tar.zst", b"junk"),
                ]
                .concat(),
                "control.tar.zst",
            ),
            (
                [
                    AR_MAGIC.as_slice(),
                    &ar_member("debian-binary", b"2.0\n"),
                    &ar_member("data.tar", b""),
                ]
                .concat(),
                "before control",
            ),
            (
                [AR_MAGIC.as_slice(), &ar_member("debian-binary", b"2.0\n")].concat(),
                "no control.tar",
            ),
            (
                [
                    AR_MAGIC.as_slice(),
                    &ar_member("debian-binary", b"2.0\n"),
                    &ar_member("control.tar", &control_tar("no colon here\n")),
                ]
                .concat(),
                "control line 1",
            ),
            (
                [
                    AR_MAGIC.as_slice(),
                    b"debian-binary   0           0     0     100644  9999999999`\n",
                ]
                .concat(),
                "no control.tar",
            ),
        ];
        for (bytes, needle) in cases {
            let mut ar = ArReader::default();
            ar.feed(&bytes, &mut |_, _| {});
            let e = ar.control().unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn an_oversized_control_member_is_refused_before_it_is_buffered() {
        let mut bytes = AR_MAGIC.to_vec();
        bytes.extend(ar_member("debian-binary", b"2.0\n"));
        bytes.extend(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "control.tar.gz",
                0,
                0,
                0,
                "100644",
                MAX_CONTROL_MEMBER + 1
            )
            .into_bytes(),
        );
        let mut ar = ArReader::default();
        ar.feed(&bytes, &mut |_, _| {});
        assert!(ar.control().unwrap_err().contains("larger than"));
    }
}
