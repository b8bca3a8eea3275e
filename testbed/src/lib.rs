//! The test bed of scoped-secrets, kept out of the shipped crate: what its tests, benchmarks and
//! `make run` share, the way kube-rs `controller-rs` takes envtest as a dev-dependency.
//!
//! - [`control_plane`]: a real etcd, kube-apiserver and kube-controller-manager on loopback ports,
//!   started in-process as child processes and stopped when their guard is dropped (or when the
//!   process that started them exits, however it exits);
//! - [`clusters`]: registering a control plane as a downstream cluster;
//! - [`downstream`]: a downstream cluster (a control plane of its own with the copier's access),
//!   registered in a management cluster with a copier token, its credentials revoked and restored;
//! - [`registration`]: `deploy/`'s prerequisites and webhook configurations, pointed at 127.0.0.1;
//! - [`serving`]: `scoped-secrets serve` supervised beside a control plane, as `make run` and
//!   `make run-clusters` run it;
//! - [`env`]: the environment a test binary shares (one control plane, the server under test
//!   in-process as the product's service account, its webhooks registered);
//! - [`kubectl`], [`fixtures`], [`wait`]: what a test types, creates and waits for;
//! - [`harness`]: a reconciler of a test's own, and what its tests read back;
//! - [`process`]: child processes of benchmarks and tests, signals and memory figures.
//!
//! `use testbed::prelude::*` brings what nearly every end-to-end test uses.

pub mod apiserver;
pub mod clusters;
pub mod control_plane;
pub mod downstream;
pub mod env;
pub mod fixtures;
pub mod harness;
pub mod kubectl;
pub mod process;
pub mod rbac;
pub mod registration;
pub mod serving;
pub mod wait;
pub mod walkthrough;

/// What nearly every end-to-end test uses.
pub mod prelude {
    pub use crate::env::*;
    pub use crate::fixtures::*;
    pub use crate::kubectl::*;
    pub use crate::wait::*;
}
