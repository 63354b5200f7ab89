//! Fuzz target: a DEP-5 copyright file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(c) = fetchgate_formats::copyright::parse(data) {
        assert!(!c.license.is_empty());
    }
});
