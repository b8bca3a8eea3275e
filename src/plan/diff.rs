//! What must be written to turn the world into the desired one: one pure diff, executed by the
//! reconciler and printed by the `plan` command.
//!
//! Which copies are ours to delete: a copy carrying our origin annotation (we wrote it, or adopted
//! it), or a Rancher copy (marker, no origin) whose label names a project we know, so that the
//! decision is an informed one. A Rancher copy naming an unknown project is left alone: with the
//! Project CRD missing or unreadable, deleting it would wipe out copies nobody asked us to manage.

use super::copy::{self, Drift, copy_of};
use super::{IgnoreList, is_copyable, wants_copy};
use crate::keys::{self, ProjectId};
use crate::policy::OverwritePolicy;
use crate::world::{self, NamespaceState, Original, World};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// One write (or, for [`Action::Conflict`], one refusal to write).
#[derive(Clone, PartialEq)]
pub enum Action {
    /// No secret of that name exists: create the copy.
    Create { copy: Secret },
    /// A secret that is not a copy holds the name: replace it (Warn policy, or consent).
    Overwrite { copy: Secret, existing_uid: String },
    /// The copy exists and differs: replace it in place.
    Update {
        copy: Secret,
        resource_version: String,
    },
    /// The copy's type or immutability differs: delete it, then create it again.
    Recreate { copy: Secret, existing_uid: String },
    /// A copy nobody wants any more.
    Delete {
        namespace: String,
        name: String,
        uid: String,
        /// The copy's origin (`<namespace>/<name>`), when it names one.
        origin: Option<String>,
    },
    /// A copy is wanted where another secret holds the name, and overwriting it is not allowed.
    Conflict {
        namespace: String,
        name: String,
        origin: String,
        reason: ConflictReason,
    },
    /// A project has no `status.backingNamespace`: set it, and create the namespace if missing.
    SetBackingNamespace {
        project: ProjectId,
        backing_namespace: String,
        create_namespace: bool,
    },
    /// A namespace's projectId label disagrees with its annotation: set it (or remove it).
    FixNamespaceLabel {
        namespace: String,
        label: Option<String>,
    },
    /// An original lacks the cluster label the mutator would have added.
    AddClusterLabel {
        namespace: String,
        name: String,
        cluster: String,
    },
}

/// Why a wanted copy cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    /// `--overwrite-policy=deny` and the original does not carry the consent annotation.
    NoConsent,
    /// The name is held by an original of another project (its backing namespace is in this one).
    HeldByOriginal,
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoConsent => write!(
                f,
                "a secret that is not a copy holds the name and the original lacks {}=\"true\"",
                keys::ALLOW_OVERWRITE_ANNOTATION
            ),
            Self::HeldByOriginal => write!(
                f,
                "the name is held by a project-scoped original, which is never overwritten"
            ),
        }
    }
}

