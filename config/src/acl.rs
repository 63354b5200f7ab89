//! The destination ACL's rules as written: `[acl]` in `fetchgate.toml` (allow and deny
//! ranges) and `acl.yaml` in the reference's format (`http-proxy: {policy, rules: [{dst,
//! access}]}`), plus host globs in both. [`merge`] turns them into one ordered rule set;
//! the daemon's `proxy::acl` checks destinations against it and never re-parses text.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use wildmatch::WildMatch;

use crate::file::CONFIG_FILE;

/// The optional destination ACL in the reference's format, inside the config directory.
pub const ACL_FILE: &str = "acl.yaml";

/// What a rule or the policy does with a destination (the reference's `access` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Allow,
    Deny,
}

impl Access {
    /// The word used in the configuration files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Allow => "allow",
            Access::Deny => "deny",
        }
    }
}

/// One address rule: ranges, what to do with an address inside them, and where the rule
/// was written (named in refusals).
#[derive(Debug, Clone)]
pub struct AddrRule {
    pub nets: Vec<IpNet>,
    pub access: Access,
    pub origin: String,
}

/// One host glob and where it was written.
#[derive(Debug, Clone)]
pub struct HostGlob {
    pattern: String,
    glob: WildMatch,
    origin: String,
}

impl HostGlob {
    /// Parses a host glob (`*.example.org`, `mirror?.example.net`, `127.0.0.2`).
    pub fn parse(text: &str, origin: String) -> Result<Self, String> {
        let pattern = text.trim().to_ascii_lowercase();
        if pattern.is_empty() {
            return Err("an empty host glob matches nothing".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '/' | '@' | '[' | ']'))
        {
            return Err(format!(
                "{text:?} is not a host glob ({c:?} cannot be part of a host name; give the host without scheme, path or port)"
            ));
        }
        Ok(HostGlob {
            glob: WildMatch::new(&pattern),
            pattern,
            origin,
        })
    }

    /// Whether `host` (without its port) matches, ignoring ASCII case.
    pub fn matches(&self, host: &str) -> bool {
        self.glob.matches(&host.to_ascii_lowercase())
    }

    /// The glob, lowercased.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Where it was written (`acl.deny-hosts in fetchgate.toml`).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Parses a CIDR range, or a bare address as a single-address range (as the reference does).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))
}

/// Operator rules, gathered from `fetchgate.toml` and `acl.yaml` before the ACL is built.
#[derive(Debug, Clone)]
pub struct AclRules {
    /// Address rules in precedence order, before the default link-local deny.
    pub rules: Vec<AddrRule>,
    /// What happens to an address no rule matches.
    pub policy: Access,
    pub allow_hosts: Vec<HostGlob>,
    pub deny_hosts: Vec<HostGlob>,
}

impl Default for AclRules {
    fn default() -> Self {
        AclRules {
            rules: Vec::new(),
            policy: Access::Allow,
            allow_hosts: Vec::new(),
            deny_hosts: Vec::new(),
        }
    }
}

/// `[acl]` in `fetchgate.toml`: the same policy and host globs as `acl.yaml`, with
/// allow and deny range lists instead of ordered rules.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AclSection {
    pub policy: Option<Access>,
    /// CIDR ranges (or addresses) allowed even inside a denied range.
    pub allow: Vec<String>,
    /// CIDR ranges (or addresses) no destination may resolve into.
    pub deny: Vec<String>,
    pub allow_hosts: Vec<String>,
    pub deny_hosts: Vec<String>,
}

/// `acl.yaml`. Unknown keys are errors, as in `fetchgate.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct AclFile {
    http_proxy: AclFileSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct AclFileSection {
    policy: Option<Access>,
    rules: Vec<AclFileRule>,
    allow_hosts: Vec<String>,
    deny_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFileRule {
    dst: Vec<String>,
    access: Access,
}

/// A rule that cannot be used, with the file it is in and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct AclError {
    /// [`CONFIG_FILE`] or [`ACL_FILE`].
    pub file: &'static str,
    /// Starts with the key (`http-proxy.rules[2].dst[0]: ...`), except for YAML syntax.
    pub message: String,
}

/// One file that rules come from, for errors naming the file and the key.
struct RuleFile {
    /// The section the keys are in (`acl.` or `http-proxy.`).
    section: &'static str,
    name: &'static str,
}

impl RuleFile {
    fn error(&self, key: &str, message: String) -> AclError {
        AclError {
            file: self.name,
            message: format!("{}{key}: {message}", self.section),
        }
    }

    /// Where a rule from `key` came from, as refusals name it.
    fn origin(&self, key: &str) -> String {
        format!("{}{key} in {}", self.section, self.name)
    }

    fn nets(&self, list: &[String], key: &str) -> Result<Vec<IpNet>, AclError> {
        list.iter()
            .enumerate()
            .map(|(i, n)| parse_net(n).map_err(|m| self.error(&format!("{key}[{i}]"), m)))
            .collect()
    }

