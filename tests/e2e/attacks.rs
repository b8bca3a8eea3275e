//! Attacks by users with ordinary permissions that the product's promises say must fail.
//!
//! Pre-claiming a future project's backing namespace: the reconciler adopts an existing namespace
//! as a project's backing namespace when it carries `scoped-secrets.io/backing-namespace-of` naming
//! that project (docs/SPEC.md §3, *Backing namespaces are owned*), so whoever may write that
//! annotation decides which namespace becomes a project's backing namespace. A user who may only
//! edit namespaces (no `manage-namespaces` on any project) marks a namespace she controls for a
//! project that does not exist yet; when the project is created, the reconciler records that
//! namespace in `status.backingNamespace`, the project's owners put their originals there, and the
//! attacker reads them (and plants originals that overwrite secrets in every namespace of the
//! project). Reproduced against `local-control-plane --serve` (with the reconciler): see the report
//! on branch `attack`. Only the admission half can be shown here (no reconciler runs in this binary).

use crate::admission::NAMESPACE_GUARD;
use crate::support::*;
use scoped_secrets::keys;
use std::sync::OnceLock;
use std::time::Duration;

/// A namespace editor as a Rancher-like cluster gives one: create, update and patch namespaces,
/// and nothing on Projects.
const NINA: &str = "attack-nina";

fn namespace_editor() {
    static GRANTED: OnceLock<()> = OnceLock::new();
    GRANTED.get_or_init(|| {
        ok(kubectl_apply(
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: scoped-secrets-e2e-attack-namespace-editor}}
rules:
- apiGroups: [\"\"]
  resources: [namespaces]
  verbs: [get, list, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: scoped-secrets-e2e-attack-namespace-editor}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: scoped-secrets-e2e-attack-namespace-editor}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {NINA}}}
"
            ),
            &[],
        ));
        let as_nina = format!("--as={NINA}");
        eventually("nina's grants", Duration::from_secs(20), || {
            (stdout(&kubectl(&["auth", "can-i", "patch", "namespaces", &as_nina])).trim() == "yes")
                .then_some(())
        });
    });
}

#[test]
fn a_namespace_editor_may_not_mark_a_namespace_as_a_future_projects_backing_namespace() {
    namespace_editor();
    cluster_namespace();
    let as_nina = format!("--as={NINA}");
    // The project the victim will create later, and the namespace the reconciler would then adopt
    // (its generated backing namespace, marked for it).
    let future = unique("future");
    let generated = keys::ProjectId::new("local", future.clone()).generated_backing_namespace();
    let mark = format!("{}=local:{future}", keys::BACKING_NAMESPACE_OF_ANNOTATION);

    // Pre-claim by creating the namespace with the mark...
    let created = kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-", &as_nina],
        &format!(
            "apiVersion: v1
kind: Namespace
metadata:
  name: {generated}
  annotations: {{{key}: \"local:{future}\"}}
",
            key = keys::BACKING_NAMESPACE_OF_ANNOTATION
        ),
    );
    let err = fails(created);
    assert!(
        err.contains(&format!(
            "admission webhook \"{NAMESPACE_GUARD}\" denied the request"
        )),
        "the mark was refused, but not by the namespace guard: {err}"
    );

    // ...or by marking a namespace the attacker already has (here: one she just created plainly).
    let own = unique("nina-own");
    ok(kubectl(&["create", "namespace", &own, &as_nina]));
    let err = fails(kubectl(&["annotate", "namespace", &own, &mark, &as_nina]));
    assert!(
        err.contains(&format!(
            "admission webhook \"{NAMESPACE_GUARD}\" denied the request"
        )),
        "the mark was refused, but not by the namespace guard: {err}"
    );
    let marks = ok(kubectl(&[
        "get",
        "namespace",
        &own,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]));
    assert!(
        !marks.contains(keys::BACKING_NAMESPACE_OF_ANNOTATION),
        "namespace {own} carries the backing-namespace mark a namespace editor wrote: {marks}"
    );
}
