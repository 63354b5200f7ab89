//! URLs as the proxy writes them (`scheme://host:port/path?query`), so that a link read
//! from an index page compares equal to the request a client later makes for it.

/// An absolute URL as the pipeline writes request URLs (`scheme://host:port/path?query`,
/// no fragment); `None` unless it is http(s) with a host.
pub(crate) fn normalise_url(url: &url::Url) -> Option<String> {
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = match url.host()? {
        url::Host::Ipv6(a) => format!("[{a}]"),
        h => h.to_string(),
    };
    let port = url.port_or_known_default()?;
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{scheme}://{host}:{port}{}{query}", url.path()))
}

/// `%xx` escapes decoded (invalid ones kept as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_an_explicit_port_and_lose_their_fragment() {
        let url = |s: &str| normalise_url(&url::Url::parse(s).unwrap());
        assert_eq!(
            url("https://Files.Example.org/a/b.whl?x=1#sha256=00").as_deref(),
            Some("https://files.example.org:443/a/b.whl?x=1")
        );
        assert_eq!(
            url("http://[::1]:8080/p").as_deref(),
            Some("http://[::1]:8080/p")
        );
        assert_eq!(url("ftp://example.org/x"), None);
        assert_eq!(url("file:///etc/passwd"), None);
    }

    #[test]
    fn valid_escapes_are_decoded_and_invalid_ones_kept() {
        assert_eq!(percent_decode("%40fg%2Fhello"), "@fg/hello");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
