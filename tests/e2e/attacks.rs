//! Attacks by users with ordinary permissions that the product's promises say must fail
//! (docs/SPEC.md §3, *Backing namespaces are owned*: a backing namespace belongs to exactly one
//! project, and an existing namespace is never adopted unless it is marked for that very project).
//!
//! Both holes are in who decides which namespace becomes a project's backing namespace: the mark
//! `scoped-secrets.io/backing-namespace-of: <cluster>:<project>` names a project by its ID only, and
//! nothing guards who writes it. No reconciler runs in this binary, so each test asks the
//! reconciler's own pure function ([`plan::backing_namespace_actions`]) over the server's index, fed by
//! the real apiserver, what the reconciler would do; a fix that refuses the attack at admission
//! passes too. Both were reproduced with the reconciler running (`local-control-plane --serve`): the
//! attacker read the project's originals.

use crate::common::grant_project_creation;
use scoped_secrets::keys::{self, ProjectId};
use scoped_secrets::plan::{self, Action};
use std::sync::OnceLock;
use std::time::Duration;
use testbed::prelude::*;

/// A namespace editor as a Rancher-like cluster gives one: create, update and patch namespaces.
const NINA: &str = "attack-nina";
/// A user who may only create (and get) Projects in cluster `local`.
const PAUL: &str = "attack-paul";

fn grant_attackers() {
    static GRANTED: OnceLock<()> = OnceLock::new();
    GRANTED.get_or_init(|| {
        ok(kubectl_apply(
            &testbed::rbac::namespace_editor(
                "scoped-secrets-e2e-attack-namespace-editor",
                "namespaces",
                &[NINA],
            ),
            &[],
        ));
        grant_project_creation(
            "scoped-secrets-e2e-attack-project-creator",
            PAUL,
            &["local"],
        );
        eventually("nina's grant", Duration::from_secs(20), || {
            (can_i(NINA, "patch namespaces") == "yes").then_some(())
        });
    });
}

/// Whether `created` was refused at admission; a refusal must be `webhook`'s.
#[track_caller]
fn refused(created: &std::process::Output, webhook: &str) -> bool {
    let refused = !created.status.success();
    if refused {
        assert!(
            stderr(created).contains(webhook),
            "refused, but not by {webhook}: {}",
            stderr(created)
        );
    }
    refused
}

/// Whether the reconciler, planning over the server's index, would adopt `namespace` as the
/// backing namespace of `project` (record it in its status without creating it).
fn reconciler_adopts(project: &ProjectId, namespace: &str) -> bool {
    plan::backing_namespace_actions(&env().index.read())
        .into_iter()
        .any(|action| {
            matches!(action, Action::SetBackingNamespace {
                project: p, backing_namespace, create_namespace: false, refusal: None,
            } if &p == project && backing_namespace == namespace)
        })
}

#[test]
fn a_namespace_editor_cannot_pre_claim_a_future_projects_backing_namespace() {
    grant_attackers();
    // Nina creates the namespace a project that does not exist yet will be given, marked for it.
    let future = ProjectId::new("local", unique("future"));
    let generated = future.generated_backing_namespace();
    let created = kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-", &format!("--as={NINA}")],
        &crate::common::annotated_namespace_yaml(
            &generated,
            keys::BACKING_NAMESPACE_OF_ANNOTATION,
            &future.to_string(),
        ),
    );
    // Refused at admission (N5): the marks are the reconciler's, and Nina may not update the
    // future project's status.
    let err = fails(created);
    assert!(
        err.contains(&format!(
            "admission webhook \"namespace-guard.scoped-secrets.io\" denied the request: user \
             \"{NINA}\" may not change them"
        )),
        "{err}"
    );
    fails(kubectl_line(&format!("get namespace {generated}")));
}

