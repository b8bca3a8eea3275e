//! S3: the label belongs to a backing namespace, naming its project.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use testbed::prelude::*;

#[test]
fn s3_the_label_outside_a_backing_namespace_is_denied() {
    let ns = plain_namespace("s3");
    let project = project("s3");
    let yaml = secret_yaml(&ns, "stray", &scoped_label(&project.name), DATA);
    let expected = format!(
        "label {} is only allowed on secrets in a project's backing namespace, and namespace \
         \"{ns}\" is not one; create the secret in the project's backing namespace and the \
         reconciler will copy it here",
        keys::PROJECT_SCOPED_LABEL
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        let err = fails(kubectl_apply(&yaml, dry_run));
        assert_eq!(
            err.trim_end(),
            format!(
                "Error from server (LabelOutsideBackingNamespace): error when creating \"STDIN\": \
                 admission webhook \"{GUARD}\" denied the request: {expected}"
            )
        );
    }
    fails(kubectl_line(&format!("get secret stray -n {ns}")));

    // Adding the label to an existing plain secret is denied too.
    generic(&ns, "plain");
    let err = fails(kubectl(&[
        "label",
        "secret",
        "plain",
        "-n",
        &ns,
        &format!("{}={}", keys::PROJECT_SCOPED_LABEL, project.name),
    ]));
    assert_denied(&err, GUARD, &expected);
}

#[test]
fn s3_a_labelled_secret_outside_a_backing_namespace_may_not_grow() {
    // Neither an original nor a copy (written while the webhook was down, or its project gone):
    // every replica holds it whole, so it may not grow while it keeps the label.
    let ns = plain_namespace("s3g");
    let label = scoped_label("p-gone");
    create_as_reconciler(&secret_yaml(&ns, "stray", &label, DATA));
    indexed("the stray", |w| w.scoped(&ns, "stray").is_some());
    let grown = secret_yaml(
        &ns,
        "stray",
        &label,
        "data: {key: ZG9n, more: ZG9nZG9nZG9n}\n",
    );
    let expected = format!(
        "secret \"stray\" in namespace \"{ns}\" carries label {} but is neither an original (the \
         namespace backs no project) nor a copy: it may not grow while it keeps the label, which \
         every replica of the reconciler holds whole; remove the label first",
        keys::PROJECT_SCOPED_LABEL
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        let mut args = vec!["replace", "-f", "-"];
        args.extend_from_slice(dry_run);
        let err = fails(kubectl_stdin(&env().kubeconfig, &args, &grown));
        assert!(err.contains("(LabelledSecretGrows)"), "{err}");
        assert_denied(&err, GUARD, &expected);
    }
    // The same size passes; once the label is gone, it may grow.
    let same = secret_yaml(&ns, "stray", &label, "data: {key: Y2F0}\n");
    ok(kubectl_stdin(
        &env().kubeconfig,
        &["replace", "-f", "-"],
        &same,
    ));
    let unlabelled = format!("{}-", keys::PROJECT_SCOPED_LABEL);
    ok(kubectl(&[
        "label",
        "secret",
        "stray",
        "-n",
        &ns,
        &unlabelled,
    ]));
    let grown = secret_yaml(&ns, "stray", "", "data: {key: ZG9n, more: ZG9nZG9nZG9n}\n");
    ok(kubectl_stdin(
        &env().kubeconfig,
        &["replace", "-f", "-"],
        &grown,
    ));
}

#[test]
fn s3_a_wrong_label_value_is_denied_with_the_right_one() {
    let project = project("s3w");
    let wrong_label = scoped_label("p-someone-else");
    let yaml = secret_yaml(&project.backing, "wrong", &wrong_label, DATA);
    let expected = format!(
        "label {} on secret \"wrong\" is \"p-someone-else\", but namespace \"{}\" backs project \
         {}; set it to {}",
        keys::PROJECT_SCOPED_LABEL,
        project.backing,
        project.id(),
        project.name
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        assert_denied(&fails(kubectl_apply(&yaml, dry_run)), GUARD, &expected);
    }
}

#[test]
fn s3_a_cluster_label_naming_another_cluster_is_denied() {
    // The cluster label travels to every copy: it must name the project's cluster. (An empty
    // project label is filled in by the mutator, M2; S3 refuses it only when the mutator did not
    // run, a case of the unit tests.)
    let project = project("s3c");
    let labels = format!(
        "{}, {}: c-elsewhere",
        scoped_label(&project.name),
        keys::PROJECT_SCOPED_CLUSTER_LABEL
    );
    let elsewhere = secret_yaml(&project.backing, "elsewhere", &labels, DATA);
    let expected = format!(
        "label {} on secret \"elsewhere\" is \"c-elsewhere\", but namespace \"{}\" backs project \
         {}; set it to local or remove it",
        keys::PROJECT_SCOPED_CLUSTER_LABEL,
        project.backing,
        project.id()
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        assert_denied(&fails(kubectl_apply(&elsewhere, dry_run)), GUARD, &expected);
    }
}
