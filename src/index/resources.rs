//! How each watched resource's events change the world: [`Indexed`], implemented once per resource
//! (kubert's `IndexNamespacedResource`). A re-list replaces the resource's part of the world whole,
//! so nothing deleted while a watch was down lingers.

use super::Watch;
use crate::keys::ProjectId;
use crate::project::project_state;
use crate::world::{NamespaceState, ProjectState, Scoped, SecretMeta, World, is_another_object};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{DynamicObject, ObjectMeta};
use std::collections::BTreeMap;

/// What a watch event of one resource does to the world.
pub trait Indexed: Sized {
    /// The watch these objects come from.
    const WATCH: Watch;

    /// Whether the resource is served by a CRD that may be missing or deleted at runtime, so that a
    /// 404 from its list or watch means "none exist" rather than a failure.
    const MAY_BE_UNSERVED: bool = false;

    /// An object was created or changed.
    fn apply(world: &mut World, object: Self);

    /// An object was deleted.
    fn delete(world: &mut World, object: Self);

    /// A complete list: it replaces everything the watch delivered before.
    fn reset(world: &mut World, all: Vec<Self>);

    /// Whether the world counts the resource as served (asked only when it may be unserved).
    fn is_served(_world: &World) -> bool {
        true
    }

    /// The resource is not served: no object of it exists.
    fn unserved(_world: &mut World) {}
}

/// Projects (the only dynamic resource watched). Deletions are remembered with their backing
/// namespace, so that revocation can find the copies of their originals.
impl Indexed for DynamicObject {
    const WATCH: Watch = Watch::Projects;
    const MAY_BE_UNSERVED: bool = true;

    fn apply(world: &mut World, project: Self) {
        world.projects_installed = true;
        if let Some((id, state)) = project_state(&project) {
            // Another object under a known name: the one it replaces was deleted, Delete event
            // seen or not.
            if let Some(replaced) = world.project(&id)
                && is_another_object(&replaced.uid, &state.uid)
            {
                let (backing, uid) = (replaced.backing_namespace.clone(), replaced.uid.clone());
                world.note_project_deleted(id.clone(), backing, uid);
            }
            world.forget_deleted_project(&id, &state.uid);
            world.upsert_project(id, state);
        }
    }

    fn delete(world: &mut World, project: Self) {
        if let Some((id, state)) = project_state(&project) {
            world.remove_project(&id);
            // Its copies can only be found through its backing namespace, which the Delete event
            // still carries; the reconciler removes them once a fresh read proves it gone.
            world.note_project_deleted(id, state.backing_namespace, state.uid);
        }
    }

    fn reset(world: &mut World, all: Vec<Self>) {
        world.projects_installed = true;
        let listed: BTreeMap<ProjectId, ProjectState> =
            all.iter().filter_map(project_state).collect();
        // Projects gone while the watch was down left no Delete event, nor did those deleted and
        // created again under the same name (another uid): remember them too.
        let vanished: Vec<_> = world
            .projects()
            .filter(|(id, known)| {
                listed
                    .get(*id)
                    .is_none_or(|now| is_another_object(&known.uid, &now.uid))
            })
            .map(|(id, state)| {
                let (backing, uid) = (state.backing_namespace.clone(), state.uid.clone());
                (id.clone(), backing, uid)
            })
            .collect();
        for (id, backing, uid) in vanished {
            world.note_project_deleted(id, backing, uid);
        }
        for (id, state) in &listed {
            world.forget_deleted_project(id, &state.uid);
        }
        world.replace_projects(listed);
    }

    fn is_served(world: &World) -> bool {
        world.projects_installed
    }

    /// No projects, and N2 cannot check existence; no deletion can be proven, so none is kept.
    fn unserved(world: &mut World) {
        world.projects_installed = false;
        world.replace_projects([]);
        world.forget_deleted_projects();
    }
}

impl Indexed for Namespace {
    const WATCH: Watch = Watch::Namespaces;

    fn apply(world: &mut World, ns: Self) {
        world.upsert_namespace(ns.name_any(), NamespaceState::from_namespace(&ns));
    }

    fn delete(world: &mut World, ns: Self) {
        world.remove_namespace(&ns.name_any());
    }

    fn reset(world: &mut World, all: Vec<Self>) {
        world.replace_namespaces(
            all.iter()
                .map(|ns| (ns.name_any(), NamespaceState::from_namespace(ns))),
        );
    }
}

/// What the name index keeps of a secret's metadata: never the full metadata, which can carry a
/// last-applied-configuration with the secret's data in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretName {
    pub namespace: String,
    pub name: String,
    pub meta: SecretMeta,
}

impl SecretName {
    pub fn from_meta(meta: ObjectMeta) -> Self {
        Self {
            meta: SecretMeta::from_meta(&meta),
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
        }
    }
}

