//! The plan target: generated worlds → `plan::planned`, `plan::actions` and
//! `plan::backing_namespace_actions` never panic, and `src/policy/properties.rs`'s properties hold
//! at a larger scale: the plan touches only what it may (every world); it converges and agrees with
//! `plan::wanted_namespaces` (tame worlds, whose every feature the apply model below executes).

use crate::worlds::{self, Scenario};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use scoped_secrets::keys;
use scoped_secrets::plan::{self, Action, OverwritePolicy, ProtectedNamespaces, Settings};
use scoped_secrets::world::World;
use std::collections::BTreeSet;

pub fn strategy() -> impl Strategy<Value = Scenario> {
    worlds::scenario()
}

fn settings(deny: bool) -> Settings {
    Settings {
        overwrite_policy: if deny {
            OverwritePolicy::Deny
        } else {
            OverwritePolicy::Warn
        },
        protected: ProtectedNamespaces::new(&worlds::PROTECTED, ""),
    }
}

pub fn check(s: &Scenario) -> Result<(), TestCaseError> {
    let world = worlds::build(s);
    let settings = settings(s.deny);
    let all = plan::planned(&world, &settings, true);
    let copies = plan::actions(&world, &settings);
    prop_assert_eq!(
        plan::planned(&world, &settings, false).len(),
        copies.len(),
        "planned without backing namespaces is the copy plan"
    );
    prop_assert_eq!(
        all.len(),
        plan::backing_namespace_actions(&world).len() + copies.len()
    );
    touches_only_what_it_may(&world, &settings, &copies)?;
    if s.wild.is_none() {
        converges(&world, &settings, &copies)?;
    }
    Ok(())
}

fn is_write(action: &Action) -> bool {
    matches!(
        action,
        Action::Create { .. }
            | Action::Overwrite { .. }
            | Action::Update { .. }
            | Action::Recreate { .. }
    )
}

/// No write into protected or terminating namespaces, only copies deleted, and a secret that is not
/// a copy overwritten only under the warn policy or with the original's consent.
fn touches_only_what_it_may(
    world: &World,
    settings: &Settings,
    actions: &[Action],
) -> Result<(), TestCaseError> {
    for action in actions {
        let (ns, name) = (action.namespace(), action.name());
        if is_write(action) {
            prop_assert!(!settings.protected.contains(ns), "{:?}", action);
            prop_assert!(
                !world.namespace(ns).is_some_and(|n| n.terminating),
                "{:?}",
                action
            );
        }
        let existing_is_copy = world.secret_meta(ns, name).is_some_and(|m| m.is_copy());
        match action {
            Action::Delete { .. } => prop_assert!(existing_is_copy, "{:?}", action),
            Action::Overwrite { .. } if !existing_is_copy => {
                let consents = action
                    .origin()
                    .and_then(keys::parse_origin)
                    .and_then(|(ons, oname)| world.scoped(ons, oname)?.whole())
                    .is_some_and(|o| plan::consents_to_overwrite(&o.metadata));
                prop_assert!(
                    settings.overwrite_policy == OverwritePolicy::Warn || consents,
                    "{:?}",
                    action
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// Executing the plan and planning again leaves only the same conflicts, and then every namespace
/// `wanted_namespaces` names holds the copy or reports why not, and no other holds one.
fn converges(world: &World, settings: &Settings, first: &[Action]) -> Result<(), TestCaseError> {
    let mut world = world.clone();
    apply(&mut world, first);
    let again = plan::actions(&world, settings);
    let conflicts = |actions: &[Action]| -> Vec<String> {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Conflict { .. }))
            .map(|a| format!("{a:?}"))
            .collect()
    };
    prop_assert!(
        again.iter().all(|a| matches!(a, Action::Conflict { .. })),
        "{:?}",
        again
    );
    prop_assert_eq!(conflicts(first), conflicts(&again));
    let reported: BTreeSet<(String, String)> = again
        .iter()
        .map(|a| {
            let origin = a.origin().unwrap_or_default().to_owned();
            (a.namespace().to_owned(), origin)
        })
        .collect();
    for original in world.originals() {
        let origin = keys::origin_value(original.namespace(), original.name());
        let wanted: BTreeSet<&str> =
            plan::wanted_namespaces(&world, original.clone(), settings).collect();
        if plan::IgnoreList::of(&original.secret.metadata).is_unreadable() {
            // Fails closed: wanted nowhere, nothing of it written, and nothing removed where it
            // would want a copy but for its list (its Conflicts were compared above).
            prop_assert!(wanted.is_empty(), "{} wanted in {:?}", origin, wanted);
            let reaches = |ns: &str| {
                world.namespace(ns).is_some_and(|n| {
                    world.member_project(n).as_ref() == Some(original.project)
                        && plan::wants_copy(
                            &original,
                            &plan::IgnoreList::default(),
                            ns,
                            n.terminating,
                            settings,
                        )
                })
            };
            let touched = first
                .iter()
                .filter(|a| a.origin() == Some(origin.as_str()))
                .any(|a| match a {
                    Action::Conflict { .. } => false,
                    Action::Delete { namespace, .. } => reaches(namespace),
                    _ => true,
                });
            prop_assert!(!touched, "{} written: {:?}", origin, first);
            continue;
        }
        for (ns, _) in world.namespaces() {
            let holds = world
                .scoped(ns, original.name())
                .and_then(|s| s.copy())
                .is_some_and(|c| c.origin.as_deref() == Some(origin.as_str()));
            let refused = reported.contains(&(ns.to_owned(), origin.clone()));
            prop_assert_eq!(
                wanted.contains(ns),
                holds || refused,
                "{} in {}",
                origin,
                ns
            );
        }
    }
    Ok(())
}

/// The world after the reconciler executed `actions` (uids and versions made up).
fn apply(world: &mut World, actions: &[Action]) {
    for action in actions {
        match action {
            Action::Create { copy }
            | Action::Overwrite { copy, .. }
            | Action::Update { copy, .. }
            | Action::Recreate { copy, .. } => {
                let mut copy = copy.placed();
                let (ns, name) = (action.namespace(), action.name());
                copy.metadata.uid = Some(format!("uid-written-{ns}-{name}"));
                copy.metadata.resource_version = Some("1".to_owned());
                worlds::add_secret(world, copy);
            }
            Action::Delete {
                namespace, name, ..
            } => {
                world.remove_secret_meta(namespace, name);
                world.remove_scoped(namespace, name);
            }
            Action::FixNamespaceLabel { namespace, label } => {
                let mut state = world.namespace(namespace).cloned().unwrap_or_default();
                state.project_label = label.clone();
                world.upsert_namespace(namespace.clone(), state);
            }
            Action::AddClusterLabel {
                namespace,
                name,
                cluster,
            } => {
                if let Some(original) = world.scoped(namespace, name).and_then(|s| s.whole()) {
                    let mut original = original.clone();
                    original.metadata.labels.get_or_insert_default().insert(
                        keys::PROJECT_SCOPED_CLUSTER_LABEL.to_owned(),
                        cluster.clone(),
                    );
                    worlds::add_secret(world, original);
                }
            }
            Action::Conflict { .. } | Action::SetBackingNamespace { .. } => {}
        }
    }
}
