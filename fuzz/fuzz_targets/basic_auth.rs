//! Fuzz target: a Proxy-Authorization / Authorization header value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((user, _password)) = fetchgate_formats::basic_auth::parse(data) {
        assert!(!user.contains(':'));
    }
});
