//! The typed values the stores keep: session headers and audit records.
//!
//! These are plain data. How they are shown to clients (JSON keys, RFC 3339 times) is
//! the daemon's business, not this crate's.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A session id: 16 random bytes, shown as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// Wraps 16 bytes (the caller draws them from a CSPRNG).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        SessionId(bytes)
    }

    /// The raw bytes, as used in storage keys.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 32 lowercase hexadecimal characters")]
pub struct InvalidSessionId;

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(InvalidSessionId);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(InvalidSessionId),
        };
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Ok(SessionId(out))
    }
}

/// The name of one node of an HA pair (`--node-id`): 1 to 64 of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 1 to 64 characters out of letters, digits and . _ -")]
pub struct InvalidNodeId;

impl NodeId {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeId {
    type Err = InvalidNodeId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(NodeId(s.to_owned()))
        } else {
            Err(InvalidNodeId)
        }
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidNodeId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> Self {
        n.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time: microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// A time given in microseconds since the epoch.
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// This time plus `secs` seconds, saturating.
    pub const fn plus_secs(self, secs: u64) -> Self {
        let add = if secs > (i64::MAX / 1_000_000) as u64 {
            i64::MAX
        } else {
            secs as i64 * 1_000_000
        };
        Timestamp(self.0.saturating_add(add))
    }

    /// This time minus `secs` seconds, saturating.
    pub const fn minus_secs(self, secs: u64) -> Self {
        let sub = if secs > (i64::MAX / 1_000_000) as u64 {
            i64::MAX
        } else {
            secs as i64 * 1_000_000
        };
        Timestamp(self.0.saturating_sub(sub))
    }
}

/// A session's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Block what cannot be verified.
    Strict,
    /// Record everything, block nothing.
    Permissive,
}

impl Policy {
    /// The wire name (`strict` / `permissive`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::Strict => "strict",
            Policy::Permissive => "permissive",
        }
    }
}

/// How a session came to an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// `DELETE /session/{id}`.
    Ended,
    /// Its timeout passed; the reaper ended it.
    Expired,
}

/// When and why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub at: Timestamp,
    pub reason: EndReason,
}

/// A credential to inject upstream: `Authorization` for URLs matching `url_glob`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRule {
    /// Only `basic-auth` exists today.
    pub kind: String,
    pub url_glob: String,
    pub credentials: String,
}

impl fmt::Debug for SecretRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRule")
            .field("kind", &self.kind)
            .field("url_glob", &self.url_glob)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

/// Everything stored about one session except its audit records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHeader {
    pub id: SessionId,
    /// SHA-256 of the token; the token itself is never stored.
    pub token_hash: [u8; 32],
    pub policy: Policy,
    pub created: Timestamp,
    /// Time to live in seconds, counted from `created`.
    pub timeout_secs: u64,
    pub revoked: Option<Timestamp>,
    pub ended: Option<Ended>,
    pub secrets: Vec<SecretRule>,
    /// The `inspectors-configuration` object from session creation, as JSON text.
    pub inspectors_configuration: Option<String>,
    /// Who asked for the session (a build farm's user or service name), if given.
    pub owner: Option<String>,
    /// Small string map the creator attached (build id, recipe, architecture, ...).
    pub labels: BTreeMap<String, String>,
}

impl SessionHeader {
    /// A live, unrevoked session with no secrets, inspectors configuration, owner or
    /// labels.
    pub fn new(
        id: SessionId,
        token_hash: [u8; 32],
        policy: Policy,
        created: Timestamp,
        timeout_secs: u64,
    ) -> Self {
        SessionHeader {
            id,
            token_hash,
            policy,
            created,
            timeout_secs,
            revoked: None,
            ended: None,
            secrets: Vec::new(),
            inspectors_configuration: None,
            owner: None,
            labels: BTreeMap::new(),
        }
    }

    /// The instant the session's timeout passes.
    pub fn expires_at(&self) -> Timestamp {
        self.created.plus_secs(self.timeout_secs)
    }

