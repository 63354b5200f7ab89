//! Fuzz target: a cargo sparse index file and a registry's config.json.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::cargo::{download_url, parse_config, parse_index_file};

fuzz_target!(|data: &[u8]| {
    let dl = parse_config(data).unwrap_or_else(|_| "https://static.crates.io/crates".into());
    if let Ok((entries, _skipped)) = parse_index_file(data, "fg-hello") {
        for entry in &entries {
            let _ = download_url(&dl, entry);
        }
    }
});