#[test]
fn reusing_a_deleted_projects_name_does_not_inherit_its_backing_namespace() {
    grant_attackers();
    // The victim's project, as the reconciler leaves it: its backing namespace created and marked,
    // recorded in status, holding an original.
    let victim = ProjectId::new("local", unique("gone"));
    let backing = victim.generated_backing_namespace();
    // Marked for it (both marks) and recorded in its status, as the reconciler makes it.
    assert_eq!(
        project_named(&victim.project, &victim.project).backing,
        backing
    );
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: {backing}
  labels: {{{label}: {name}}}
stringData: {{password: victim}}
",
            label = keys::PROJECT_SCOPED_LABEL,
            name = victim.project,
        ),
        &[],
    ));
    indexed("the victim's original", |w| {
        w.originals_of(&victim).any(|o| o.name() == "db")
    });
    // The victim's project is deleted; its originals stay (docs/SPEC.md §3).
    ok(kubectl(&[
        "delete",
        "project",
        &victim.project,
        "-n",
        "local",
    ]));
    indexed("the deletion", |w| w.project(&victim).is_none());

    // Paul, who may only create Projects, creates one of the same name.
    let created = kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-", &format!("--as={PAUL}")],
        &project_yaml("local", &victim.project),
    );
    // Refused at admission (P3) when the request carries the new object's uid, else admitted and
    // then never given the namespace: either way the deleted project's namespace is not his.
    if refused(&created, "project-guard.scoped-secrets.io") {
        return;
    }
    indexed("paul's project", |w| w.project(&victim).is_some());
    assert!(
        !reconciler_adopts(&victim, &backing),
        "the reconciler would hand namespace {backing}, with the deleted project's originals, to \
         the project {PAUL} just created under the same name; with manage-namespaces on it (a \
         project creator's usual role) he joins a namespace of his own and receives them"
    );
}

#[test]
fn a_namespace_named_after_a_project_without_status_is_not_adopted() {
    grant_attackers();
    // Nina makes the namespace a project's legacy backing namespace would be (its own name)
    // before the project exists. The project is created and, no reconciler running here, keeps
    // no status: the state of one whose generated name is taken too (BackingNamespaceTaken).
    let project = ProjectId::new("local", unique("legacy"));
    let legacy = project.legacy_backing_namespace().to_owned();
    ok(kubectl(&[
        "create",
        "namespace",
        &legacy,
        &format!("--as={NINA}"),
    ]));
    cluster_namespace();
    ok(kubectl_apply(&project_yaml("local", &project.project), &[]));
    indexed("the project", |w| w.project(&project).is_some());
    indexed("the namespace", |w| w.namespace(&legacy).is_some());
    assert_eq!(env().index.read().backing_project(&legacy), None);

    // A secret labelled for the project there is no original: the label is refused (S3).
    let labelled = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: {legacy}
  labels: {{{label}: {name}}}
stringData: {{password: planted}}
",
        label = keys::PROJECT_SCOPED_LABEL,
        name = project.project,
    );
    let err = fails(kubectl_apply(&labelled, &[]));
    assert!(
        err.contains("(LabelOutsideBackingNamespace)")
            && err.contains(&format!("namespace \"{legacy}\" is not one")),
        "{err}"
    );
    assert!(
        !reconciler_adopts(&project, &legacy),
        "the reconciler would adopt the unmarked namespace {legacy}"
    );
}