    /// When the session stopped accepting its token: revocation or expiry, whichever
    /// came first; `None` while active at `now`.
    pub fn end_time(&self, now: Timestamp) -> Option<Timestamp> {
        let expiry = self.expires_at();
        match self.revoked {
            Some(r) => Some(r.min(expiry)),
            None if now >= expiry => Some(expiry),
            None => None,
        }
    }
}

/// An inspector's opinion on a request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Opinion {
    Pending,
    Approved,
    Unknown,
    Rejected,
}

/// One inspector's verdict with its reason and annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    pub opinion: Opinion,
    pub reason: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// Inspector id → that inspector's verdict, sorted by id, each id once. A download
/// records one entry per inspector of the chain, built once and read once per report,
/// so a sorted vector serves better than the `BTreeMap` it replaced: one allocation,
/// no node splits or tree walks on drop; ids the daemon knows are borrowed, not
/// copied. It is serialised as a map, exactly as that `BTreeMap` was, so records
/// stored before read back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspections(Vec<(Cow<'static, str>, Inspection)>);

impl Inspections {
    /// Sets `id`'s verdict, replacing any it had.
    pub fn insert(&mut self, id: impl Into<Cow<'static, str>>, inspection: Inspection) {
        let id = id.into();
        match self
            .0
            .binary_search_by(|(k, _)| k.as_ref().cmp(id.as_ref()))
        {
            Ok(i) => self.0[i].1 = inspection,
            Err(i) => self.0.insert(i, (id, inspection)),
        }
    }

    /// `id`'s verdict.
    pub fn get(&self, id: &str) -> Option<&Inspection> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(id))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The entries in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Inspection)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The inspector ids in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// The verdicts in id order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Inspection> {
        self.0.iter().map(|(_, v)| v)
    }

    /// How many inspectors gave a verdict.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No inspector gave a verdict.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts `entries` by id; of entries with the same id the last is kept, as a map
    /// built by inserting them in turn would.
    fn from_entries(mut entries: Vec<(Cow<'static, str>, Inspection)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
        }
        Inspections(entries)
    }
}

impl<K: Into<Cow<'static, str>>> FromIterator<(K, Inspection)> for Inspections {
    fn from_iter<I: IntoIterator<Item = (K, Inspection)>>(iter: I) -> Self {
        Inspections::from_entries(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl Serialize for Inspections {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Inspections {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Inspections;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of inspector ids to inspections")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                // The hint comes from the input: bounded, so a hostile length cannot
                // reserve memory the entries never fill.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Inspections::from_entries(entries))
            }
        }

        d.deserialize_map(Entries)
    }
}

/// Header name → values, in the order first seen, each name once as [`HeaderList::push`]
/// builds it (a stored list reads back as it was written). Stored exactly as the
/// `Vec<(String, Vec<String>)>` it replaced, so records written before read back
/// unchanged; held as one text buffer and spans into it, so a record's headers are a
/// few allocations to build, decode and drop instead of two per header.
#[derive(Clone, Default)]
pub struct HeaderList {
    /// Every name and value, back to back.
    text: String,
    /// Each name's span of `text`, and the end of its values in `values`.
    names: Vec<(Span, usize)>,
    /// The values' spans of `text`, name after name.
    values: Vec<Span>,
}

#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

impl HeaderList {
    /// Adds a value of `name`: after the name's other values if it is listed already,
    /// else under a new name at the end. Values of one name given one after another (as
    /// `http::HeaderMap` yields them) take the quick way.
    pub fn push(&mut self, name: &str, value: &str) {
        let value = self.push_text(value);
        if self
            .names
            .last()
            .is_some_and(|(n, _)| self.span(*n) == name)
        {
            self.push_value(value);
            return;
        }
        match self.names.iter().position(|(n, _)| self.span(*n) == name) {
            Some(i) => {
                let at = self.names[i].1;
                self.values.insert(at, value);
                for (_, end) in &mut self.names[i..] {
                    *end += 1;
                }
            }
            None => {
                self.push_name(name);
                self.push_value(value);
            }
        }
    }

