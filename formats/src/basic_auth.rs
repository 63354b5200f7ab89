//! `Basic` credentials (RFC 7617) as they arrive in `Authorization` and
//! `Proxy-Authorization` headers: the one parser for both ports.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The user and password of a `Basic <base64(user:password)>` header value; `None` if
/// it is anything else. The password may contain colons, the user may not.
pub fn parse(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!("Basic {}", STANDARD.encode(s))
    }

    #[test]
    fn parses_credentials_with_colons_in_the_password() {
        assert_eq!(
            parse(basic("craft:a:b").as_bytes()),
            Some(("craft".into(), "a:b".into()))
        );
        let lower = format!("basic {}", STANDARD.encode("u:p"));
        assert_eq!(parse(lower.as_bytes()), Some(("u".into(), "p".into())));
    }

    #[test]
    fn malformed_values_are_not_credentials() {
        for v in ["Bearer xyz", "Basic !!!", "Basic", "", &basic("nocolon")] {
            assert_eq!(parse(v.as_bytes()), None, "{v}");
        }
        assert_eq!(parse(&[0xff, 0x20, 0x41]), None);
    }
}