#[test]
fn a_deleted_backing_namespace_made_again_by_someone_else_is_not_the_projects() {
    grant_attackers();
    let project = project("remade");
    let id = ProjectId::new("local", project.name.clone());
    // The admin deletes the project's backing namespace (cleaning up, or told to by a condition);
    // no reconciler runs here to make it again first.
    ok(kubectl(&[
        "delete",
        "namespace",
        &project.backing,
        "--wait=true",
        "--timeout=120s",
    ]));
    indexed("the deletion", |w| w.namespace(&project.backing).is_none());
    // Nina, who may create namespaces, makes it again: its name alone does not make it the
    // project's.
    ok(kubectl(&[
        "create",
        "namespace",
        &project.backing,
        &format!("--as={NINA}"),
    ]));
    indexed("nina's namespace", |w| {
        w.namespace(&project.backing).is_some()
    });
    assert_eq!(env().index.read().backing_project(&project.backing), None);
    // A secret labelled for the project there is no original: the label is refused (S3), and
    // the reconciler would report the name taken, not adopt it.
    let err = fails(kubectl_apply(
        &testbed::harness::original_yaml(&project, "planted", "key: ZG9n", ""),
        &[],
    ));
    assert!(
        err.contains("(LabelOutsideBackingNamespace)")
            && err.contains(&format!("namespace \"{}\" is not one", project.backing)),
        "{err}"
    );
    assert!(!reconciler_adopts(&id, &project.backing));
    assert!(
        plan::backing_namespace_actions(&env().index.read())
            .iter()
            .any(|action| matches!(action, Action::SetBackingNamespace {
                project: p, refusal: Some(plan::BackingRefusal::Taken), ..
            } if *p == id)),
        "the project is not told its backing namespace is taken"
    );
}

#[test]
fn a_namesake_of_a_deleted_project_does_not_take_its_members() {
    grant_attackers();
    let old = project("namesake");
    let member = namespace_in(&old, "old-team");
    let id = ProjectId::new("local", old.name.clone());
    // The project is deleted, and its backing namespace too (an admin cleaning up); the member
    // namespace keeps its annotation.
    ok(kubectl(&["delete", "project", &old.name, "-n", "local"]));
    ok(kubectl(&[
        "delete",
        "namespace",
        &old.backing,
        "--wait=true",
        "--timeout=120s",
    ]));
    indexed("the deletions", |w| {
        w.project(&id).is_none() && w.namespace(&old.backing).is_none()
    });
    // Paul, who may create Projects but not update the old team's namespace, creates one of the
    // same name: it would make that namespace a member of his project. Refused (P4).
    let err = fails(kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-", &format!("--as={PAUL}")],
        &project_yaml("local", &old.name),
    ));
    assert!(
        err.contains("(NamesakeMembers)")
            && err.contains(&format!(
                "namespaces [\"{member}\"] already name project {id} in annotation \
                 field.cattle.io/projectId"
            ))
            && err.contains(&format!("which user \"{PAUL}\" may not update")),
        "{err}"
    );
    fails(kubectl(&["get", "project", &old.name, "-n", "local"]));
    // The admin, who may update it, may create it (a restore).
    ok(kubectl_apply(&project_yaml("local", &old.name), &[]));
}

/// The apiserver's limit on the total size of an object's annotation keys and values.
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

fn annotation_bytes(secret: &k8s_openapi::api::core::v1::Secret) -> usize {
    secret
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(key, value)| key.len() + value.len())
        .sum()
}

