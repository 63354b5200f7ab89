//! Fuzz target: GOPROXY texts: go.mod, .info, @v/list, escaped module paths, and the
//! `?go-get=1` pages of direct (VCS) fetches.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_formats::gomod::{
    declared_module, go_import, unescape, valid_module, version_info, version_list,
};

fuzz_target!(|data: &[u8]| {
    let _ = declared_module(data);
    let _ = version_info(data);
    let _ = version_list(data);
    if let Ok(found) = go_import(data, "example.com/a/b") {
        assert!(
            found.prefix == "example.com/a/b"
                || "example.com/a/b".starts_with(&format!("{}/", found.prefix))
        );
    }
    if let Some(path) = unescape(&String::from_utf8_lossy(data)) {
        let _ = valid_module(&path);
    }
});
