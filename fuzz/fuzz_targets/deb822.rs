//! Fuzz target: a deb822 file (Packages, control, Release): the first byte picks plain, gzip or xz.
#![no_main]

use libfuzzer_sys::fuzz_target;

use std::io::Read;

use fetchgate_formats::deb822::{Compression, Item, MAX_STANZA, Paragraphs};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let compression = match which % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Xz,
    };
    // A decompression bomb is bounded by the caller (apt reads at most 4 GiB); here a
    // few MiB are enough to reach every state.
    let reader = std::io::BufReader::new(compression.reader(rest).take(8 << 20));
    let mut paragraphs = Paragraphs::new(reader);
    while let Ok(Some(item)) = paragraphs.next_item() {
        match item {
            Item::Stanza(s) => {
                let size: usize = s.fields().map(|(n, v)| n.len() + v.len()).sum();
                assert!(size <= MAX_STANZA + 1, "a stanza of {size} bytes");
                let _ = s.get("Package");
            }
            Item::Malformed(m) => assert!(m.line > 0),
        }
    }
});
