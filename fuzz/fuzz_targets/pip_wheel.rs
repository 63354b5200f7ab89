//! Fuzz target: a wheel (zip with RECORD and METADATA), verified from the complete file,
//! then again with the entries its local headers give when read as a stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

use std::io::Cursor;

use fetchgate_formats::pip::wheel::{inspect, inspect_streamed, parse_name, stream_entries};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = parse_name("fg_hello-1.0-py3-none-any.whl") else {
        return;
    };
    let whole = inspect(Cursor::new(data), &name);
    let streamed = stream_entries(data);
    let both = inspect_streamed(Cursor::new(data), &name, &streamed);
    // A digest taken while streaming is taken only for the very bytes a zip reader
    // expands: the verdict cannot change.
    assert_eq!(whole.is_ok(), both.is_ok(), "{whole:?} / {both:?}");
});