impl Indexed for SecretName {
    const WATCH: Watch = Watch::SecretNames;

    fn apply(world: &mut World, s: Self) {
        world.upsert_secret_meta(&s.namespace, &s.name, s.meta);
    }

    fn delete(world: &mut World, s: Self) {
        world.remove_secret_meta(&s.namespace, &s.name);
    }

    fn reset(world: &mut World, all: Vec<Self>) {
        world.replace_secret_metas(all.into_iter().map(|s| (s.namespace, s.name, s.meta)));
    }
}

/// A secret carrying the project-scoped label as the index keeps it: originals whole, copies by
/// metadata and digests ([`Scoped`]), reduced as each arrives so a re-list never holds every copy whole.
#[derive(Debug, Clone)]
pub struct ScopedSecret {
    pub namespace: String,
    pub name: String,
    pub secret: Scoped,
}

impl ScopedSecret {
    pub fn new(secret: Secret) -> Self {
        Self::kept_as(secret, Scoped::new)
    }

    /// One of a downstream cluster: see [`Scoped::downstream`].
    pub fn downstream(secret: Secret) -> Self {
        Self::kept_as(secret, Scoped::downstream)
    }

    fn kept_as(secret: Secret, keep: impl FnOnce(Secret) -> Scoped) -> Self {
        Self {
            namespace: secret.namespace().unwrap_or_default(),
            name: secret.name_any(),
            secret: keep(secret),
        }
    }
}

impl Indexed for ScopedSecret {
    const WATCH: Watch = Watch::ScopedSecrets;

    fn apply(world: &mut World, s: Self) {
        world.insert_scoped(s.namespace, s.name, s.secret);
    }

    fn delete(world: &mut World, s: Self) {
        world.remove_scoped(&s.namespace, &s.name);
    }

    fn reset(world: &mut World, all: Vec<Self>) {
        world.replace_scoped(all.into_iter().map(|s| (s.namespace, s.name, s.secret)));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::keys;
    use crate::project::project_resource;
    use crate::world::fixtures::secret;
    use serde_json::json;

    pub fn project(cluster: &str, name: &str, backing: Option<&str>) -> DynamicObject {
        let mut object = DynamicObject::new(name, &project_resource()).within(cluster);
        if let Some(backing) = backing {
            object.data = json!({"status": {"backingNamespace": backing}});
        }
        object
    }

    pub fn namespace(name: &str, project: Option<&str>) -> Namespace {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.to_owned());
        if let Some(project) = project {
            ns.metadata.annotations =
                Some([(keys::PROJECT_ID_KEY.to_owned(), project.to_owned())].into());
        }
        ns
    }

    #[test]
    fn projects_deleted_or_vanished_while_the_watch_was_down_are_remembered() {
        let mut world = World::default();
        let (a, b) = (ProjectId::new("local", "a"), ProjectId::new("local", "b"));
        DynamicObject::reset(
            &mut world,
            vec![
                project("local", "a", Some("local-a")),
                project("local", "b", Some("local-b")),
            ],
        );
        assert!(world.projects_installed);
        assert_eq!(world.backing_project("local-a"), Some(&a));
        // Deleted: gone from the projects, remembered with its backing namespace.
        DynamicObject::delete(&mut world, project("local", "a", Some("local-a")));
        assert_eq!(world.project(&a), None);
        assert_eq!(
            world.unconfirmed_deleted_projects().collect::<Vec<_>>(),
            [&a]
        );
        // Re-created: forgotten.
        DynamicObject::apply(&mut world, project("local", "a", Some("local-a")));
        assert_eq!(world.unconfirmed_deleted_projects().count(), 0);
        // Missing from a re-list: remembered too; listed again: forgotten.
        DynamicObject::reset(&mut world, vec![project("local", "a", Some("local-a"))]);
        assert_eq!(world.project(&b), None);
        assert_eq!(
            world.unconfirmed_deleted_projects().collect::<Vec<_>>(),
            [&b]
        );
        DynamicObject::reset(
            &mut world,
            vec![
                project("local", "a", Some("local-a")),
                project("local", "b", Some("local-b")),
            ],
        );
        assert_eq!(world.unconfirmed_deleted_projects().count(), 0);
    }

