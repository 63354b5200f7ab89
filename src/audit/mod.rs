//! What happened: the audit record types live in `fetchgate-storage`; this module
//! computes the body digests that go into them and turns a session's records into the
//! report clients read.

pub mod digest;
pub mod report;
