//! Versioned record encoding: one format-version byte, then bincode (serde).
//!
//! Every value the backends persist goes through here, so the on-disk format can be
//! changed (or bincode swapped) in one place. Unknown versions are refused with an
//! error, never guessed at.

use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// The format version written by this build.
pub const FORMAT_VERSION: u8 = 1;

/// The buffer [`encode`] starts with.
const ENCODE_CAPACITY: usize = 1024;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` as `[FORMAT_VERSION] ‖ bincode(value)`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // Audit records encode to a few hundred bytes: start big enough for most of them.
    let mut out = Vec::with_capacity(ENCODE_CAPACITY);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes bytes written by [`encode`]; refuses other versions and trailing garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| Error::Corrupt("empty record".into()))?;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    if used != body.len() {
        return Err(Error::Corrupt(format!(
            "{} trailing bytes after record",
            body.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_value() {
        let v = (String::from("x"), 42u64, Some(vec![1u8, 2]));
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (String, u64, Option<Vec<u8>>) = decode(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut bytes = encode(&7u32).unwrap();
        bytes[0] = 99;
        let err = decode::<u32>(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_empty_records_are_corrupt() {
        let bytes = encode(&String::from("hello world")).unwrap();
        assert!(matches!(
            decode::<String>(&bytes[..4]),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(decode::<String>(&[]), Err(Error::Corrupt(_))));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(decode::<String>(&long), Err(Error::Corrupt(_))));
    }
}