/// The kind of an action, for metrics, events and the plan report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    Create,
    Overwrite,
    Update,
    Recreate,
    Delete,
    Conflict,
    SetBackingNamespace,
    FixNamespaceLabel,
    AddClusterLabel,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Overwrite => "overwrite",
            Self::Update => "update",
            Self::Recreate => "recreate",
            Self::Delete => "delete",
            Self::Conflict => "conflict",
            Self::SetBackingNamespace => "set_backing_namespace",
            Self::FixNamespaceLabel => "fix_namespace_label",
            Self::AddClusterLabel => "add_cluster_label",
        }
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::Create { .. } => ActionKind::Create,
            Self::Overwrite { .. } => ActionKind::Overwrite,
            Self::Update { .. } => ActionKind::Update,
            Self::Recreate { .. } => ActionKind::Recreate,
            Self::Delete { .. } => ActionKind::Delete,
            Self::Conflict { .. } => ActionKind::Conflict,
            Self::SetBackingNamespace { .. } => ActionKind::SetBackingNamespace,
            Self::FixNamespaceLabel { .. } => ActionKind::FixNamespaceLabel,
            Self::AddClusterLabel { .. } => ActionKind::AddClusterLabel,
        }
    }

    /// The namespace of the object written (empty for cluster-scoped namespace writes).
    pub fn namespace(&self) -> &str {
        match self {
            Self::Create { copy }
            | Self::Overwrite { copy, .. }
            | Self::Update { copy, .. }
            | Self::Recreate { copy, .. } => copy.metadata.namespace.as_deref().unwrap_or_default(),
            Self::Delete { namespace, .. }
            | Self::Conflict { namespace, .. }
            | Self::AddClusterLabel { namespace, .. } => namespace,
            Self::SetBackingNamespace { project, .. } => &project.cluster,
            Self::FixNamespaceLabel { .. } => "",
        }
    }

    /// The name of the object written.
    pub fn name(&self) -> &str {
        match self {
            Self::Create { copy }
            | Self::Overwrite { copy, .. }
            | Self::Update { copy, .. }
            | Self::Recreate { copy, .. } => copy.metadata.name.as_deref().unwrap_or_default(),
            Self::Delete { name, .. }
            | Self::Conflict { name, .. }
            | Self::AddClusterLabel { name, .. } => name,
            Self::SetBackingNamespace { project, .. } => &project.project,
            Self::FixNamespaceLabel { namespace, .. } => namespace,
        }
    }

    /// The original (`<namespace>/<name>`) a copy action is about.
    pub fn origin(&self) -> Option<&str> {
        match self {
            Self::Create { copy }
            | Self::Overwrite { copy, .. }
            | Self::Update { copy, .. }
            | Self::Recreate { copy, .. } => {
                world::annotation(&copy.metadata, keys::ORIGIN_ANNOTATION)
            }
            Self::Delete { origin, .. } => origin.as_deref(),
            Self::Conflict { origin, .. } => Some(origin),
            Self::SetBackingNamespace { .. }
            | Self::FixNamespaceLabel { .. }
            | Self::AddClusterLabel { .. } => None,
        }
    }
}

/// Names and kinds only: an action's copy holds secret data, which must never reach a log.
impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind().as_str(),
            self.namespace(),
            self.name()
        )?;
        if let Some(origin) = self.origin() {
            write!(f, " (origin {origin})")?;
        }
        Ok(())
    }
}

/// Whether an original consents to overwriting non-copy secrets under `--overwrite-policy=deny`.
pub fn consents_to_overwrite(meta: &ObjectMeta) -> bool {
    world::annotation(meta, keys::ALLOW_OVERWRITE_ANNOTATION) == Some(keys::TRUE)
}

/// Every copy write, copy removal, conflict and label repair the world needs; empty when converged.
/// Label repairs come first, then copy writes by original, then deletions.
///
/// The same desired state as [`super::desired_for`] (which the webhook asks one original at a time),
/// computed for the whole world at once: each namespace's project is parsed once, not once per original.
pub fn actions(world: &World, policy: OverwritePolicy) -> Vec<Action> {
    let mut out = label_repairs(world);
    let members = members_by_project(world);
    let mut wanted: HashSet<(&str, &str)> = HashSet::new();
    for original in world.originals().filter(is_copyable) {
        let Some(namespaces) = members.get(original.project) else {
            continue;
        };
        let ignore = IgnoreList::of(&original.secret.metadata);
        let name = original.secret.metadata.name.as_deref().unwrap_or_default();
        // Every copy of an original is the same but for its namespace: build it once.
        let template = copy_of(&original, "");
        for &(namespace, terminating) in namespaces {
            if wants_copy(namespace, terminating, original.namespace(), &ignore)
                && wanted.insert((namespace, name))
            {
                out.extend(copy_action(world, &original, &template, namespace, policy));
            }
        }
    }
    out.extend(removals(world, &wanted));
    out
}

