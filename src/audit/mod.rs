//! What happened: the audit record types live in `fetchgate-storage`; this module turns
//! a session's records into the report clients read.

pub mod report;
