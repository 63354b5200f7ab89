//! Fuzz target: an npm tarball (.tgz with package/package.json).
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::npm::{Version, inspect_tarball};

fuzz_target!(|data: &[u8]| {
    let version = Version {
        name: "@fg/hello".into(),
        version: "1.0.0".into(),
        integrity: None,
        shasum: None,
    };
    let _ = inspect_tarball(data, &version);
});
