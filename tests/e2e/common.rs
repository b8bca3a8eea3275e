//! What the admission tests share. Every admission rule of docs/SPEC.md §2 is tested end to end,
//! one file per rule (`s1_names.rs` ... `n3_announcements.rs`, `mutations.rs`, then
//! `rancher_example.rs`, `outage.rs`, `audit.rs`): the real apiserver calls the registered
//! webhooks and the real `kubectl` prints the answer. Each test asserts the line a user reads: the
//! denial as `admission webhook "<entry>" denied the request: ...`, warnings as `Warning: ...` on
//! stderr, mutations in `-o yaml` of a `--dry-run=server` request.

use scoped_secrets::keys;
use std::path::Path;
use std::time::Duration;
use testbed::prelude::*;

pub(crate) const GUARD: &str = "secret-guard.scoped-secrets.io";
pub(crate) const NAMES: &str = "secret-names.scoped-secrets.io";
pub(crate) const NAMESPACE_GUARD: &str = "namespace-guard.scoped-secrets.io";

/// The reconciler's identity: the matchConditions skip it and its RBAC may write copies.
pub(crate) const AS_RECONCILER: [&str; 2] = [
    "--as=system:serviceaccount:scoped-secrets-system:scoped-secrets",
    "--as-group=system:serviceaccounts",
];

/// `admission webhook "<webhook>" denied the request: <message>` is in kubectl's error output.
#[track_caller]
pub(crate) fn assert_denied(err: &str, webhook: &str, message: &str) {
    let expected = format!("admission webhook \"{webhook}\" denied the request: {message}");
    assert!(
        err.contains(&expected),
        "expected\n  {expected}\nin kubectl's error output:\n  {err}"
    );
}

/// kubectl printed `Warning: <warning>` as a line of its own on stderr, exactly once (each rule
/// runs in one webhook entry only, so no warning is shown twice).
#[track_caller]
pub(crate) fn assert_warned(out: &std::process::Output, warning: &str) {
    let err = stderr(out);
    let expected = format!("Warning: {warning}");
    assert_eq!(
        err.lines().filter(|l| *l == expected).count(),
        1,
        "expected the line once\n  {expected}\non kubectl's stderr:\n  {err}"
    );
}

/// `line` (a kubectl command as typed) is admitted with `warning`, first as a server-side dry run
/// and then for real.
#[track_caller]
pub(crate) fn assert_warned_dry_then_real(line: &str, warning: &str) {
    for line in [format!("{line} --dry-run=server"), line.to_owned()] {
        let out = kubectl_line(&line);
        assert!(out.status.success(), "{line}: {}", stderr(&out));
        assert_warned(&out, warning);
    }
}

/// Whether the server under test runs the reconciler (it may be switched on later): then copies
/// can land by themselves, and a name that is only reserved now may be taken a moment later.
pub(crate) fn reconciler_running() -> bool {
    serve_args(Path::new("")).reconciler
}

/// A namespace outside every project.
pub(crate) fn plain_namespace(prefix: &str) -> String {
    let ns = unique(prefix);
    ok(kubectl(&["create", "namespace", &ns]));
    indexed("the namespace", |w| w.namespace(&ns).is_some());
    ns
}

pub(crate) fn generic(ns: &str, name: &str) {
    ok(kubectl_line(&format!(
        "create secret generic {name} -n {ns} --from-literal=key=value"
    )));
    indexed("the secret", |w| w.secret_meta(ns, name).is_some());
}

/// An original `name` of the project, written by the admin; waits until the index holds it.
pub(crate) fn original(project: &TestProject, name: &str) {
    ok(kubectl_apply(&original_yaml(project, name, ""), &[]));
    indexed("the original", |w| {
        w.scoped(&project.backing, name)
            .is_some_and(|s| s.whole().is_some_and(|s| w.as_original(s).is_some()))
    });
}

pub(crate) fn original_yaml(project: &TestProject, name: &str, extra_metadata: &str) -> String {
    let rest = format!("{extra_metadata}{DATA}");
    secret_yaml(&project.backing, name, &scoped_label(&project.name), &rest)
}

/// The data of the secrets these tests write (`key: dog`), as the last line of a [`secret_yaml`].
pub(crate) const DATA: &str = "data: {key: ZG9n}\n";

/// The project-scoped label set to `value`, as an entry of the labels of a [`secret_yaml`].
pub(crate) fn scoped_label(value: &str) -> String {
    format!("{}: {value}", keys::PROJECT_SCOPED_LABEL)
}

