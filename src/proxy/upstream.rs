//! Upstream (corporate) proxies: `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (uppercase
//! first, then the lowercase forms), read once at start the way Go's
//! `httpproxy.FromEnvironment` reads them for the reference, and the Pingora L4
//! connector that opens a `CONNECT host:port` tunnel through such a proxy so that the
//! upstream TLS (verified, SNI = the host) runs inside it.
//!
//! This module decides *how* an already ACL-approved destination is reached, never
//! *whether*: the ACL is checked before anything here runs. Proxy credentials go out
//! only as `Proxy-Authorization` to the upstream proxy; `Debug` and `Display` never show
//! them, so they cannot reach a log line or an audit record.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use ipnet::IpNet;
use pingora::connectors::l4::Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::target::{HostPort, Scheme, bare_host};

/// Largest CONNECT response head accepted from an upstream proxy.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// One upstream proxy (`http://[user:password@]host[:port]`).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    pub host: String,
    pub port: u16,
    /// `Basic ...` from the URL's userinfo.
    authorization: Option<String>,
}

impl ProxyEndpoint {
    /// Parses a proxy URL as Go does: a value without a scheme is taken as `http://`.
    /// Only `http://` proxies are supported (TLS to the proxy itself and SOCKS are not).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let uri: http::Uri = with_scheme
            .parse()
            .map_err(|e| format!("not a proxy URL ({e})"))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => {}
            Some(s) => {
                return Err(format!(
                    "scheme {s:?} is not supported: give an http:// proxy"
                ));
            }
            None => return Err("not a proxy URL".into()),
        }
        if uri
            .path_and_query()
            .is_some_and(|p| !matches!(p.as_str(), "" | "/"))
        {
            return Err("a proxy URL has no path".into());
        }
        let authority = uri.authority().ok_or("a proxy URL needs a host")?;
        let authorization = match authority.as_str().rsplit_once('@') {
            Some((userinfo, _)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let pair = format!("{}:{}", percent_decode(user)?, percent_decode(password)?);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            None => None,
        };
        let host = bare_host(authority);
        if host.is_empty() {
            return Err("a proxy URL needs a host".into());
        }
        Ok(ProxyEndpoint {
            host: host.to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(80),
            authorization,
        })
    }

    /// The `Proxy-Authorization` value for this proxy, when its URL had credentials.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// A key that keeps Pingora's connection pool from mixing connections made through
    /// this proxy (to `dest`, for tunnels) with direct ones or with other destinations.
    pub fn pool_key(&self, dest: Option<&HostPort>) -> u64 {
        let mut h = DefaultHasher::new();
        ("upstream-proxy", &self.host, self.port, &self.authorization).hash(&mut h);
        if let Some(d) = dest {
            (&d.host, d.port).hash(&mut h);
        }
        h.finish()
    }
}

impl fmt::Display for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dest = HostPort {
            host: self.host.clone(),
            port: self.port,
        };
        write!(f, "http://{dest}")
    }
}

impl fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let creds = if self.authorization.is_some() {
            " (with credentials)"
        } else {
            ""
        };
        write!(f, "ProxyEndpoint({self}{creds})")
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding in the proxy credentials")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the proxy credentials are not UTF-8".to_owned())
}

/// One `NO_PROXY` entry, with Go's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bypass {
    /// `10.0.0.0/8`, `fd00::/8`: IP hosts inside the range, any port.
    Net(IpNet),
    /// `10.1.2.3`, `10.1.2.3:8080`, `[::1]:80`: that IP host.
    Ip(IpAddr, Option<u16>),
    /// `example.org` (the host and its subdomains), `.example.org` or `*.example.org`
    /// (subdomains only), each with an optional port. `suffix` starts with a dot.
    Domain {
        suffix: String,
        exact_too: bool,
        port: Option<u16>,
    },
}

/// `NO_PROXY`: destinations reached directly even when a proxy is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// `*`: no destination uses a proxy.
    all: bool,
    entries: Vec<Bypass>,
}

