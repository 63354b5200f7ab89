//! Fuzz target: an apt Release file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::apt::parse_release;
use time::macros::datetime;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = parse_release(data, "bookworm-security", datetime!(2026-06-01 12:00 UTC)) {
        assert!(index.file_count() > 0);
    }
});
