//! What a downstream cluster's worker executes of the one plan: writes in that cluster only. The
//! backing namespaces in its world are the management cluster's (see
//! [`crate::world::World::for_cluster`]), and so are the originals' cluster labels and the Projects'
//! backing namespaces: the management cluster's round makes those.

use super::{Action, ActionKind};
use crate::world::World;

/// The actions of `planned` (made from `world`, a downstream cluster's world) that write in that
/// cluster.
pub fn downstream_actions(world: &World, planned: Vec<Action>) -> Vec<Action> {
    let overlaid = world.overlaid_namespaces();
    planned
        .into_iter()
        .filter(|action| {
            !matches!(
                action.kind(),
                ActionKind::AddClusterLabel | ActionKind::SetBackingNamespace
            )
        })
        .filter(|action| {
            let namespace = match action {
                // A label repair names its namespace as the object, not as the namespace.
                Action::FixNamespaceLabel { namespace, .. } => namespace.as_str(),
                other => other.namespace(),
            };
            !overlaid.contains(namespace)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::world::NamespaceState;
    use crate::world::fixtures::*;

    #[test]
    fn only_writes_in_the_downstream_cluster_are_kept() {
        let mut management = World::default();
        let project = project(&mut management, "c-abc123", "p-vwxyz", "c-abc123-p-vwxyz");
        // No cluster label yet: the management cluster's round adds it, not this one.
        add_secret(
            &mut management,
            secret(
                "c-abc123-p-vwxyz",
                "test-secret",
                &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
                &[],
            ),
        );
        let mut own = World::default();
        namespace_in(&mut own, "team-a", &project);
        // A member whose label does not mirror its annotation: repaired downstream.
        own.upsert_namespace(
            "team-b".to_owned(),
            NamespaceState {
                project_annotation: Some(project.to_string()),
                ..NamespaceState::default()
            },
        );
        let world = World::for_cluster(&management, &own, "c-abc123");
        let planned = crate::plan::planned(&world, &Default::default(), true);
        assert!(
            planned
                .iter()
                .any(|a| a.kind() == ActionKind::AddClusterLabel),
            "{planned:?}"
        );
        let kept: Vec<String> = downstream_actions(&world, planned)
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        assert_eq!(
            kept,
            [
                "fix_namespace_label /team-b",
                "create team-a/test-secret (origin c-abc123-p-vwxyz/test-secret)",
                "create team-b/test-secret (origin c-abc123-p-vwxyz/test-secret)",
            ]
        );
    }
}
