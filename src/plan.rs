//! The one truth about copies, as pure functions of the world: which namespaces an original wants a
//! copy in, what becoming exact takes in each ([`Fate`]), and the writes that get there
//! ([`actions`]). The reconciler executes the actions, the `plan` command prints them, and the
//! webhook's overwrite, conflict and removal warnings read the same fates.

use crate::world;
use std::collections::BTreeSet;

mod action;
mod clusters;
#[cfg(test)]
mod clusters_tests;
mod copies;
mod copy;
mod fate;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod ignore;
mod progress;
mod recheck;
mod repairs;

pub use action::{Action, ActionKind, BackingRefusal, ConflictReason, PlacedCopy};
pub use clusters::{downstream_actions, management_actions, served_elsewhere};
pub use copies::{actions, consents_to_overwrite};
pub use copy::{
    Drift, copy_fits, copy_metadata_entries, copy_of, drift, replaceable_in_place, replaced,
};
pub use fate::{Fate, fate, kept_in, kept_namespaces, wanted_in, wanted_namespaces, wants_copy};
pub use ignore::{IgnoreList, IgnorePatternError};
pub use progress::{Progress, progress};
pub use recheck::{wanted_after_all, wanting_original};
pub use repairs::{backing_namespace_actions, wanted_project_label};

/// Every action the world needs: backing namespaces first (only when this instance manages them,
/// `--manage-backing-namespaces`), then label repairs, copy writes and removals ([`actions`]). What
/// the reconciler executes and `plan` prints.
pub fn planned(
    world: &world::World,
    settings: &Settings,
    manage_backing_namespaces: bool,
) -> Vec<Action> {
    let mut planned = if manage_backing_namespaces {
        backing_namespace_actions(world)
    } else {
        Vec::new()
    };
    planned.extend(actions(world, settings));
    planned
}

/// What happens when a copy would replace a secret that is not a copy (S2, N3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverwritePolicy {
    #[default]
    Warn,
    /// Refuse unless the original carries the allow-overwrite consent annotation.
    Deny,
}

/// The namespaces that never receive copies and never join a project: the control plane's and the
/// product's own. A copy there would hand project secrets to whoever runs system workloads, and
/// these namespaces are where an outage of the webhook must not lock anyone out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedNamespaces(BTreeSet<String>);

/// The control plane's namespaces; the product's own is added by [`ProtectedNamespaces::new`].
pub const DEFAULT_PROTECTED_NAMESPACES: [&str; 3] =
    ["kube-system", "kube-public", "kube-node-lease"];

impl ProtectedNamespaces {
    /// `listed` plus the product's own namespace, which is always protected.
    pub fn new<S: AsRef<str>>(listed: &[S], own_namespace: &str) -> Self {
        let mut names: BTreeSet<String> = listed
            .iter()
            .map(|n| n.as_ref().trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        if !own_namespace.is_empty() {
            names.insert(own_namespace.to_owned());
        }
        Self(names)
    }

    pub fn contains(&self, namespace: &str) -> bool {
        self.0.contains(namespace)
    }

    /// The names, sorted, for messages.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl Default for ProtectedNamespaces {
    /// The control plane's namespaces and `scoped-secrets-system` (deploy/'s namespace).
    fn default() -> Self {
        Self::new(&DEFAULT_PROTECTED_NAMESPACES, "scoped-secrets-system")
    }
}

/// The settings every reader of the one truth shares: the webhook, the reconciler and `plan` must be
/// given the same ones, or they disagree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub overwrite_policy: OverwritePolicy,
    pub protected: ProtectedNamespaces,
}

impl Settings {
    pub fn with_policy(overwrite_policy: OverwritePolicy) -> Self {
        Self {
            overwrite_policy,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_namespaces_are_planned_only_when_managed() {
        let mut world = world::World::default();
        world.upsert_project(
            crate::keys::ProjectId::new("local", "p-new"),
            world::ProjectState {
                uid: String::new(),
                backing_namespace: "p-new".to_owned(),
                has_backing_status: false,
                backing_not_ready: None,
                deleting: false,
            },
        );
        let kinds: Vec<_> = planned(&world, &Settings::default(), true)
            .iter()
            .map(Action::kind)
            .collect();
        assert_eq!(kinds, [ActionKind::SetBackingNamespace]);
        assert!(planned(&world, &Settings::default(), false).is_empty());
    }
}