/// A project (`prefix`) with a namespace in it (`prefix` too), its original `db`, and a copy of it
/// in that namespace written as the reconciler would write it.
pub(crate) fn a_copy_of_db(prefix: &str) -> (TestProject, String) {
    let (project, [ns]) = copies_of(prefix, "db", [prefix]);
    (project, ns)
}

/// A project (`prefix`) with a namespace in it for each of `namespaces` (prefixes of their names),
/// its original `name`, and a copy of it in each of them written as the reconciler would write it.
pub(crate) fn copies_of<const N: usize>(
    prefix: &str,
    name: &str,
    namespaces: [&str; N],
) -> (TestProject, [String; N]) {
    let project = project(prefix);
    let namespaces = namespaces.map(|ns| namespace_in(&project, ns));
    original(&project, name);
    for ns in &namespaces {
        copy_as_reconciler(&project, ns, name);
    }
    (project, namespaces)
}

/// A copy of the project's original `name` in `ns`, written as the reconciler would write it.
pub(crate) fn copy_as_reconciler(project: &TestProject, ns: &str, name: &str) {
    let labels = format!(
        "{}, {}: local",
        scoped_label(&project.name),
        keys::PROJECT_SCOPED_CLUSTER_LABEL
    );
    let rest = format!(
        "  annotations:
    {copy}: \"true\"
    {user}: \"true\"
    {origin}: {backing}/{name}
{DATA}",
        copy = keys::COPY_ANNOTATION,
        user = keys::USER_SECRET_ANNOTATION,
        origin = keys::ORIGIN_ANNOTATION,
        backing = project.backing,
    );
    create_as_reconciler(&secret_yaml(ns, name, &labels, &rest));
    indexed("the copy", |w| {
        w.secret_meta(ns, name).is_some_and(|m| m.is_copy())
    });
}

/// A project (`prefix`) with a namespace in it (`prefix` too), its original `db`, and in that
/// namespace a secret `db` marked as its copy with the annotations `annotations` gives for the
/// project (see [`marked_copy_of_db`]).
pub(crate) fn a_marked_copy_of_db(
    prefix: &str,
    annotations: impl FnOnce(&TestProject) -> String,
) -> (TestProject, String) {
    let project = project(prefix);
    let ns = namespace_in(&project, prefix);
    original(&project, "db");
    marked_copy_of_db(&project, &ns, &annotations(&project));
    (project, ns)
}

/// A secret `db` in `ns` marked as a copy of the project's original, with `annotations` (entries of a
/// YAML flow map) beside the copy marker, written as the reconciler; waits until the index holds it.
pub(crate) fn marked_copy_of_db(project: &TestProject, ns: &str, annotations: &str) {
    let rest = format!(
        "  annotations: {{{}: \"true\", {annotations}}}\n{DATA}",
        keys::COPY_ANNOTATION,
    );
    create_as_reconciler(&secret_yaml(ns, "db", &scoped_label(&project.name), &rest));
    indexed("the copy", |w| {
        w.scoped(ns, "db").is_some() && w.secret_meta(ns, "db").is_some_and(|m| m.is_copy())
    });
}

/// Creates `yaml` as the reconciler (`kubectl create`: its RBAC has no patch, so no apply).
pub(crate) fn create_as_reconciler(yaml: &str) {
    let mut args = vec!["create", "-f", "-"];
    args.extend_from_slice(&AS_RECONCILER);
    let out = kubectl_stdin(&env().kubeconfig, &args, yaml);
    // A running reconciler may have written the copy first.
    if !(reconciler_running() && stderr(&out).contains("AlreadyExists")) {
        ok(out);
    }
}

pub(crate) fn origin(project: &TestProject, name: &str) -> String {
    format!("{}/{name}", project.backing)
}