    /// Appends a name with no values yet: no grouping.
    fn push_name(&mut self, name: &str) {
        let span = self.push_text(name);
        self.names.push((span, self.values.len()));
    }

    /// Appends a value of the last name.
    fn push_value(&mut self, value: Span) {
        self.values.push(value);
        if let Some(last) = self.names.last_mut() {
            last.1 = self.values.len();
        }
    }

    fn push_text(&mut self, text: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(text);
        Span {
            start,
            end: self.text.len(),
        }
    }

    fn span(&self, span: Span) -> &str {
        self.text.get(span.start..span.end).unwrap_or_default()
    }

    /// An empty list with room for `names` names and `values` values of `bytes` bytes
    /// in all.
    pub fn with_capacity(names: usize, values: usize, bytes: usize) -> Self {
        HeaderList {
            text: String::with_capacity(bytes),
            names: Vec::with_capacity(names),
            values: Vec::with_capacity(values),
        }
    }

    /// The names in order, each with its values.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, HeaderValues<'_>)> {
        self.names.iter().enumerate().map(|(i, &(name, end))| {
            let start = match i.checked_sub(1) {
                Some(previous) => self.names[previous].1,
                None => 0,
            };
            let values = HeaderValues {
                list: self,
                spans: self.values.get(start..end).unwrap_or_default().iter(),
            };
            (self.span(name), values)
        })
    }

    /// The values of `name` (compared exactly).
    pub fn get(&self, name: &str) -> Option<HeaderValues<'_>> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// How many names are listed.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No header is listed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The values of one name of a [`HeaderList`], in order.
#[derive(Clone)]
pub struct HeaderValues<'a> {
    list: &'a HeaderList,
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for HeaderValues<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let list = self.list;
        self.spans.next().map(|s| list.span(*s))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for HeaderValues<'_> {}

impl PartialEq for HeaderList {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((n, v), (m, w))| n == m && v.eq(w))
    }
}

impl Eq for HeaderList {}

impl fmt::Debug for HeaderList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| (n, v.collect::<Vec<_>>())))
            .finish()
    }
}

impl<N, I> FromIterator<(N, I)> for HeaderList
where
    N: AsRef<str>,
    I: IntoIterator<Item: AsRef<str>>,
{
    /// Pushes each name's values in turn.
    fn from_iter<T: IntoIterator<Item = (N, I)>>(iter: T) -> Self {
        let mut list = HeaderList::default();
        for (name, values) in iter {
            for value in values {
                list.push(name.as_ref(), value.as_ref());
            }
        }
        list
    }
}

/// A name's values, serialised as a sequence (the `Vec<String>` they were stored as).
impl Serialize for HeaderValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.clone())
    }
}

impl Serialize for HeaderList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for (name, values) in self.iter() {
            seq.serialize_element(&(name, values))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};

        /// The whole list: a sequence of (name, values) pairs.
        struct List;
        /// One (name, values) pair, read into the list.
        struct Entry<'h>(&'h mut HeaderList);
        /// One name's values, read into the list.
        struct Values<'h>(&'h mut HeaderList);
        /// One string, copied into the list as a name or a value.
        struct Text<'h>(&'h mut HeaderList, bool);

        impl<'de> Visitor<'de> for List {
            type Value = HeaderList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of header names and values")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderList, A::Error> {
                // The hint comes from the input: bounded, so a hostile length cannot
                // reserve memory the entries never fill. Most headers take under 64 bytes.
                let names = seq.size_hint().unwrap_or(0).min(64);
                let mut list = HeaderList::with_capacity(names, names, names * 64);
                while seq.next_element_seed(Entry(&mut list))?.is_some() {}
                Ok(list)
            }
        }

        impl<'de> DeserializeSeed<'de> for Entry<'_> {
            type Value = ();

            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_tuple(2, self)
            }
        }

        impl<'de> Visitor<'de> for Entry<'_> {
            type Value = ();

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header name and its values")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                if seq.next_element_seed(Text(&mut *self.0, true))?.is_none() {
                    return Err(A::Error::invalid_length(0, &self));
                }
                if seq.next_element_seed(Values(&mut *self.0))?.is_none() {
                    return Err(A::Error::invalid_length(1, &self));
                }
                Ok(())
            }
        }

        impl<'de> DeserializeSeed<'de> for Values<'_> {
            type Value = ();

            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_seq(self)
            }
        }

        impl<'de> Visitor<'de> for Values<'_> {
            type Value = ();

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of header values")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq.next_element_seed(Text(&mut *self.0, false))?.is_some() {}
                Ok(())
            }
        }

        impl<'de> DeserializeSeed<'de> for Text<'_> {
            type Value = ();

            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }

        impl<'de> Visitor<'de> for Text<'_> {
            type Value = ();

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
                if self.1 {
                    self.0.push_name(v);
                } else {
                    let span = self.0.push_text(v);
                    self.0.push_value(span);
                }
                Ok(())
            }
        }

        d.deserialize_seq(List)
    }
}

