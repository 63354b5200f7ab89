//! Fuzz target: `acl.yaml` (the reference's `http-proxy` rules plus host globs), merged
//! with an empty `[acl]`. Beyond not panicking: rules keep the file's order and name
//! their index, every range is truncated to its network, and a host glob without
//! wildcards matches the host it names, whatever its case.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_config::acl::{ACL_FILE, AclSection, merge};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match merge(&AclSection::default(), Some(text)) {
        Ok(rules) => {
            for (i, r) in rules.rules.iter().enumerate() {
                assert!(!r.nets.is_empty());
                assert_eq!(r.origin, format!("http-proxy.rules[{i}] in {ACL_FILE}"));
                for n in &r.nets {
                    assert_eq!(*n, n.trunc());
                }
            }
            for g in rules.allow_hosts.iter().chain(&rules.deny_hosts) {
                let p = g.pattern();
                assert!(!p.is_empty() && !p.contains(char::is_whitespace), "{p:?}");
                if !p.contains(['*', '?']) {
                    assert!(g.matches(p) && g.matches(&p.to_ascii_uppercase()), "{p:?}");
                }
            }
        }
        Err(e) => {
            assert_eq!(e.file, ACL_FILE);
            assert!(!e.message.is_empty());
        }
    }
});
