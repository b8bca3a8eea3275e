//! End-to-end tests against a real etcd + kube-apiserver on 127.0.0.1 and the machine's `kubectl`.
//! One control plane and one server under test for the whole binary (see `support`).

mod support;

mod admission;
mod attacks;
mod foundation;
mod membership;
mod projects;