impl NoProxy {
    /// Parses a comma-separated `NO_PROXY` value as Go's `httpproxy` does (entries are
    /// trimmed and lowercased; empty entries and entries without a host are ignored),
    /// except that a port that is not a number is an error rather than a silent no-match.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = NoProxy::default();
        for raw in text.split(',') {
            let p = raw.trim().to_ascii_lowercase();
            if p.is_empty() {
                continue;
            }
            if p == "*" {
                return Ok(NoProxy {
                    all: true,
                    entries: Vec::new(),
                });
            }
            if let Ok(net) = p.parse::<IpNet>() {
                out.entries.push(Bypass::Net(net));
                continue;
            }
            let (host, port) = split_host_port(&p).map_err(|e| format!("entry {raw:?}: {e}"))?;
            if let Ok(ip) = host.parse::<IpAddr>() {
                out.entries.push(Bypass::Ip(ip, port));
                continue;
            }
            // `*.example.org` means what `.example.org` means.
            let host = if host.starts_with("*.") {
                &host[1..]
            } else {
                host
            };
            if host.is_empty() || host == "." {
                continue;
            }
            let (suffix, exact_too) = match host.strip_prefix('.') {
                Some(_) => (host.to_owned(), false),
                None => (format!(".{host}"), true),
            };
            out.entries.push(Bypass::Domain {
                suffix,
                exact_too,
                port,
            });
        }
        Ok(out)
    }

    /// Whether `dest` (host already lowercase, IPv6 without brackets) bypasses the proxy.
    pub fn bypasses(&self, dest: &HostPort) -> bool {
        if self.all {
            return true;
        }
        let ip = dest.ip();
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == dest.port);
        self.entries.iter().any(|e| match e {
            Bypass::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
            Bypass::Ip(want, port) => ip == Some(*want) && port_ok(port),
            Bypass::Domain {
                suffix,
                exact_too,
                port,
            } => {
                (dest.host.ends_with(suffix.as_str()) || (*exact_too && dest.host == suffix[1..]))
                    && port_ok(port)
            }
        })
    }
}

/// Splits `host[:port]` / `[v6][:port]` / a bare IPv6 address, as Go's `SplitHostPort`
/// fallback does for `NO_PROXY` entries.
fn split_host_port(p: &str) -> Result<(&str, Option<u16>), String> {
    let parse_port = |s: &str| {
        s.parse::<u16>()
            .map(Some)
            .map_err(|_| format!("port {s:?} is not a number"))
    };
    if let Some(rest) = p.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("unclosed [ in an IPv6 address")?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, parse_port(port)?)),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected {after:?} after ]")),
        };
    }
    match p.split_once(':') {
        Some((host, port)) if !port.contains(':') => Ok((host, parse_port(port)?)),
        _ => Ok((p, None)),
    }
}

/// A bad upstream proxy variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ProxyEnvError {
    pub var: String,
    pub message: String,
}

/// The upstream proxies from the environment.
#[derive(Debug, Clone, Default)]
pub struct UpstreamProxies {
    pub http: Option<Arc<ProxyEndpoint>>,
    pub https: Option<Arc<ProxyEndpoint>>,
    pub no_proxy: NoProxy,
}

impl UpstreamProxies {
    /// Reads `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` through `var` (each name uppercase
    /// first, then lowercase; empty counts as unset). Errors name the variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyEnvError> {
        let any = |upper: &str| {
            [upper.to_owned(), upper.to_ascii_lowercase()]
                .into_iter()
                .find_map(|name| var(&name).filter(|v| !v.is_empty()).map(|v| (name, v)))
        };
        let endpoint = |upper: &str| {
            any(upper)
                .map(|(name, v)| {
                    ProxyEndpoint::parse(&v)
                        .map(Arc::new)
                        .map_err(|message| ProxyEnvError { var: name, message })
                })
                .transpose()
        };
        Ok(UpstreamProxies {
            http: endpoint("HTTP_PROXY")?,
            https: endpoint("HTTPS_PROXY")?,
            no_proxy: match any("NO_PROXY") {
                Some((name, v)) => {
                    NoProxy::parse(&v).map_err(|message| ProxyEnvError { var: name, message })?
                }
                None => NoProxy::default(),
            },
        })
    }

    /// The proxy a request for `dest` goes through, if any.
    pub fn for_target(&self, scheme: Scheme, dest: &HostPort) -> Option<&Arc<ProxyEndpoint>> {
        let proxy = match scheme {
            Scheme::Http => self.http.as_ref(),
            Scheme::Https => self.https.as_ref(),
        }?;
        (!self.no_proxy.bypasses(dest)).then_some(proxy)
    }
}

/// Opens the TCP connection to an upstream proxy and a `CONNECT` tunnel through it to
/// `target`; Pingora then runs the upstream TLS handshake over the tunnel. Set as
/// `PeerOptions::custom_l4` on a peer whose address is the proxy's.
#[derive(Debug)]
pub struct TunnelConnector {
    pub proxy: Arc<ProxyEndpoint>,
    pub target: HostPort,
    pub timeout: Duration,
}

impl TunnelConnector {
    fn fail(&self, what: String) -> Box<Error> {
        Error::explain(
            ErrorType::ConnectProxyFailure,
            format!("upstream proxy {}: {what}", self.proxy),
        )
    }

