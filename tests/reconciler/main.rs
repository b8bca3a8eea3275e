//! End-to-end tests of the embedded reconciler against a real etcd + kube-apiserver, reusing the
//! e2e support (control plane, webhook registered, `kubectl` helpers).
//!
//! A test binary of its own, so a control plane of its own: a reconciler acts on the whole cluster,
//! and would write copies into the admission tests' projects while those assert on what admission
//! alone decides (a name reserved by an original reads differently once its copy has landed).

#[path = "../e2e/support/mod.rs"]
mod support;

mod harness;
mod lifecycle;
mod reconciler;
mod writes;
