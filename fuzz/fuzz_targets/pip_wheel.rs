//! Fuzz target: a wheel (zip with RECORD and METADATA).
#![no_main]

use libfuzzer_sys::fuzz_target;

use std::io::Cursor;

use fetchgate_formats::pip::wheel::{inspect, parse_name};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = parse_name("fg_hello-1.0-py3-none-any.whl") else {
        return;
    };
    let _ = inspect(Cursor::new(data), &name);
});
