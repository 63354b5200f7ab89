//! Request targets: the destination of an absolute-form request or a CONNECT, parsed
//! once, validated, and rendered as the normalised URL the report shows
//! (`https://host:443/path`, always with an explicit port).

use std::fmt;

/// Why a request target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("request target is not valid UTF-8")]
    NotUtf8,
    #[error("proxy requests need an absolute URL (http://host/path) or CONNECT host:port")]
    NotAbsolute,
    #[error("unsupported scheme {0:?}: only http:// URLs are proxied (use CONNECT for https)")]
    Scheme(String),
    #[error("invalid request target: {0}")]
    Invalid(String),
    #[error("CONNECT target must be host:port with a port between 1 and 65535")]
    ConnectPort,
    #[error("user information is not allowed in a request target")]
    UserInfo,
}

/// `http` for plain requests, `https` for requests decrypted inside a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A host and port to connect to. IPv6 hosts are kept without brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Whether the host is an IP literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A request's full destination (read-only: built by [`Target::new`] or a parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub dest: HostPort,
    /// Origin-form path and query, starting with `/`.
    pub path: String,
    /// `url()`, rendered once: inspectors, secrets and the audit record all read it.
    url: String,
}

impl Target {
    /// The target of `path` (origin form, starting with `/`) at `dest`.
    pub fn new(scheme: Scheme, dest: HostPort, path: String) -> Self {
        let url = format!("{}://{}{}", scheme.as_str(), dest, path);
        Target {
            scheme,
            dest,
            path,
            url,
        }
    }

    /// The normalised URL recorded in the audit log.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The absolute-form request target (`http://host[:port]/path`) an upstream proxy
    /// expects.
    pub fn absolute_form(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.host_header(),
            self.path
        )
    }

    /// The `Host` header value for the upstream request (port omitted when default).
    pub fn host_header(&self) -> String {
        if self.dest.port == self.scheme.default_port() {
            if self.dest.host.contains(':') {
                format!("[{}]", self.dest.host)
            } else {
                self.dest.host.clone()
            }
        } else {
            self.dest.to_string()
        }
    }

    /// Parses an absolute-form target (`http://host[:port]/path?query`).
    pub fn parse_absolute(raw: &[u8]) -> Result<Self, TargetError> {
        let raw = std::str::from_utf8(raw).map_err(|_| TargetError::NotUtf8)?;
        if raw.starts_with('/') {
            return Err(TargetError::NotAbsolute);
        }
        let uri: http::Uri = raw
            .parse()
            .map_err(|e: http::uri::InvalidUri| TargetError::Invalid(e.to_string()))?;
        let scheme = uri.scheme_str().ok_or(TargetError::NotAbsolute)?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(TargetError::Scheme(scheme.to_owned()));
        }
        let authority = uri.authority().ok_or(TargetError::NotAbsolute)?;
        let dest = host_port(authority, Some(Scheme::Http.default_port()))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target::new(Scheme::Http, dest, path.to_owned()))
    }

    /// Parses a CONNECT target (`host:port`, IPv6 in brackets); the port is required.
    pub fn parse_connect(raw: &[u8]) -> Result<HostPort, TargetError> {
        let raw = std::str::from_utf8(raw).map_err(|_| TargetError::NotUtf8)?;
        let authority: http::uri::Authority = raw
            .parse()
            .map_err(|e: http::uri::InvalidUri| TargetError::Invalid(e.to_string()))?;
        if authority.as_str() != raw {
            return Err(TargetError::Invalid(raw.to_owned()));
        }
        host_port(&authority, None)
    }
}

/// The authority's host, IPv6 addresses without their brackets.
pub fn bare_host(authority: &http::uri::Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn host_port(
    authority: &http::uri::Authority,
    default_port: Option<u16>,
) -> Result<HostPort, TargetError> {
    if authority.as_str().contains('@') {
        return Err(TargetError::UserInfo);
    }
    let host = bare_host(authority);
    if host.is_empty() {
        return Err(TargetError::Invalid("empty host".into()));
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(TargetError::Invalid(format!(
            "{host:?} is not an IPv6 address"
        )));
    }
    let port = match (authority.port_u16(), default_port) {
        (Some(0), _) | (None, None) => return Err(TargetError::ConnectPort),
        (Some(p), _) => p,
        (None, Some(d)) => d,
    };
    Ok(HostPort {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_gets_an_explicit_port() {
        let t = Target::parse_absolute(b"http://Example.org/a/b?c=d").unwrap();
        assert_eq!(t.url(), "http://example.org:80/a/b?c=d");
        assert_eq!(t.host_header(), "example.org");
        let t = Target::parse_absolute(b"http://[::1]:8080").unwrap();
        assert_eq!(t.url(), "http://[::1]:8080/");
        assert_eq!(t.host_header(), "[::1]:8080");
    }

    #[test]
    fn absolute_form_refusals() {
        assert_eq!(
            Target::parse_absolute(b"/just/a/path"),
            Err(TargetError::NotAbsolute)
        );
        assert!(matches!(
            Target::parse_absolute(b"ftp://x/y"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse_absolute(b"https://x/y"),
            Err(TargetError::Scheme(_))
        ));
        assert_eq!(
            Target::parse_absolute(b"http://u:p@x/"),
            Err(TargetError::UserInfo)
        );
        assert!(Target::parse_absolute(b"http://x:0/").is_err());
        assert!(Target::parse_absolute(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn connect_targets() {
        let hp = Target::parse_connect(b"files.example.org:443").unwrap();
        assert_eq!(hp.to_string(), "files.example.org:443");
        let hp = Target::parse_connect(b"[::1]:8443").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", 8443));
        assert_eq!(hp.ip(), Some("::1".parse().unwrap()));
        for bad in [
            &b"example.org"[..],
            b"example.org:0",
            b"user@example.org:443",
            b"::1:443",
            b"",
            b"a b:1",
            b"x:99999",
        ] {
            assert!(
                Target::parse_connect(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
