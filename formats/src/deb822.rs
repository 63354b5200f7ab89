//! A streaming deb822 parser (the format of Debian `Packages` and control files), with
//! transparent `.gz` and `.xz` decompression.
//!
//! Stanzas are separated by blank (or whitespace-only) lines; a field is `Name: value`,
//! names compare case-insensitively, continuation lines start with a space or a tab, and
//! CRLF line ends are accepted. The parser never holds the whole file: it reads one stanza
//! at a time into a reused buffer, so memory is bounded by [`MAX_STANZA`]. A malformed
//! stanza (a line that is neither a field nor a continuation, a continuation with no field
//! before it, invalid UTF-8, an oversized stanza) is reported with its line number and
//! skipped; the caller decides how to warn. Nothing here knows about debtags: any field is
//! reachable through [`Stanza::get`], so apt `Packages` inspection can reuse it.
//!
//! It reads only the reader it is given (the caller opens files), so a fuzz target
//! drives it with bytes.

use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;
use std::path::Path;

/// The largest stanza accepted, in bytes; a bigger one is skipped as malformed.
pub const MAX_STANZA: usize = 1 << 20;

/// How a file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
}

impl Compression {
    /// `.gz` → gzip, `.xz` → xz, anything else plain.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Compression::Gzip,
            Some("xz") => Compression::Xz,
            _ => Compression::None,
        }
    }

    /// A buffered reader that decompresses `input`.
    pub fn reader<'a, R: Read + 'a>(self, input: R) -> Box<dyn BufRead + 'a> {
        const BUF: usize = 256 * 1024;
        match self {
            Compression::None => Box::new(BufReader::with_capacity(BUF, input)),
            Compression::Gzip => Box::new(BufReader::with_capacity(
                BUF,
                flate2::read::MultiGzDecoder::new(BufReader::new(input)),
            )),
            Compression::Xz => Box::new(BufReader::with_capacity(
                BUF,
                lzma_rust2::XzReader::new(BufReader::new(input), true),
            )),
        }
    }
}

/// One field of a stanza: byte ranges into the stanza's text.
#[derive(Debug, Clone)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// One parsed stanza; valid until the next call to [`Paragraphs::next_item`].
#[derive(Debug, Default)]
pub struct Stanza {
    text: Vec<u8>,
    fields: Vec<Field>,
    /// The line the stanza starts on (1-based).
    pub line: u64,
}

impl Stanza {
    fn str(&self, r: &Range<usize>) -> &str {
        // The whole text was checked to be UTF-8 before the stanza was handed out and
        // ranges end on ASCII delimiters, so this never fails; "" is a safe fallback.
        std::str::from_utf8(&self.text[r.clone()]).unwrap_or_default()
    }

    /// The value of field `name` (case-insensitive), continuation lines joined with `\n`
    /// and surrounding whitespace trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| self.text[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| self.str(&f.value).trim())
    }

    /// Every field as (name, value), in file order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|f| (self.str(&f.name), self.str(&f.value).trim()))
    }
}

/// A stanza that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The offending line (1-based).
    pub line: u64,
    pub reason: &'static str,
}

/// What [`Paragraphs::next_item`] found.
#[derive(Debug)]
pub enum Item<'a> {
    Stanza(&'a Stanza),
    Malformed(Malformed),
}

/// A streaming reader of stanzas.
pub struct Paragraphs<R> {
    input: R,
    stanza: Stanza,
    line: u64,
    done: bool,
}

impl<R: BufRead> Paragraphs<R> {
    /// Reads stanzas from `input`.
    pub fn new(input: R) -> Self {
        Paragraphs {
            input,
            stanza: Stanza::default(),
            line: 0,
            done: false,
        }
    }

