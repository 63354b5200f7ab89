//! fetchgate's parsers of untrusted bytes: everything a builder, an origin or a client
//! of the proxy can put in front of fetchgate and that is read byte by byte, kept apart
//! from the daemon so that each parser can be fuzzed on its own (`fuzz/` at the top of
//! the repository builds this crate alone, with sanitizer flags).
//!
//! Every function here takes bytes (or a reader) and gives a value, or a reason the
//! input is refused that names what was wrong. They must never panic on any input, must
//! bound the memory they use whatever the input claims, and must never do I/O beyond
//! the reader they are given: no sockets, no files, no storage, no clocks (the caller
//! passes the time when a parser needs it).

pub mod apt;
pub mod basic_auth;
pub mod cargo;
pub mod copyright;
pub mod deb;
pub mod deb822;
pub mod debtags;
pub mod git;
pub mod gomod;
pub mod npm;
pub mod pip;
mod tarball;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod urls;

/// 64 hex digits (either case) → the 32 bytes of a SHA-256 digest.
pub fn parse_sha256(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_digests_are_64_hex_digits() {
        let hex_text = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(parse_sha256(hex_text).map(|d| d[0]), Some(0xe3));
        for bad in [
            "",
            "e3b0",
            &hex_text[1..],
            &format!("{hex_text}00"),
            &hex_text.replace('E', "g"),
        ] {
            assert_eq!(parse_sha256(bad), None, "{bad}");
        }
    }
}
