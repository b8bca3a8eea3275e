//! Downstream clusters (issue #11, in progress): where a Project's namespaces live when its cluster
//! is not the management cluster. In place: registrations are read (`registration`, `credentials`)
//! and the leader keeps a probed connection to each registered cluster (`connections`); `sharding`
//! is the pure assignment of clusters to replicas. The per-cluster workers that watch and write
//! downstream are planned (docs/SPEC.md §6).

pub mod connections;
pub mod credentials;
pub mod ownership;
pub mod registration;
pub mod sharding;