/// Size and digests of a response body that was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyDigest {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Why a request that was attempted did not complete normally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Where it failed: `upstream-connect`, `upstream-tls`, `upstream-timeout`, `client-abort`, ...
    pub stage: String,
    pub reason: String,
}

/// One request that reached (or tried to reach) an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Download {
    pub start: Timestamp,
    pub end: Timestamp,
    pub method: String,
    /// Normalised URL with an explicit port for https.
    pub url: String,
    pub client_address: String,
    pub user_agent: Option<String>,
    pub status_code: u16,
    pub status: String,
    pub content_type: Option<String>,
    /// Header name → values, as sent upstream minus credentials.
    pub request_headers: HeaderList,
    pub response_headers: HeaderList,
    pub body: Option<BodyDigest>,
    pub failure: Option<Failure>,
    pub request_inspection: Inspections,
    pub response_inspection: Inspections,
    /// Artifact metadata an inspector filled in (`name`, `version`, `type`, ...).
    pub metadata: BTreeMap<String, String>,
}

/// The stage at which a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeniedStage {
    Auth,
    Acl,
    Policy,
}

impl DeniedStage {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeniedStage::Auth => "auth",
            DeniedStage::Acl => "acl",
            DeniedStage::Policy => "policy",
        }
    }
}

/// A request refused before any download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    pub time: Timestamp,
    pub method: String,
    pub url: String,
    pub client_address: String,
    pub reason: String,
    pub stage: DeniedStage,
}

/// One entry of a session's audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditRecord {
    Download(Box<Download>),
    Denied(Denied),
}

impl AuditRecord {
    /// The sha256 of the body, for the cross-session artifact index.
    pub fn artifact_sha256(&self) -> Option<[u8; 32]> {
        match self {
            AuditRecord::Download(d) => d.body.map(|b| b.sha256),
            AuditRecord::Denied(_) => None,
        }
    }

    /// The name, version and type an inspector gave the body, for the name + version
    /// side of the artifact index; `None` without a body or without both name and
    /// version.
    pub fn artifact_name(&self) -> Option<ArtifactName> {
        let (name, version, kind, sha256) = self.artifact_name_parts()?;
        Some(ArtifactName {
            name: name.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            sha256,
        })
    }

    /// [`AuditRecord::artifact_name`] borrowed from the record: (name, version, type,
    /// sha256).
    pub fn artifact_name_parts(&self) -> Option<(&str, &str, &str, [u8; 32])> {
        let AuditRecord::Download(d) = self else {
            return None;
        };
        let body = d.body?;
        let kind = d.metadata.get("type").map_or("", String::as_str);
        Some((
            d.metadata.get("name")?,
            d.metadata.get("version")?,
            kind,
            body.sha256,
        ))
    }
}

/// An artifact as the name + version index knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactName {
    pub name: String,
    pub version: String,
    /// The metadata `type` (a MIME type); empty when no inspector set one.
    pub kind: String,
    pub sha256: [u8; 32],
}

