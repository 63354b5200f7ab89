//! Fuzz target: a Debian binary package fed to the ar push parser in chunks (the first
//! byte picks their size), then its control file read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, package)) = data.split_first() else {
        return;
    };
    let mut ar = fetchgate_formats::deb::ArReader::default();
    let mut streamed = 0;
    for chunk in package.chunks(usize::from(size) + 1) {
        ar.feed(chunk, &mut |_, bytes| streamed += bytes.len());
    }
    assert!(streamed <= package.len());
    if let Ok(fields) = ar.control() {
        assert!(fields.keys().all(|k| !k.is_empty()));
    }
});
