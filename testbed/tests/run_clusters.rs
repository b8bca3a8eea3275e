//! `make run-clusters` end to end: `local-clusters` brings up a management control plane running
//! scoped-secrets and two downstream ones registered in it; the walkthrough it prints (Rancher's
//! example across clusters) runs as printed: the copies of `test-secret` appear in c-abc123's
//! namespaces of the project (and in one joining later) and none in c-def456's namespace of its
//! project of the same name; c-abc123's own webhook keeps a copy there read-only. An interrupt
//! (Ctrl-C) leaves no process behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testbed::kubectl::{fails, kubectl_line_with, ok, stdout};
use testbed::walkthrough::{self, Supervisor, processes_mentioning};

#[test]
fn run_clusters_copies_rancher_example_downstream_and_ctrl_c_leaves_no_process_behind() {
    let supervisor = Path::new(env!("CARGO_BIN_EXE_local-clusters"));
    walkthrough::assert_product_beside(supervisor);
    let dir = Path::new(testbed::env::REPO)
        .join(format!("target/run-clusters-test/{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.display().to_string();
    let run = Supervisor::start(
        Command::new(supervisor)
            .arg(format!("--dir={dir_text}"))
            // Should this test fail half-way, everything stops once the test binary is gone.
            .arg(format!("--watch-pid={}", std::process::id())),
    );
    let line = &run.ready;
    let kubeconfigs: Vec<&str> = line
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("not ready: {line:?}"))
        .split(' ')
        .collect();
    let kubeconfig_of = |key: &str| {
        kubeconfigs
            .iter()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_owned()
    };
    let (management, abc, def) = (
        kubeconfig_of("kubeconfig"),
        kubeconfig_of("c-abc123"),
        kubeconfig_of("c-def456"),
    );

    let printed_text = run.walkthrough();
    // The supervisor; etcd, the apiserver, the controller manager and the product of the management
    // cluster; etcd, the apiserver and the webhook of each downstream one.
    assert_eq!(processes_mentioning(&dir_text).len(), 11, "{printed_text}");

    let script = walkthrough::commands(&printed_text, "scoped-secrets is serving");
    assert!(
        script.contains("apply -f examples/rancher-clusters/03-test-secret.yaml")
            && script.contains(&format!("export MANAGEMENT={management} C_ABC123={abc}")),
        "the walkthrough lacks Rancher's example: {printed_text}"
    );
    let walked_out = walkthrough::walk(&script);
    // The first plan announced the two copies in c-abc123 before the secret existed, the copy
    // holds the original's data, and the last plan found nothing left to do in any cluster.
    let (before, after) = walked_out
        .split_once("secret/test-secret created")
        .unwrap_or_else(|| panic!("the original was not created: {walked_out}"));
    let announced = before
        .split_once("Cluster c-abc123 ")
        .and_then(|(_, rest)| rest.split("\nCluster ").next())
        .unwrap_or_else(|| panic!("no plan for c-abc123: {before}"));
    for expected in [
        "Copies to create (2):",
        "team-a/test-secret (from c-abc123-p-vwxyz/test-secret)",
        "team-b/test-secret (from c-abc123-p-vwxyz/test-secret)",
    ] {
        assert!(announced.contains(expected), "{expected:?} in {announced}");
    }
    assert!(after.contains("\ndog\n"), "{after}");
    let last_plan = after.rsplit_once("dog\n").map_or("", |(_, plan)| plan);
    for cluster in ["local", "c-abc123", "c-def456"] {
        assert!(
            last_plan.contains(&format!("Cluster {cluster} ")),
            "{cluster} in {last_plan}"
        );
    }
    assert_eq!(
        last_plan
            .matches("No changes: every copy is in place.")
            .count(),
        3,
        "{last_plan}"
    );

    let kubectl = |kubeconfig: &str, line: &str| kubectl_line_with(Path::new(kubeconfig), line);
    for ns in ["team-a", "team-b"] {
        let copy = ok(kubectl(
            &abc,
            &format!("get secret test-secret -n {ns} -o jsonpath={{.data.key}}"),
        ));
        assert_eq!(copy, "ZG9n", "the copy in c-abc123/{ns}");
    }
    let elsewhere = kubectl(
        &def,
        "get secrets -A --field-selector metadata.name=test-secret -o name",
    );
    assert_eq!(stdout(&elsewhere), "", "no copy in c-def456");
    ok(kubectl(
        &management,
        "get secret test-secret -n c-abc123-p-vwxyz",
    ));
    // A namespace joining the project in c-abc123 receives the copy.
    ok(kubectl(&abc, "create namespace team-c"));
    ok(kubectl(
        &abc,
        "annotate namespace team-c field.cattle.io/projectId=c-abc123:p-vwxyz",
    ));
    ok(kubectl(
        &abc,
        "wait secret/test-secret -n team-c --for=create --timeout=10s",
    ));
    let refused = fails(kubectl(&abc, "delete secret test-secret -n team-a"));
    assert!(
        refused
            .contains(r#"admission webhook "secret-guard.scoped-secrets.io" denied the request"#),
        "{refused}"
    );

    run.interrupt(Duration::from_secs(60));
    assert!(
        processes_mentioning(&dir_text).is_empty(),
        "processes were left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
