//! M1, M2: mutations, seen in -o yaml of a server dry run.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use testbed::prelude::*;

#[test]
fn m1_the_namespace_label_mirrors_the_annotation() {
    let project = project("m1");
    // Missing label: added.
    let ns = unique("m1");
    let out = ok(kubectl_apply(
        &namespace_yaml(&ns, &project.id()),
        &["--dry-run=server", "-o", "yaml"],
    ));
    let label_line = format!("    {}: {}", keys::PROJECT_ID_KEY, project.name);
    assert!(out.lines().any(|l| l == label_line), "{out}");
    // Stale label: corrected.
    let stale = format!(
        "{}  labels: {{{}: p-stale}}\n",
        namespace_yaml(&ns, &project.id()),
        keys::PROJECT_ID_KEY
    );
    let out = ok(kubectl_apply(&stale, &["--dry-run=server", "-o", "yaml"]));
    assert!(out.lines().any(|l| l == label_line), "{out}");
    let stale_line = format!("    {}: p-stale", keys::PROJECT_ID_KEY);
    assert!(!out.lines().any(|l| l == stale_line), "{out}");
}

/// `kubectl patch namespace <ns>` with a merge patch and `extra` flags; the server's answer as YAML
/// (`kubectl label --dry-run=server -o yaml` prints its own edit, not the server's answer).
fn patch_namespace(ns: &str, patch: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "patch",
        "namespace",
        ns,
        "--type=merge",
        "-p",
        patch,
        "-o",
        "yaml",
    ];
    args.extend_from_slice(extra);
    ok(kubectl(&args))
}

#[test]
fn m1_a_projectid_label_without_the_annotation_is_removed() {
    let project = project("m1l");
    let ns = plain_namespace("m1l");
    let labels = format!(
        r#"{{"metadata":{{"labels":{{"{}":"{}"}}}}}}"#,
        keys::PROJECT_ID_KEY,
        project.name
    );
    let out = patch_namespace(&ns, &labels, &["--dry-run=server"]);
    assert!(
        !out.lines()
            .any(|l| l.trim_start().starts_with(keys::PROJECT_ID_KEY)),
        "a label alone must not put a namespace in a project: {out}"
    );
    assert!(
        out.contains(&format!("kubernetes.io/metadata.name: {ns}")),
        "{out}"
    );
}

#[test]
fn m1_an_empty_projectid_annotation_keeps_no_label() {
    // Bob may edit namespaces but not manage the project's: an empty annotation (no project, which
    // the guard's match condition reads like none) beside the project's label must not leave the
    // namespace looking like a member to whatever selects namespaces by that label.
    let project = project("m1e");
    grant_namespace_editing(&project);
    let ns = plain_namespace("m1e");
    let spoof = format!(
        r#"{{"metadata":{{"annotations":{{"{key}":""}},"labels":{{"{key}":"{}"}}}}}}"#,
        project.name,
        key = keys::PROJECT_ID_KEY,
    );
    let out = patch_namespace(&ns, &spoof, &["--as=bob"]);
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with(&format!(
            "{}: {}",
            keys::PROJECT_ID_KEY,
            project.name
        ))),
        "an empty annotation kept the label: {out}"
    );
    let labels = ok(kubectl_line(&format!(
        "get namespace {ns} -o jsonpath={{.metadata.labels}}"
    )));
    assert!(!labels.contains(keys::PROJECT_ID_KEY), "{labels}");
}

#[test]
fn m2_an_empty_project_label_is_filled_and_the_cluster_label_added() {
    let project = project("m2");
    let yaml = secret_yaml(&project.backing, "filled", &scoped_label("\"\""), DATA);
    let out = ok(kubectl_apply(&yaml, &["--dry-run=server", "-o", "yaml"]));
    assert!(
        out.lines()
            .any(|l| l == format!("    {}: {}", keys::PROJECT_SCOPED_LABEL, project.name)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == format!("    {}: local", keys::PROJECT_SCOPED_CLUSTER_LABEL)),
        "{out}"
    );
    // The data is untouched.
    assert!(out.lines().any(|l| l == "  key: ZG9n"), "{out}");
}

#[test]
fn m2_an_update_adds_the_missing_cluster_label() {
    let project = project("m2u");
    // Written by the reconciler's identity, so the mutator did not see the create.
    let yaml = original_yaml(&project, "bare", "");
    let mut args = vec!["create", "-f", "-"];
    args.extend_from_slice(&AS_RECONCILER);
    ok(kubectl_stdin(&env().kubeconfig, &args, &yaml));
    let cluster_label = format!(
        "jsonpath={{.metadata.labels.{}}}",
        keys::PROJECT_SCOPED_CLUSTER_LABEL.replace('.', "\\.")
    );
    let get = || {
        ok(kubectl(&[
            "get",
            "secret",
            "bare",
            "-n",
            &project.backing,
            "-o",
            &cluster_label,
        ]))
    };
    if !reconciler_running() {
        assert_eq!(get(), "", "created without the cluster label");
    }
    indexed("the original", |w| {
        w.scoped(&project.backing, "bare").is_some()
    });
    ok(kubectl_line(&format!(
        "annotate secret bare -n {} team=a",
        project.backing
    )));
    assert_eq!(get(), "local");
}

#[test]
fn m2_server_side_apply_of_an_original_gets_its_labels_filled() {
    let project = project("m2s");
    let yaml = secret_yaml(&project.backing, "ssa", &scoped_label("\"\""), DATA);
    let out = kubectl_apply(&yaml, &["--server-side", "--field-manager=e2e"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let labels: serde_json::Value = serde_json::from_str(&ok(kubectl(&[
        "get",
        "secret",
        "ssa",
        "-n",
        &project.backing,
        "-o",
        "jsonpath={.metadata.labels}",
    ])))
    .expect("labels as JSON");
    assert_eq!(labels[keys::PROJECT_SCOPED_LABEL], project.name.as_str());
    assert_eq!(labels[keys::PROJECT_SCOPED_CLUSTER_LABEL], "local");
    // Applying the same manifest again is no conflict with what the mutator wrote.
    let again = kubectl_apply(&yaml, &["--server-side", "--field-manager=e2e"]);
    assert!(again.status.success(), "{}", stderr(&again));
}
