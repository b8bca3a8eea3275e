//! Downstream clusters (issue #11, in progress): where a Project's namespaces live when its cluster
//! is not the management cluster. So far only the reading of registrations is here; the per-cluster
//! workers that watch and write downstream are planned (docs/SPEC.md §6).

pub mod credentials;
pub mod registration;
