//! End-to-end tests against a real etcd + kube-apiserver on 127.0.0.1 and the machine's `kubectl`.
//! One control plane and one server under test for the whole binary (see `testbed::env`).

// The admission rules, one file per rule of docs/SPEC.md §2, and what they share.
mod common;
mod mutations;
mod n1_joining;
mod n2_project_ids;
mod n3_announcements;
mod s1_names;
mod s2_overwrites;
mod s3_labels;
mod s4_forged_copies;
mod s5_read_only_copies;
mod s6_what_can_be_scoped;
mod s7_consequences;

// The server's behaviour around the rules.
mod audit;
mod outage;
mod rancher_example;

mod attacks;
mod foundation;
mod membership;
mod projects;
