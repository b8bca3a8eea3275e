//! `scoped-secrets plan` across clusters (issue #11 item 6): the management cluster is the test's
//! own apiserver, a downstream one is started here (its own etcd and kube-apiserver) and registered
//! by a Secret in the product's namespace. The plan is grouped by cluster; a registered cluster that
//! cannot be read (no answer, or its credentials refused) is reported as such, never planned as
//! empty, and the exit status says so.

use super::clusters::register;
use scoped_secrets::keys;
use std::path::Path;
use std::process::{Command, Output};
use testbed::control_plane::{ControlPlane, Options};
use testbed::harness::*;
use testbed::prelude::*;

const DOWNSTREAM: &str = "c-plan1";
const UNREACHABLE: &str = "c-plan-down";
const DENIED: &str = "c-plan-denied";
/// A token the downstream apiserver does not know; never to be printed.
const WRONG_TOKEN: &str = "wrong-token-never-quoted";

/// A registration Secret of the test, deleted when dropped: a failing test leaves no cluster
/// registered for the next one.
struct Registered(String);

impl Registered {
    fn new(cluster: &str, kubeconfig: &str) -> Self {
        let name = unique(&format!("reg-{cluster}"));
        register(&name, cluster, kubeconfig);
        Self(name)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "secret",
            &self.0,
            "-n",
            LEASE_NAMESPACE,
            "--ignore-not-found",
        ]);
    }
}

/// A Project of `cluster` in the management cluster, its backing namespace, and one original
/// `test-secret` there; returns the project's name and backing namespace.
fn project_of(cluster: &str, prefix: &str) -> (String, String) {
    let TestProject { name, backing, .. } = project_in(cluster, &unique(prefix));
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: test-secret
  namespace: {backing}
  labels: {{{scoped}: {name}, {cluster_label}: {cluster}}}
stringData: {{key: dog}}
",
            scoped = keys::PROJECT_SCOPED_LABEL,
            cluster_label = keys::PROJECT_SCOPED_CLUSTER_LABEL,
        ),
        &[],
    ));
    (name, backing)
}

/// Namespace `ns` in project `<cluster>:<project>`, annotated and labelled as Rancher does.
fn member_yaml(ns: &str, cluster: &str, project: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  annotations: {{{key}: \"{cluster}:{project}\"}}
  labels: {{{key}: {project}}}
",
        key = keys::PROJECT_ID_KEY
    )
}

/// A namespace of the management cluster in project `<cluster>:<project>`.
fn member_here(cluster: &str, project: &str, prefix: &str) -> String {
    let ns = unique(prefix);
    ok(kubectl_apply(&member_yaml(&ns, cluster, project), &[]));
    ns
}

/// The product's `plan` binary against the management cluster.
fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scoped-secrets"))
        .arg("plan")
        .args(args)
        .env("KUBECONFIG", &env().kubeconfig)
        .env("SCOPED_SECRETS_PLAN_CLUSTER_TIMEOUT", "5")
        .output()
        .expect("scoped-secrets plan runs")
}

