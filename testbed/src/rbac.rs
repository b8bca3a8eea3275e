//! RBAC that tests grant as a Rancher-like cluster would: who may edit namespaces, and who may
//! manage a project's namespaces (the verb Rancher's project owners hold on the Project).

use scoped_secrets::keys;

/// A ClusterRole `name` that lets `users` get, list, create, update and patch `resources` of the
/// core group (`namespaces`, or with its subresources), and its ClusterRoleBinding of that name.
pub fn namespace_editor(name: &str, resources: &str, users: &[&str]) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {name}}}
rules:
- apiGroups: [\"\"]
  resources: [{resources}]
  verbs: [get, list, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {name}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}
subjects:
{}",
        users_as_subjects(users)
    )
}

/// A Role and a RoleBinding `name` in `namespace` (the project's cluster) that let `user` manage the
/// namespaces of Project `project`.
pub fn project_namespace_manager(name: &str, namespace: &str, project: &str, user: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}, namespace: {namespace}}}
rules:
- apiGroups: [{group}]
  resources: [{plural}]
  resourceNames: [{project}]
  verbs: [{verb}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}
subjects:
{}",
        users_as_subjects(&[user]),
        group = keys::PROJECT_GROUP,
        plural = keys::PROJECT_PLURAL,
        verb = keys::MANAGE_NAMESPACES_VERB,
    )
}

fn users_as_subjects(users: &[&str]) -> String {
    users
        .iter()
        .map(|user| {
            format!("- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}\n")
        })
        .collect()
}
