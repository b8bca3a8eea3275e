//! Downstream clusters (docs/SPEC.md §6): where a Project's namespaces live when its cluster is not
//! the management cluster. Registrations are read (`registration`, `credentials`); the leader keeps a
//! worker per registered cluster (`connections`, `worker`) that writes its copies there; `placement`
//! says which projects are served where and how far their copies are, `condition` what their
//! Project says of it; `sharding` is the pure assignment of clusters to replicas.

pub mod condition;
pub mod connections;
pub mod credentials;
pub mod metrics;
pub mod placement;
pub mod registration;
pub mod sharding;
pub mod worker;
