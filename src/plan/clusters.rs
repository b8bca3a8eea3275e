//! Which actions belong to which cluster when projects live in downstream clusters: a downstream
//! cluster gets the writes into its own namespaces, the management cluster keeps the writes to
//! Projects and originals, and lets go of a project once its own cluster has its copies in place.
//! The reconciler's workers and `plan` both decide here, so they agree.

use super::{Action, ActionKind, Settings, planned, progress};
use crate::keys::ProjectId;
use crate::world::World;
use std::collections::BTreeSet;

/// What a downstream cluster's worker does, given `world` = [`World::for_cluster`] of the
/// management world and that cluster's own: the one plan, without the writes that belong to the
/// management cluster (backing namespaces and cluster labels of originals, and anything in a
/// namespace the management cluster lends this world, [`World::overlaid_namespaces`]).
pub fn downstream_actions(world: &World, settings: &Settings) -> Vec<Action> {
    let overlaid = world.overlaid_namespaces();
    planned(world, settings, false)
        .into_iter()
        .filter(|action| {
            !matches!(
                action.kind(),
                ActionKind::AddClusterLabel | ActionKind::SetBackingNamespace
            ) && !overlaid.contains(written_namespace(action))
        })
        .collect()
}

/// The namespace an action writes into (a label repair writes the namespace itself).
fn written_namespace(action: &Action) -> &str {
    match action {
        Action::FixNamespaceLabel { namespace, .. } => namespace,
        other => other.namespace(),
    }
}

/// The projects the management cluster no longer serves: those whose copies are in place in their
/// own cluster, by that cluster's plan ([`downstream_actions`] of its world, [`super::progress`]).
/// Give it only clusters that are registered and were read: a project of a cluster that cannot be
/// read, or is not registered, stays served in the management cluster.
pub fn served_elsewhere<'a>(
    downstream: impl IntoIterator<Item = (&'a World, &'a [Action])>,
) -> BTreeSet<ProjectId> {
    downstream
        .into_iter()
        .flat_map(|(world, actions)| progress(world, actions))
        .filter(|(_, progress)| progress.in_place())
        .map(|(project, _)| project)
        .collect()
}

/// The management cluster's own plan: its world without the projects served elsewhere
/// ([`World::serve_elsewhere`]), so their copies here go and none is written here for them.
pub fn management_actions(
    management: &World,
    served_elsewhere: BTreeSet<ProjectId>,
    settings: &Settings,
    manage_backing_namespaces: bool,
) -> Vec<Action> {
    if served_elsewhere.is_empty() {
        return planned(management, settings, manage_backing_namespaces);
    }
    let mut world = management.clone();
    world.serve_elsewhere(std::sync::Arc::new(served_elsewhere));
    planned(&world, settings, manage_backing_namespaces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PROJECT_SCOPED_LABEL;
    use crate::world::NamespaceState;
    use crate::world::fixtures::*;

    const BACKING: &str = "c-abc123-p-vwxyz";

    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| format!("{} {}", a.kind().as_str(), written_namespace(a)))
            .collect()
    }

    /// The management cluster: project `c-abc123:p-vwxyz`, its original lacking the cluster label
    /// (a repair of the management cluster's), and its backing namespace annotated into the project
    /// without the label (a repair there too, never downstream).
    fn management() -> (World, ProjectId) {
        let mut world = World::default();
        let project = project(&mut world, "c-abc123", "p-vwxyz", BACKING);
        world.upsert_namespace(
            BACKING.to_owned(),
            NamespaceState {
                project_annotation: Some(project.to_string()),
                ..NamespaceState::default()
            },
        );
        add_secret(
            &mut world,
            secret(BACKING, "db", &[(PROJECT_SCOPED_LABEL, "p-vwxyz")], &[]),
        );
        (world, project)
    }

    #[test]
    fn a_downstream_cluster_writes_only_into_its_own_namespaces() {
        let (management, project) = management();
        let mut own = World::default();
        namespace_in(&mut own, "team-a", &project);
        // Downstream, a namespace in the project whose label needs repair: that one is its own.
        own.upsert_namespace(
            "team-b".to_owned(),
            NamespaceState {
                project_annotation: Some(project.to_string()),
                ..NamespaceState::default()
            },
        );
        let world = World::for_cluster(&management, &own, "c-abc123");
        let all = summary(&planned(&world, &Settings::default(), true));
        for repair in [
            format!("fix_namespace_label {BACKING}"),
            format!("add_cluster_label {BACKING}"),
        ] {
            assert!(all.contains(&repair), "{all:?}");
        }
        assert_eq!(
            summary(&downstream_actions(&world, &Settings::default())),
            [
                "fix_namespace_label team-b",
                "create team-a",
                "create team-b"
            ]
        );
    }

    #[test]
    fn only_projects_in_place_downstream_are_served_elsewhere() {
        let (mut management, project) = management();
        let other = crate::world::fixtures::project(
            &mut management,
            "c-abc123",
            "p-other",
            "c-abc123-p-other",
        );
        let mut own = World::default();
        namespace_in(&mut own, "team-a", &project);
        let world = World::for_cluster(&management, &own, "c-abc123");
        let pending = downstream_actions(&world, &Settings::default());
        // The copy in team-a is missing: p-vwxyz is not in place, p-other (no namespace) is.
        assert_eq!(
            served_elsewhere([(&world, pending.as_slice())]),
            BTreeSet::from([other.clone()])
        );
        // Once the copy is there, both are.
        let original = world.original_at(BACKING, "db").expect("an original");
        let mut copy = super::super::copy_of(&original, "team-a");
        copy.metadata.uid = Some("uid-copy".to_owned());
        add_secret(&mut own, copy);
        let world = World::for_cluster(&management, &own, "c-abc123");
        let done = downstream_actions(&world, &Settings::default());
        assert!(done.is_empty(), "{:?}", summary(&done));
        assert_eq!(
            served_elsewhere([(&world, done.as_slice())]),
            BTreeSet::from([project, other])
        );
        // No cluster read: nothing is served elsewhere.
        assert!(served_elsewhere([]).is_empty());
    }

    #[test]
    fn the_management_cluster_keeps_a_project_until_it_is_served_elsewhere() {
        let (mut management, project) = management();
        namespace_in(&mut management, "team-here", &project);
        let settings = Settings::default();
        let here = summary(&management_actions(
            &management,
            BTreeSet::new(),
            &settings,
            false,
        ));
        assert!(here.contains(&"create team-here".to_owned()), "{here:?}");
        let gone = summary(&management_actions(
            &management,
            BTreeSet::from([project]),
            &settings,
            false,
        ));
        assert!(!gone.contains(&"create team-here".to_owned()), "{gone:?}");
        // The management cluster's repairs stay its own.
        assert!(
            gone.contains(&format!("add_cluster_label {BACKING}")),
            "{gone:?}"
        );
    }
}
