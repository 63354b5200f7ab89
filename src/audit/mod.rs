//! What happened: the audit record types live in `fetchgate-storage`; this module
//! computes the body digests that go into them. The report clients read is folded from
//! the records by `fetchgate-report` (a leaf crate, so it can be fuzzed without RocksDB),
//! re-exported here as `audit::report`.

pub mod digest;
pub use fetchgate_report as report;
