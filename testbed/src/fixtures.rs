//! What tests create: Projects of cluster `local` with their backing namespaces, and namespaces in
//! them, as Rancher writes them; each call waits until the server under test has indexed it.

use crate::kubectl::{kubectl, kubectl_apply, ok, stdout};
use crate::wait::{indexed, unique};
use std::collections::BTreeSet;
use std::process::Output;
use std::sync::{Mutex, OnceLock};

/// A project created for a test: `<cluster>:<name>` (cluster `local` unless made with
/// [`project_in`]), with its backing namespace `<cluster>-<name>`.
pub struct TestProject {
    pub cluster: String,
    pub name: String,
    pub backing: String,
}

impl TestProject {
    pub fn id(&self) -> String {
        format!("{}:{}", self.cluster, self.name)
    }
}

/// The namespace of cluster `local`'s projects, created once: tests start in parallel, and two
/// `kubectl apply`s creating the same object at once make one of them fail with AlreadyExists.
pub fn cluster_namespace() {
    static CREATED: OnceLock<()> = OnceLock::new();
    CREATED.get_or_init(|| {
        ok(kubectl_apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: local}\n",
            &[],
        ));
    });
}

/// Creates a Project in cluster `local` with `status.backingNamespace` set, and that namespace.
pub fn project(prefix: &str) -> TestProject {
    let name = unique(prefix);
    project_named(&name, &name)
}

/// Creates (or updates) Project `local:<name>` and its backing namespace `local-<name>`, sets its
/// `status.backingNamespace` as Rancher's controller does, and waits until the index holds it.
pub fn project_named(name: &str, display_name: &str) -> TestProject {
    cluster_namespace();
    project_of_cluster("local", name, display_name)
}

/// Project `<cluster>:<name>` as a manifest, with no status (its backing namespace is set by
/// Rancher's controller or the reconciler).
pub fn project_yaml(cluster: &str, name: &str) -> String {
    format!(
        "apiVersion: management.cattle.io/v3
kind: Project
metadata: {{name: {name}, namespace: {cluster}}}
spec: {{clusterName: {cluster}}}
"
    )
}

/// Creates Project `<cluster>:<name>` with no backing namespace, and its cluster's namespace
/// `<cluster>`: a project the reconciler is to give a backing namespace.
pub fn bare_project(cluster: &str, name: &str) {
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {cluster}}}\n---\n{}",
            project_yaml(cluster, name)
        ),
        &[],
    ));
}

/// Creates (or updates) Project `<cluster>:<name>` in the management cluster (namespace `<cluster>`,
/// created if missing) and its backing namespace `<cluster>-<name>`, as [`project_named`] does for
/// cluster `local`: the shape of a downstream cluster's project.
pub fn project_in(cluster: &str, name: &str) -> TestProject {
    static CREATED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    {
        // Once per cluster, and one at a time: two creates at once make one fail.
        let mut created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
        if created.insert(cluster.to_owned()) {
            ok(kubectl_apply(
                &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {cluster}}}\n"),
                &[],
            ));
        }
    }
    project_of_cluster(cluster, name, name)
}

fn project_of_cluster(cluster: &str, name: &str, display_name: &str) -> TestProject {
    let backing = format!("{cluster}-{name}");
    ok(kubectl_apply(
        &format!(
            "apiVersion: management.cattle.io/v3
kind: Project
metadata: {{name: {name}, namespace: {cluster}}}
spec: {{clusterName: {cluster}, displayName: {display_name}}}
"
        ),
        &[],
    ));
    // Marked for this Project object, as the reconciler creates a backing namespace: only a marked
    // one counts where the reconciler manages them (`serve`'s default).
    let uid = project_field(cluster, name, "{.metadata.uid}");
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Namespace
metadata:
  name: {backing}
  annotations: {{{of}: \"{cluster}:{name}\", {uid_key}: \"{uid}\"}}
",
            of = scoped_secrets::keys::BACKING_NAMESPACE_OF_ANNOTATION,
            uid_key = scoped_secrets::keys::BACKING_NAMESPACE_UID_ANNOTATION,
            uid = uid.trim(),
        ),
        &[],
    ));
    ok(patch_backing_namespace(cluster, name, &backing));
    let id = scoped_secrets::keys::ProjectId::new(cluster, name);
    indexed("the project and its backing namespace", |w| {
        w.backing_project(&backing).is_some_and(|p| *p == id)
    });
    TestProject {
        cluster: cluster.to_owned(),
        name: name.to_owned(),
        backing,
    }
}

/// `kubectl get project <name> -n <cluster> -o jsonpath=<jsonpath>` as the admin.
pub fn project_field(cluster: &str, name: &str, jsonpath: &str) -> String {
    stdout(&kubectl(&[
        "get",
        "project",
        name,
        "-n",
        cluster,
        "-o",
        &format!("jsonpath={jsonpath}"),
    ]))
}

/// Sets `status.backingNamespace` of Project `<cluster>/<project>` as the admin.
pub fn patch_backing_namespace(cluster: &str, project: &str, backing: &str) -> Output {
    let status = format!(r#"{{"status":{{"backingNamespace":"{backing}"}}}}"#);
    kubectl(&[
        "patch",
        "project",
        project,
        "-n",
        cluster,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])
}

/// A Secret manifest: `name` in `namespace` with `labels` (the entries of a YAML flow map), then
/// `rest`, its further lines (more metadata indented by two spaces, then type and data).
pub fn secret_yaml(namespace: &str, name: &str, labels: &str, rest: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{{labels}}}
{rest}"
    )
}

/// Creates a namespace in the project (annotation and label, as Rancher sets them).
pub fn namespace_in(project: &TestProject, prefix: &str) -> String {
    let ns = unique(prefix);
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  annotations: {{field.cattle.io/projectId: \"{id}\"}}
  labels: {{field.cattle.io/projectId: {p}}}
",
            id = project.id(),
            p = project.name
        ),
        &[],
    ));
    indexed("the namespace", |w| w.namespace(&ns).is_some());
    ns
}
