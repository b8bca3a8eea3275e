//! S5: copies are read-only.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use std::time::Duration;
use testbed::prelude::*;

#[test]
fn s5_updating_or_deleting_a_copy_is_denied() {
    let (project, ns) = a_copy_of_db("s5");
    let expected = format!(
        "secret \"db\" in namespace \"{ns}\" is a copy of project-scoped secret \"{}\"; change \
         the original instead",
        origin(&project, "db")
    );
    let err = fails(kubectl_line(&format!(
        "annotate secret db -n {ns} edited=yes"
    )));
    assert_denied(&err, GUARD, &expected);
    let err = fails(kubectl_line(&format!("delete secret db -n {ns}")));
    assert_denied(&err, GUARD, &expected);
    let err = fails(kubectl_line(&format!(
        "delete secret db -n {ns} --dry-run=server"
    )));
    assert_denied(&err, GUARD, &expected);
    // Still there, unchanged.
    let annotations = ok(kubectl(&[
        "get",
        "secret",
        "db",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]));
    assert!(!annotations.contains("edited"), "{annotations}");
}

#[test]
fn s5_copies_in_a_terminating_namespace_may_be_changed() {
    let (_project, ns) = a_copy_of_db("s5t");
    // The namespace controller would empty the namespace and remove it; a finalizer on the copy
    // itself holds both while the test edits it, as a finalizer of some controller would.
    let hold = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    let mut args = vec![
        "patch",
        "secret",
        "db",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        hold,
    ];
    // As the reconciler's user (which the webhook skips), lent the admin's group: its RBAC has no
    // patch.
    args.extend_from_slice(&[
        "--as=system:serviceaccount:scoped-secrets-system:scoped-secrets",
        "--as-group=system:masters",
    ]);
    ok(kubectl(&args));
    ok(kubectl_line(&format!("delete namespace {ns} --wait=false")));
    indexed("the namespace terminating", |w| {
        w.namespace(&ns).is_some_and(|n| n.terminating)
    });
    let out = ok(kubectl_line(&format!(
        "annotate secret db -n {ns} edited=yes"
    )));
    assert!(out.contains("secret/db annotated"), "{out}");
    // Stripped of its markers while it keeps the label it would become a secret of its own, held
    // whole by every replica (S3): refused, as a copy may have grown first.
    let mut strip = vec!["annotate", "secret", "db", "-n", &ns];
    let removals: Vec<String> = keys::COPY_MARKERS.iter().map(|k| format!("{k}-")).collect();
    strip.extend(removals.iter().map(String::as_str));
    let err = fails(kubectl(&strip));
    assert!(err.contains("(CopyMarkersRemoved)"), "{err}");
    let expected = format!(
        "secret \"db\" in namespace \"{ns}\" is a copy: removing its copy markers while it keeps \
         label {} would make it a secret of its own outside every backing namespace; remove the \
         label too",
        keys::PROJECT_SCOPED_LABEL
    );
    assert_denied(&err, GUARD, &expected);
    // Released (also a change to a copy in a terminating namespace), the namespace goes away.
    let release = r#"[{"op":"remove","path":"/metadata/finalizers"}]"#;
    ok(kubectl(&[
        "patch",
        "secret",
        "db",
        "-n",
        &ns,
        "--type=json",
        "-p",
        release,
    ]));
    eventually(
        &format!("namespace {ns} to disappear"),
        Duration::from_secs(40),
        || {
            let out = kubectl_line(&format!("get namespace {ns}"));
            stderr(&out).contains("NotFound").then_some(())
        },
    );
}

#[test]
fn s5_deleting_a_copy_that_no_original_wants_is_allowed() {
    let project = project("s5d");
    let ns = namespace_in(&project, "s5d");
    // A copy whose original is gone (debris the reconciler would remove too).
    copy_as_reconciler(&project, &ns, "orphan");
    let out = kubectl_line(&format!("delete secret orphan -n {ns}"));
    if reconciler_running() && stderr(&out).contains("NotFound") {
        return; // the reconciler removed the debris first
    }
    let out = ok(out);
    assert!(out.contains("secret \"orphan\" deleted"), "{out}");
}

#[test]
fn s5_a_rancher_copy_without_our_origin_annotation_is_read_only_too() {
    // Rancher's copier marks copies without scoped-secrets.io/origin: the origin is found through
    // the project its label names.
    let (project, ns) = a_marked_copy_of_db("s5r", |_| {
        format!("{}: \"true\"", keys::USER_SECRET_ANNOTATION)
    });
    let err = fails(kubectl_line(&format!("delete secret db -n {ns}")));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "secret \"db\" in namespace \"{ns}\" is a copy of project-scoped secret \"{}\"; change \
             the original instead",
            origin(&project, "db")
        ),
    );
}
