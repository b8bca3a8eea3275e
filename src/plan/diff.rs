//! What must be written to turn the world into the desired one: one pure diff, executed by the
//! reconciler and printed by the `plan` command.
//!
//! Which copies are ours to delete: a copy carrying our origin annotation (we wrote it, or adopted
//! it), or a Rancher copy (marker, no origin) whose label names a project we know, so that the
//! decision is an informed one. A Rancher copy naming an unknown project is left alone: with the
//! Project CRD missing or unreadable, deleting it would wipe out copies nobody asked us to manage.

use super::copy::{self, Drift, copy_of};
use super::fate::{Fate, fate, wants_copy};
use super::{IgnoreList, Settings};
use crate::keys::{self, ProjectId};
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
    /// A project has no `status.backingNamespace`: set it, and create the namespace (marked as the
    /// project's) if missing. With a `refusal`, the project cannot have `backing_namespace`: only
    /// its BackingNamespaceReady condition is set (and an Event raised). Without one and with the
    /// status already set, the condition is turned back to ready.
    SetBackingNamespace {
        project: ProjectId,
        backing_namespace: String,
        create_namespace: bool,
        refusal: Option<BackingRefusal>,
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

/// Why a project cannot have a backing namespace (`--manage-backing-namespaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackingRefusal {
    /// Other projects claim the same namespace: neither gets it.
    Claimed { rivals: Vec<ProjectId> },
    /// The namespace it would get exists and is not marked as the project's.
    Taken,
    /// The project's name cannot form a namespace name.
    InvalidName,
}

impl BackingRefusal {
    /// The condition's and the Event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Claimed { .. } => keys::BACKING_NAMESPACE_CLAIMED,
            Self::Taken => keys::BACKING_NAMESPACE_TAKEN,
            Self::InvalidName => keys::INVALID_PROJECT_NAME,
        }
    }

    /// What conflicts, why, and how to fix it, for the condition and the Event.
    pub fn message(&self, project: &ProjectId, namespace: &str) -> String {
        match self {
            Self::Claimed { rivals } => format!(
                "namespace {namespace:?} is claimed as a backing namespace by project {project} and \
                 also by {}; a backing namespace belongs to exactly one project, so none of them gets \
                 it and no secret is copied from it or removed because of it; remove the claim \
                 (status.backingNamespace) from every project it does not belong to",
                list(rivals)
            ),
            Self::Taken => format!(
                "namespace {namespace:?}, the backing namespace project {project} would get, already \
                 exists and is not marked as its ({}={project}); an existing namespace is never \
                 adopted, so that nobody's namespace is taken over; delete that namespace, or \
                 annotate it {}={project} if it is meant to be this project's",
                keys::BACKING_NAMESPACE_OF_ANNOTATION,
                keys::BACKING_NAMESPACE_OF_ANNOTATION
            ),
            Self::InvalidName => format!(
                "project name {:?} cannot form a namespace name (at most 63 lowercase letters, digits \
                 and '-', starting and ending with a letter or digit), so project {project} gets no \
                 backing namespace; create the project again under such a name",
                project.project
            ),
        }
    }
}

