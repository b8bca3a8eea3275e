//! Who may move namespaces into, out of and between projects (N1), which namespaces never join
//! one, and what the webhook announces about a membership change (N3, M1), acting as the users
//! who try it.

use crate::common::{
    GUARD, NAMESPACE_GUARD, a_copy_of_db, a_marked_copy_of_db, assert_denied, assert_warned,
    grant_namespace_editing, original,
};
use scoped_secrets::keys;
use scoped_secrets::message;
use testbed::prelude::*;

fn set_project(ns: &str, project_id: &str, user: &str, extra: &[&str]) -> std::process::Output {
    let value = format!("{}={project_id}", keys::PROJECT_ID_KEY);
    let as_user = format!("--as={user}");
    let mut args = vec!["annotate", "namespace", ns, &value, "--overwrite", &as_user];
    args.extend_from_slice(extra);
    kubectl(&args)
}

fn leave_project(ns: &str, user: &str) -> std::process::Output {
    kubectl_line(&format!(
        "annotate namespace {ns} {}- --as={user}",
        keys::PROJECT_ID_KEY
    ))
}

fn project_of(ns: &str) -> String {
    ok(kubectl(&[
        "get",
        "namespace",
        ns,
        "-o",
        "jsonpath={.metadata.annotations.field\\.cattle\\.io/projectId}",
    ]))
}

#[test]
fn protected_namespaces_never_join_a_project_whoever_asks() {
    let project = project("prot");
    grant_namespace_editing(&project);
    // alice may manage the project's namespaces and edit every namespace; still refused.
    for ns in [
        "kube-public",
        "kube-system",
        "kube-node-lease",
        "scoped-secrets-system",
    ] {
        let err = fails(set_project(
            ns,
            &project.id(),
            "alice",
            &["--dry-run=server"],
        ));
        assert_denied(
            &err,
            NAMESPACE_GUARD,
            &format!(
                "namespace \"{ns}\" is protected (kube-node-lease, kube-public, kube-system, \
                 scoped-secrets-system): it never receives project-scoped secrets, so it cannot \
                 join project {}; remove annotation {}",
                project.id(),
                keys::PROJECT_ID_KEY
            ),
        );
    }
    let err = fails(set_project("kube-public", &project.id(), "bob", &[]));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        "namespace \"kube-public\" is protected",
    );
    assert_eq!(project_of("kube-public"), "");
}

#[test]
fn leaving_a_project_needs_manage_namespaces_on_it() {
    let project = project("leave");
    grant_namespace_editing(&project);
    let ns = namespace_in(&project, "leave");
    let err = fails(leave_project(&ns, "bob"));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"bob\" may not move namespace \"{ns}\" out of project {}: that needs verb \
             manage-namespaces on projects.management.cattle.io \"{}\" in namespace \"local\"",
            project.id(),
            project.name
        ),
    );
    assert_eq!(project_of(&ns), project.id());
    ok(leave_project(&ns, "alice"));
    assert_eq!(project_of(&ns), "");
}

#[test]
fn moving_a_namespace_needs_manage_namespaces_on_both_projects() {
    let (mine, theirs) = (project("move-mine"), project("move-theirs"));
    // alice manages `mine` only.
    grant_namespace_editing(&mine);
    let in_theirs = namespace_in(&theirs, "move-in");
    let in_mine = namespace_in(&mine, "move-out");
    // Out of `theirs` into `mine`, then out of `mine` into `theirs`.
    for (ns, to, refused_move) in [
        (&in_theirs, &mine, format!("out of project {}", theirs.id())),
        (&in_mine, &theirs, format!("into project {}", theirs.id())),
    ] {
        let err = fails(set_project(ns, &to.id(), "alice", &[]));
        assert_denied(
            &err,
            NAMESPACE_GUARD,
            &format!("user \"alice\" may not move namespace \"{ns}\" {refused_move}"),
        );
    }
    assert_eq!(project_of(&in_theirs), theirs.id());
    assert_eq!(project_of(&in_mine), mine.id());
}

/// The webhook announces what the reconciler will do: a name held by another project's original
/// is a conflict there (never overwritten), so it is no "will overwrite" here either.
#[test]
fn a_name_held_by_another_projects_original_is_announced_as_not_copied() {
    let (joined, other) = (project("held-p"), project("held-q"));
    original(&joined, "db");
    original(&other, "db");
    let value = format!("{}={}", keys::PROJECT_ID_KEY, joined.id());
    let out = kubectl(&[
        "annotate",
        "namespace",
        &other.backing,
        &value,
        "--dry-run=server",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = format!(
        "1 secret of project {} not copied into \"{}\": another project's original holds the name",
        joined.id(),
        other.backing
    );
    assert_warned(&out, &message::warning_list(&head, &["db"]));
    assert!(!stderr(&out).contains("overwrite"), "{}", stderr(&out));
}

#[test]
fn a_projectid_label_set_alone_is_reset_with_a_warning() {
    let project = project("lbl");
    let ns = namespace_in(&project, "lbl");
    let value = format!("{}=p-elsewhere", keys::PROJECT_ID_KEY);
    let out = kubectl_line(&format!("label namespace {ns} {value} --overwrite"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_warned(
        &out,
        &format!(
            "label {key} was reset to {p}: it mirrors the annotation; change the annotation to move",
            key = keys::PROJECT_ID_KEY,
            p = project.name
        ),
    );
    let label = ok(kubectl(&[
        "get",
        "namespace",
        &ns,
        "-o",
        "jsonpath={.metadata.labels.field\\.cattle\\.io/projectId}",
    ]));
    assert_eq!(label, project.name);
}

/// S7 announces removals only for requests that are admitted: an update the guard refuses removes
/// nothing, so it must not say it will.
#[test]
fn removals_are_not_announced_for_a_refused_request() {
    let (project, _ns) = a_copy_of_db("s7d");
    // Dropping the label (S7: the copy would go) while forging a copy marker (S4: refused).
    let patch = format!(
        r#"{{"metadata":{{"labels":{{"{}":null}},"annotations":{{"{}":"x/y"}}}}}}"#,
        keys::PROJECT_SCOPED_LABEL,
        keys::ORIGIN_ANNOTATION
    );
    let err = fails(kubectl_line(&format!(
        "patch secret db -n {} --type=merge -p {patch}",
        project.backing
    )));
    assert_denied(
        &err,
        GUARD,
        "only the scoped-secrets reconciler may set copy markers",
    );
    assert!(!err.contains("will be removed"), "{err}");
}

/// Under the warn policy a copy may have replaced the namespace's own secret; leaving the project
/// removes the copy and that secret does not come back: the leave warning names such copies.
#[test]
fn leaving_names_the_copies_that_had_replaced_the_namespaces_own_secrets() {
    let (_project, ns) = a_marked_copy_of_db("lost", |project| {
        format!(
            "{}: {}/db, {}: \"true\"",
            keys::ORIGIN_ANNOTATION,
            project.backing,
            keys::REPLACED_ANNOTATION
        )
    });
    let removed = format!("{}-", keys::PROJECT_ID_KEY);
    let out = kubectl_line(&format!(
        "annotate namespace {ns} {removed} --dry-run=server"
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_warned(
        &out,
        &format!(
            "1 removed copy had replaced namespace \"{ns}\"'s own secrets, which do not come \
             back: db"
        ),
    );
}