/// Each project's namespaces (by annotation), sorted by name, with whether each is terminating.
fn members_by_project(world: &World) -> HashMap<ProjectId, Vec<(&str, bool)>> {
    let mut members: HashMap<ProjectId, Vec<(&str, bool)>> = HashMap::new();
    for (name, ns) in world.namespaces() {
        if let Some(project) = ns.project() {
            members
                .entry(project)
                .or_default()
                .push((name, ns.terminating));
        }
    }
    members
}

/// Projects without `status.backingNamespace` get one (SPEC §3, `--manage-backing-namespaces`): the
/// generated `<cluster>-<project>`, unless the legacy backing namespace (the project's name) exists or
/// holds originals, which is then recorded as it is, so that originals living there are not stranded.
pub fn backing_namespace_actions(world: &World) -> Vec<Action> {
    world
        .projects()
        .filter(|(_, state)| !state.has_backing_status)
        .map(|(id, _)| {
            let legacy = id.legacy_backing_namespace();
            let in_use =
                world.namespace(legacy).is_some() || world.originals_of(id).next().is_some();
            let backing_namespace = if in_use {
                legacy.to_owned()
            } else {
                id.generated_backing_namespace()
            };
            Action::SetBackingNamespace {
                project: id.clone(),
                create_namespace: world.namespace(&backing_namespace).is_none(),
                backing_namespace,
            }
        })
        .collect()
}

/// The write that makes `namespace`'s copy of `original` (`template`, placed there) exact, if any.
fn copy_action(
    world: &World,
    original: &Original<'_>,
    template: &Secret,
    namespace: &str,
    policy: OverwritePolicy,
) -> Option<Action> {
    let copy = || {
        let mut copy = template.clone();
        copy.metadata.namespace = Some(namespace.to_owned());
        copy
    };
    let name = original.name();
    if let Some(existing) = world.scoped(namespace, name) {
        let meta = &existing.metadata;
        let uid = meta.uid.clone().unwrap_or_default();
        if world::is_copy(meta) {
            return match copy::drift(existing, template) {
                Drift::None => None,
                Drift::Changed => Some(Action::Update {
                    copy: copy(),
                    resource_version: meta.resource_version.clone().unwrap_or_default(),
                }),
                Drift::Replace => Some(Action::Recreate {
                    copy: copy(),
                    existing_uid: uid,
                }),
            };
        }
        if world.as_original(existing).is_some() {
            return Some(conflict(
                original,
                namespace,
                ConflictReason::HeldByOriginal,
            ));
        }
        return Some(overwrite_or_conflict(original, copy(), uid, policy));
    }
    let Some(existing) = world.secret_meta(namespace, name) else {
        return Some(Action::Create { copy: copy() });
    };
    if existing.is_copy() {
        // A copy without our label (someone removed it): marked as a copy, so it holds nobody's data
        // and needs no consent; the name index has no full object to compare, so replace it.
        return Some(Action::Overwrite {
            copy: copy(),
            existing_uid: existing.uid.clone(),
        });
    }
    Some(overwrite_or_conflict(
        original,
        copy(),
        existing.uid.clone(),
        policy,
    ))
}

fn overwrite_or_conflict(
    original: &Original<'_>,
    copy: Secret,
    existing_uid: String,
    policy: OverwritePolicy,
) -> Action {
    if policy == OverwritePolicy::Warn || consents_to_overwrite(&original.secret.metadata) {
        return Action::Overwrite { copy, existing_uid };
    }
    let namespace = copy.metadata.namespace.clone().unwrap_or_default();
    conflict(original, &namespace, ConflictReason::NoConsent)
}

fn conflict(original: &Original<'_>, namespace: &str, reason: ConflictReason) -> Action {
    Action::Conflict {
        namespace: namespace.to_owned(),
        name: original.name().to_owned(),
        origin: keys::origin_value(original.namespace(), original.name()),
        reason,
    }
}

