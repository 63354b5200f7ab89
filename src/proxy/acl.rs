//! The destination ACL, checked before any upstream connection (direct or through an
//! upstream proxy): host-name globs on the requested host, CIDR rules on every address a
//! destination resolves to, and the daemon's own listening sockets.
//!
//! One rule engine for every source of rules. An address is refused when it is one of
//! the daemon's own sockets (always); otherwise the first address rule whose ranges
//! contain it decides, in this order: configured allow ranges (holes an operator
//! punches), `acl.yaml`'s `http-proxy.rules` in file order (the reference's
//! first-match semantics), configured deny ranges, the default link-local deny (cloud
//! metadata services live there); no match means the policy (allow by default).
//! Host globs are case-insensitive and matched against the host without its port.
//! The rules are parsed from their text by `fetchgate_config::acl` (re-exported here).
//! This type must never be bypassed by a code path that connects upstream.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

pub use fetchgate_config::acl::{Access, AclRules, AddrRule, HostGlob};

use super::target::HostPort;

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclDenial {
    #[error("destination {addr} is in {net}, denied by {rule}")]
    DeniedRange {
        addr: SocketAddr,
        net: IpNet,
        rule: String,
    },
    #[error("destination {0} matches no ACL rule and the ACL policy is deny")]
    Policy(SocketAddr),
    #[error("destination {0} is this proxy's own listening socket")]
    OwnSocket(SocketAddr),
    #[error("host {host} matches {glob:?}, denied by {rule}")]
    DeniedHost {
        host: String,
        glob: String,
        rule: String,
    },
    #[error("host {0} matches none of the allow-hosts globs")]
    HostNotAllowed(String),
}

/// Ranges denied by default: IPv4 and IPv6 link-local.
pub const DEFAULT_DENY: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// The destination rules.
#[derive(Debug, Clone)]
pub struct Acl {
    rules: Vec<AddrRule>,
    policy: Access,
    allow_hosts: Vec<HostGlob>,
    deny_hosts: Vec<HostGlob>,
    own_ports: Vec<u16>,
    bind: IpAddr,
}

impl Acl {
    /// The ACL of a daemon listening on `bind` with these ports: the operator's rules,
    /// then the defaults.
    pub fn new(bind: IpAddr, own_ports: Vec<u16>, configured: AclRules) -> Self {
        let mut rules = configured.rules;
        rules.push(AddrRule {
            nets: DEFAULT_DENY.iter().filter_map(|n| n.parse().ok()).collect(),
            access: Access::Deny,
            origin: "the default link-local rule".into(),
        });
        Acl {
            rules,
            policy: configured.policy,
            allow_hosts: configured.allow_hosts,
            deny_hosts: configured.deny_hosts,
            own_ports,
            bind,
        }
    }

    /// Whether the requested host name may be asked for at all (host globs), and, for an
    /// IP literal, whether that address may be reached.
    pub fn check_destination(&self, dest: &HostPort) -> Result<(), AclDenial> {
        if let Some(g) = self.deny_hosts.iter().find(|g| g.matches(&dest.host)) {
            return Err(AclDenial::DeniedHost {
                host: dest.host.clone(),
                glob: g.pattern().to_owned(),
                rule: g.origin().to_owned(),
            });
        }
        if !self.allow_hosts.is_empty() && !self.allow_hosts.iter().any(|g| g.matches(&dest.host)) {
            return Err(AclDenial::HostNotAllowed(dest.host.clone()));
        }
        match dest.ip() {
            Some(ip) => self.check(SocketAddr::new(ip, dest.port)),
            None => Ok(()),
        }
    }

    /// Whether a connection to the resolved address `addr` is allowed.
    pub fn check(&self, addr: SocketAddr) -> Result<(), AclDenial> {
        let ip = canonical(addr.ip());
        let ours = ip.is_loopback() || ip.is_unspecified() || ip == canonical(self.bind);
        if ours && self.own_ports.contains(&addr.port()) {
            return Err(AclDenial::OwnSocket(addr));
        }
        let matched = self
            .rules
            .iter()
            .find_map(|r| r.nets.iter().find(|n| n.contains(&ip)).map(|n| (r, n)));
        match matched {
            Some((r, _)) if r.access == Access::Allow => Ok(()),
            Some((r, net)) => Err(AclDenial::DeniedRange {
                addr,
                net: *net,
                rule: r.origin.clone(),
            }),
            None if self.policy == Access::Allow => Ok(()),
            None => Err(AclDenial::Policy(addr)),
        }
    }
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetchgate_config::acl::parse_net;

