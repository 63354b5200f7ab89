//! Versioned record encoding: one format-version byte, then bincode (serde).
//!
//! Every value the backends persist goes through here, so the on-disk format can be
//! changed (or bincode swapped) in one place. Unknown versions are refused with an
//! error, never guessed at. Session headers have their own version
//! ([`HEADER_VERSION`]): version 1 headers (before owner and labels) still load.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Ended, Error, Policy, Result, SecretRule, SessionHeader, SessionId, Timestamp};

/// The format version written by this build.
pub const FORMAT_VERSION: u8 = 1;

/// The format version of session headers written by this build.
pub const HEADER_VERSION: u8 = 2;

/// The buffer [`encode`] starts with.
const ENCODE_CAPACITY: usize = 1024;

/// The most one decoded value may allocate. bincode allocates a string or list of the
/// length a record claims before reading it, so without a limit one corrupt length
/// aborts the process; real values stay far below this (the control API takes 1 MiB
/// bodies, the proxy 64 KiB of request head by default).
const DECODE_LIMIT: usize = 64 << 20;

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
    decode_body(body)
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let (value, used) =
        bincode::serde::decode_from_slice(body, config().with_limit::<DECODE_LIMIT>())
            .map_err(|e| Error::Corrupt(e.to_string()))?;
    if used != body.len() {
        return Err(Error::Corrupt(format!(
            "{} trailing bytes after record",
            body.len() - used
        )));
    }
    Ok(value)
}

/// The first byte of a stored value that holds several records (a [`Chunk`]) rather
/// than one; above every record format version, so the two cannot be confused.
pub const CHUNK_TAG: u8 = 0xC0;

/// Several encoded records stored as one value: `[CHUNK_TAG] ‖ (len u32 LE ‖ record)*`.
/// A chunk of one record is stored as that record alone (see [`Chunk::value`]), which
/// is also how values were written before chunks existed; [`for_each_in_value`] reads
/// both.
#[derive(Debug)]
pub struct Chunk {
    buf: Vec<u8>,
    records: usize,
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk {
            buf: vec![CHUNK_TAG],
            records: 0,
        }
    }
}

impl Chunk {
    /// Appends one record as [`encode`] wrote it.
    pub fn push(&mut self, record: &[u8]) -> Result<()> {
        let len = u32::try_from(record.len())
            .map_err(|_| Error::Encode(format!("a record of {} bytes", record.len())))?;
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(record);
        self.records += 1;
        Ok(())
    }

    /// The value to store: the record itself when there is only one.
    pub fn value(&self) -> &[u8] {
        if self.records == 1 {
            &self.buf[5..]
        } else {
            &self.buf
        }
    }
}

