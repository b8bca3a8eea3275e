//! The world the plan's tests start from: one project, two member namespaces, one original `db`.

use super::{Action, OverwritePolicy, Settings, copy_of};
use crate::keys::{self, ProjectId};
use crate::world::World;
use crate::world::fixtures::*;
use k8s_openapi::api::core::v1::Secret;

pub const BACKING: &str = "local-p-vwxyz";
pub const WARN: OverwritePolicy = OverwritePolicy::Warn;
pub const DENY: OverwritePolicy = OverwritePolicy::Deny;

/// The plan under `policy` and the default protected namespaces.
pub fn actions(world: &World, policy: OverwritePolicy) -> Vec<Action> {
    super::actions(world, &Settings::with_policy(policy))
}

pub fn p() -> ProjectId {
    ProjectId::new("local", "p-vwxyz")
}

pub fn original_labels() -> [(&'static str, &'static str); 2] {
    [
        (keys::PROJECT_SCOPED_LABEL, "p-vwxyz"),
        (keys::PROJECT_SCOPED_CLUSTER_LABEL, "local"),
    ]
}

/// A project with two namespaces and one original, `db`, and no copies yet.
pub fn base() -> World {
    let mut world = World::default();
    let p = project(&mut world, "local", "p-vwxyz", BACKING);
    namespace_in(&mut world, "team-a", &p);
    namespace_in(&mut world, "team-b", &p);
    add_secret(&mut world, secret(BACKING, "db", &original_labels(), &[]));
    world
}

/// The copy of `db` that `ns` should hold, as the apiserver would return it.
pub fn stored_copy(world: &World, ns: &str) -> Secret {
    let original = world.original_at(BACKING, "db").expect("an original");
    let mut copy = copy_of(&original, ns);
    copy.metadata.uid = Some(format!("uid-{ns}-db"));
    copy.metadata.resource_version = Some("1".to_owned());
    copy
}

pub fn put_copy(world: &mut World, ns: &str) {
    let copy = stored_copy(world, ns);
    add_secret(world, copy);
}

pub fn converged() -> World {
    let mut world = base();
    put_copy(&mut world, "team-a");
    put_copy(&mut world, "team-b");
    world
}

pub fn edit_copy(world: &mut World, ns: &str, edit: impl Fn(&mut Secret)) {
    let mut copy = stored_copy(world, ns);
    edit(&mut copy);
    add_secret(world, copy);
}

pub fn remove_original(world: &mut World) {
    world.remove_scoped(BACKING, "db");
    world.remove_secret_meta(BACKING, "db");
}

pub fn plain(world: &mut World, ns: &str) {
    add_secret(world, secret(ns, "db", &[], &[]));
}

pub fn describe(world: &World, policy: OverwritePolicy) -> Vec<String> {
    actions(world, policy)
        .iter()
        .map(|a| format!("{a:?}"))
        .collect()
}

pub type Setup = fn(&mut World);
