//! Fuzz target: Python core metadata (METADATA, PKG-INFO, .metadata).
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::pip::metadata::{normalise_name, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        let _ = m.report();
        let _ = m.matches(&normalise_name(&m.name), &m.version);
    }
});
