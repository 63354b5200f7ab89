//! Fuzz target: trusted origins, as `inspectors.yaml` (first byte even) or as a
//! session's `inspectors-configuration` JSON object (odd). Beyond not panicking: every
//! base URL comes out normalised (http or https, explicit port, no credentials, query
//! or trailing slash; an `@` in the path is a path like any other) and normalising it again changes nothing, since inspectors compare
//! it with request URLs byte for byte; apt repositories have suites and keys.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_config::inspectors::{Origins, normalise_base};

fn check(url: &str) {
    assert!(
        url.starts_with("http://") || url.starts_with("https://"),
        "{url}"
    );
    let after_scheme = &url[url.find("://").map_or(0, |i| i + 3)..];
    let authority = after_scheme.split('/').next().unwrap_or_default();
    assert!(!authority.contains('@'), "credentials in {url}");
    assert!(!url.ends_with('/') && !url.contains('?'), "{url}");
    assert_eq!(
        normalise_base(url).as_deref(),
        Ok(url),
        "normalising is idempotent"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = if mode % 2 == 0 {
        Origins::from_yaml(text)
    } else {
        match serde_json::from_str(text) {
            Ok(value) => Origins::from_session_json(&value).map(|(o, _ignored)| o),
            Err(_) => return,
        }
    };
    let Ok(origins) = parsed else {
        return;
    };
    for r in &origins.apt {
        check(&r.base);
        assert!(!r.suites.is_empty() && !r.keys.is_empty());
    }
    let lists = [
        &origins.pip,
        &origins.cargo,
        &origins.npm,
        &origins.git,
        &origins.go,
        &origins.go_imports,
    ];
    for url in lists.into_iter().flatten() {
        check(url);
    }
});
