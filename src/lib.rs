//! scoped-secrets: an admission webhook and an embedded reconciler for Rancher-style
//! project-scoped secrets. A pure core (`world`, `policy`, `plan`) with thin I/O around it.

pub mod certs;
pub mod keys;
pub mod plan;
pub mod policy;
pub mod watch;
pub mod webhook;
pub mod world;
pub mod admin;
pub mod cli;
pub mod metrics;
pub mod serve;
pub mod telemetry;
pub mod registration;