fn list(projects: &[ProjectId]) -> String {
    let names: Vec<String> = projects.iter().map(ToString::to_string).collect();
    names.join(", ")
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
/// Which copies are wanted and what each takes come from [`super::fate`], as for the webhook; here
/// for the whole world at once, so each namespace's project is parsed once, not once per original.
pub fn actions(world: &World, settings: &Settings) -> Vec<Action> {
    let mut out = label_repairs(world);
    let members = members_by_project(world);
    let mut wanted: HashSet<(&str, &str)> = HashSet::new();
    for original in world.originals() {
        let Some(namespaces) = members.get(original.project) else {
            continue;
        };
        let ignore = IgnoreList::of(&original.secret.metadata);
        let name = original.secret.metadata.name.as_deref().unwrap_or_default();
        // Every copy of an original is the same but for its namespace: build it once.
        let mut template = None;
        for &(namespace, terminating) in namespaces {
            if wants_copy(&original, &ignore, namespace, terminating, settings)
                && wanted.insert((namespace, name))
            {
                let template = template.get_or_insert_with(|| copy_of(&original, ""));
                out.extend(copy_action(world, &original, template, namespace, settings));
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

/// Backing namespaces (docs/SPEC.md §3, `--manage-backing-namespaces`): projects without
/// `status.backingNamespace` get one, and every project learns (through its BackingNamespaceReady
/// condition, written only when it changes) whether it owns one.
///
/// A project without status gets its legacy backing namespace (its own name) only when that namespace
/// is marked as its own, else the generated one, created and marked for it. An existing namespace is
/// never adopted unless it is marked for that very project: otherwise a Project named after someone
/// else's backing namespace would take it over. A namespace two projects claim is neither's (see
/// [`World::claims`]); a project whose name is no namespace name is skipped, with its condition.
pub fn backing_namespace_actions(world: &World) -> Vec<Action> {
    world
        .projects()
        .filter_map(|(id, state)| {
            let (backing_namespace, create_namespace, refusal) = if state.has_backing_status {
                let refusal = world.rivals(id).map(|(_, rivals)| BackingRefusal::Claimed {
                    rivals: rivals.into_iter().cloned().collect(),
                });
                (state.backing_namespace.clone(), false, refusal)
            } else {
                match choose_backing_namespace(world, id) {
                    Ok((namespace, create)) => (namespace, create, None),
                    Err((namespace, refusal)) => (namespace, false, Some(refusal)),
                }
            };
            // Written once: a refusal already recorded, or a ready project, needs nothing.
            let wanted = match &refusal {
                Some(refusal) => state.backing_not_ready.as_deref() != Some(refusal.reason()),
                None => !state.has_backing_status || state.backing_not_ready.is_some(),
            };
            wanted.then(|| Action::SetBackingNamespace {
                project: id.clone(),
                backing_namespace,
                create_namespace,
                refusal,
            })
        })
        .collect()
}

/// The backing namespace a project without one gets, and whether to create it; or why it cannot.
fn choose_backing_namespace(
    world: &World,
    id: &ProjectId,
) -> Result<(String, bool), (String, BackingRefusal)> {
    if !keys::is_namespace_name(&id.project) {
        return Err((String::new(), BackingRefusal::InvalidName));
    }
    let legacy = id.legacy_backing_namespace();
    if world
        .namespace(legacy)
        .is_some_and(|ns| ns.is_marked_for(id))
    {
        return Ok((legacy.to_owned(), false));
    }
    let generated = id.generated_backing_namespace();
    let rivals: Vec<ProjectId> = world
        .claims(&generated)
        .into_iter()
        .filter(|claimant| *claimant != id)
        .cloned()
        .collect();
    if !rivals.is_empty() {
        return Err((generated, BackingRefusal::Claimed { rivals }));
    }
    match world.namespace(&generated) {
        None => Ok((generated, true)),
        Some(ns) if ns.is_marked_for(id) => Ok((generated, false)),
        Some(_) => Err((generated, BackingRefusal::Taken)),
    }
}

/// The write that makes `namespace`'s copy of `original` (`template`, placed there) exact, if any.
fn copy_action(
    world: &World,
    original: &Original<'_>,
    template: &Secret,
    namespace: &str,
    settings: &Settings,
) -> Option<Action> {
    let copy = || {
        let mut copy = template.clone();
        copy.metadata.namespace = Some(namespace.to_owned());
        copy
    };
    // A copy that replaced the namespace's own secret keeps saying so (see REPLACED_ANNOTATION).
    let replacing = || {
        let mut copy = copy();
        copy.metadata
            .annotations
            .get_or_insert_default()
            .insert(keys::REPLACED_ANNOTATION.to_owned(), keys::TRUE.to_owned());
        copy
    };
    match fate(world, original, namespace, settings.overwrite_policy) {
        Fate::Create => Some(Action::Create { copy: copy() }),
        Fate::Copy(existing) => {
            let marked = copy::replaced(existing).then(replacing);
            let exact = || marked.clone().unwrap_or_else(copy);
            match copy::drift(existing, marked.as_ref().unwrap_or(template)) {
                Drift::None => None,
                Drift::Changed => Some(Action::Update {
                    copy: exact(),
                    resource_version: existing
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or_default(),
                }),
                Drift::Replace => Some(Action::Recreate {
                    copy: exact(),
                    existing_uid: existing.metadata.uid.clone().unwrap_or_default(),
                }),
            }
        }
        Fate::StrayCopy { uid } => Some(Action::Overwrite {
            copy: copy(),
            existing_uid: uid.to_owned(),
        }),
        Fate::Overwrite { uid } => Some(Action::Overwrite {
            copy: replacing(),
            existing_uid: uid.to_owned(),
        }),
        Fate::Conflict(reason) => Some(conflict(original, namespace, reason)),
    }
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
    // Only projects owning their backing namespace: one whose namespace another project also
    // claims has no originals recognised, and its copies must not go for that.
    let known_projects: HashSet<&str> = world
        .backed_projects()
        .map(|id| id.project.as_str())
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
    use crate::plan::OverwritePolicy;
    const WARN: OverwritePolicy = OverwritePolicy::Warn;
    const DENY: OverwritePolicy = OverwritePolicy::Deny;

    /// The plan under `policy` and the default protected namespaces.
    fn actions(world: &World, policy: OverwritePolicy) -> Vec<Action> {
        super::actions(world, &Settings::with_policy(policy))
    }

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
        let overwrite = actions(&world, WARN);
        let Action::Overwrite { existing_uid, copy } = &overwrite[0] else {
            panic!("expected an overwrite, got {overwrite:?}");
        };
        assert_eq!(existing_uid, "uid-team-a-db");
        // The copy says it replaced the namespace's own secret, and stays converged saying so.
        assert!(crate::plan::replaced(copy));
        let mut after = world.clone();
        let mut landed = copy.clone();
        landed.metadata.uid = Some("uid-landed".to_owned());
        add_secret(&mut after, landed);
        assert_eq!(actions(&after, WARN), vec![]);
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
                            ..NamespaceState::default()
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

    fn bare(world: &mut World, cluster: &str, name: &str) -> ProjectId {
        let id = ProjectId::new(cluster, name);
        world.upsert_project(
            id.clone(),
            ProjectState {
                backing_namespace: name.to_owned(),
                ..ProjectState::default()
            },
        );
        id
    }

    fn marked(world: &mut World, namespace: &str, owner: &ProjectId) {
        world.upsert_namespace(
            namespace.to_owned(),
            NamespaceState {
                backing_of: Some(owner.to_string()),
                ..NamespaceState::default()
            },
        );
    }

    fn set(id: &ProjectId, namespace: &str, create: bool) -> Action {
        Action::SetBackingNamespace {
            project: id.clone(),
            backing_namespace: namespace.to_owned(),
            create_namespace: create,
            refusal: None,
        }
    }

    #[test]
    fn projects_without_backing_status_get_one() {
        let mut world = converged();
        assert!(backing_namespace_actions(&world).is_empty());
        let id = bare(&mut world, "local", "p-new");
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "local-p-new", true)]
        );
        // Created and marked for it (a round ago): recorded, not created again.
        marked(&mut world, "local-p-new", &id);
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "local-p-new", false)]
        );
        // A legacy backing namespace marked as the project's own is kept.
        marked(&mut world, "p-new", &id);
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "p-new", false)]
        );
    }

    #[test]
    fn an_existing_namespace_is_never_adopted_unless_marked_for_the_project() {
        let mut world = World::default();
        let id = bare(&mut world, "local", "p-old");
        // The legacy name exists (even holding a labelled secret) but is not marked: not adopted.
        world.upsert_namespace("p-old".to_owned(), NamespaceState::default());
        add_secret(
            &mut world,
            secret("p-old", "db", &[(keys::PROJECT_SCOPED_LABEL, "p-old")], &[]),
        );
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "local-p-old", true)]
        );
        // The generated name exists, unmarked: refused, once.
        world.upsert_namespace("local-p-old".to_owned(), NamespaceState::default());
        let refused = backing_namespace_actions(&world);
        assert!(
            matches!(&refused[..], [Action::SetBackingNamespace { refusal: Some(BackingRefusal::Taken), backing_namespace, .. }] if backing_namespace == "local-p-old"),
            "{refused:?}"
        );
        let mut state = world.project(&id).cloned().unwrap_or_default();
        state.backing_not_ready = Some(keys::BACKING_NAMESPACE_TAKEN.to_owned());
        world.upsert_project(id.clone(), state);
        assert!(backing_namespace_actions(&world).is_empty());
        // Marked for another project: still not adopted.
        marked(&mut world, "local-p-old", &ProjectId::new("local", "other"));
        assert!(backing_namespace_actions(&world).is_empty());
    }

    #[test]
    fn a_project_named_like_another_backing_namespace_takes_nothing() {
        // Hijack (a): Project `local-a-team` in `local`, beside `local:a-team` (backing
        // `local-a-team`, created and marked for it).
        let mut world = base();
        let victim = p();
        marked(&mut world, BACKING, &victim);
        put_copy(&mut world, "team-a");
        put_copy(&mut world, "team-b");
        let attacker = bare(&mut world, "local", BACKING);
        assert_eq!(world.backing_project(BACKING), Some(&victim));
        assert_eq!(world.originals().count(), 1);
        assert!(actions(&world, WARN).is_empty());
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&attacker, "local-local-p-vwxyz", true)]
        );
    }

    #[test]
    fn a_namespace_two_projects_claim_is_neither_and_nothing_is_deleted() {
        let mut world = converged();
        // A Rancher-style copy (marker, no origin) too: it must stay as well.
        add_secret(
            &mut world,
            secret(
                "team-a",
                "legacy",
                &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
                &[(keys::COPY_ANNOTATION, keys::TRUE)],
            ),
        );
        let rival = ProjectId::new("local-p", "vwxyz");
        world.upsert_project(
            rival.clone(),
            ProjectState {
                backing_namespace: BACKING.to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
            },
        );
        assert_eq!(world.backing_project(BACKING), None);
        assert_eq!(world.claims(BACKING).len(), 2);
        assert_eq!(world.originals().count(), 0);
        assert!(
            actions(&world, WARN).is_empty(),
            "{:?}",
            actions(&world, WARN)
        );
        let refusals = backing_namespace_actions(&world);
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        for action in &refusals {
            assert!(matches!(
                action,
                Action::SetBackingNamespace {
                    refusal: Some(BackingRefusal::Claimed { rivals }),
                    ..
                } if rivals.len() == 1
            ));
        }
        // Once recorded, not again; when the rival lets go, the owner is ready again and copies
        // flow as before.
        for id in [p(), rival.clone()] {
            let mut state = world.project(&id).cloned().unwrap_or_default();
            state.backing_not_ready = Some(keys::BACKING_NAMESPACE_CLAIMED.to_owned());
            world.upsert_project(id, state);
        }
        assert!(backing_namespace_actions(&world).is_empty());
        world.remove_project(&rival);
        assert_eq!(world.backing_project(BACKING), Some(&p()));
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&p(), BACKING, false)]
        );
    }

    #[test]
    fn a_generated_name_another_project_claims_is_refused() {
        let mut world = World::default();
        // A Rancher project whose status names `local-p-x`, and a bare `local:p-x`.
        let rancher = ProjectId::new("c-1", "p-y");
        world.upsert_project(
            rancher.clone(),
            ProjectState {
                backing_namespace: "local-p-x".to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
            },
        );
        bare(&mut world, "local", "p-x");
        let got = backing_namespace_actions(&world);
        assert!(
            matches!(&got[..], [Action::SetBackingNamespace { refusal: Some(BackingRefusal::Claimed { rivals }), .. }] if rivals == &[rancher]),
            "{got:?}"
        );
    }

    #[test]
    fn a_project_whose_name_is_no_namespace_name_is_skipped_once() {
        let mut world = World::default();
        let id = bare(&mut world, "local", "p.dotted");
        let got = backing_namespace_actions(&world);
        assert!(
            matches!(
                &got[..],
                [Action::SetBackingNamespace {
                    refusal: Some(BackingRefusal::InvalidName),
                    create_namespace: false,
                    ..
                }]
            ),
            "{got:?}"
        );
        let mut state = world.project(&id).cloned().unwrap_or_default();
        state.backing_not_ready = Some(keys::INVALID_PROJECT_NAME.to_owned());
        world.upsert_project(id, state);
        assert!(backing_namespace_actions(&world).is_empty());
    }

    #[test]
    fn debug_never_shows_data() {
        let world = base();
        let shown = format!("{:?}", actions(&world, WARN));
        assert!(!shown.contains("dog") && !shown.contains("ZG9n"), "{shown}");
    }
}