    async fn open(&self, addr: std::net::SocketAddr) -> Result<tokio::net::TcpStream> {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| self.fail(format!("cannot connect to {addr}: {e}")))?;
        let mut head = format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n", t = self.target);
        if let Some(auth) = self.proxy.authorization() {
            head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes())
            .await
            .map_err(|e| self.fail(format!("cannot send CONNECT: {e}")))?;
        // Read exactly the response head: nothing follows a 2xx until we speak TLS.
        let mut buf = Vec::with_capacity(512);
        while !buf.ends_with(b"\r\n\r\n") {
            if buf.len() >= MAX_CONNECT_HEAD {
                return Err(self.fail("CONNECT response head too large".into()));
            }
            let mut byte = [0u8; 1];
            match tcp.read(&mut byte).await {
                Ok(0) => return Err(self.fail("closed the connection during CONNECT".into())),
                Ok(_) => buf.push(byte[0]),
                Err(e) => return Err(self.fail(format!("CONNECT failed: {e}"))),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let code = match resp.parse(&buf) {
            Ok(_) => resp.code.unwrap_or(0),
            Err(e) => return Err(self.fail(format!("malformed CONNECT response: {e}"))),
        };
        if !(200..300).contains(&code) {
            return Err(self.fail(format!(
                "CONNECT {} refused with {code} {}",
                self.target,
                resp.reason.unwrap_or("")
            )));
        }
        Ok(tcp)
    }
}

#[async_trait]
impl Connect for TunnelConnector {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let SocketAddr::Inet(addr) = addr else {
            return Err(self.fail("not a TCP address".into()));
        };
        match tokio::time::timeout(self.timeout, self.open(*addr)).await {
            Ok(tcp) => tcp.map(Stream::from),
            Err(_) => Err(self.fail(format!("no tunnel within {:?}", self.timeout))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn proxy_urls_parse_like_go_and_never_show_credentials() {
        let p = ProxyEndpoint::parse("http://us%40r:p%3Ass@Proxy.corp:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        let b64 = base64::engine::general_purpose::STANDARD.encode("us@r:p:ss");
        assert_eq!(p.authorization(), Some(format!("Basic {b64}").as_str()));
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        assert!(!format!("{p:?}").contains("p:ss") && !format!("{p:?}").contains(&b64));
        let p = ProxyEndpoint::parse("proxy.corp").unwrap();
        assert_eq!((p.port, p.authorization()), (80, None));
        let p = ProxyEndpoint::parse("[::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        for bad in [
            "https://p:443",
            "socks5://p:1080",
            "http://",
            "http://p/x",
            "http://a b",
        ] {
            assert!(ProxyEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_proxy_matches_as_gos_httpproxy() {
        let n = NoProxy::parse(
            " Example.org, .sub.net,*.star.io, 10.0.0.0/8, 192.0.2.1:8080, [::1]:80, fd00::1, only.port:8443,,",
        )
        .unwrap();
        for (host, port, bypass) in [
            ("example.org", 443, true),
            ("a.example.org", 80, true),
            ("badexample.org", 80, false),
            ("sub.net", 80, false),
            ("x.sub.net", 80, true),
            ("star.io", 80, false),
            ("a.star.io", 80, true),
            ("10.1.2.3", 80, true),
            ("11.1.2.3", 80, false),
            ("192.0.2.1", 8080, true),
            ("192.0.2.1", 80, false),
            ("::1", 80, true),
            ("::1", 443, false),
            ("fd00::1", 1, true),
            ("only.port", 8443, true),
            ("only.port", 443, false),
            ("elsewhere.org", 80, false),
        ] {
            assert_eq!(n.bypasses(&dest(host, port)), bypass, "{host}:{port}");
        }
        assert!(
            NoProxy::parse("a.org, *")
                .unwrap()
                .bypasses(&dest("any", 1))
        );
        assert!(NoProxy::parse("a.org:http").is_err());
        assert!(!NoProxy::default().bypasses(&dest("localhost", 80)));
    }

    #[test]
    fn the_environment_is_read_uppercase_first_and_per_scheme() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let u = UpstreamProxies::from_env(env(&[
            ("HTTP_PROXY", "http://up:1"),
            ("http_proxy", "http://low:2"),
            ("https_proxy", "low:3"),
            ("no_proxy", "direct.org"),
        ]))
        .unwrap();
        assert_eq!(u.http.as_ref().unwrap().host, "up");
        assert_eq!(u.https.as_ref().unwrap().port, 3);
        assert!(
            u.for_target(Scheme::Https, &dest("direct.org", 443))
                .is_none()
        );
        assert!(u.for_target(Scheme::Http, &dest("other.org", 80)).is_some());
        let only_http = UpstreamProxies::from_env(env(&[("HTTP_PROXY", "up:1")])).unwrap();
        assert!(
            only_http
                .for_target(Scheme::Https, &dest("a.org", 443))
                .is_none()
        );
        let err = UpstreamProxies::from_env(env(&[("https_proxy", "socks5://s:1")])).unwrap_err();
        assert_eq!(err.var, "https_proxy");
    }
}