    fn globs(&self, list: &[String], key: &str) -> Result<Vec<HostGlob>, AclError> {
        list.iter()
            .enumerate()
            .map(|(i, g)| {
                HostGlob::parse(g, self.origin(key))
                    .map_err(|m| self.error(&format!("{key}[{i}]"), m))
            })
            .collect()
    }
}

/// Merges `[acl]` from `fetchgate.toml` with the text of `acl.yaml` (`None`: no such
/// file) into one rule set: allow ranges first (holes), then `acl.yaml`'s rules in
/// order, then deny ranges.
pub fn merge(toml: &AclSection, yaml: Option<&str>) -> Result<AclRules, AclError> {
    let in_toml = RuleFile {
        section: "acl.",
        name: CONFIG_FILE,
    };
    let in_yaml = RuleFile {
        section: "http-proxy.",
        name: ACL_FILE,
    };
    let yaml: AclFile = match yaml {
        Some(text) => serde_saphyr::from_str(text).map_err(|e| AclError {
            file: ACL_FILE,
            message: e.to_string(),
        })?,
        None => AclFile::default(),
    };
    let yaml = yaml.http_proxy;

    let mut rules = Vec::new();
    if !toml.allow.is_empty() {
        rules.push(AddrRule {
            nets: in_toml.nets(&toml.allow, "allow")?,
            access: Access::Allow,
            origin: in_toml.origin("allow"),
        });
    }
    for (i, r) in yaml.rules.iter().enumerate() {
        let key = format!("rules[{i}]");
        if r.dst.is_empty() {
            return Err(in_yaml.error(&key, "a rule needs at least one address in dst".into()));
        }
        rules.push(AddrRule {
            nets: in_yaml.nets(&r.dst, &format!("{key}.dst"))?,
            access: r.access,
            origin: in_yaml.origin(&key),
        });
    }
    if !toml.deny.is_empty() {
        rules.push(AddrRule {
            nets: in_toml.nets(&toml.deny, "deny")?,
            access: Access::Deny,
            origin: in_toml.origin("deny"),
        });
    }
    let policy = match (toml.policy, yaml.policy) {
        (Some(t), Some(y)) if t != y => {
            return Err(in_yaml.error(
                "policy",
                format!(
                    "{:?} contradicts acl.policy {:?} in {CONFIG_FILE}; set it in one place",
                    y.as_str(),
                    t.as_str()
                ),
            ));
        }
        (t, y) => t.or(y).unwrap_or(Access::Allow),
    };
    let mut allow_hosts = in_toml.globs(&toml.allow_hosts, "allow-hosts")?;
    allow_hosts.extend(in_yaml.globs(&yaml.allow_hosts, "allow-hosts")?);
    let mut deny_hosts = in_toml.globs(&toml.deny_hosts, "deny-hosts")?;
    deny_hosts.extend(in_yaml.globs(&yaml.deny_hosts, "deny-hosts")?);
    Ok(AclRules {
        rules,
        policy,
        allow_hosts,
        deny_hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_keep_their_order_and_errors_name_file_and_key() {
        let toml = AclSection {
            allow: vec!["10.1.2.3".into()],
            deny: vec!["10.0.0.0/8".into()],
            ..AclSection::default()
        };
        let yaml = "http-proxy:\n  rules:\n    - dst: [10.1.0.0/16]\n      access: deny\n";
        let r = merge(&toml, Some(yaml)).unwrap();
        let origins: Vec<&str> = r.rules.iter().map(|r| r.origin.as_str()).collect();
        assert_eq!(
            origins,
            [
                "acl.allow in fetchgate.toml",
                "http-proxy.rules[0] in acl.yaml",
                "acl.deny in fetchgate.toml"
            ]
        );
        let e = merge(
            &toml,
            Some("http-proxy:\n  rules:\n    - dst: [nope]\n      access: deny\n"),
        )
        .unwrap_err();
        assert_eq!(e.file, ACL_FILE);
        assert!(e.message.starts_with("http-proxy.rules[0].dst[0]:"), "{e}");
        let e = merge(
            &AclSection::default(),
            Some("http-proxy:\n  rules:\n    - dst: []\n      access: allow\n"),
        )
        .unwrap_err();
        assert!(e.message.starts_with("http-proxy.rules[0]:"), "{e}");
    }

    #[test]
    fn bad_rule_text_is_refused_with_the_text() {
        assert!(
            parse_net("10.0.0.0/33")
                .unwrap_err()
                .contains("10.0.0.0/33")
        );
        assert!(parse_net("example.org").is_err());
        assert_eq!(parse_net("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_net("10.1.2.3/16").unwrap().to_string(), "10.1.0.0/16");
        for bad in ["", " ", "http://x", "x:80/", "a b", "u@x"] {
            assert!(HostGlob::parse(bad, "t".into()).is_err(), "{bad:?}");
        }
    }
}
