//! End-to-end tests of the embedded reconciler against a real etcd + kube-apiserver, on the
//! test bed (`testbed::env`: control plane, webhook registered, `kubectl` helpers; `testbed::harness`).
//!
//! A test binary of its own, so a control plane of its own: a reconciler acts on the whole cluster,
//! and would write copies into the admission tests' projects while those assert on what admission
//! alone decides (a name reserved by an original reads differently once its copy has landed).

mod clusters;
mod downstream;
mod downstream_support;
mod lifecycle;
mod ownership;
mod plan_clusters;
mod policies;
mod reconciler;
mod skew;
mod writes;
