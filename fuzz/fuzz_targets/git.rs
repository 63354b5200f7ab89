//! Fuzz target: git smart HTTP: ref advertisement, upload-pack request, side-band response.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::git::{UploadPackResponse, advertisement, parse_request};

fuzz_target!(|data: &[u8]| {
    let _ = advertisement(data);
    let _ = parse_request(data);
    // The response streams in chunks: split where the first byte says, so pkt-lines
    // and the pack trailer straddle chunk boundaries.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut response = UploadPackResponse::default();
    for chunk in rest.chunks(usize::from(split).max(1)) {
        response.feed(chunk);
    }
    let _ = response.finish();
});
