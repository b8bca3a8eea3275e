//! The Project resource (`management.cattle.io/v3`, served by the CRD in `deploy/` or by Rancher):
//! where it is served, and what we read of its objects. The one reader of a Project's status.

use crate::keys::{self, ProjectId};
use crate::world::ProjectState;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

/// The Project resource, served by the CRD in `deploy/` (or by Rancher).
pub fn project_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            keys::PROJECT_GROUP,
            keys::PROJECT_VERSION,
            keys::PROJECT_KIND,
        ),
        keys::PROJECT_PLURAL,
    )
}

/// A project's identity and state from its object: the cluster is the object's namespace.
pub fn project_state(project: &DynamicObject) -> Option<(ProjectId, ProjectState)> {
    let id = ProjectId::new(project.namespace()?, project.name_any());
    let status_backing = status_backing_namespace(&project.data);
    let state = ProjectState {
        backing_namespace: status_backing
            .unwrap_or(id.legacy_backing_namespace())
            .to_owned(),
        has_backing_status: status_backing.is_some(),
        backing_not_ready: backing_not_ready(&project.data),
        uid: project.metadata.uid.clone().unwrap_or_default(),
        deleting: project.metadata.deletion_timestamp.is_some(),
    };
    Some((id, state))
}

/// The reason of a `False` BackingNamespaceReady condition in a Project's status.
fn backing_not_ready(data: &serde_json::Value) -> Option<String> {
    let conditions = data.pointer("/status/conditions")?.as_array()?;
    let ours = conditions.iter().find(|c| {
        c.get("type").and_then(|t| t.as_str()) == Some(keys::BACKING_NAMESPACE_READY_CONDITION)
    })?;
    (ours.get("status").and_then(|s| s.as_str()) == Some("False")).then(|| {
        ours.get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_owned()
    })
}

/// `status.backingNamespace` of a Project's data, when set and not empty.
pub fn status_backing_namespace(data: &serde_json::Value) -> Option<&str> {
    data.pointer("/status/backingNamespace")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn project(cluster: &str, name: &str) -> DynamicObject {
        DynamicObject::new(name, &project_resource()).within(cluster)
    }

    #[test]
    fn a_project_without_status_claims_its_legacy_name_and_reports_its_condition() {
        let mut bare = project("local", "p-x");
        let (id, state) = project_state(&bare).expect("namespaced");
        assert_eq!(id, ProjectId::new("local", "p-x"));
        assert_eq!(state.backing_namespace, "p-x");
        assert!(!state.has_backing_status);
        bare.data = json!({"status": {"backingNamespace": "", "conditions": [
            {"type": keys::BACKING_NAMESPACE_READY_CONDITION, "status": "False", "reason": "Taken"}
        ]}});
        let (_, state) = project_state(&bare).expect("namespaced");
        assert!(!state.has_backing_status, "an empty status is none");
        assert_eq!(state.backing_not_ready.as_deref(), Some("Taken"));
        let cluster_scoped = DynamicObject::new("p-x", &project_resource());
        assert_eq!(project_state(&cluster_scoped), None);
    }

    #[test]
    fn an_empty_or_missing_backing_namespace_is_none() {
        assert_eq!(status_backing_namespace(&json!({})), None);
        assert_eq!(
            status_backing_namespace(&json!({"status": {"backingNamespace": ""}})),
            None
        );
        assert_eq!(
            status_backing_namespace(&json!({"status": {"backingNamespace": 7}})),
            None
        );
        assert_eq!(
            status_backing_namespace(&json!({"status": {"backingNamespace": "local-p-x"}})),
            Some("local-p-x")
        );
    }
}
