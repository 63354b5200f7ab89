//! fetchgate's configuration formats, from text to typed and validated values: the
//! daemon's `fetchgate.toml` ([`file`]), the destination ACL of `acl.yaml` and of
//! `[acl]` ([`acl`]), and the trusted origins of `inspectors.yaml` and of a session's
//! `inspectors-configuration` ([`inspectors`]). Every error names the key that caused it.
//!
//! This crate reads no file and opens no socket: the daemon reads the files, checks
//! what depends on the machine (paths that must exist, signing keys) and wires the values
//! in. Keeping the parsing here lets the fuzz targets in `fuzz/` attack it alone.

pub mod acl;
pub mod file;
pub mod inspectors;