/// Calls `f` with each encoded record of a stored value, a [`Chunk`] or one record, in
/// order. A chunk cut short is [`Error::Corrupt`].
pub fn for_each_in_value(value: &[u8], mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let Some((&CHUNK_TAG, mut rest)) = value.split_first() else {
        return f(value);
    };
    while !rest.is_empty() {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::Corrupt("a record length cut short in a chunk".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if after.len() < len {
            return Err(Error::Corrupt(format!(
                "a chunk's record claims {len} bytes, {} are left",
                after.len()
            )));
        }
        let (record, next) = after.split_at(len);
        f(record)?;
        rest = next;
    }
    Ok(())
}

/// A session header as version 1 wrote it: no owner, no labels.
#[derive(Serialize, Deserialize)]
struct SessionHeaderV1 {
    id: SessionId,
    token_hash: [u8; 32],
    policy: Policy,
    created: Timestamp,
    timeout_secs: u64,
    revoked: Option<Timestamp>,
    ended: Option<Ended>,
    secrets: Vec<SecretRule>,
    inspectors_configuration: Option<String>,
}

/// Encodes a session header as `[HEADER_VERSION] ‖ bincode(header)`.
pub fn encode_header(header: &SessionHeader) -> Result<Vec<u8>> {
    let mut out = encode(header)?;
    out[0] = HEADER_VERSION;
    Ok(out)
}

/// Decodes a session header of this or an earlier version.
pub fn decode_header(bytes: &[u8]) -> Result<SessionHeader> {
    match bytes.split_first() {
        Some((&HEADER_VERSION, body)) => decode_body(body),
        Some((1, body)) => {
            let v1: SessionHeaderV1 = decode_body(body)?;
            Ok(SessionHeader {
                revoked: v1.revoked,
                ended: v1.ended,
                secrets: v1.secrets,
                inspectors_configuration: v1.inspectors_configuration,
                ..SessionHeader::new(v1.id, v1.token_hash, v1.policy, v1.created, v1.timeout_secs)
            })
        }
        Some((&found, _)) => Err(Error::UnsupportedVersion {
            found,
            supported: HEADER_VERSION,
        }),
        None => Err(Error::Corrupt("empty session header".into())),
    }
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

    /// Found by the `report_fold` fuzz target: a record claiming a string of 2^59 bytes
    /// made bincode allocate it up front, and the process abort.
    #[test]
    fn a_corrupt_length_is_refused_without_allocating_it() {
        let mut bytes = vec![FORMAT_VERSION, 253];
        bytes.extend_from_slice(&(1u64 << 59).to_le_bytes());
        assert!(matches!(decode::<String>(&bytes), Err(Error::Corrupt(_))));
    }

    fn records_of(value: &[u8]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for_each_in_value(value, |r| {
            out.push(decode(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn chunks_round_trip_and_one_record_is_stored_as_itself() {
        let words = ["a", "bb", "", "dddd"].map(String::from);
        let mut chunk = Chunk::default();
        for w in &words {
            chunk.push(&encode(w).unwrap()).unwrap();
        }
        assert_eq!(chunk.value()[0], CHUNK_TAG);
        assert_eq!(records_of(chunk.value()).unwrap(), words);

        let one = encode(&words[1]).unwrap();
        let mut single = Chunk::default();
        single.push(&one).unwrap();
        assert_eq!(single.value(), &one[..]);
        assert_eq!(records_of(single.value()).unwrap(), [words[1].clone()]);
    }

    #[test]
    fn a_chunk_cut_short_is_corrupt() {
        let mut chunk = Chunk::default();
        for w in ["hello", "world"] {
            chunk.push(&encode(&String::from(w)).unwrap()).unwrap();
        }
        let value = chunk.value();
        for cut in 1..value.len() {
            let short = &value[..cut];
            // Cut at a record boundary, what is left is a shorter, valid chunk.
            let boundary = cut == 1 || cut == 5 + 7;
            match records_of(short) {
                Ok(records) => assert!(boundary, "cut at {cut} read {records:?}"),
                Err(e) => assert!(
                    !boundary && matches!(e, Error::Corrupt(_)),
                    "cut at {cut}: {e}"
                ),
            }
        }
    }

    /// A version 1 header, as a build before owners and labels wrote it (bytes kept
    /// verbatim, so a change to the structs cannot silently move this format).
    const V1_HEADER_HEX: &str = "0107070707070707070707070707070707aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01fd00803c3048140c00fb100e0000010a62617369632d617574680b68747470733a2f2f782f2a03753a7000";

    #[test]
    fn version_1_headers_still_load_and_new_ones_round_trip() {
        let v1 = hex_decode(V1_HEADER_HEX);
        let h = decode_header(&v1).unwrap();
        assert_eq!(h.id, SessionId::from_bytes([7; 16]));
        assert_eq!((h.timeout_secs, h.policy), (3600, Policy::Permissive));
        assert_eq!(h.secrets.len(), 1);
        assert_eq!((h.owner.clone(), h.labels.len()), (None, 0));
        // The bytes are what the version 1 struct encodes to.
        let again = SessionHeaderV1 {
            id: h.id,
            token_hash: h.token_hash,
            policy: h.policy,
            created: h.created,
            timeout_secs: h.timeout_secs,
            revoked: None,
            ended: None,
            secrets: h.secrets.clone(),
            inspectors_configuration: None,
        };
        assert_eq!(encode(&again).unwrap(), v1);
        let mut h2 = h.clone();
        h2.owner = Some("farm".into());
        h2.labels.insert("arch".into(), "amd64".into());
        let bytes = encode_header(&h2).unwrap();
        assert_eq!(bytes[0], HEADER_VERSION);
        assert_eq!(decode_header(&bytes).unwrap(), h2);
        let mut future = bytes;
        future[0] = 9;
        assert!(matches!(
            decode_header(&future),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
