//! scoped-secrets: an admission webhook and an embedded reconciler for Rancher-style
//! project-scoped secrets. A pure core (`world`, `policy`, `plan`) with thin I/O around it.

pub mod admin;
pub mod apiserver;
pub mod certs;
pub mod cli;
pub mod clusters;
pub mod coordination;
pub mod endpoints;
pub mod index;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod plan;
pub mod plan_downstream;
pub mod plan_load;
pub mod policy;
pub mod project;
pub mod reconciler;
pub mod report;
pub mod scoped;
pub mod serve;
pub mod telemetry;
pub mod webhook;
pub mod world;
