//! fetchgate's load-test harness: a built-in origin serving deterministic synthetic
//! artifacts over HTTP and HTTPS, simulated builders that run complete sessions through
//! a proxy and verify each session's report, and the measurements (throughput,
//! latency, errors by kind, the proxy's memory and CPU), how fast a revocation
//! reaches the other node of an HA pair, and a log of every download the builders saw
//! complete, to count a crashed proxy's reports against.
//!
//! It does not link fetchgate itself: it drives a fetchgate binary (or any forward
//! proxy, or none) over the network, so the same work can be measured through squid.
//! All traffic stays on loopback, and no proxy or CA setting is read from the
//! environment.

pub mod apt_repo;
pub mod client;
pub mod completions;
pub mod content;
pub mod control;
pub mod harness;
pub mod idle;
pub mod origin;
pub mod procstat;
pub mod progress;
pub mod revocation;
pub mod stats;
pub mod target;
pub mod tls;
pub mod units;
pub mod verify;
pub mod workload;
