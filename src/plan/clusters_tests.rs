//! One plan for every cluster: a downstream cluster is planned from its own world composed with the
//! management cluster's projects and originals ([`World::for_cluster`]), and the management cluster
//! stops serving a project once its cluster's copies are in place ([`World::serve_elsewhere`]).

use super::{Action, ActionKind};
use crate::keys::{self, ProjectId};
use crate::world::World;
use crate::world::fixtures::*;
use std::collections::BTreeSet;
use std::sync::Arc;

const BACKING: &str = "c-abc123-p-vwxyz";

/// An original's labels, with the cluster label the reconciler adds (so that no repair is planned).
fn labels() -> [(&'static str, &'static str); 2] {
    [
        (keys::PROJECT_SCOPED_LABEL, "p-vwxyz"),
        (keys::PROJECT_SCOPED_CLUSTER_LABEL, "c-abc123"),
    ]
}

/// The management cluster: project `c-abc123:p-vwxyz` (namespaces downstream) and `local:p-own`
/// (namespace `mine` here), one original each.
fn management() -> (World, ProjectId) {
    let mut world = World::default();
    let downstream = project(&mut world, "c-abc123", "p-vwxyz", BACKING);
    add_secret(&mut world, secret(BACKING, "test-secret", &labels(), &[]));
    let own = project(&mut world, "local", "p-own", "local-p-own");
    namespace_in(&mut world, "mine", &own);
    add_secret(
        &mut world,
        secret(
            "local-p-own",
            "db",
            &[
                (keys::PROJECT_SCOPED_LABEL, "p-own"),
                (keys::PROJECT_SCOPED_CLUSTER_LABEL, "local"),
            ],
            &[],
        ),
    );
    (world, downstream)
}

fn summary(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| format!("{} {}/{}", a.kind().as_str(), a.namespace(), a.name()))
        .collect()
}

#[test]
fn a_downstream_cluster_gets_the_copies_of_its_own_projects_only() {
    let (management, project) = management();
    let mut own = World::default();
    namespace_in(&mut own, "team-a", &project);
    namespace_in(&mut own, "team-b", &project);
    // A namespace of another cluster's project (by annotation) and one named like the local one's.
    namespace_in(&mut own, "mine", &ProjectId::new("local", "p-own"));
    let world = World::for_cluster(&management, &own, "c-abc123");
    assert_eq!(
        summary(&super::actions(&world, &Default::default())),
        ["create team-a/test-secret", "create team-b/test-secret"]
    );
    // The same project name in another cluster: nothing of c-abc123's.
    let other = World::for_cluster(&management, &own, "c-other");
    assert!(super::actions(&other, &Default::default()).is_empty());
}

#[test]
fn a_namespace_named_like_a_backing_namespace_downstream_is_the_management_clusters() {
    let (management, project) = management();
    let mut own = World::default();
    namespace_in(&mut own, "team-a", &project);
    // Downstream, someone made a namespace of the backing namespace's name, put it in the project
    // and planted a labelled secret there: neither a target nor an original.
    namespace_in(&mut own, BACKING, &project);
    add_secret(&mut own, secret(BACKING, "planted", &labels(), &[]));
    let world = World::for_cluster(&management, &own, "c-abc123");
    assert_eq!(
        summary(&super::actions(&world, &Default::default())),
        ["create team-a/test-secret"]
    );
    assert!(world.original_at(BACKING, "planted").is_none());
    assert!(world.overlaid_namespaces().contains(BACKING));
}

#[test]
fn a_project_named_like_a_downstream_namespace_hides_it_only_once_it_owns_one_of_that_name() {
    let (mut management, project) = management();
    // Anyone who may create Projects in c-abc123 makes `team-a` (no status: its legacy backing
    // namespace would be `team-a`, unmarked, so it claims nothing) and `team-b`, deleted at once.
    management.upsert_project(
        ProjectId::new("c-abc123", "team-a"),
        crate::world::ProjectState {
            backing_namespace: "team-a".to_owned(),
            ..Default::default()
        },
    );
    management.note_project_deleted(
        ProjectId::new("c-abc123", "team-b"),
        "team-b".to_owned(),
        "uid-b".to_owned(),
    );
    // `team-c` a project of the cluster does own in the management cluster (its status names it).
    crate::world::fixtures::project(&mut management, "c-abc123", "p-c", "team-c");
    let mut own = World::default();
    for ns in ["team-a", "team-b", "team-c"] {
        namespace_in(&mut own, ns, &project);
    }
    let world = World::for_cluster(&management, &own, "c-abc123");
    assert_eq!(
        summary(&super::downstream_actions(&world, &Default::default())),
        ["create team-a/test-secret", "create team-b/test-secret"]
    );
    assert_eq!(
        world.overlaid_namespaces(),
        BTreeSet::from([BACKING.to_owned(), "team-c".to_owned()])
    );
}

#[test]
fn a_backing_namespace_contested_across_clusters_is_nobodys_downstream_too() {
    // `x` is claimed by `local:p-a` and `c-abc123:p-a` (two status writes that raced the project
    // guard): in the management cluster neither owns it, so its secret labelled p-a is no original.
    let mut management = World::default();
    let downstream = project(&mut management, "c-abc123", "p-a", "x");
    project(&mut management, "local", "p-a", "x");
    add_secret(
        &mut management,
        secret("x", "db", &[(keys::PROJECT_SCOPED_LABEL, "p-a")], &[]),
    );
    assert!(management.original_at("x", "db").is_none());
    let mut own = World::default();
    namespace_in(&mut own, "team", &downstream);
    let world = World::for_cluster(&management, &own, "c-abc123");
    assert!(world.original_at("x", "db").is_none());
    assert!(super::downstream_actions(&world, &Default::default()).is_empty());
    assert!(world.overlaid_namespaces().contains("x"));
}

#[test]
fn the_management_cluster_lets_go_of_a_project_served_in_its_own_cluster() {
    let (mut management, project) = management();
    // Served here before its cluster was registered: a namespace here, and its copy.
    namespace_in(&mut management, "team-here", &project);
    let copy = {
        let original = management
            .original_at(BACKING, "test-secret")
            .expect("an original");
        let mut copy = super::copy_of(&original, "team-here");
        copy.metadata.uid = Some("uid-copy".to_owned());
        copy
    };
    add_secret(&mut management, copy);
    // The local project's copy is all that is missing.
    assert_eq!(
        summary(&super::actions(&management, &Default::default())),
        ["create mine/db"]
    );
    management.serve_elsewhere(Arc::new(BTreeSet::from([project.clone()])));
    let actions = super::actions(&management, &Default::default());
    assert_eq!(
        summary(&actions),
        ["create mine/db", "delete team-here/test-secret"]
    );
    assert_eq!(actions[1].kind(), ActionKind::Delete);
    // The live namespace read before the delete does not want it either.
    let live = management.namespace("team-here").expect("indexed").clone();
    assert_eq!(
        super::wanting_original(&management, &live, "test-secret"),
        None
    );
    // The local project is untouched.
    assert!(!management.is_served_elsewhere(&ProjectId::new("local", "p-own")));
}