    fn rule(nets: &[&str], access: Access, origin: &str) -> AddrRule {
        AddrRule {
            nets: nets.iter().map(|n| parse_net(n).unwrap()).collect(),
            access,
            origin: origin.into(),
        }
    }

    fn acl_with(rules: AclRules) -> Acl {
        Acl::new("0.0.0.0".parse().unwrap(), vec![9999, 9988], rules)
    }

    fn acl() -> Acl {
        acl_with(AclRules {
            rules: vec![rule(&["127.0.0.2/32"], Access::Deny, "acl.deny")],
            ..AclRules::default()
        })
    }

    fn dest(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn link_local_is_denied_in_every_spelling() {
        for a in [
            "169.254.169.254:80",
            "[fe80::1]:443",
            "[::ffff:169.254.169.254]:80",
        ] {
            assert!(
                matches!(
                    acl().check(a.parse().unwrap()),
                    Err(AclDenial::DeniedRange { .. })
                ),
                "{a}"
            );
        }
    }

    #[test]
    fn own_ports_are_denied_on_local_addresses_only_and_no_rule_opens_them() {
        let open = acl_with(AclRules {
            rules: vec![rule(&["0.0.0.0/0", "::/0"], Access::Allow, "allow all")],
            ..AclRules::default()
        });
        for a in [
            "127.0.0.1:9999",
            "[::1]:9988",
            "0.0.0.0:9999",
            "127.0.0.1:9988",
        ] {
            assert!(
                matches!(open.check(a.parse().unwrap()), Err(AclDenial::OwnSocket(_))),
                "{a}"
            );
        }
        assert!(acl().check("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(acl().check("192.0.2.10:9999".parse().unwrap()).is_ok());
    }

    #[test]
    fn configured_deny_rules_apply_and_name_their_origin() {
        let err = acl().check("127.0.0.2:80".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("denied by acl.deny"), "{err}");
        assert!(acl().check("127.0.0.3:80".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_first_matching_rule_decides_as_in_the_reference() {
        // The reference's own example: a /32 deny, a /24 allow, a /16 deny.
        let a = acl_with(AclRules {
            rules: vec![
                rule(&["10.1.5.153", "ff80::4:20:30"], Access::Deny, "rule 1"),
                rule(
                    &["10.1.5.0/24", "ff80::4:20:0/112"],
                    Access::Allow,
                    "rule 2",
                ),
                rule(&["10.1.0.0/16", "ff80::4:0:0/96"], Access::Deny, "rule 3"),
            ],
            ..AclRules::default()
        });
        for (addr, allowed) in [
            ("0.0.0.0:80", true),
            ("10.0.0.0:80", true),
            ("10.1.5.153:80", false),
            ("10.1.5.152:80", true),
            ("10.1.2.3:80", false),
            ("[ff80::4:20:30]:80", false),
            ("[ff80::4:20:3]:80", true),
            ("[ff80::4:1:2]:80", false),
        ] {
            assert_eq!(a.check(addr.parse().unwrap()).is_ok(), allowed, "{addr}");
        }
    }

    #[test]
    fn an_allow_rule_punches_a_hole_and_a_deny_policy_refuses_the_rest() {
        let a = acl_with(AclRules {
            rules: vec![rule(&["169.254.10.10"], Access::Allow, "acl.allow")],
            policy: Access::Deny,
            ..AclRules::default()
        });
        assert!(a.check("169.254.10.10:80".parse().unwrap()).is_ok());
        assert!(matches!(
            a.check("169.254.169.254:80".parse().unwrap()),
            Err(AclDenial::DeniedRange { .. })
        ));
        assert!(matches!(
            a.check("192.0.2.1:80".parse().unwrap()),
            Err(AclDenial::Policy(_))
        ));
    }

    #[test]
    fn host_globs_deny_and_allow_case_insensitively() {
        let glob = |g: &str| HostGlob::parse(g, "test".into()).unwrap();
        let a = acl_with(AclRules {
            allow_hosts: vec![glob("*.Example.org"), glob("127.0.0.*")],
            deny_hosts: vec![glob("secret.example.org")],
            ..AclRules::default()
        });
        assert!(a.check_destination(&dest("files.example.org", 443)).is_ok());
        assert!(matches!(
            a.check_destination(&dest("secret.example.org", 443)),
            Err(AclDenial::DeniedHost { .. })
        ));
        assert!(matches!(
            a.check_destination(&dest("example.net", 80)),
            Err(AclDenial::HostNotAllowed(_))
        ));
        assert!(a.check_destination(&dest("127.0.0.5", 80)).is_ok());
        // An allowed literal still goes through the address rules.
        assert!(matches!(
            a.check_destination(&dest("127.0.0.1", 9999)),
            Err(AclDenial::OwnSocket(_))
        ));
    }
}