/// The text report's group of `cluster`: from its `Cluster <id> (` line to the next group.
fn group<'a>(text: &'a str, cluster: &str) -> &'a str {
    let start = text
        .find(&format!("Cluster {cluster} ("))
        .unwrap_or_else(|| panic!("no group for {cluster}: {text}"));
    let rest = &text[start..];
    let end = rest[1..].find("\nCluster ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// The server of a kubeconfig's cluster.
fn server_of(kubeconfig: &str) -> String {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server")
        .to_owned()
}

/// The bearer token of a test control plane's kubeconfig (`user: {token: ...}`).
fn token(kubeconfig: &Path) -> String {
    std::fs::read_to_string(kubeconfig)
        .expect("a kubeconfig")
        .lines()
        .find_map(|l| l.trim().strip_prefix("user: {token: ")?.strip_suffix('}'))
        .expect("an inline token")
        .to_owned()
}

#[test]
fn plan_groups_by_cluster_and_never_plans_an_unreadable_one_as_empty() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let downstream = ControlPlane::start_blocking(
        &Options::new(dir.path().join("downstream")).without_controller_manager(),
    )
    .expect("a downstream control plane");
    let (project, backing) = project_of(DOWNSTREAM, "pc");
    let (down_project, down_backing) = project_of(UNREACHABLE, "pd");
    // A namespace of each project in the management cluster, as before the clusters were
    // registered: served here until the project's copies are in place in its own cluster.
    let here = member_here(DOWNSTREAM, &project, "here");
    let here_down = member_here(UNREACHABLE, &down_project, "here-down");
    // The project's namespaces live downstream, as Rancher annotates them there.
    let members = [unique("ds-a"), unique("ds-b")];
    for ns in &members {
        ok(kubectl_stdin(
            &downstream.kubeconfig,
            &["apply", "-f", "-"],
            &member_yaml(ns, DOWNSTREAM, &project),
        ));
    }
    let kubeconfig = std::fs::read_to_string(&downstream.kubeconfig).expect("its kubeconfig");
    let secret_token = token(&downstream.kubeconfig);
    let _good = Registered::new(DOWNSTREAM, &kubeconfig);
    let server = server_of(&kubeconfig);
    let bad = Registered::new(
        UNREACHABLE,
        &kubeconfig.replace(&server, "https://127.0.0.1:1"),
    );
    let denied = Registered::new(DENIED, &kubeconfig.replace(&secret_token, WRONG_TOKEN));

    let out = plan(&[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    assert!(
        text.starts_with("Cluster local (the management cluster):\n"),
        "{text}"
    );
    let local = group(&text, "local");
    let planned = group(&text, DOWNSTREAM);
    for ns in &members {
        let line = format!("    {ns}/test-secret (from {backing}/test-secret)\n");
        assert!(
            planned.contains(&line),
            "{line:?} not under {DOWNSTREAM}: {text}"
        );
        assert!(
            !local.contains(&format!("{ns}/")),
            "{ns} planned in the management cluster: {text}"
        );
    }
    assert!(planned.contains("  Copies to create (2):\n"), "{text}");
    // Not in place downstream yet, and the other cluster unreadable: both still served here.
    for ns in [&here, &here_down] {
        assert!(
            local.contains(&format!("    {ns}/test-secret (from ")),
            "{ns}: {text}"
        );
    }
    let unread = group(&text, UNREACHABLE);
    assert!(unread.contains("https://127.0.0.1:1"), "{unread}");
    assert!(
        unread.contains("CANNOT BE READ") && unread.contains("unreachable"),
        "{unread}"
    );
    assert!(
        !unread.contains("No changes") && !unread.contains("Plan:"),
        "an unreadable cluster planned: {unread}"
    );
    let refused = group(&text, DENIED);
    assert!(
        refused.contains("CANNOT BE READ")
            && refused.contains("credentials refused")
            && refused.contains("401"),
        "{refused}"
    );
    assert!(!refused.contains("Plan:"), "{refused}");
    assert!(text.contains("2 of 4 clusters cannot be read"), "{text}");
    for leak in [secret_token.as_str(), WRONG_TOKEN, "dog", "ZG9n"] {
        assert!(!text.contains(leak), "{leak} in the plan: {text}");
    }

    // The same grouping as JSON.
    let out = plan(&["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let clusters = json["clusters"].as_array().expect("clusters");
    assert_eq!(clusters[0]["cluster"], "local");
    assert_eq!(clusters[0]["management"], true);
    let find = |id: &str| {
        clusters
            .iter()
            .find(|c| c["cluster"] == id)
            .unwrap_or_else(|| panic!("no {id} in {json}"))
    };
    let creates: Vec<&str> = find(DOWNSTREAM)["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "create")
        .filter_map(|a| a["namespace"].as_str())
        .collect();
    assert_eq!(
        creates,
        [members[0].as_str(), members[1].as_str()],
        "{json}"
    );
    assert_eq!(find(DOWNSTREAM)["summary"]["create"], 2);
    let down = find(UNREACHABLE);
    assert_eq!(down["readable"], false, "{down}");
    assert!(
        down["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unreachable")),
        "{down}"
    );
    assert!(
        down.get("actions").is_none() && down.get("summary").is_none(),
        "{down}"
    );
    assert_eq!(find(DENIED)["readable"], false);
    assert_eq!(json["unreadable"], 2);
    let local_namespaces: Vec<&str> = clusters[0]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["namespace"].as_str())
        .collect();
    for ns in &members {
        assert!(!local_namespaces.contains(&ns.as_str()), "{json}");
    }

    // Without the unreachable registration every cluster is read: exit status 0. With the
    // downstream namespaces gone from the project, c-plan1 has nothing to do, so its project is
    // in place there and no longer served here; c-plan-down's, no longer registered, still is.
    drop((bad, denied));
    for ns in &members {
        for verb in ["annotate", "label"] {
            let key = format!("{}-", keys::PROJECT_ID_KEY);
            ok(kubectl_with(
                &downstream.kubeconfig,
                &[verb, "namespace", ns, &key],
            ));
        }
    }
    let out = plan(&[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(!text.contains("cannot be read"), "{text}");
    assert!(group(&text, DOWNSTREAM).contains("No changes"), "{text}");
    let local = group(&text, "local");
    assert!(!local.contains(&format!("{here}/")), "{text}");
    assert!(
        local.contains(&format!("    {here_down}/test-secret (from ")),
        "{text}"
    );
    for gone in [UNREACHABLE, DENIED] {
        assert!(!text.contains(&format!("Cluster {gone} (")), "{text}");
    }

    // The cluster namespaces take their Projects with them.
    for namespace in [here, here_down, backing, down_backing]
        .iter()
        .map(String::as_str)
        .chain([DOWNSTREAM, UNREACHABLE])
    {
        ok(kubectl(&["delete", "namespace", namespace, "--wait=false"]));
    }
}

#[test]
fn a_cluster_that_never_answers_is_given_up_after_the_timeout() {
    let _serial = serial();
    // Accepts connections (the kernel completes them) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let address = silent.local_addr().expect("its address");
    let kubeconfig = std::fs::read_to_string(&env().kubeconfig).expect("a kubeconfig");
    let server = server_of(&kubeconfig);
    let registered = Registered::new(
        "c-plan-silent",
        &kubeconfig.replace(&server, &format!("https://{address}")),
    );
    let started = std::time::Instant::now();
    let out = plan(&["--cluster-timeout", "2"]);
    let took = started.elapsed();
    let text = stdout(&out);
    drop(registered);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    let silent_group = group(&text, "c-plan-silent");
    // The client's connect deadline or the request's own, whichever fires first.
    assert!(silent_group.contains("CANNOT BE READ"), "{text}");
    assert!(
        silent_group.contains("deadline has elapsed")
            || silent_group.contains("no answer within 2s"),
        "{text}"
    );
    assert!(!silent_group.contains("Plan:"), "{text}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "plan took {took:?} with a 2 s timeout"
    );
    eprintln!("plan with a silent cluster and --cluster-timeout 2 took {took:?}");
}

#[test]
fn a_registration_of_the_management_cluster_itself_is_not_planned_as_a_downstream_one() {
    let _serial = serial();
    // The test's own apiserver registered as `c-plan-self`: planned as a downstream cluster, its
    // namespaces would show copies written by two rounds, and the management cluster's own
    // copies of the project deleted as "served elsewhere".
    let (project, backing) = project_of("c-plan-self", "ps");
    let here = member_here("c-plan-self", &project, "self");
    let own =
        std::fs::read_to_string(&env().sa_kubeconfig).expect("the service account kubeconfig");
    let registered = Registered::new("c-plan-self", &own);
    let out = plan(&[]);
    let text = stdout(&out);
    drop(registered);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    let own_group = group(&text, "c-plan-self");
    assert!(own_group.contains("CANNOT BE READ"), "{text}");
    assert!(
        own_group.contains("is the management cluster itself"),
        "{text}"
    );
    // Its project is served in the management cluster, as the reconciler serves it.
    let line = format!("{here}/test-secret (from {backing}/test-secret)");
    assert!(group(&text, "local").contains(&line), "{text}");
    for namespace in [here, backing] {
        ok(kubectl(&[
            "delete",
            "namespace",
            &namespace,
            "--wait=false",
        ]));
    }
}