#[test]
fn an_admitted_original_whose_copies_overwrite_still_fits_the_annotation_limit() {
    // S6 refuses an original whose copies would pass the apiserver's annotation limit, counting
    // its own annotations plus the copy markers; a copy that overwrites a namespace's own secret
    // also carries `scoped-secrets.io/replaced: "true"` (30 bytes), which S6 does not count. An
    // original within 30 bytes of the limit is admitted with "will overwrite", `plan` says
    // "1 to overwrite", and the reconciler's write is refused (422) for ever (CopyFailed).
    let project = project("big");
    let ns = namespace_in(&project, "big-team");
    ok(kubectl_line(&format!(
        "create secret generic big -n {ns} --from-literal=own=1"
    )));
    indexed("the namespace's own secret", |w| {
        w.secret_meta(&ns, "big").is_some()
    });
    let origin = keys::origin_value(&project.backing, "big");
    let markers = keys::COPY_ANNOTATION.len()
        + keys::TRUE.len()
        + keys::USER_SECRET_ANNOTATION.len()
        + keys::TRUE.len()
        + keys::ORIGIN_ANNOTATION.len()
        + origin.len()
        + keys::ORIGIN_UID_ANNOTATION.len()
        + 36;
    // The copies S6 counts are 10 bytes under the limit.
    let pad = ANNOTATIONS_LIMIT - 10 - markers - "pad".len();
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "big",
            "namespace": project.backing,
            "labels": {keys::PROJECT_SCOPED_LABEL: project.name},
            "annotations": {"pad": "x".repeat(pad)},
        },
        "stringData": {"key": "value"},
    });
    let created = kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-"],
        &manifest.to_string(),
    );
    if refused(&created, "secret-guard.scoped-secrets.io") {
        return;
    }
    indexed("the original", |w| {
        w.scoped(&project.backing, "big")
            .is_some_and(|s| s.whole().is_some_and(|s| w.as_original(s).is_some()))
    });
    let index = env().index.read();
    let planned: Vec<usize> = plan::actions(&index, &plan::Settings::default())
        .into_iter()
        .filter_map(|action| match action {
            Action::Overwrite { copy, .. } | Action::Create { copy }
                if copy.namespace == ns && copy.secret.metadata.name.as_deref() == Some("big") =>
            {
                Some(annotation_bytes(&copy.placed()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(planned.len(), 1, "one copy of big planned in {ns}");
    assert!(
        planned[0] <= ANNOTATIONS_LIMIT,
        "the original was admitted (with \"will overwrite\"), but the copy the reconciler will \
         write into {ns} carries {} bytes of annotations: the apiserver refuses it for ever",
        planned[0]
    );
}

#[test]
fn moving_a_backing_namespace_mark_needs_the_status_rights_of_the_project_it_leaves() {
    grant_attackers();
    // The victim's project, with its backing namespace marked for it by the reconciler's rules.
    let victim = project(&unique("held"));
    // Nina's own project, whose status she may update (as its owner would).
    let own = ProjectId::new("local", unique("mine"));
    project_named(&own.project, &own.project);
    let role = unique("attack-status");
    ok(kubectl_apply(
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {role}, namespace: local}}
rules:
- apiGroups: [{group}]
  resources: [{plural}/status]
  resourceNames: [{name}]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {role}, namespace: local}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role}}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {NINA}}}
",
            group = keys::PROJECT_GROUP,
            plural = keys::PROJECT_PLURAL,
            name = own.project,
        ),
        &[],
    ));
    let status = format!(
        "update {}.{}/{} --subresource=status -n local",
        keys::PROJECT_PLURAL,
        keys::PROJECT_GROUP,
        own.project
    );
    eventually("nina's status grant", Duration::from_secs(20), || {
        (can_i(NINA, &status) == "yes").then_some(())
    });
    // Nina points the victim's backing namespace at her own project: that takes it (and the
    // originals in it) from the victim's project, whose status she may not update.
    let err = fails(kubectl(&[
        "annotate",
        "namespace",
        &victim.backing,
        &format!("{}={own}", keys::BACKING_NAMESPACE_OF_ANNOTATION),
        "--overwrite",
        &format!("--as={NINA}"),
    ]));
    assert!(
        err.contains(&format!(
            "admission webhook \"namespace-guard.scoped-secrets.io\" denied the request: user \
             \"{NINA}\" may not change them: the annotations {} and {} on namespace \"{}\" make it \
             project {}'s backing namespace; changing them takes it from that project",
            keys::BACKING_NAMESPACE_OF_ANNOTATION,
            keys::BACKING_NAMESPACE_UID_ANNOTATION,
            victim.backing,
            victim.id()
        )),
        "{err}"
    );
    let mark = ok(kubectl(&[
        "get",
        "namespace",
        &victim.backing,
        "-o",
        &format!(
            "jsonpath={{.metadata.annotations.{}}}",
            keys::BACKING_NAMESPACE_OF_ANNOTATION.replace('.', "\\.")
        ),
    ]));
    assert_eq!(mark.trim(), victim.id());
}
