//! fetchgate's storage: the session/token store and the per-session audit log, behind
//! traits with pluggable backends (RocksDB, the embedded default; Redis, the session
//! store an HA pair shares; in-memory, for tests). RocksDB and Redis are the default
//! features `rocksdb` and `redis`; without them the crate is the model, the codec and
//! the in-memory backend, which build without C++ (the report's fuzz target uses that).
//!
//! This crate knows nothing of HTTP or sockets: it keeps typed records, encodes them
//! with a versioned codec and answers the queries the daemon needs. It must never
//! acknowledge a write that is not durable.

pub mod codec;
mod error;
pub mod memory;
mod model;
#[cfg(feature = "redis")]
pub mod redis_store;
#[cfg(feature = "rocksdb")]
pub mod rocks;
mod traits;

pub use error::{Error, Result};
pub use model::{
    ArtifactName, AuditRecord, BodyDigest, Counters, Denied, DeniedStage, Download, EndReason,
    Ended, Failure, HeaderList, HeaderValues, Inspection, Inspections, InvalidNodeId,
    InvalidSessionId, NodeId, Opinion, Policy, Retained, SecretRule, SessionHeader, SessionId,
    Timestamp,
};
pub use traits::{AuditLog, NodeSets, SessionStore};