/// Lets `alice` and `bob` create and edit namespaces, and `alice` (only) manage the project's
/// namespaces, as Rancher's project roles do.
pub(crate) fn grant_namespace_editing(project: &TestProject) {
    // Shared by the tests that call this, so created once (two concurrent creates would race).
    static EDITORS: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    EDITORS.get_or_init(|| {
        ok(kubectl_apply(
            &testbed::rbac::namespace_editor(
                "scoped-secrets-e2e-namespace-editor",
                "namespaces, namespaces/status, namespaces/finalize",
                &["alice", "bob"],
            ),
            &[],
        ));
    });
    let role = unique("n1-manage");
    ok(kubectl_apply(
        &testbed::rbac::project_namespace_manager(&role, "local", &project.name, "alice"),
        &[],
    ));
    let resource = format!(
        "{}.{}/{}",
        keys::PROJECT_PLURAL,
        keys::PROJECT_GROUP,
        project.name
    );
    let manage = format!("{} {resource} -n local", keys::MANAGE_NAMESPACES_VERB);
    // RBAC is served from the apiserver's cache: wait until it answers with the new grants.
    eventually("alice's and bob's grants", Duration::from_secs(20), || {
        (can_i("alice", &manage) == "yes"
            && can_i("alice", "create namespaces") == "yes"
            && can_i("bob", "create namespaces") == "yes")
            .then_some(())
    });
    assert_eq!(can_i("bob", &manage), "no");
}

/// Lets `user` create and get Projects in the cluster namespaces `clusters`, and nothing else,
/// through ClusterRole `role`; waits until the apiserver's RBAC cache says so. Creates cluster
/// namespace `local` if need be; any other must exist.
pub(crate) fn grant_project_creation(role: &str, user: &str, clusters: &[&str]) {
    cluster_namespace();
    let mut manifest = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {role}}}
rules:
- apiGroups: [{group}]
  resources: [{plural}]
  verbs: [create, get]
",
        group = keys::PROJECT_GROUP,
        plural = keys::PROJECT_PLURAL,
    );
    for ns in clusters {
        manifest.push_str(&format!(
            "---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {role}, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}
"
        ));
    }
    ok(kubectl_apply(&manifest, &[]));
    let create = format!("create {}.{}", keys::PROJECT_PLURAL, keys::PROJECT_GROUP);
    eventually(&format!("{user}'s grants"), Duration::from_secs(20), || {
        clusters
            .iter()
            .all(|ns| can_i(user, &format!("{create} -n {ns}")) == "yes")
            .then_some(())
    });
}

pub(crate) fn namespace_yaml(name: &str, project_id: &str) -> String {
    annotated_namespace_yaml(name, keys::PROJECT_ID_KEY, project_id)
}

/// Namespace `name` with the one annotation `key: "value"`.
pub(crate) fn annotated_namespace_yaml(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {name}
  annotations: {{{key}: \"{value}\"}}
"
    )
}

pub(crate) fn apply_as(user: &str, yaml: &str, extra: &[&str]) -> std::process::Output {
    let as_user = format!("--as={user}");
    let mut args = vec!["apply", "-f", "-", as_user.as_str()];
    args.extend_from_slice(extra);
    kubectl_stdin(&env().kubeconfig, &args, yaml)
}

/// Deletes webhook configurations registered by a test, however the test ends.
pub(crate) struct Registered(Vec<(String, String)>);

impl Drop for Registered {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = kubectl(&["delete", kind, name, "--ignore-not-found"]);
        }
    }
}

/// Registers deploy/'s webhook configurations under a unique name derived from `prefix`, pointed at
/// `https://<addr>`, each webhook limited to `namespace_selector` (and, if given, with its
/// failurePolicy replaced), so that they act on the test's own namespaces only.
pub(crate) fn register_deploy_webhooks(
    prefix: &str,
    addr: &str,
    namespace_selector: serde_json::Value,
    failure_policy: Option<&str>,
) -> Registered {
    let manifests =
        testbed::registration::render_kustomization(&Path::new(REPO).join("deploy/base"))
            .expect("deploy/base renders");
    let configurations = testbed::registration::local_webhook_configurations(
        &manifests,
        &format!("https://{addr}"),
        &env().ca_bundle,
    )
    .expect("webhook configurations");
    let mut registered = Registered(Vec::new());
    let name = unique(prefix);
    for mut configuration in configurations {
        configuration["metadata"]["name"] = name.clone().into();
        for webhook in configuration["webhooks"].as_array_mut().expect("webhooks") {
            webhook["namespaceSelector"] = namespace_selector.clone();
            if let Some(policy) = failure_policy {
                webhook["failurePolicy"] = policy.into();
            }
        }
        let kind = configuration["kind"]
            .as_str()
            .expect("a kind")
            .to_lowercase();
        registered.0.push((kind, name.clone()));
        ok(kubectl_apply(&configuration.to_string(), &[]));
    }
    registered
}