/// Copies no original wants in their namespace any more (see the module docs for which are ours).
///
/// Only copies whose project is known are ever removed: while the Project CRD is not served, or for
/// an origin outside every known backing namespace, nothing is deleted. A missing CRD, a re-installed
/// one, or a projects watch that briefly lists nothing must never wipe out copies that are still wanted.
/// The one exception is a project whose deletion a fresh read has proven (revocation): its backing
/// namespace still counts as known, so the copies of its originals go.
fn removals(world: &World, wanted: &HashSet<(&str, &str)>) -> Vec<Action> {
    if !world.projects_installed {
        return Vec::new();
    }
    let is_wanted = |ns: &str, name: &str| wanted.contains(&(ns, name));
    let origin_known = |origin: &str| {
        keys::parse_origin(origin).is_some_and(|(ns, _)| {
            world.backing_project(ns).is_some() || world.is_deleted_backing_namespace(ns)
        })
    };
    let known_projects: HashSet<&str> = world
        .projects()
        .map(|(id, _)| id.project.as_str())
        .collect();
    let mut out: Vec<Action> = world
        .copies()
        .filter_map(|copy| {
            let meta = &copy.metadata;
            let (ns, name) = (meta.namespace.as_deref()?, meta.name.as_deref()?);
            let origin = world::annotation(meta, keys::ORIGIN_ANNOTATION);
            let ours = match origin {
                Some(origin) => origin_known(origin),
                None => world::label(meta, keys::PROJECT_SCOPED_LABEL).is_some_and(|project| {
                    known_projects.contains(project) || world.is_deleted_project_name(project)
                }),
            };
            (ours && !is_wanted(ns, name)).then(|| Action::Delete {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                uid: meta.uid.clone().unwrap_or_default(),
                origin: origin.map(str::to_owned),
            })
        })
        .collect();
    // Copies whose label was removed are only in the name index; ours carry an origin there.
    let mut unlabelled: Vec<Action> = world
        .secret_metas()
        .filter(|(ns, name, meta)| {
            meta.copy_of.as_deref().is_some_and(origin_known)
                && world.scoped(ns, name).is_none()
                && !is_wanted(ns, name)
        })
        .map(|(ns, name, meta)| Action::Delete {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: meta.uid.clone(),
            origin: meta.copy_of.clone(),
        })
        .collect();
    unlabelled.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    out.extend(unlabelled);
    out
}

/// The projectId label a namespace should carry (`Some(None)`: none at all), mirroring its annotation;
/// `None` when the annotation is malformed, which is the webhook's to refuse: its label is left alone.
pub fn wanted_project_label(ns: &NamespaceState) -> Option<Option<String>> {
    match ns.project_annotation.as_deref() {
        None => Some(None),
        Some(value) => Some(Some(ProjectId::parse(value).ok()?.project)),
    }
}

