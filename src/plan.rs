//! Desired copies as one pure function of the world. The reconciler executes them, the webhook's
//! overwrite and removal warnings read them, and the `plan` command prints them.

use crate::keys::{self, ProjectId};
use crate::world::{self, Original, World};
use regex::Regex;

mod copy;
mod diff;

pub use copy::{Drift, copy_of, drift, replaceable_in_place};
pub use diff::{
    Action, ActionKind, BackingRefusal, ConflictReason, actions, backing_namespace_actions,
    consents_to_overwrite, wanted_project_label,
};

/// The namespaces an original must not be copied into, from its ignore annotation.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    patterns: Vec<Regex>,
}

/// An ignore-namespaces entry that is not a valid pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ignore-namespaces entry {entry:?} is not a valid pattern: {reason}")]
pub struct IgnorePatternError {
    pub entry: String,
    pub reason: String,
}

impl IgnoreList {
    /// Parses a comma-separated list of namespace names or regular expressions. Every entry is
    /// anchored: `team-.*` matches `team-a`, never `my-team-a` (Rancher's are unanchored, a known bug).
    pub fn parse(value: &str) -> Result<Self, IgnorePatternError> {
        let patterns = value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                Regex::new(&format!("^(?:{entry})$")).map_err(|e| IgnorePatternError {
                    entry: entry.to_owned(),
                    reason: last_line(&e.to_string()),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// The ignore list of an original's metadata; an invalid list ignores nothing here (the webhook
    /// refuses it, and the reconciler reports it).
    pub fn of(meta: &kube::api::ObjectMeta) -> Self {
        world::annotation(meta, keys::IGNORE_NAMESPACES_ANNOTATION)
            .and_then(|v| Self::parse(v).ok())
            .unwrap_or_default()
    }

    pub fn matches(&self, namespace: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(namespace))
    }
}

/// The last non-empty line: where the regex crate puts the actual error.
fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(text)
        .to_owned()
}

/// One copy that should exist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredCopy {
    pub namespace: String,
    pub name: String,
    /// The original's namespace (the project's backing namespace).
    pub origin_namespace: String,
}

/// The namespaces of `project` that should hold a copy of an original living in `backing_namespace`
/// with the given ignore list: every namespace whose annotation names the project, except the backing
/// namespace, terminating ones and ignored ones. Sorted by name.
pub fn target_namespaces<'a>(
    world: &'a World,
    project: &'a ProjectId,
    backing_namespace: &'a str,
    ignore: &'a IgnoreList,
) -> impl Iterator<Item = &'a str> + 'a {
    world
        .project_namespaces(project)
        .filter(move |(name, ns)| wants_copy(name, ns.terminating, backing_namespace, ignore))
        .map(|(name, _)| name)
}

/// Whether a namespace of the original's project should hold a copy: not the backing namespace
/// itself, not terminating, not ignored. Also answers "what if this namespace joined" for the webhook.
pub fn wants_copy(
    namespace: &str,
    terminating: bool,
    backing_namespace: &str,
    ignore: &IgnoreList,
) -> bool {
    namespace != backing_namespace && !terminating && !ignore.matches(namespace)
}

/// Whether an original may be copied at all: a service-account token never is (S6; the webhook
/// refuses one, and one written while the webhook was down must not spread a token).
pub fn is_copyable(original: &Original<'_>) -> bool {
    original.secret.type_.as_deref() != Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE)
}

/// The copies one original wants.
pub fn desired_for<'a>(world: &'a World, original: &Original<'a>) -> Vec<DesiredCopy> {
    if !is_copyable(original) {
        return Vec::new();
    }
    let ignore = IgnoreList::of(&original.secret.metadata);
    let origin_namespace = original.namespace();
    target_namespaces(world, original.project, origin_namespace, &ignore)
        .map(|namespace| DesiredCopy {
            namespace: namespace.to_owned(),
            name: original.name().to_owned(),
            origin_namespace: origin_namespace.to_owned(),
        })
        .collect()
}

/// Every copy the world wants, sorted by (namespace, name).
pub fn desired(world: &World) -> Vec<DesiredCopy> {
    let mut all: Vec<_> = world
        .originals()
        .flat_map(|original| desired_for(world, &original))
        .collect();
    all.sort();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::NamespaceState;
    use crate::world::fixtures::*;

    #[test]
    fn ignore_patterns_are_anchored() {
        let list = IgnoreList::parse("team-.*, legacy").expect("valid");
        assert!(list.matches("team-a"));
        assert!(list.matches("legacy"));
        assert!(!list.matches("my-team-a"));
        assert!(!list.matches("legacy-2"));
    }

    #[test]
    fn invalid_ignore_pattern_names_the_entry() {
        let err = IgnoreList::parse("ok, team-(").expect_err("invalid");
        assert_eq!(err.entry, "team-(");
        assert!(!err.reason.is_empty());
    }

    #[test]
    fn copies_are_wanted_outside_backing_terminating_and_ignored_namespaces() {
        let ignore = IgnoreList::parse("skip-.*").expect("valid");
        assert!(wants_copy("team-a", false, "local-p", &ignore));
        assert!(!wants_copy("local-p", false, "local-p", &ignore));
        assert!(!wants_copy("team-a", true, "local-p", &ignore));
        assert!(!wants_copy("skip-me", false, "local-p", &ignore));
    }

    #[test]
    fn desired_skips_backing_terminating_and_ignored_namespaces() {
        let mut world = World::default();
        let p = project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        for ns in ["team-a", "team-b", "skip-me", "dying"] {
            namespace_in(&mut world, ns, &p);
        }
        let mut dying = world.namespace("dying").cloned().unwrap_or_default();
        dying.terminating = true;
        world.upsert_namespace("dying".to_owned(), dying);
        world.upsert_namespace(
            "label-only".to_owned(),
            NamespaceState {
                project_label: Some("p-vwxyz".to_owned()),
                ..NamespaceState::default()
            },
        );
        add_secret(
            &mut world,
            secret(
                "local-p-vwxyz",
                "db",
                &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
                &[(keys::IGNORE_NAMESPACES_ANNOTATION, "skip-.*")],
            ),
        );
        let got: Vec<_> = desired(&world).into_iter().map(|c| c.namespace).collect();
        assert_eq!(got, ["team-a", "team-b"]);
    }
}
