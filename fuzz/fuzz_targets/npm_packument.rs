//! Fuzz target: an npm packument and its integrity strings.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::npm::{parse_integrity, parse_packument};

fuzz_target!(|data: &[u8]| {
    let _ = parse_integrity(&String::from_utf8_lossy(data));
    let _ = parse_packument(
        data,
        "@fg/hello",
        "https://registry.npmjs.org:443/@fg%2fhello",
    );
});
