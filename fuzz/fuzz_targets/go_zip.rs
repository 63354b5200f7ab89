//! Fuzz target: a Go module zip.
#![no_main]

use libfuzzer_sys::fuzz_target;

use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let _ = fetchgate_formats::gomod::check_zip(Cursor::new(data), "example.com/m", "v1.0.0");
});
