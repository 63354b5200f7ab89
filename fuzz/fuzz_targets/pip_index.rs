//! Fuzz target: a Python simple index's project page (HTML or JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let page = "https://pypi.org:443/simple/fg-hello/";
    if let Ok(files) = fetchgate_formats::pip::index::parse_page(data, page) {
        for f in files {
            assert!(f.url.starts_with("http"), "{}", f.url);
        }
    }
});
