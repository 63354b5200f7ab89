//! Session secrets: credentials injected as `Authorization` on upstream requests whose
//! URL matches the secret's glob (first match wins). They never reach the audit log:
//! the pipeline drops `Authorization` from recorded headers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fetchgate_storage::SecretRule;
use wildmatch::WildMatch;

/// The `Authorization` value of the first secret whose glob matches `url`.
pub fn matching(secrets: &[SecretRule], url: &str) -> Option<String> {
    secrets
        .iter()
        .find(|s| s.kind == "basic-auth" && WildMatch::new(&s.url_glob).matches(url))
        .map(|s| format!("Basic {}", STANDARD.encode(&s.credentials)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(glob: &str, creds: &str) -> SecretRule {
        SecretRule {
            kind: "basic-auth".into(),
            url_glob: glob.into(),
            credentials: creds.into(),
        }
    }

    #[test]
    fn first_matching_glob_wins() {
        let rules = [
            rule("https://private.example:443/*", "a:1"),
            rule("https://*", "b:2"),
        ];
        assert_eq!(
            matching(&rules, "https://private.example:443/x"),
            Some(format!("Basic {}", STANDARD.encode("a:1")))
        );
        assert_eq!(
            matching(&rules, "https://other:443/x"),
            Some(format!("Basic {}", STANDARD.encode("b:2")))
        );
        assert_eq!(matching(&rules, "http://other:80/x"), None);
    }
}
