//! What the storage benches share: a runtime and a RocksDB store in a fresh directory.

use std::sync::Arc;

use fetchgate_storage::rocks::RocksStorage;

/// A multi-threaded runtime and a store in a temporary directory (kept alive by the
/// returned guard).
pub fn runtime_and_store() -> (
    tokio::runtime::Runtime,
    tempfile::TempDir,
    Arc<RocksStorage>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksStorage::open(dir.path()).unwrap());
    (rt, dir, store)
}
