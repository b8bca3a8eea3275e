//! Downstream clusters (docs/SPEC.md §6): where a Project's namespaces live when its cluster is not
//! the management cluster. Registrations are read (`registration`, `credentials`); every replica
//! keeps a worker per registered cluster (`connections`, `worker`), and the cluster's writer writes
//! its copies there; `placement` says which projects are served where and how far their copies are,
//! `condition` what their Project says of it; `ownership` decides with Leases which replica writes
//! each cluster, by `sharding`'s pure assignment of clusters to replicas. A downstream cluster's own
//! webhook reads the management cluster through a checked kubeconfig (`management`).

pub mod condition;
pub mod connections;
pub mod credentials;
pub mod management;
pub mod metrics;
pub mod ownership;
pub mod placement;
pub mod registration;
pub mod sharding;
pub mod worker;