/// The reconciler's twin of the mutators (M1, M2) for objects written while the webhook was down.
fn label_repairs(world: &World) -> Vec<Action> {
    let namespaces = world.namespaces().filter_map(|(name, ns)| {
        if ns.terminating {
            return None;
        }
        let wanted = wanted_project_label(ns)?;
        (ns.project_label != wanted).then(|| Action::FixNamespaceLabel {
            namespace: name.to_owned(),
            label: wanted,
        })
    });
    let originals = world.originals().filter_map(|original| {
        world::label(
            &original.secret.metadata,
            keys::PROJECT_SCOPED_CLUSTER_LABEL,
        )
        .is_none()
        .then(|| Action::AddClusterLabel {
            namespace: original.namespace().to_owned(),
            name: original.name().to_owned(),
            cluster: original.project.cluster.clone(),
        })
    });
    namespaces.chain(originals).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::ProjectState;
    use crate::world::fixtures::*;
    use k8s_openapi::ByteString;

    const BACKING: &str = "local-p-vwxyz";
    const WARN: OverwritePolicy = OverwritePolicy::Warn;
    const DENY: OverwritePolicy = OverwritePolicy::Deny;

    fn p() -> ProjectId {
        ProjectId::new("local", "p-vwxyz")
    }

    fn original_labels() -> [(&'static str, &'static str); 2] {
        [
            (keys::PROJECT_SCOPED_LABEL, "p-vwxyz"),
            (keys::PROJECT_SCOPED_CLUSTER_LABEL, "local"),
        ]
    }

    /// A project with two namespaces and one original, `db`, and no copies yet.
    fn base() -> World {
        let mut world = World::default();
        let p = project(&mut world, "local", "p-vwxyz", BACKING);
        namespace_in(&mut world, "team-a", &p);
        namespace_in(&mut world, "team-b", &p);
        add_secret(&mut world, secret(BACKING, "db", &original_labels(), &[]));
        world
    }

    /// The copy of `db` that `ns` should hold, as the apiserver would return it.
    fn stored_copy(world: &World, ns: &str) -> Secret {
        let secret = world.scoped(BACKING, "db").expect("original");
        let original = world.as_original(secret).expect("is an original");
        let mut copy = copy_of(&original, ns);
        copy.metadata.uid = Some(format!("uid-{ns}-db"));
        copy.metadata.resource_version = Some("1".to_owned());
        copy
    }

    fn put_copy(world: &mut World, ns: &str) {
        let copy = stored_copy(world, ns);
        add_secret(world, copy);
    }

    fn converged() -> World {
        let mut world = base();
        put_copy(&mut world, "team-a");
        put_copy(&mut world, "team-b");
        world
    }

    fn edit_copy(world: &mut World, ns: &str, edit: impl Fn(&mut Secret)) {
        let mut copy = stored_copy(world, ns);
        edit(&mut copy);
        add_secret(world, copy);
    }

    fn remove_original(world: &mut World) {
        world.remove_scoped(BACKING, "db");
        world.remove_secret_meta(BACKING, "db");
    }

    fn plain(world: &mut World, ns: &str) {
        add_secret(world, secret(ns, "db", &[], &[]));
    }

    fn describe(world: &World, policy: OverwritePolicy) -> Vec<String> {
        actions(world, policy)
            .iter()
            .map(|a| format!("{a:?}"))
            .collect()
    }

    type Setup = fn(&mut World);

    #[test]
    fn copy_actions_table() {
        let cases: Vec<(&str, Setup, OverwritePolicy, Vec<&str>)> = vec![
            ("steady state writes nothing", |_| {}, WARN, vec![]),
            (
                "missing copies are created",
                |w| *w = base(),
                WARN,
                vec![
                    "create team-a/db (origin local-p-vwxyz/db)",
                    "create team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "changed data is updated",
                |w| edit_copy(w, "team-a", |c| c.data = None),
                WARN,
                vec!["update team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "an extra label is removed",
                |w| {
                    edit_copy(w, "team-b", |c| {
                        c.metadata
                            .labels
                            .get_or_insert_default()
                            .insert("x".to_owned(), "y".to_owned());
                    })
                },
                WARN,
                vec!["update team-b/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a type change is recreated",
                |w| edit_copy(w, "team-a", |c| c.type_ = Some(keys::TLS_TYPE.to_owned())),
                WARN,
                vec!["recreate team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a non-copy is overwritten under warn",
                |w| {
                    w.remove_scoped("team-a", "db");
                    plain(w, "team-a");
                },
                WARN,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a non-copy is a conflict under deny",
                |w| {
                    w.remove_scoped("team-a", "db");
                    plain(w, "team-a");
                },
                DENY,
                vec!["conflict team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "consent allows the overwrite under deny",
                |w| {
                    let mut original = secret(BACKING, "db", &original_labels(), &[]);
                    original.metadata.annotations = Some(
                        [(
                            keys::ALLOW_OVERWRITE_ANNOTATION.to_owned(),
                            keys::TRUE.to_owned(),
                        )]
                        .into(),
                    );
                    add_secret(w, original);
                    put_copy(w, "team-b");
                    w.remove_scoped("team-a", "db");
                    plain(w, "team-a");
                },
                DENY,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a labelled stray non-copy is overwritten under warn",
                |w| add_secret(w, secret("team-a", "db", &original_labels(), &[])),
                WARN,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a copy that lost its label is replaced without consent",
                |w| {
                    let copy = stored_copy(w, "team-a");
                    w.remove_scoped("team-a", "db");
                    w.upsert_secret_meta(
                        "team-a",
                        "db",
                        crate::world::SecretMeta::from_meta(&copy.metadata),
                    );
                },
                DENY,
                vec!["overwrite team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "an original of another project is never overwritten",
                |w| {
                    project(w, "local", "p-other", "team-a");
                    let labels = [
                        (keys::PROJECT_SCOPED_LABEL, "p-other"),
                        (keys::PROJECT_SCOPED_CLUSTER_LABEL, "local"),
                    ];
                    add_secret(w, secret("team-a", "db", &labels, &[]));
                    let mut ns = w.namespace("team-a").cloned().unwrap_or_default();
                    ns.project_annotation = Some(p().to_string());
                    ns.project_label = Some(p().project);
                    w.upsert_namespace("team-a".to_owned(), ns);
                },
                WARN,
                vec!["conflict team-a/db (origin local-p-vwxyz/db)"],
            ),
        ];
        for (name, setup, policy, expected) in cases {
            let mut world = converged();
            setup(&mut world);
            assert_eq!(describe(&world, policy), expected, "{name}");
        }
    }

    #[test]
    fn removal_table() {
        let cases: Vec<(&str, Setup, Vec<&str>)> = vec![
            (
                "copies of a deleted original are deleted",
                remove_original,
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "an original that lost its label takes its copies with it",
                |w| {
                    w.remove_scoped(BACKING, "db");
                    add_secret(w, secret(BACKING, "db", &[], &[]));
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "nothing is deleted while the Project CRD is not served",
                |w| {
                    remove_original(w);
                    w.projects_installed = false;
                },
                vec![],
            ),
            (
                "copies whose origin is in no known backing namespace are left alone",
                |w| w.replace_projects([]),
                vec![],
            ),
            (
                "copies of a project proven deleted are deleted, its originals are not",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned());
                    w.confirm_project_deleted(&p());
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "a deletion not yet proven by a fresh read deletes nothing",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned());
                },
                vec![],
            ),
            (
                "a project re-created before the fresh read keeps its copies",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned());
                    w.forget_deleted_project(&p());
                    assert!(!w.confirm_project_deleted(&p()));
                    project(w, "local", "p-vwxyz", BACKING);
                },
                vec![],
            ),
            (
                "a proven deletion removes nothing while the Project CRD is not served",
                |w| {
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned());
                    w.confirm_project_deleted(&p());
                    w.projects_installed = false;
                },
                vec![],
            ),
            (
                "a Rancher copy of a project proven deleted is deleted",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    add_secret(w, secret("team-a", "old", &original_labels(), &marker));
                    w.remove_project(&p());
                    w.note_project_deleted(p(), BACKING.to_owned());
                    w.confirm_project_deleted(&p());
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-a/old",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "a namespace that left the project loses its copy",
                |w| w.upsert_namespace("team-a".to_owned(), NamespaceState::default()),
                vec!["delete team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a namespace whose annotation moved to another project loses its copy",
                |w| {
                    let q = project(w, "local", "p-other", "local-p-other");
                    namespace_in(w, "team-a", &q);
                },
                vec!["delete team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a label alone keeps no copy",
                |w| {
                    w.upsert_namespace(
                        "team-a".to_owned(),
                        NamespaceState {
                            project_label: Some("p-vwxyz".to_owned()),
                            ..NamespaceState::default()
                        },
                    )
                },
                vec![
                    "fix_namespace_label /team-a",
                    "delete team-a/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "an ignored namespace loses its copy",
                |w| {
                    let ignore = [(keys::IGNORE_NAMESPACES_ANNOTATION, "team-a")];
                    add_secret(w, secret(BACKING, "db", &original_labels(), &ignore));
                },
                vec!["delete team-a/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a terminating namespace loses its copy",
                |w| {
                    let mut ns = w.namespace("team-b").cloned().unwrap_or_default();
                    ns.terminating = true;
                    w.upsert_namespace("team-b".to_owned(), ns);
                },
                vec!["delete team-b/db (origin local-p-vwxyz/db)"],
            ),
            (
                "a service-account token is never copied",
                |w| {
                    let mut token = secret(BACKING, "db", &original_labels(), &[]);
                    token.type_ = Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE.to_owned());
                    add_secret(w, token);
                },
                vec![
                    "delete team-a/db (origin local-p-vwxyz/db)",
                    "delete team-b/db (origin local-p-vwxyz/db)",
                ],
            ),
            (
                "a Rancher copy of a known project without an original is deleted",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    add_secret(w, secret("team-a", "old", &original_labels(), &marker));
                },
                vec!["delete team-a/old"],
            ),
            (
                "a Rancher copy of an unknown project is left alone",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    let label = [(keys::PROJECT_SCOPED_LABEL, "p-unknown")];
                    add_secret(w, secret("team-a", "old", &label, &marker));
                },
                vec![],
            ),
            (
                "an unlabelled copy of ours is deleted",
                |w| {
                    let origin = [(keys::ORIGIN_ANNOTATION, "local-p-vwxyz/gone")];
                    add_secret(w, secret("team-a", "gone", &[], &origin));
                },
                vec!["delete team-a/gone (origin local-p-vwxyz/gone)"],
            ),
            (
                "an unlabelled Rancher copy is left alone",
                |w| {
                    let marker = [(keys::COPY_ANNOTATION, keys::TRUE)];
                    add_secret(w, secret("team-a", "old", &[], &marker));
                },
                vec![],
            ),
        ];
        for (name, setup, expected) in cases {
            let mut world = converged();
            setup(&mut world);
            assert_eq!(describe(&world, WARN), expected, "{name}");
        }
    }

    #[test]
    fn actions_carry_what_the_writes_need() {
        let mut world = converged();
        edit_copy(&mut world, "team-a", |c| {
            c.data = Some([("old".to_owned(), ByteString(vec![1]))].into());
            c.metadata.resource_version = Some("42".to_owned());
        });
        edit_copy(&mut world, "team-b", |c| c.immutable = Some(true));
        let got = actions(&world, WARN);
        let Action::Update {
            copy,
            resource_version,
        } = &got[0]
        else {
            panic!("expected an update, got {got:?}");
        };
        assert_eq!(resource_version, "42");
        assert_eq!(
            copy.data,
            world.scoped(BACKING, "db").expect("original").data
        );
        assert!(
            matches!(&got[1], Action::Recreate { existing_uid, .. } if existing_uid == "uid-team-b-db")
        );

        remove_original(&mut world);
        let deletes = actions(&world, WARN);
        assert!(deletes.iter().all(|a| matches!(
            a,
            Action::Delete { uid, origin: Some(o), .. } if uid.starts_with("uid-team-") && o == "local-p-vwxyz/db"
        )));

        let mut world = converged();
        world.remove_scoped("team-a", "db");
        plain(&mut world, "team-a");
        assert!(matches!(
            &actions(&world, WARN)[0],
            Action::Overwrite { existing_uid, .. } if existing_uid == "uid-team-a-db"
        ));
        assert!(matches!(
            &actions(&world, DENY)[0],
            Action::Conflict {
                reason: ConflictReason::NoConsent,
                ..
            }
        ));
    }

    #[test]
    fn label_repairs_table() {
        let cases: Vec<(&str, Setup, Vec<&str>)> = vec![
            (
                "a stale namespace label is corrected",
                |w| {
                    let mut ns = w.namespace("team-a").cloned().unwrap_or_default();
                    ns.project_label = Some("p-old".to_owned());
                    w.upsert_namespace("team-a".to_owned(), ns);
                },
                vec!["fix_namespace_label /team-a"],
            ),
            (
                "a missing namespace label is added",
                |w| {
                    let mut ns = w.namespace("team-a").cloned().unwrap_or_default();
                    ns.project_label = None;
                    w.upsert_namespace("team-a".to_owned(), ns);
                },
                vec!["fix_namespace_label /team-a"],
            ),
            (
                "a malformed annotation is left to the webhook",
                |w| {
                    w.upsert_namespace(
                        "odd".to_owned(),
                        NamespaceState {
                            project_annotation: Some("nonsense".to_owned()),
                            project_label: Some("x".to_owned()),
                            terminating: false,
                        },
                    )
                },
                vec![],
            ),
            (
                "an original without its cluster label gets it",
                |w| {
                    let label = [(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")];
                    add_secret(w, secret(BACKING, "db", &label, &[]));
                    put_copy(w, "team-a");
                    put_copy(w, "team-b");
                },
                vec!["add_cluster_label local-p-vwxyz/db"],
            ),
        ];
        for (name, setup, expected) in cases {
            let mut world = converged();
            setup(&mut world);
            assert_eq!(describe(&world, WARN), expected, "{name}");
        }

        let mut world = converged();
        world.upsert_namespace(
            "left".to_owned(),
            NamespaceState {
                project_label: Some("p-vwxyz".to_owned()),
                ..NamespaceState::default()
            },
        );
        assert_eq!(
            actions(&world, WARN),
            vec![Action::FixNamespaceLabel {
                namespace: "left".to_owned(),
                label: None
            }]
        );
    }

    #[test]
    fn projects_without_backing_status_get_one() {
        let mut world = converged();
        assert!(backing_namespace_actions(&world).is_empty());
        let id = ProjectId::new("local", "p-new");
        world.upsert_project(
            id.clone(),
            ProjectState {
                backing_namespace: "p-new".to_owned(),
                has_backing_status: false,
            },
        );
        assert_eq!(
            backing_namespace_actions(&world),
            vec![Action::SetBackingNamespace {
                project: id.clone(),
                backing_namespace: "local-p-new".to_owned(),
                create_namespace: true,
            }]
        );
        world.upsert_namespace("local-p-new".to_owned(), NamespaceState::default());
        assert!(matches!(
            &backing_namespace_actions(&world)[0],
            Action::SetBackingNamespace {
                create_namespace: false,
                ..
            }
        ));
        // A legacy backing namespace in use is kept: its originals must not be stranded.
        world.upsert_namespace("p-new".to_owned(), NamespaceState::default());
        assert_eq!(
            backing_namespace_actions(&world),
            vec![Action::SetBackingNamespace {
                project: id,
                backing_namespace: "p-new".to_owned(),
                create_namespace: false,
            }]
        );
    }

    #[test]
    fn a_legacy_backing_namespace_holding_originals_is_kept() {
        let mut world = World::default();
        let id = ProjectId::new("local", "p-old");
        world.upsert_project(
            id.clone(),
            ProjectState {
                backing_namespace: "p-old".to_owned(),
                has_backing_status: false,
            },
        );
        add_secret(
            &mut world,
            secret("p-old", "db", &[(keys::PROJECT_SCOPED_LABEL, "p-old")], &[]),
        );
        assert!(matches!(
            &backing_namespace_actions(&world)[0],
            Action::SetBackingNamespace { backing_namespace, .. } if backing_namespace == "p-old"
        ));
    }

    #[test]
    fn debug_never_shows_data() {
        let world = base();
        let shown = format!("{:?}", actions(&world, WARN));
        assert!(!shown.contains("dog") && !shown.contains("ZG9n"), "{shown}");
    }
}
