//! Rancher's documented example.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use testbed::prelude::*;

/// Project `p-vwxyz` of Rancher's documentation, created idempotently (its name cannot be unique).
fn project_p_vwxyz() -> TestProject {
    project_named("p-vwxyz", "Rancher docs example")
}

#[test]
fn rancher_documented_example_is_admitted_and_gets_the_cluster_label() {
    let project = project_p_vwxyz();
    // Verbatim from the Rancher documentation, but for the backing namespace's name.
    let yaml = "apiVersion: v1
data:
  key: ZG9n
kind: Secret
metadata:
  labels:
    management.cattle.io/project-scoped-secret: p-vwxyz
  name: test-secret
  namespace: c-abc123-p-vwxyz
type: Opaque
"
    .replace("c-abc123-p-vwxyz", &project.backing);
    let dry = kubectl_apply(&yaml, &["--dry-run=server", "-o", "yaml"]);
    let dry_yaml = stdout(&dry);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        dry_yaml
            .lines()
            .any(|l| l == "    management.cattle.io/project-scoped-secret-cluster: local"),
        "{dry_yaml}"
    );
    let out = kubectl_apply(&yaml, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        ["created", "configured", "unchanged"]
            .iter()
            .any(|verb| stdout(&out).contains(&format!("secret/test-secret {verb}"))),
        "{}",
        stdout(&out)
    );
    let labels = ok(kubectl(&[
        "get",
        "secret",
        "test-secret",
        "-n",
        &project.backing,
        "-o",
        "jsonpath={.metadata.labels.management\\.cattle\\.io/project-scoped-secret-cluster}",
    ]));
    assert_eq!(labels, "local");
}
