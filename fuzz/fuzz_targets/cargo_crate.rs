//! Fuzz target: a .crate (.tar.gz with Cargo.toml).
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::cargo::{CrateEntry, inspect_crate};

fuzz_target!(|data: &[u8]| {
    let entry = CrateEntry {
        name: "fg-hello".into(),
        version: "0.1.0".into(),
        cksum: [0; 32],
    };
    let _ = inspect_crate(data, &entry);
});