    #[test]
    fn a_project_created_again_under_its_name_does_not_cancel_the_deletion() {
        let object = |uid: &str| {
            let mut p = project("local", "a", Some("local-a"));
            p.metadata.uid = Some(uid.to_owned());
            p
        };
        let a = ProjectId::new("local", "a");
        let mut world = World::default();
        DynamicObject::apply(&mut world, object("u-1"));
        // `kubectl replace --force`: Delete, then another object under the same name.
        DynamicObject::delete(&mut world, object("u-1"));
        DynamicObject::apply(&mut world, object("u-2"));
        assert_eq!(world.deleted_project_uid(&a), Some("u-1"));
        assert_eq!(world.project(&a).map(|p| p.uid.as_str()), Some("u-2"));
        // The same, with the Delete event missed: the replaced object is remembered as deleted.
        let mut world = World::default();
        DynamicObject::apply(&mut world, object("u-1"));
        DynamicObject::apply(&mut world, object("u-2"));
        assert_eq!(world.deleted_project_uid(&a), Some("u-1"));
        // And across a re-list.
        let mut world = World::default();
        DynamicObject::reset(&mut world, vec![object("u-1")]);
        DynamicObject::reset(&mut world, vec![object("u-2")]);
        assert_eq!(world.deleted_project_uid(&a), Some("u-1"));
        // The deleted object itself seen again (its deletion was not what it seemed): forgotten.
        let mut world = World::default();
        DynamicObject::apply(&mut world, object("u-1"));
        DynamicObject::delete(&mut world, object("u-1"));
        DynamicObject::apply(&mut world, object("u-1"));
        assert_eq!(world.deleted_project_uid(&a), None);
    }

    #[test]
    fn unserved_projects_are_none_and_no_deletion_is_kept() {
        let mut world = World::default();
        DynamicObject::apply(&mut world, project("local", "a", Some("local-a")));
        DynamicObject::delete(&mut world, project("local", "b", Some("local-b")));
        assert!(DynamicObject::is_served(&world));
        DynamicObject::unserved(&mut world);
        assert!(!DynamicObject::is_served(&world));
        assert_eq!(world.projects().count(), 0);
        assert_eq!(world.unconfirmed_deleted_projects().count(), 0);
    }

    #[test]
    fn namespaces_are_applied_deleted_and_replaced_by_a_list() {
        let mut world = World::default();
        Namespace::apply(&mut world, namespace("team-a", Some("local:p-x")));
        Namespace::apply(&mut world, namespace("team-b", None));
        assert_eq!(
            world.namespace("team-a").and_then(|n| n.project()),
            Some(ProjectId::new("local", "p-x"))
        );
        Namespace::delete(&mut world, namespace("team-b", None));
        assert_eq!(world.namespace("team-b"), None);
        Namespace::reset(&mut world, vec![namespace("team-c", None)]);
        let names: Vec<_> = world.namespaces().map(|(n, _)| n).collect();
        assert_eq!(names, ["team-c"]);
    }

    #[test]
    fn the_name_index_keeps_names_and_copy_markers_only() {
        let mut world = World::default();
        let copy = secret("team-a", "db", &[], &[(keys::ORIGIN_ANNOTATION, "b/db")]);
        let name = SecretName::from_meta(copy.metadata);
        assert_eq!(
            (name.namespace.as_str(), name.name.as_str()),
            ("team-a", "db")
        );
        SecretName::apply(&mut world, name.clone());
        assert_eq!(
            world
                .secret_meta("team-a", "db")
                .and_then(|m| m.copy_of.as_deref()),
            Some("b/db")
        );
        SecretName::delete(&mut world, name.clone());
        assert_eq!(world.secret_count(), 0);
        SecretName::apply(&mut world, name);
        let other = SecretName::from_meta(secret("team-b", "api", &[], &[]).metadata);
        SecretName::reset(&mut world, vec![other]);
        assert_eq!(world.secret_count(), 1);
        assert!(world.secret_meta("team-b", "api").is_some());
    }

    #[test]
    fn scoped_secrets_are_kept_whole_copies_without_data_and_replaced_by_a_list() {
        let mut world = World::default();
        let label = [(keys::PROJECT_SCOPED_LABEL, "p-x")];
        let scoped = |ns: &str, name: &str, annotations: &[(&str, &str)]| {
            ScopedSecret::new(secret(ns, name, &label, annotations))
        };
        ScopedSecret::apply(&mut world, scoped("local-p-x", "db", &[]));
        assert!(
            world
                .scoped("local-p-x", "db")
                .and_then(Scoped::whole)
                .is_some_and(|s| s.data.is_some())
        );
        let origin = [(keys::ORIGIN_ANNOTATION, "local-p-x/db")];
        ScopedSecret::apply(&mut world, scoped("team-a", "db", &origin));
        assert!(
            world
                .scoped("team-a", "db")
                .is_some_and(|s| s.copy().is_some())
        );
        ScopedSecret::delete(&mut world, scoped("local-p-x", "db", &[]));
        assert_eq!(world.scoped_count(), 1);
        ScopedSecret::reset(&mut world, vec![scoped("local-p-x", "api", &[])]);
        let names: Vec<_> = world.scoped_secrets().map(|(_, name, _)| name).collect();
        assert_eq!(names, ["api"]);
    }
}