/// What the retention queue holds: sessions that ended and whose data is still kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    pub count: u64,
    /// The earliest end time among them.
    pub oldest_end: Option<Timestamp>,
}

/// Per-session record counts, kept as records are appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub downloads: u64,
    pub denied: u64,
}

impl Counters {
    /// Counts one more record.
    pub fn add(&mut self, record: &AuditRecord) {
        match record {
            AuditRecord::Download(_) => self.downloads += 1,
            AuditRecord::Denied(_) => self.denied += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_through_hex() {
        let id = SessionId::from_bytes([0xab; 16]);
        let s = id.to_string();
        assert_eq!(s, "ab".repeat(16));
        assert_eq!(s.parse::<SessionId>().unwrap(), id);
    }

    #[test]
    fn session_id_refuses_wrong_length_case_and_characters() {
        for bad in [
            "",
            "ab",
            &"AB".repeat(16),
            &"zz".repeat(16),
            &"a".repeat(33),
            "../../etc/passwd",
        ] {
            assert_eq!(bad.parse::<SessionId>(), Err(InvalidSessionId), "{bad}");
        }
    }

    #[test]
    fn node_ids_are_short_plain_names() {
        assert_eq!(
            "node-a.1_x".parse::<NodeId>().unwrap().as_str(),
            "node-a.1_x"
        );
        for bad in ["", "a b", "a/b", "é", &"n".repeat(65)] {
            assert_eq!(bad.parse::<NodeId>(), Err(InvalidNodeId), "{bad}");
        }
    }

    fn inspection(opinion: Opinion, reason: Option<&str>) -> Inspection {
        Inspection {
            opinion,
            reason: reason.map(str::to_owned),
            annotations: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        }
    }

    #[test]
    fn inspections_are_stored_exactly_as_the_map_they_replaced() {
        let entries = [
            ("pip.wheel", inspection(Opinion::Approved, None)),
            ("apt.release", inspection(Opinion::Unknown, None)),
            ("deb", inspection(Opinion::Rejected, Some("bad"))),
        ];
        let map: BTreeMap<String, Inspection> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let inspections: Inspections = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let stored = crate::codec::encode(&map).unwrap();
        assert_eq!(crate::codec::encode(&inspections).unwrap(), stored);
        let read: Inspections = crate::codec::decode(&stored).unwrap();
        assert_eq!(read, inspections);
        assert_eq!(
            read.keys().collect::<Vec<_>>(),
            ["apt.release", "deb", "pip.wheel"]
        );
        assert_eq!(read.get("deb"), map.get("deb"));
        assert_eq!(read.get("npm"), None);
    }

    #[test]
    fn inspections_read_out_of_order_are_sorted_and_the_last_of_an_id_wins() {
        // Written as a map by hand: a sequence of (id, inspection) pairs with a length.
        let pairs = vec![
            ("b".to_owned(), inspection(Opinion::Unknown, None)),
            ("a".to_owned(), inspection(Opinion::Pending, None)),
            (
                "b".to_owned(),
                inspection(Opinion::Rejected, Some("second")),
            ),
        ];
        let bytes = crate::codec::encode(&pairs).unwrap();
        let read: Inspections = crate::codec::decode(&bytes).unwrap();
        assert_eq!(read.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(read.get("b").unwrap().reason.as_deref(), Some("second"));
        let via_map: BTreeMap<String, Inspection> = crate::codec::decode(&bytes).unwrap();
        assert_eq!(read.iter().count(), via_map.len());
        assert!(read.iter().all(|(k, v)| via_map.get(k) == Some(v)));
    }

    #[test]
    fn inspections_insert_keeps_ids_sorted_and_unique() {
        let mut m = Inspections::default();
        assert!(m.is_empty());
        for id in ["npm", "deb", "pip.wheel", "deb"] {
            m.insert(id.to_owned(), inspection(Opinion::Unknown, Some(id)));
        }
        m.insert("deb".to_owned(), inspection(Opinion::Approved, None));
        assert_eq!(m.len(), 3);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["deb", "npm", "pip.wheel"]);
        assert_eq!(m.get("deb").unwrap().opinion, Opinion::Approved);
        assert_eq!(
            m.values().filter(|i| i.opinion == Opinion::Unknown).count(),
            2
        );
    }

    #[test]
    fn header_lists_are_stored_exactly_as_the_vectors_they_replaced() {
        let vectors: Vec<(String, Vec<String>)> = vec![
            ("accept".into(), vec!["a/b".into(), "c/d".into()]),
            ("x-empty".into(), vec![]),
            ("user-agent".into(), vec!["caf\u{e9} \u{fffd}".into()]),
            (
                "accept".into(),
                vec!["listed twice in an old record".into()],
            ),
        ];
        // Built the way the proxy builds them, they are stored as those vectors were.
        let built: HeaderList = [
            ("accept", &["a/b", "c/d"][..]),
            ("user-agent", &["caf\u{e9}"]),
        ]
        .into_iter()
        .collect();
        let as_vectors = vec![
            (
                "accept".to_owned(),
                vec!["a/b".to_owned(), "c/d".to_owned()],
            ),
            ("user-agent".to_owned(), vec!["caf\u{e9}".to_owned()]),
        ];
        assert_eq!(
            crate::codec::encode(&built).unwrap(),
            crate::codec::encode(&as_vectors).unwrap()
        );
        // Whatever an old record held reads back as it was and is written back the same.
        let stored = crate::codec::encode(&vectors).unwrap();
        let read: HeaderList = crate::codec::decode(&stored).unwrap();
        assert_eq!(crate::codec::encode(&read).unwrap(), stored);
        let pairs: Vec<(&str, Vec<&str>)> = read.iter().map(|(n, v)| (n, v.collect())).collect();
        assert_eq!(
            pairs,
            [
                ("accept", vec!["a/b", "c/d"]),
                ("x-empty", vec![]),
                ("user-agent", vec!["caf\u{e9} \u{fffd}"]),
                ("accept", vec!["listed twice in an old record"]),
            ]
        );
        assert_eq!(read.len(), 4);
        assert_eq!(read.get("accept").unwrap().len(), 2);
        assert!(read.get("Accept").is_none());
        let empty: HeaderList =
            crate::codec::decode(&crate::codec::encode(&HeaderList::default()).unwrap()).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.iter().count(), 0);
        assert_ne!(read, empty);
    }

    #[test]
    fn header_values_are_grouped_under_the_first_occurrence_of_their_name() {
        let mut list = HeaderList::default();
        for (name, value) in [
            ("a", "1"),
            ("b", "2"),
            ("a", "3"),
            ("c", "4"),
            ("b", "5"),
            ("c", "6"),
        ] {
            list.push(name, value);
        }
        let pairs: Vec<(&str, Vec<&str>)> = list.iter().map(|(n, v)| (n, v.collect())).collect();
        assert_eq!(
            pairs,
            [
                ("a", vec!["1", "3"]),
                ("b", vec!["2", "5"]),
                ("c", vec!["4", "6"])
            ]
        );
        assert_eq!(list.len(), 3);
        let back: HeaderList = crate::codec::decode(&crate::codec::encode(&list).unwrap()).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn a_header_entry_without_its_values_is_an_error() {
        // A sequence of one (name) tuple where (name, values) pairs belong.
        let bytes = crate::codec::encode(&vec![("accept".to_owned(),)]).unwrap();
        assert!(crate::codec::decode::<HeaderList>(&bytes).is_err());
        let bytes = crate::codec::encode(&vec![("accept", vec![7u32])]).unwrap();
        assert!(crate::codec::decode::<HeaderList>(&bytes).is_err());
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(
            Timestamp::from_micros(0).plus_secs(2).as_micros(),
            2_000_000
        );
        assert_eq!(
            Timestamp::from_micros(1).plus_secs(u64::MAX).as_micros(),
            i64::MAX
        );
        assert_eq!(
            Timestamp::from_micros(5_000_000).minus_secs(2).as_micros(),
            3_000_000
        );
    }
}
