//! Fuzz target: `fetchgate.toml` as the daemon reads it: parsed, validated, and its
//! `[acl]` section turned into rules. Beyond not panicking, a file that validates keeps
//! the promises the daemon relies on (timeouts of at least a second, a default timeout
//! within the maximum), and every ACL rule has ranges and names where it was written.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fetchgate_config::acl::{Access, merge};
use fetchgate_config::file::{CONFIG_FILE, FileConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match FileConfig::parse(text) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    match file.validate() {
        Ok(()) => {
            let s = &file.sessions;
            assert!(s.default_timeout >= 1 && s.default_timeout <= s.max_timeout);
            assert!(s.reaper_interval >= 1 && file.storage.sweep_interval >= 1);
            let p = &file.proxy;
            assert!(p.header_timeout.min(p.idle_timeout).min(p.connect_timeout) >= 1);
            assert!(p.read_timeout >= 1 && p.max_header_bytes >= 1024);
            assert!(p.max_connections >= 1 && p.max_requests_per_session >= 1);
        }
        Err(e) => assert!(e.key.contains('.') && !e.message.is_empty(), "{e}"),
    }
    match merge(&file.acl, None) {
        Ok(rules) => {
            assert!(rules.rules.len() <= 2, "only the allow and the deny list");
            for r in &rules.rules {
                assert!(!r.nets.is_empty());
                assert!(r.origin.ends_with(CONFIG_FILE), "{}", r.origin);
                for n in &r.nets {
                    assert_eq!(*n, n.trunc(), "ranges are truncated to their network");
                }
            }
            assert_eq!(rules.policy, file.acl.policy.unwrap_or(Access::Allow));
            let globs = rules.allow_hosts.iter().chain(&rules.deny_hosts);
            assert_eq!(
                globs.count(),
                file.acl.allow_hosts.len() + file.acl.deny_hosts.len()
            );
        }
        Err(e) => {
            assert_eq!(e.file, CONFIG_FILE);
            assert!(e.message.starts_with("acl."), "{e}");
        }
    }
});
