//! Fuzz target: an sdist (.tar.gz with PKG-INFO).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fetchgate_formats::pip::sdist::inspect(data, "fg-hello-1.0.tar.gz");
});