    /// The next stanza or skipped stanza; `Ok(None)` at the end. An I/O or
    /// decompression error ends the stream.
    pub fn next_item(&mut self) -> io::Result<Option<Item<'_>>> {
        self.stanza.text.clear();
        self.stanza.fields.clear();
        let mut problem: Option<Malformed> = None;
        loop {
            if self.done {
                break;
            }
            let start = self.stanza.text.len();
            let room = (MAX_STANZA + 1).saturating_sub(start) as u64;
            let n = (&mut self.input)
                .take(room)
                .read_until(b'\n', &mut self.stanza.text)?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            let text = &mut self.stanza.text;
            let complete = text.last() == Some(&b'\n');
            if !complete && text.len() > MAX_STANZA {
                text.truncate(start);
                self.skip_line()?;
                problem.get_or_insert(Malformed {
                    line: self.line,
                    reason: "stanza larger than 1 MiB",
                });
                continue;
            }
            while matches!(text.last(), Some(b'\n' | b'\r')) {
                text.pop();
            }
            let line = &text[start..];
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                text.truncate(start);
                if self.stanza.fields.is_empty() && problem.is_none() {
                    continue; // blank lines between or before stanzas
                }
                break;
            }
            if self.stanza.fields.is_empty() && problem.is_none() && start == 0 {
                self.stanza.line = self.line;
            }
            if problem.is_some() {
                text.truncate(start);
                continue;
            }
            match line[0] {
                b' ' | b'\t' => match self.stanza.fields.last_mut() {
                    Some(f) => {
                        // Keep the line break that read_until consumed, as '\n'.
                        text.insert(start, b'\n');
                        f.value.end = text.len();
                    }
                    None => {
                        problem = Some(Malformed {
                            line: self.line,
                            reason: "continuation line with no field before it",
                        })
                    }
                },
                b'#' => text.truncate(start),
                _ => match line.iter().position(|&b| b == b':') {
                    Some(colon) if colon > 0 && !line[..colon].contains(&b' ') => {
                        let mut v = start + colon + 1;
                        while v < text.len() && matches!(text[v], b' ' | b'\t') {
                            v += 1;
                        }
                        self.stanza.fields.push(Field {
                            name: start..start + colon,
                            value: v..text.len(),
                        });
                    }
                    _ => {
                        problem = Some(Malformed {
                            line: self.line,
                            reason: "line is neither `Field: value` nor a continuation",
                        })
                    }
                },
            }
        }
        if let Some(p) = problem {
            return Ok(Some(Item::Malformed(p)));
        }
        if self.stanza.fields.is_empty() {
            return Ok(None);
        }
        if std::str::from_utf8(&self.stanza.text).is_err() {
            return Ok(Some(Item::Malformed(Malformed {
                line: self.stanza.line,
                reason: "stanza is not valid UTF-8",
            })));
        }
        Ok(Some(Item::Stanza(&self.stanza)))
    }

    /// Discards the rest of an overlong line without buffering it.
    fn skip_line(&mut self) -> io::Result<()> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                self.done = true;
                return Ok(());
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.input.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    self.input.consume(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Vec<Result<Vec<(String, String)>, Malformed>> {
        let mut p = Paragraphs::new(text);
        let mut out = Vec::new();
        while let Some(item) = p.next_item().unwrap() {
            out.push(match item {
                Item::Stanza(s) => Ok(s
                    .fields()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect()),
                Item::Malformed(m) => Err(m),
            });
        }
        out
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn stanzas_fields_and_continuations() {
        let text = b"\n\nPackage: a\nTag: role::program,\n  use::editing\nversion:1\n\n \t\nPACKAGE: b\r\nDescription: x\r\n .\r\n\tmore\r\n";
        let got = parse(text);
        assert_eq!(
            got,
            vec![
                Ok(pairs(&[
                    ("Package", "a"),
                    ("Tag", "role::program,\n  use::editing"),
                    ("version", "1")
                ])),
                Ok(pairs(&[("PACKAGE", "b"), ("Description", "x\n .\n\tmore")])),
            ]
        );
    }

    #[test]
    fn field_names_are_case_insensitive() {
        let mut p = Paragraphs::new(&b"PaCkAgE: vim\nTAG: a\n"[..]);
        let Some(Item::Stanza(s)) = p.next_item().unwrap() else {
            panic!("no stanza")
        };
        assert_eq!(s.get("package"), Some("vim"));
        assert_eq!(s.get("Tag"), Some("a"));
        assert_eq!(s.get("Version"), None);
        assert_eq!(s.line, 1);
    }

    #[test]
    fn malformed_stanzas_are_skipped_with_their_line() {
        let text = b"Package: a\n\nPackage: b\nthis is junk\nTag: x\n\n continued\nPackage: c\n\nPackage: d\nTag: \xff\n\nPackage: e\n";
        let got = parse(text);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], Ok(pairs(&[("Package", "a")])));
        assert_eq!(got[1].clone().unwrap_err().line, 4);
        assert_eq!(got[2].clone().unwrap_err().line, 7);
        assert_eq!(got[3].clone().unwrap_err().line, 10);
        assert_eq!(got[4], Ok(pairs(&[("Package", "e")])));
    }

    #[test]
    fn an_oversized_stanza_is_skipped_in_bounded_memory() {
        let mut text = b"Package: big\nDescription: ".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_STANZA));
        text.extend(b"\nTag: t\n\nPackage: small\n");
        let got = parse(&text);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].clone().unwrap_err().line, 2);
        assert_eq!(got[1], Ok(pairs(&[("Package", "small")])));
    }

    #[test]
    fn empty_and_blank_input_have_no_stanzas() {
        assert!(parse(b"").is_empty());
        assert!(parse(b"\n \n\r\n").is_empty());
    }
}
