//! The destination ACL, checked before any upstream connection: CIDR deny rules on
//! every address a destination resolves to, and the daemon's own listening sockets.
//!
//! Defaults deny the link-local ranges (cloud metadata services live there) and the
//! daemon's own control and proxy ports, so a builder can never reach the control API
//! or loop the proxy into itself. Operator-defined rules (host globs, allow lists)
//! extend this type; it must never be bypassed by a code path that connects upstream.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclDenial {
    #[error("destination {addr} is in the denied range {net}")]
    DeniedRange { addr: SocketAddr, net: IpNet },
    #[error("destination {0} is this proxy's own listening socket")]
    OwnSocket(SocketAddr),
}

/// The destination rules.
#[derive(Debug, Clone)]
pub struct Acl {
    deny: Vec<IpNet>,
    own_ports: Vec<u16>,
    bind: IpAddr,
}

/// Ranges denied by default: IPv4 and IPv6 link-local.
pub const DEFAULT_DENY: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

impl Acl {
    /// The default rules for a daemon listening on `bind` with these ports.
    pub fn new(bind: IpAddr, own_ports: Vec<u16>, extra_deny: Vec<IpNet>) -> Self {
        let mut deny: Vec<IpNet> = DEFAULT_DENY.iter().filter_map(|n| n.parse().ok()).collect();
        deny.extend(extra_deny);
        Acl {
            deny,
            own_ports,
            bind,
        }
    }

    /// Whether a connection to `addr` is allowed.
    pub fn check(&self, addr: SocketAddr) -> Result<(), AclDenial> {
        let ip = canonical(addr.ip());
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return Err(AclDenial::DeniedRange { addr, net: *net });
        }
        let ours = ip.is_loopback() || ip.is_unspecified() || ip == canonical(self.bind);
        if ours && self.own_ports.contains(&addr.port()) {
            return Err(AclDenial::OwnSocket(addr));
        }
        Ok(())
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

    fn acl() -> Acl {
        Acl::new(
            "0.0.0.0".parse().unwrap(),
            vec![9999, 9988],
            vec!["127.0.0.2/32".parse().unwrap()],
        )
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
    fn own_ports_are_denied_on_local_addresses_only() {
        for a in [
            "127.0.0.1:9999",
            "[::1]:9988",
            "0.0.0.0:9999",
            "127.0.0.1:9988",
        ] {
            assert!(
                matches!(
                    acl().check(a.parse().unwrap()),
                    Err(AclDenial::OwnSocket(_))
                ),
                "{a}"
            );
        }
        assert!(acl().check("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(acl().check("192.0.2.10:9999".parse().unwrap()).is_ok());
    }

    #[test]
    fn extra_deny_rules_apply() {
        assert!(acl().check("127.0.0.2:80".parse().unwrap()).is_err());
        assert!(acl().check("127.0.0.3:80".parse().unwrap()).is_ok());
    }
}
