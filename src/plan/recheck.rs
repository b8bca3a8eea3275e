//! The last word before a copy is deleted. The plan decides from the index, and the index can lag
//! behind the apiserver, one watch more than another: right after a leader change or a re-list, a
//! copy can be indexed before its original, or before its namespace is seen joining the project.
//! A copy that looks unwanted then is not. So a delete is decided again from fresh reads of the two
//! things that make a copy wanted: its namespace, and the one original that could want it there.

use super::fate::{keeps_copy, wants_copy};
use super::{IgnoreList, Settings};
use crate::keys;
use crate::world::{NamespaceState, World};
use k8s_openapi::api::core::v1::Secret;

/// The only place an original wanting a copy named `name` in a namespace (as read fresh) can live:
/// `name` in the backing namespace of the namespace's project. `None` when the namespace is in no
/// project, or its project owns no backing namespace: then nothing can want the copy.
pub fn wanting_original<'w>(
    world: &'w World,
    live_namespace: &NamespaceState,
    name: &str,
) -> Option<(&'w str, String)> {
    let project = world.member_project(live_namespace)?;
    let backing = world.owned_backing_namespace(&project)?;
    Some((backing, name.to_owned()))
}

/// Whether the copy `namespace/name` is wanted after all, given fresh reads of the copy (its origin
/// annotation, `copy_origin`), of its namespace and of the original [`wanting_original`] names
/// (`None`: not found). Only a `false` allows the delete.
pub fn wanted_after_all(
    world: &World,
    settings: &Settings,
    namespace: &str,
    name: &str,
    copy_origin: Option<&str>,
    live_namespace: Option<&NamespaceState>,
    live_original: Option<&Secret>,
) -> bool {
    let (Some(live_namespace), Some(secret)) = (live_namespace, live_original) else {
        return false;
    };
    let Some(original) = world.as_original(secret) else {
        return false;
    };
    let ignore = IgnoreList::of(&secret.metadata);
    let terminating = live_namespace.terminating;
    // An original whose copies are held back keeps its own that exist, as the plan does; a copy
    // of another original holding the name still goes.
    let its_own = copy_origin == Some(keys::origin_value(original.namespace(), name).as_str());
    let stays = if its_own { keeps_copy } else { wants_copy };
    original.name() == name
        && world.member_project(live_namespace).as_ref() == Some(original.project)
        && stays(&original, &ignore, namespace, terminating, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::plan::fixtures::*;
    use crate::plan::{Action, ProtectedNamespaces};
    use crate::world::Scoped;

    /// The world a lagging watch leaves right after a leader change: the copy in team-a is indexed,
    /// its original (the scoped watch is behind) is not.
    fn skewed() -> (World, Secret) {
        let mut world = converged();
        let original = world
            .scoped(BACKING, "db")
            .and_then(Scoped::whole)
            .expect("original")
            .clone();
        world.remove_scoped(BACKING, "db");
        world.remove_secret_meta(BACKING, "db");
        (world, original)
    }

    fn member(world: &World, ns: &str) -> NamespaceState {
        world.namespace(ns).cloned().expect("indexed namespace")
    }

    #[test]
    fn the_plan_alone_would_delete_a_copy_whose_original_is_not_indexed_yet() {
        let (world, _) = skewed();
        let deletes: Vec<_> = actions(&world, WARN)
            .into_iter()
            .filter(|a| matches!(a, Action::Delete { .. }))
            .map(|a| format!("{a:?}"))
            .collect();
        assert_eq!(
            deletes,
            [
                "delete team-a/db (origin local-p-vwxyz/db)",
                "delete team-b/db (origin local-p-vwxyz/db)"
            ]
        );
    }

    #[test]
    fn a_copy_whose_original_exists_is_wanted_after_all() {
        let (world, original) = skewed();
        let settings = Settings::default();
        let team_a = member(&world, "team-a");
        assert_eq!(
            wanting_original(&world, &team_a, "db"),
            Some((BACKING, "db".to_owned()))
        );
        assert!(wanted_after_all(
            &world,
            &settings,
            "team-a",
            "db",
            None,
            Some(&team_a),
            Some(&original)
        ));
    }

    #[test]
    fn a_copy_is_unwanted_when_the_fresh_reads_say_so() {
        let (world, original) = skewed();
        let settings = Settings::default();
        let team_a = member(&world, "team-a");
        let wanted =
            |ns: &str, name: &str, live_ns: Option<&NamespaceState>, o: Option<&Secret>| {
                wanted_after_all(&world, &settings, ns, name, None, live_ns, o)
            };
        assert!(
            !wanted("team-a", "db", Some(&team_a), None),
            "original gone"
        );
        assert!(
            !wanted("team-a", "db", None, Some(&original)),
            "namespace gone"
        );
        let left = NamespaceState::default();
        assert!(
            !wanted("team-a", "db", Some(&left), Some(&original)),
            "left"
        );
        let dying = NamespaceState {
            terminating: true,
            ..team_a.clone()
        };
        assert!(!wanted("team-a", "db", Some(&dying), Some(&original)));
        assert!(!wanted("team-a", "other", Some(&team_a), Some(&original)));

        let mut unlabelled = original.clone();
        unlabelled.metadata.labels = None;
        assert!(!wanted("team-a", "db", Some(&team_a), Some(&unlabelled)));
        let mut ignoring = original.clone();
        ignoring
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(
                keys::IGNORE_NAMESPACES_ANNOTATION.to_owned(),
                "team-a".to_owned(),
            );
        assert!(!wanted("team-a", "db", Some(&team_a), Some(&ignoring)));

        let protected = Settings {
            protected: ProtectedNamespaces::new(&["team-a"], "scoped-secrets-system"),
            ..Settings::default()
        };
        assert!(!wanted_after_all(
            &world,
            &protected,
            "team-a",
            "db",
            None,
            Some(&team_a),
            Some(&original)
        ));
    }

    /// The plan keeps the copies of an original it holds back: so does the last word.
    #[test]
    fn the_copies_of_a_held_back_original_are_wanted_after_all() {
        let (world, original) = skewed();
        let settings = Settings::default();
        let team_a = member(&world, "team-a");
        let mut unreadable = original.clone();
        unreadable
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(
                keys::IGNORE_NAMESPACES_ANNOTATION.to_owned(),
                "(".to_owned(),
            );
        let mut crowded = original.clone();
        let labels = crowded.metadata.labels.get_or_insert_default();
        labels.extend((0..keys::MAX_METADATA_ENTRIES).map(|i| (format!("l{i}"), String::new())));
        let own = keys::origin_value(BACKING, "db");
        for held in [&unreadable, &crowded] {
            let wanted = |origin: Option<&str>, state| {
                wanted_after_all(&world, &settings, "team-a", "db", origin, state, Some(held))
            };
            assert!(wanted(Some(&own), Some(&team_a)));
            let dying = NamespaceState {
                terminating: true,
                ..team_a.clone()
            };
            assert!(!wanted(Some(&own), Some(&dying)));
            // Another original's copy holding the name, or a Rancher copy, is not kept.
            assert!(!wanted(Some("elsewhere/db"), Some(&team_a)));
            assert!(!wanted(None, Some(&team_a)));
        }
    }

    #[test]
    fn a_namespace_outside_every_owned_project_has_no_wanting_original() {
        let (mut world, _) = skewed();
        assert_eq!(
            wanting_original(&world, &NamespaceState::default(), "db"),
            None
        );
        world.remove_project(&p());
        assert_eq!(
            wanting_original(&world, &member(&world, "team-a"), "db"),
            None
        );
    }
}
