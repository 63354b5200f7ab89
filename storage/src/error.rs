//! The one error type of the storage boundary.

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stored record carries a format version this build cannot read.
    #[error("stored record has format version {found}, this build reads version {supported}")]
    UnsupportedVersion { found: u8, supported: u8 },
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// A record could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(String),
    /// A session with this id already exists.
    #[error("session {0} already exists")]
    AlreadyExists(String),
    /// The backend failed (I/O, RocksDB, a stopped writer).
    #[error("storage backend: {0}")]
    Backend(String),
}

#[cfg(feature = "rocksdb")]
impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Backend(e.into_string())
    }
}

/// Result of a storage operation.
pub type Result<T> = std::result::Result<T, Error>;
