//! The project guard (P1–P3) end to end, from the side of an attacker: user `mallory` may only create
//! and get Projects (in the cluster namespaces `local` and `local-p`), and tries to take over another
//! project's backing namespace. What the reconciler does when a claim slips past admission is in
//! `tests/reconciler/projects.rs` (a reconciler acts on the whole cluster, so it runs in that binary).

use crate::common::grant_project_creation;
use scoped_secrets::keys::ProjectId;
use std::sync::OnceLock;
use testbed::prelude::*;

const PROJECT_GUARD: &str = "project-guard.scoped-secrets.io";
const MALLORY: &str = "mallory";
/// A second cluster namespace, whose name plus a project name once gave another project's backing
/// namespace (`local-p` + `vwxyz` = `local` + `p-vwxyz`).
const DASHED_CLUSTER: &str = "local-p";

/// Lets mallory create and get Projects in `local` and `local-p`, and nothing else; waits until the
/// apiserver's RBAC cache says so.
fn mallory() {
    static GRANTED: OnceLock<()> = OnceLock::new();
    GRANTED.get_or_init(|| {
        let dashed_cluster =
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {DASHED_CLUSTER}}}\n");
        ok(kubectl_apply(&dashed_cluster, &[]));
        grant_project_creation(
            "scoped-secrets-e2e-project-creator",
            MALLORY,
            &["local", DASHED_CLUSTER],
        );
    });
}

/// `kubectl create` of a Project as mallory (create only: no get-then-patch as `apply` would do).
fn create_as_mallory(cluster: &str, name: &str, cluster_name: &str) -> std::process::Output {
    let as_mallory = format!("--as={MALLORY}");
    kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-", &as_mallory],
        &format!(
            "apiVersion: management.cattle.io/v3
kind: Project
metadata: {{name: {name}, namespace: {cluster}}}
spec: {{clusterName: {cluster_name}}}
"
        ),
    )
}

#[track_caller]
fn assert_denied(err: &str, message: &str) {
    let expected = format!("admission webhook \"{PROJECT_GUARD}\" denied the request: {message}");
    assert!(
        err.contains(&expected),
        "expected\n  {expected}\nin kubectl's error output:\n  {err}"
    );
}

fn exists(cluster: &str, name: &str) -> bool {
    kubectl_line(&format!("get project {name} -n {cluster}"))
        .status
        .success()
}

#[test]
fn mallory_may_create_an_ordinary_project() {
    // The refusals below are the webhook's, not RBAC's: the same user creates this one.
    mallory();
    let name = unique("p-fine");
    ok(create_as_mallory("local", &name, "local"));
    assert!(exists("local", &name));
}

#[test]
fn a_project_named_after_another_backing_namespace_is_refused() {
    // Hijack (a): `local:a-team` has backing namespace `local-a-team`; a bare Project named
    // `local-a-team` would take it as its legacy backing namespace.
    mallory();
    let victim = project("a-team");
    let attacker = victim.backing.clone();
    let err = fails(create_as_mallory("local", &attacker, "local"));
    assert_denied(
        &err,
        &format!(
            "project local:{attacker} may not be named \"{attacker}\": without \
             status.backingNamespace a project's backing namespace is its own name, and namespace \
             \"{backing}\" is the backing namespace of project {victim}, and a backing namespace \
             belongs to exactly one project (sharing it would remove {victim}'s copies and hand its \
             project-scoped secrets to local:{attacker}); choose another project name",
            backing = victim.backing,
            victim = victim.id(),
        ),
    );
    assert!(!exists("local", &attacker));
    let index = env().index.read();
    assert_eq!(
        index.backing_project(&victim.backing),
        Some(&ProjectId::new("local", victim.name.clone()))
    );
}

#[test]
fn a_project_whose_generated_name_is_another_backing_namespace_is_refused() {
    // Hijack (b), the way it can still arise: `local-p:x` got `local-p-x` from an older version (it
    // is its status now); `local:p-x` would be generated exactly that name.
    mallory();
    let victim = unique("x");
    let backing = project_in(DASHED_CLUSTER, &victim).backing;
    let victim_id = ProjectId::new(DASHED_CLUSTER, victim.clone());
    indexed("the victim's backing namespace", |w| {
        w.backing_project(&backing) == Some(&victim_id)
    });
    let attacker = format!("p-{victim}");
    assert_eq!(
        ProjectId::new("local", attacker.clone()).generated_backing_namespace(),
        backing
    );
    let err = fails(create_as_mallory("local", &attacker, "local"));
    assert_denied(
        &err,
        &format!(
            "project local:{attacker} would get the generated backing namespace \"{backing}\", but \
             namespace \"{backing}\" is the backing namespace of project {victim_id}, and a backing \
             namespace belongs to exactly one project (sharing it would remove {victim_id}'s copies \
             and hand its project-scoped secrets to local:{attacker}); choose another project name"
        ),
    );
    assert!(!exists("local", &attacker));
    // The old collision the other way round is no collision any more: admitted.
    let other = project("p");
    let reversed = other.name.trim_start_matches("p-").to_owned();
    ok(create_as_mallory(DASHED_CLUSTER, &reversed, DASHED_CLUSTER));
    assert_ne!(
        ProjectId::new(DASHED_CLUSTER, reversed).generated_backing_namespace(),
        other.backing
    );
}

#[test]
fn a_status_naming_another_backing_namespace_is_refused_even_for_the_admin() {
    // Only the reconciler's identity skips the guard: an admin's status write is judged too.
    let victim = project("victim");
    let evil = unique("evil");
    ok(kubectl_apply(&project_yaml("local", &evil), &[]));
    let err = fails(patch_backing_namespace("local", &evil, &victim.backing));
    assert_denied(
        &err,
        &format!(
            "project local:{evil} may not have status.backingNamespace \"{backing}\": namespace \
             \"{backing}\" is the backing namespace of project {victim}, and a backing namespace \
             belongs to exactly one project (sharing it would remove {victim}'s copies and hand its \
             project-scoped secrets to local:{evil}); leave status.backingNamespace empty (a backing \
             namespace is then made for the project), or name a namespace no other project uses",
            backing = victim.backing,
            victim = victim.id(),
        ),
    );
}

#[test]
fn cluster_name_other_than_the_namespace_is_refused() {
    mallory();
    let name = unique("p-elsewhere");
    let err = fails(create_as_mallory("local", &name, DASHED_CLUSTER));
    assert_denied(
        &err,
        &format!(
            "project \"{name}\" in namespace \"local\" has spec.clusterName \"{DASHED_CLUSTER}\", \
             which is not its namespace; a project's ID is <namespace>:<name> (local:{name}), and its \
             backing namespace and members are matched by that ID; set spec.clusterName to \
             \"local\", or create the project in namespace \"{DASHED_CLUSTER}\""
        ),
    );
    assert!(!exists("local", &name));
}

#[test]
fn a_name_that_cannot_be_a_namespace_is_refused() {
    // The CRD's own validation answers first (before any webhook), so this holds while the webhook
    // is down too; beside Rancher the project guard says the same.
    mallory();
    let name = unique("p.dotted");
    let err = fails(create_as_mallory("local", &name, "local"));
    let expected = format!(
        "project name \"{name}\" cannot form a namespace name (at most 63 lowercase letters, \
         digits and '-', starting and ending with a letter or digit), and the project's backing \
         namespace is named after it; choose another name"
    );
    assert!(
        err.contains(&expected),
        "expected\n  {expected}\nin:\n  {err}"
    );
    assert!(!exists("local", &name));
}
