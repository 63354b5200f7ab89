//! fetchgate: a forward proxy for build farms that records and verifies every download.
//!
//! The flow of one download reads top to bottom: `proxy` (accept, auth, intercept) →
//! `inspect` (what is it, may it pass) → `audit` (what happened) → `fetchgate-storage`
//! (where it is kept). The control API in `control` reads the same stores. See
//! `docs/architecture.md`.

pub mod audit;
pub mod ca;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod debtags;
pub mod http_client;
pub mod idle;
pub mod inspect;
pub mod memory;
pub mod proxy;
pub use fetchgate_report::rfc3339;
pub mod session;
pub mod telemetry;
pub mod webhook;
