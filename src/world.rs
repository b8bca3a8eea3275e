//! What the cluster looks like, as far as we know: projects and their backing namespaces,
//! namespaces and the project each belongs to, the names of all secrets (metadata only), and the
//! project-scoped secrets: originals whole, copies by metadata and digests ([`Scoped`]).
//!
//! It is pure data, a snapshot: [`crate::index::Index`] publishes a new one after every watch event
//! and everyone reads the one current when they start; `plan` builds its own from a single list.
//! The maps are persistent (`imbl`): cloning a world shares all of it, and a change copies only the
//! path to what changed, so a snapshot per event costs O(log n), not a copy of 10,000 namespaces.
//! Per-namespace maps sit behind an `Arc` so that a change copies one namespace's map, not a node
//! of 64 of them.

use crate::keys::{self, ProjectId};
pub use crate::scoped::{CopyMeta, Scoped};
use imbl::{HashMap as SharedHashMap, OrdMap};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A project as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectState {
    /// `status.backingNamespace`, or the legacy name (the project's name) when that is empty.
    pub backing_namespace: String,
    /// Whether `status.backingNamespace` is set (the reconciler sets it when it is not).
    pub has_backing_status: bool,
    /// The reason of our `BackingNamespaceReady` condition when it is `False` (so that the
    /// reconciler writes it, and raises its Event, once and not every round).
    pub backing_not_ready: Option<String>,
    /// The Project object's uid: a namespace is marked for this very object, not for its name.
    pub uid: String,
    /// The Project object is being deleted (a deletionTimestamp, finalizers holding it): it gets no
    /// backing namespace any more.
    pub deleting: bool,
}

/// A project the projects watch saw deleted, remembered with its backing namespace so that the copies
/// of its originals can still be found and removed (revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedProject {
    pub backing_namespace: String,
    /// The deleted Project object's uid (empty when unknown): a Project re-created under its name
    /// is another object, and does not cancel the deletion.
    pub uid: String,
    /// Whether a fresh read proved it gone (the reconciler's check); only then are its copies removed.
    pub confirmed: bool,
}

/// A namespace as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceState {
    /// The raw projectId annotation, if any.
    pub project_annotation: Option<String>,
    /// The projectId label, if any (a mirror of the annotation, never trusted on its own).
    pub project_label: Option<String>,
    /// Whether the namespace is being deleted.
    pub terminating: bool,
    /// The raw backing-namespace-of annotation: the project this namespace was created for.
    pub backing_of: Option<String>,
    /// The raw backing-namespace-uid annotation: that project's uid.
    pub backing_uid: Option<String>,
}

impl NamespaceState {
    pub fn from_namespace(ns: &Namespace) -> Self {
        let meta = &ns.metadata;
        Self {
            project_annotation: project_annotation(meta).map(str::to_owned),
            project_label: label(meta, keys::PROJECT_ID_KEY).map(str::to_owned),
            terminating: meta.deletion_timestamp.is_some()
                || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating"),
            backing_of: annotation(meta, keys::BACKING_NAMESPACE_OF_ANNOTATION).map(str::to_owned),
            backing_uid: annotation(meta, keys::BACKING_NAMESPACE_UID_ANNOTATION)
                .map(str::to_owned),
        }
    }

    /// Whether the reconciler created (or an operator marked) this namespace for `project`.
    /// Both marks must name it: the project and the uid of its object, so a project re-created under
    /// a deleted one's name never inherits the deleted one's namespace and the originals left there.
    pub fn is_marked_for(&self, project: &ProjectId, uid: &str) -> bool {
        self.marked_project().as_ref() == Some(project)
            && !uid.is_empty()
            && self.backing_uid.as_deref() == Some(uid)
    }

    /// The project the backing-namespace-of annotation names, if well-formed.
    pub fn marked_project(&self) -> Option<ProjectId> {
        self.backing_of
            .as_deref()
            .and_then(|v| ProjectId::parse(v).ok())
    }

    /// The project this namespace belongs to, from its annotation; `None` when absent or malformed.
    pub fn project(&self) -> Option<ProjectId> {
        self.project_annotation
            .as_deref()
            .and_then(|v| ProjectId::parse(v).ok())
    }

    /// Whether [`Self::project`] is `project`, without making one (see [`World::is_member_of`]).
    pub fn names_project(&self, project: &ProjectId) -> bool {
        // ProjectId::parse's rules, compared in place.
        self.project_annotation
            .as_deref()
            .and_then(|v| v.split_once(':'))
            .is_some_and(|(cluster, name)| {
                !cluster.is_empty()
                    && !name.is_empty()
                    && !name.contains(':')
                    && cluster == project.cluster
                    && name == project.project
            })
    }
}

/// What a secret is, as far as the index is concerned. No secret data, no other metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub uid: String,
    /// Set for copies: the origin (`<namespace>/<name>`) they name, or empty for a Rancher copy
    /// without our origin annotation.
    pub copy_of: Option<String>,
}

impl SecretMeta {
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        Self {
            uid: meta.uid.clone().unwrap_or_default(),
            copy_of: is_copy(meta).then(|| {
                annotation(meta, keys::ORIGIN_ANNOTATION)
                    .unwrap_or_default()
                    .to_owned()
            }),
        }
    }

    pub fn is_copy(&self) -> bool {
        self.copy_of.is_some()
    }
}

/// Whether a secret's metadata marks it as a copy.
pub fn is_copy(meta: &ObjectMeta) -> bool {
    annotation(meta, keys::COPY_ANNOTATION) == Some(keys::TRUE)
        || annotation(meta, keys::ORIGIN_ANNOTATION).is_some()
}

/// Whether metadata carries any of the copy markers (used to refuse forged copies).
pub fn has_copy_marker(meta: &ObjectMeta) -> bool {
    keys::COPY_MARKERS
        .iter()
        .any(|key| annotation(meta, key).is_some())
}

pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A namespace's projectId annotation. An empty one names no project, as in Rancher, and counts as
/// none: the label then mirrors nothing (M1 and the label repair remove it), and setting it leaves
/// the project. Read as malformed instead, it kept a label the user set beside it for good.
pub fn project_annotation(meta: &ObjectMeta) -> Option<&str> {
    annotation(meta, keys::PROJECT_ID_KEY).filter(|value| !value.is_empty())
}

pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// An original: a secret in a backing namespace, carrying the project-scoped label, not a copy.
#[derive(Debug, Clone)]
pub struct Original<'a> {
    pub project: &'a ProjectId,
    pub secret: &'a Secret,
}

impl<'a> Original<'a> {
    pub fn namespace(&self) -> &'a str {
        self.secret
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default()
    }
    pub fn name(&self) -> &'a str {
        self.secret.metadata.name.as_deref().unwrap_or_default()
    }
}

/// A namespace of a project, as a walk of the project's namespaces gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: &'a str,
    pub terminating: bool,
}

/// Whether two Project uids name different objects; an unknown (empty) uid is taken to be the same.
pub fn is_another_object(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && a != b
}

/// The cluster as far as we know (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct World {
    /// Whether the Project CRD is served (N2 checks existence only then).
    pub projects_installed: bool,
    projects: OrdMap<ProjectId, ProjectState>,
    /// Backing namespace → project, for namespaces exactly one project claims (derived from
    /// `projects` and the namespaces' markers; see [`World::claims`]). Rebuilt whole, so shared
    /// whole.
    backing: Arc<HashMap<String, ProjectId>>,
    /// Namespaces two or more projects claim → those projects. None of them owns it: no original is
    /// recognised there, so nothing is copied from it and no copy is removed because of it.
    contested: Arc<BTreeMap<String, Vec<ProjectId>>>,
    namespaces: OrdMap<String, NamespaceState>,
    /// Project → the namespaces whose annotation names it, each with whether it is terminating
    /// (derived from `namespaces`, kept with it): a review of an original, or of a namespace joining
    /// a project, reads the project's own namespaces instead of walking every namespace of the
    /// cluster (10,000 at scale). The flag is held here so that a walk of a project's namespaces
    /// stays a walk, not a look-up per member.
    members: OrdMap<ProjectId, OrdMap<String, bool>>,
    /// namespace → secret name → metadata, for every secret.
    names: SharedHashMap<String, Arc<HashMap<String, SecretMeta>>>,
    /// namespace → name → secrets carrying the project-scoped label, copies without their data
    /// (nested, so that a lookup by `&str` allocates nothing: the reconciler makes one per wanted copy).
    scoped: OrdMap<String, Arc<BTreeMap<String, Scoped>>>,
    /// Projects seen deleted, until re-created or the Project CRD goes away.
    deleted_projects: OrdMap<ProjectId, DeletedProject>,
    /// Projects whose copies a downstream cluster's worker keeps (and has in place): their
    /// namespaces here are members of nothing, so the copies here go (see [`World::member_project`]).
    served_elsewhere: Arc<BTreeSet<ProjectId>>,
    /// The downstream cluster this world is of ([`World::for_cluster`]); `None` for the management
    /// cluster's own.
    downstream_cluster: Option<Arc<str>>,
    /// Whether a Project's `status.backingNamespace` counts only while that namespace carries both
    /// marks naming it ([`World::require_marked_backing_namespaces`]).
    backing_needs_marks: bool,
}

impl World {
    /// A world in which a Project's `status.backingNamespace` is its backing namespace only while
    /// that namespace carries both marks naming the Project (as the reconciler creates it), for
    /// `--manage-backing-namespaces`. A status names a namespace by name alone: once that
    /// namespace is deleted, whoever may create namespaces could create it again, unmarked, and
    /// have the project-scoped secrets they put there copied into every namespace of the project.
    /// Beside Rancher, whose backing namespaces carry no such marks, the status is honoured as is.
    pub fn require_marked_backing_namespaces(mut self) -> Self {
        self.backing_needs_marks = true;
        self.rebuild_backing();
        self
    }

    /// An empty world as an instance with `--manage-backing-namespaces` set so reads it: marked
    /// backing namespaces only where they are the reconciler's.
    pub fn for_backing(manage_backing_namespaces: bool) -> Self {
        if manage_backing_namespaces {
            Self::default().require_marked_backing_namespaces()
        } else {
            Self::default()
        }
    }

    /// Projects whose `status.backingNamespace` names an existing namespace not marked as theirs,
    /// where only marked ones count: they own no backing namespace.
    pub fn unmarked_backing_namespaces(&self) -> impl Iterator<Item = &ProjectId> {
        self.projects
            .iter()
            .filter(|(id, state)| {
                self.backing_needs_marks
                    && state.has_backing_status
                    && self
                        .namespaces
                        .get(&state.backing_namespace)
                        .is_some_and(|ns| !ns.is_marked_for(id, &state.uid))
            })
            .map(|(id, _)| id)
    }

    /// See [`World::require_marked_backing_namespaces`].
    pub fn backing_needs_marks(&self) -> bool {
        self.backing_needs_marks
    }

    // ---- writes (the watchers) ----

    pub fn upsert_project(&mut self, id: ProjectId, state: ProjectState) {
        self.projects.insert(id, state);
        self.rebuild_backing();
    }

    pub fn remove_project(&mut self, id: &ProjectId) {
        self.projects.remove(id);
        self.rebuild_backing();
    }

    pub fn replace_projects(
        &mut self,
        projects: impl IntoIterator<Item = (ProjectId, ProjectState)>,
    ) {
        self.projects = projects.into_iter().collect();
        self.rebuild_backing();
    }

    /// Resolves the projects' claims: a namespace claimed by exactly one project is its backing
    /// namespace; one claimed by several belongs to none of them. A downstream cluster's world
    /// holds the management cluster's resolution ([`World::for_cluster`]), which it cannot redo:
    /// it knows neither the other clusters' projects nor the management cluster's namespaces.
    fn rebuild_backing(&mut self) {
        if self.downstream_cluster.is_some() {
            return;
        }
        let mut claims: HashMap<&str, Vec<&ProjectId>> = HashMap::new();
        for (id, state) in &self.projects {
            if let Some(namespace) = self.claim(id, state) {
                claims.entry(namespace).or_default().push(id);
            }
        }
        let mut backing = HashMap::with_capacity(claims.len());
        let mut contested = BTreeMap::new();
        for (namespace, claimants) in claims {
            match claimants.as_slice() {
                [one] => {
                    backing.insert(namespace.to_owned(), (*one).clone());
                }
                many => {
                    contested.insert(
                        namespace.to_owned(),
                        many.iter().map(|id| (*id).clone()).collect(),
                    );
                }
            }
        }
        self.backing = Arc::new(backing);
        self.contested = Arc::new(contested);
    }

    /// The namespace a project claims: its `status.backingNamespace`, or without one its legacy
    /// name (the project's name, as Rancher once used) only when that namespace is marked for this
    /// very project. An unmarked namespace is never adopted: whoever may create namespaces could
    /// otherwise make one named like a project whose status is not set yet (or never will be, its
    /// generated name being taken) and have its labelled secrets copied into the project. Where
    /// backing namespaces are the reconciler's ([`World::require_marked_backing_namespaces`]), the
    /// status's namespace needs the marks too.
    fn claim<'a>(&self, id: &ProjectId, state: &'a ProjectState) -> Option<&'a str> {
        let namespace = state.backing_namespace.as_str();
        if state.has_backing_status && !self.backing_needs_marks {
            return Some(namespace);
        }
        self.namespaces
            .get(namespace)
            .is_some_and(|ns| ns.is_marked_for(id, &state.uid))
            .then_some(namespace)
    }

    pub fn upsert_namespace(&mut self, name: String, state: NamespaceState) {
        let marks = |n: &NamespaceState| (n.backing_of.clone(), n.backing_uid.clone());
        let marker_changed = self.namespaces.get(&name).map(marks) != Some(marks(&state));
        self.put_namespace(name, state);
        if marker_changed {
            self.rebuild_backing();
        }
    }

    pub fn remove_namespace(&mut self, name: &str) {
        let marked = self
            .take_namespace(name)
            .is_some_and(|n| n.backing_of.is_some());
        if marked {
            self.rebuild_backing();
        }
    }

    pub fn replace_namespaces(&mut self, all: impl IntoIterator<Item = (String, NamespaceState)>) {
        self.namespaces = all.into_iter().collect();
        self.members = OrdMap::new();
        for (name, state) in &self.namespaces {
            if let Some(project) = state.project() {
                let members = self.members.entry(project).or_default();
                members.insert(name.clone(), state.terminating);
            }
        }
        self.rebuild_backing();
    }

    /// Stores a namespace and keeps `members` in step (the backing claims are the caller's).
    fn put_namespace(&mut self, name: String, state: NamespaceState) {
        // A namespace that moved leaves its former project's members.
        let old = self.namespaces.get(&name);
        if old.map(|old| &old.project_annotation) != Some(&state.project_annotation)
            && let Some(project) = old.and_then(NamespaceState::project)
        {
            self.leave(&project, &name);
        }
        if let Some(project) = state.project() {
            let members = self.members.entry(project).or_default();
            members.insert(name.clone(), state.terminating);
        }
        self.namespaces.insert(name, state);
    }

    /// Removes a namespace and keeps `members` in step (the backing claims are the caller's).
    fn take_namespace(&mut self, name: &str) -> Option<NamespaceState> {
        let state = self.namespaces.remove(name)?;
        if let Some(project) = state.project() {
            self.leave(&project, name);
        }
        Some(state)
    }

    fn leave(&mut self, project: &ProjectId, namespace: &str) {
        if let Some(members) = self.members.get_mut(project) {
            members.remove(namespace);
            if members.is_empty() {
                self.members.remove(project);
            }
        }
    }

    pub fn upsert_secret_meta(&mut self, namespace: &str, name: &str, meta: SecretMeta) {
        Arc::make_mut(self.names.entry(namespace.to_owned()).or_default())
            .insert(name.to_owned(), meta);
    }

    pub fn remove_secret_meta(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.names.get_mut(namespace) {
            Arc::make_mut(names).remove(name);
            if names.is_empty() {
                self.names.remove(namespace);
            }
        }
    }

    pub fn replace_secret_metas(
        &mut self,
        all: impl IntoIterator<Item = (String, String, SecretMeta)>,
    ) {
        let mut by_namespace: HashMap<String, HashMap<String, SecretMeta>> = HashMap::new();
        for (namespace, name, meta) in all {
            by_namespace
                .entry(namespace)
                .or_default()
                .insert(name, meta);
        }
        self.names = by_namespace
            .into_iter()
            .map(|(namespace, names)| (namespace, Arc::new(names)))
            .collect();
    }

    /// Keeps a labelled secret (a copy without its data, see [`Scoped`]).
    pub fn upsert_scoped(&mut self, secret: Secret) {
        if let Some((namespace, name)) = object_key(&secret.metadata) {
            self.insert_scoped(namespace, name, Scoped::new(secret));
        }
    }

    /// Keeps a labelled secret already reduced to what the index holds (the watch reduces each
    /// secret as it arrives, so a list of 100,000 copies is never held whole).
    pub fn insert_scoped(&mut self, namespace: String, name: String, secret: Scoped) {
        Arc::make_mut(self.scoped.entry(namespace).or_default()).insert(name, secret);
    }

    pub fn remove_scoped(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.scoped.get_mut(namespace) {
            Arc::make_mut(names).remove(name);
            if names.is_empty() {
                self.scoped.remove(namespace);
            }
        }
    }

    pub fn replace_scoped(&mut self, all: impl IntoIterator<Item = (String, String, Scoped)>) {
        let mut by_namespace: BTreeMap<String, BTreeMap<String, Scoped>> = BTreeMap::new();
        for (namespace, name, secret) in all {
            by_namespace
                .entry(namespace)
                .or_default()
                .insert(name, secret);
        }
        self.scoped = by_namespace
            .into_iter()
            .map(|(namespace, names)| (namespace, Arc::new(names)))
            .collect();
    }

    /// Remembers a project the watch saw deleted (unconfirmed until [`Self::confirm_project_deleted`]).
    pub fn note_project_deleted(&mut self, id: ProjectId, backing_namespace: String, uid: String) {
        self.deleted_projects.insert(
            id,
            DeletedProject {
                backing_namespace,
                uid,
                confirmed: false,
            },
        );
    }

    /// The project exists as the Project object `uid`: if that is the deleted one (its deletion was
    /// not what it seemed), the deletion is forgotten. Another object under the same name (deleted
    /// and created again, `kubectl replace --force`) leaves it: the deleted one's copies still go.
    pub fn forget_deleted_project(&mut self, id: &ProjectId, uid: &str) {
        let same_object = self
            .deleted_projects
            .get(id)
            .is_some_and(|deleted| !is_another_object(&deleted.uid, uid));
        if same_object {
            self.deleted_projects.remove(id);
        }
    }

    /// The uid of the deleted project `id` is remembered as (empty when unknown).
    pub fn deleted_project_uid(&self, id: &ProjectId) -> Option<&str> {
        self.deleted_projects.get(id).map(|d| d.uid.as_str())
    }

    /// The Project CRD went away: no deletion can be confirmed, and none may remove copies.
    pub fn forget_deleted_projects(&mut self) {
        self.deleted_projects.clear();
    }

    /// Marks a remembered deletion as proven; false when it is no longer remembered (re-created).
    pub fn confirm_project_deleted(&mut self, id: &ProjectId) -> bool {
        self.deleted_projects
            .get_mut(id)
            .map(|deleted| deleted.confirmed = true)
            .is_some()
    }

    /// Marks `projects` as served in their own (downstream) clusters: see [`World::member_project`].
    pub fn serve_elsewhere(&mut self, projects: Arc<BTreeSet<ProjectId>>) {
        self.served_elsewhere = projects;
    }

    /// The world a downstream cluster's worker plans from: `own` (that cluster's namespaces, secret
    /// names and labelled secrets, from its own watches) with `management`'s projects of
    /// `cluster`, their deletions, and their backing namespaces with everything in them (the
    /// originals). A backing namespace is always the management cluster's: a namespace of the same
    /// name downstream, and any labelled secret in it, is hidden, so nothing written downstream
    /// can pass for an original. Planning it is the one pure plan, unchanged.
    pub fn for_cluster(management: &World, own: &World, cluster: &str) -> World {
        let mut world = own.clone();
        world.projects_installed = management.projects_installed;
        world.projects = management
            .projects
            .iter()
            .filter(|(id, _)| id.cluster == cluster)
            .map(|(id, state)| (id.clone(), state.clone()))
            .collect();
        world.deleted_projects = management
            .deleted_projects
            .iter()
            .filter(|(id, _)| id.cluster == cluster)
            .map(|(id, deleted)| (id.clone(), deleted.clone()))
            .collect();
        world.served_elsewhere = Arc::default();
        world.downstream_cluster = Some(Arc::from(cluster));
        // The backing namespaces are the management cluster's, and so are the claims on them, as
        // it resolves them (its namespaces carry the marks; a claim of another cluster's project
        // still contests one): nothing downstream can make or break a claim. Only a namespace
        // claimed there is taken from it: a project's name alone, which anyone who may create a
        // Project chooses, or a deleted project's namespace, must not hide a downstream one.
        world.backing_needs_marks = management.backing_needs_marks;
        let of_cluster = |id: &ProjectId| id.cluster == cluster;
        world.backing = Arc::new(
            management
                .backing
                .iter()
                .filter(|(_, owner)| of_cluster(owner))
                .map(|(namespace, owner)| (namespace.clone(), owner.clone()))
                .collect(),
        );
        world.contested = Arc::new(
            management
                .contested
                .iter()
                .filter(|(_, claimants)| claimants.iter().any(of_cluster))
                .map(|(namespace, claimants)| (namespace.clone(), claimants.clone()))
                .collect(),
        );
        for namespace in world.overlaid_namespaces() {
            world.overlay(management, &namespace);
        }
        world
    }

    /// Whether this is a downstream cluster's world that takes `namespace` from the management
    /// cluster ([`World::overlaid_namespaces`]): that cluster's own namespace of the name, if any,
    /// is hidden here.
    pub fn lends(&self, namespace: &str) -> bool {
        self.downstream_cluster.is_some()
            && (self.backing.contains_key(namespace) || self.contested.contains_key(namespace))
    }

    /// The namespaces [`World::for_cluster`] takes from the management cluster: every namespace
    /// a project of this world owns or contests there. Never a target of a write downstream.
    pub fn overlaid_namespaces(&self) -> BTreeSet<String> {
        self.backing
            .keys()
            .chain(self.contested.keys())
            .cloned()
            .collect()
    }

    /// Replaces what this world knows of `namespace` by what `from` knows of it.
    fn overlay(&mut self, from: &World, namespace: &str) {
        match from.namespaces.get(namespace) {
            Some(state) => self.put_namespace(namespace.to_owned(), state.clone()),
            None => drop(self.take_namespace(namespace)),
        };
        match from.names.get(namespace) {
            Some(names) => self.names.insert(namespace.to_owned(), names.clone()),
            None => self.names.remove(namespace),
        };
        match from.scoped.get(namespace) {
            Some(scoped) => self.scoped.insert(namespace.to_owned(), scoped.clone()),
            None => self.scoped.remove(namespace),
        };
    }

    // ---- reads ----

    /// The project a namespace is a member of: the one its annotation names, unless that project
    /// is served in its own cluster ([`World::serve_elsewhere`]). Every decision about which
    /// copies are wanted follows this rule: [`World::is_member_of`] for one namespace and
    /// [`World::project_namespaces`] for all of a project's apply it without making a `ProjectId`.
    pub fn member_project(&self, namespace: &NamespaceState) -> Option<ProjectId> {
        namespace
            .project()
            .filter(|project| !self.served_elsewhere.contains(project))
    }

    /// Whether [`Self::member_project`] is `project`, without making a `ProjectId`: asked of one
    /// namespace ([`crate::plan::wanted_in`]); a walk of a project's namespaces reads
    /// [`Self::project_namespaces`] instead.
    pub fn is_member_of(&self, namespace: &NamespaceState, project: &ProjectId) -> bool {
        namespace.names_project(project) && !self.served_elsewhere.contains(project)
    }

    /// A namespace as messages name it: `cluster/namespace` in a downstream cluster's world, so that
    /// a warning given in the management cluster says where.
    pub fn qualified<'a>(&self, namespace: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.downstream_cluster {
            Some(cluster) => format!("{cluster}/{namespace}").into(),
            None => namespace.into(),
        }
    }

    /// Whether `project`'s copies are kept by its own cluster's worker, not in this world.
    pub fn is_served_elsewhere(&self, project: &ProjectId) -> bool {
        self.served_elsewhere.contains(project)
    }

    /// Deleted projects awaiting the fresh read that proves them gone.
    pub fn unconfirmed_deleted_projects(&self) -> impl Iterator<Item = &ProjectId> {
        self.deleted_projects
            .iter()
            .filter(|(_, deleted)| !deleted.confirmed)
            .map(|(id, _)| id)
    }

    /// Deletions no watch saw: projects deleted while no replica ran leave no Delete event, and a
    /// fresh index knows nothing of them, so their copies would stay forever. A copy of ours (origin
    /// annotation) points at one when its origin namespace is gone (absent or terminating: the
    /// originals went with it, as a backing namespace goes with its Project) and no project claims
    /// it, and the copy's namespace is still annotated with the copy's project (label agreeing),
    /// which is neither known nor remembered as deleted. Absence of the Project alone is no
    /// evidence: a Project CRD re-installed, or Projects restored after it, leave projects missing
    /// for a while with their backing namespaces and originals in place.
    ///
    /// `self` holds the copies and their namespaces; `projects` the projects and the origin
    /// namespaces (the management cluster's world, for a downstream cluster's copies, which name
    /// only projects of `in_cluster`). Returned as (project, its former backing namespace) for
    /// [`Self::note_project_deleted`]: nothing goes until the reconciler has proven each project
    /// gone with a fresh read, as for a deletion it saw.
    pub fn unseen_deletions(
        &self,
        projects: &World,
        in_cluster: Option<&str>,
    ) -> BTreeSet<(ProjectId, String)> {
        if !projects.projects_installed {
            return BTreeSet::new();
        }
        self.copies()
            .filter_map(|(namespace, _, copy)| {
                let (origin_namespace, _) = keys::parse_origin(copy.origin.as_deref()?)?;
                let origin_gone = projects
                    .namespace(origin_namespace)
                    .is_none_or(|ns| ns.terminating);
                let claimed = projects.backing.contains_key(origin_namespace)
                    || projects.contested.contains_key(origin_namespace)
                    || projects
                        .deleted_projects
                        .values()
                        .any(|d| d.backing_namespace == origin_namespace);
                if !origin_gone || claimed {
                    return None;
                }
                let id = self.namespace(namespace)?.project()?;
                let unknown = id.project == copy.project_label
                    && in_cluster.is_none_or(|cluster| id.cluster == cluster)
                    && projects.project(&id).is_none()
                    && !projects.deleted_projects.contains_key(&id);
                unknown.then(|| (id, origin_namespace.to_owned()))
            })
            .collect()
    }

    /// Whether `namespace` backed a project proven deleted (and backs no live project).
    pub fn is_deleted_backing_namespace(&self, namespace: &str) -> bool {
        self.backing_project(namespace).is_none()
            && self
                .deleted_projects
                .values()
                .any(|d| d.confirmed && d.backing_namespace == namespace)
    }

    /// Whether a project of this name was proven deleted (and no live project has the name).
    pub fn is_deleted_project_name(&self, project: &str) -> bool {
        self.deleted_projects
            .iter()
            .any(|(id, d)| d.confirmed && id.project == project)
            && !self.projects.keys().any(|id| id.project == project)
    }

    pub fn project(&self, id: &ProjectId) -> Option<&ProjectState> {
        self.projects.get(id)
    }

    pub fn projects(&self) -> impl Iterator<Item = (&ProjectId, &ProjectState)> {
        self.projects.iter()
    }

    /// The project whose backing namespace this is (never a namespace several projects claim).
    pub fn backing_project(&self, namespace: &str) -> Option<&ProjectId> {
        self.backing.get(namespace)
    }

    /// The backing namespace `project` owns (claims alone), if any: where its originals live.
    pub fn owned_backing_namespace(&self, project: &ProjectId) -> Option<&str> {
        let state = self.projects.get(project)?;
        let namespace = self.claim(project, state)?;
        (self.backing.get(namespace) == Some(project)).then_some(namespace)
    }

    /// Every project claiming this namespace as its backing namespace (one owner, several rivals
    /// who all lose it, or none).
    pub fn claims(&self, namespace: &str) -> Vec<&ProjectId> {
        match self.backing.get(namespace) {
            Some(owner) => vec![owner],
            None => self
                .contested
                .get(namespace)
                .map(|all| all.iter().collect())
                .unwrap_or_default(),
        }
    }

    /// The other projects claiming the namespace `project` claims, when it is contested.
    pub fn rivals(&self, project: &ProjectId) -> Option<(&str, Vec<&ProjectId>)> {
        let state = self.projects.get(project)?;
        let namespace = self.claim(project, state)?;
        let all = self.contested.get(namespace)?;
        Some((namespace, all.iter().filter(|id| *id != project).collect()))
    }

    /// Projects that own their backing namespace (it is theirs alone).
    pub fn backed_projects(&self) -> impl Iterator<Item = &ProjectId> {
        self.backing.values()
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceState> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &NamespaceState)> {
        self.namespaces.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// How many namespaces the index holds (kept by the map: no walk).
    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// How many Projects the index holds (kept by the map: no walk).
    pub fn project_count(&self) -> usize {
        self.projects.len()
    }

    /// The members of this project: namespaces whose projectId annotation names it (the label is
    /// never trusted), none while it is served in its own cluster. Sorted by name.
    pub fn project_namespaces<'a>(
        &'a self,
        project: &'a ProjectId,
    ) -> impl Iterator<Item = Member<'a>> + 'a {
        let served_here = !self.served_elsewhere.contains(project);
        self.namespaces_naming(project).filter(move |_| served_here)
    }

    /// Namespaces whose projectId annotation names this project, served here or not. Sorted by
    /// name.
    pub fn namespaces_naming<'a>(
        &'a self,
        project: &ProjectId,
    ) -> impl Iterator<Item = Member<'a>> {
        self.members
            .get(project)
            .into_iter()
            .flatten()
            .map(|(name, &terminating)| Member {
                name: name.as_str(),
                terminating,
            })
    }

    pub fn secret_meta(&self, namespace: &str, name: &str) -> Option<&SecretMeta> {
        self.names.get(namespace)?.get(name)
    }

    /// Every secret of the name index as (namespace, name, metadata), in no particular order.
    pub fn secret_metas(&self) -> impl Iterator<Item = (&str, &str, &SecretMeta)> {
        self.names.iter().flat_map(|(namespace, names)| {
            names
                .iter()
                .map(move |(name, meta)| (namespace.as_str(), name.as_str(), meta))
        })
    }

    /// How many secrets the name index holds.
    pub fn secret_count(&self) -> usize {
        self.names.values().map(|names| names.len()).sum()
    }

    pub fn scoped(&self, namespace: &str, name: &str) -> Option<&Scoped> {
        self.scoped.get(namespace)?.get(name)
    }

    /// Every labelled secret as (namespace, name, secret), sorted by (namespace, name).
    pub fn scoped_secrets(&self) -> impl Iterator<Item = (&str, &str, &Scoped)> {
        self.scoped.iter().flat_map(|(namespace, names)| {
            names
                .iter()
                .map(move |(name, secret)| (namespace.as_str(), name.as_str(), secret))
        })
    }

    /// How many labelled secrets the index holds.
    pub fn scoped_count(&self) -> usize {
        self.scoped.values().map(|names| names.len()).sum()
    }

    /// The original named `namespace`/`name`, if it is one.
    pub fn original_at(&self, namespace: &str, name: &str) -> Option<Original<'_>> {
        self.as_original(self.scoped(namespace, name)?.whole()?)
    }

    /// Every original: a labelled, non-copy secret in a backing namespace whose label names (or
    /// leaves empty) the project owning that namespace.
    pub fn originals(&self) -> impl Iterator<Item = Original<'_>> {
        self.scoped_secrets()
            .filter_map(|(_, _, secret)| self.as_original(secret.whole()?))
    }

    /// This secret as an original, if it is one.
    pub fn as_original<'a>(&'a self, secret: &'a Secret) -> Option<Original<'a>> {
        let meta = &secret.metadata;
        let value = label(meta, keys::PROJECT_SCOPED_LABEL)?;
        if is_copy(meta) {
            return None;
        }
        let project = self.backing.get(meta.namespace.as_deref()?)?;
        (value.is_empty() || value == project.project).then_some(Original { project, secret })
    }

    /// The originals of one project: the labelled secrets of the one namespace backing it, looked
    /// up, not found among every labelled secret (copies are most of those, 100,000 at scale: a
    /// review in a project's namespace must not walk them all).
    pub fn originals_of<'a>(
        &'a self,
        project: &'a ProjectId,
    ) -> impl Iterator<Item = Original<'a>> + 'a {
        self.owned_backing_namespace(project)
            .and_then(|namespace| self.scoped.get(namespace))
            .into_iter()
            .flat_map(|names| names.values())
            .filter_map(move |secret| self.as_original(secret.whole()?))
            .filter(move |o| o.project == project)
    }

    /// The original of `project` named `name`, if it has one.
    pub fn original_of(&self, project: &ProjectId, name: &str) -> Option<Original<'_>> {
        let namespace = self.owned_backing_namespace(project)?;
        self.original_at(namespace, name)
            .filter(|original| original.project == project)
    }

    /// Every labelled copy as (namespace, name, copy).
    pub fn copies(&self) -> impl Iterator<Item = (&str, &str, &CopyMeta)> {
        self.scoped_secrets()
            .filter_map(|(namespace, name, secret)| Some((namespace, name, secret.copy()?)))
    }
}

fn object_key(meta: &ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

#[cfg(test)]
pub mod fixtures {
    //! Small builders for tests of the pure core.
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    /// Changes namespace `name` (a default one where the world has none) with `change`.
    pub fn edit_namespace(world: &mut World, name: &str, change: impl FnOnce(&mut NamespaceState)) {
        let mut ns = world.namespace(name).cloned().unwrap_or_default();
        change(&mut ns);
        world.upsert_namespace(name.to_owned(), ns);
    }

    pub fn project(world: &mut World, cluster: &str, name: &str, backing: &str) -> ProjectId {
        // A world that knows a project is one where the Project CRD is served.
        world.projects_installed = true;
        let id = ProjectId::new(cluster, name);
        world.upsert_project(
            id.clone(),
            ProjectState {
                uid: String::new(),
                backing_namespace: backing.to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
                deleting: false,
            },
        );
        world.upsert_namespace(backing.to_owned(), NamespaceState::default());
        id
    }

    pub fn namespace_in(world: &mut World, name: &str, project: &ProjectId) {
        world.upsert_namespace(
            name.to_owned(),
            NamespaceState {
                project_annotation: Some(project.to_string()),
                project_label: Some(project.project.clone()),
                ..NamespaceState::default()
            },
        );
    }

    pub fn secret(
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Secret {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Secret {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{namespace}-{name}")),
                labels: map(labels),
                annotations: map(annotations),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "key".to_owned(),
                ByteString(b"dog".to_vec()),
            )])),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        }
    }

    /// Adds a secret to both indexes, as the watchers would.
    pub fn add_secret(world: &mut World, secret: Secret) {
        let meta = &secret.metadata;
        let (ns, name) = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        world.upsert_secret_meta(&ns, &name, SecretMeta::from_meta(meta));
        if label(meta, keys::PROJECT_SCOPED_LABEL).is_some() {
            world.upsert_scoped(secret);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn projects_naming_an_unmarked_namespace_are_told_only_where_marks_count() {
        let build = |world: World| {
            let mut world = world;
            let id = project(&mut world, "c-1", "p-1", "c-1-p-1");
            world.upsert_project(
                id.clone(),
                ProjectState {
                    uid: "u-1".to_owned(),
                    backing_namespace: "c-1-p-1".to_owned(),
                    has_backing_status: true,
                    ..ProjectState::default()
                },
            );
            (world, id)
        };
        let (beside_rancher, _) = build(World::default());
        assert_eq!(beside_rancher.unmarked_backing_namespaces().count(), 0);
        let (mut managed, id) = build(World::for_backing(true));
        assert_eq!(
            managed.unmarked_backing_namespaces().collect::<Vec<_>>(),
            [&id]
        );
        edit_namespace(&mut managed, "c-1-p-1", |ns| {
            ns.backing_of = Some("c-1:p-1".to_owned());
            ns.backing_uid = Some("u-1".to_owned());
        });
        assert_eq!(managed.unmarked_backing_namespaces().count(), 0);
        assert_eq!(managed.backing_project("c-1-p-1"), Some(&id));
    }

    #[test]
    fn names_project_agrees_with_the_parsed_annotation() {
        let ids = [
            ProjectId::new("local", "p-1"),
            ProjectId::new("c-1", "p-1"),
            ProjectId::new("local", "p-1:x"),
            ProjectId::new("", "p-1"),
            ProjectId::new("local", ""),
        ];
        let values = [
            None,
            Some("local:p-1"),
            Some("c-1:p-1"),
            Some("local:p-1:x"),
            Some(":p-1"),
            Some("local:"),
            Some("local"),
            Some("local:p-2"),
            Some(""),
            Some("local::p-1"),
        ];
        for value in values {
            let state = NamespaceState {
                project_annotation: value.map(str::to_owned),
                ..NamespaceState::default()
            };
            for id in &ids {
                assert_eq!(
                    state.names_project(id),
                    state.project().as_ref() == Some(id),
                    "{value:?} names {id:?}"
                );
            }
        }
    }

    /// What a namespace's projectId annotation may say: members of either project, of another
    /// cluster's namesake, malformed, or nothing.
    const ANNOTATIONS: [Option<&str>; 6] = [
        None,
        Some("local:p0"),
        Some("local:p1"),
        Some("c-1:p0"),
        Some("local:p0:x"),
        Some("p0"),
    ];

    #[derive(Debug, Clone)]
    enum NamespaceChange {
        Upsert(usize, usize, bool),
        Remove(usize),
        Replace(Vec<(usize, usize)>),
    }

    fn namespace_change() -> impl Strategy<Value = NamespaceChange> {
        prop_oneof![
            4 => (0..6usize, 0..ANNOTATIONS.len(), any::<bool>())
                .prop_map(|(ns, a, t)| NamespaceChange::Upsert(ns, a, t)),
            2 => (0..6usize).prop_map(NamespaceChange::Remove),
            1 => prop::collection::vec((0..6usize, 0..ANNOTATIONS.len()), 0..6)
                .prop_map(NamespaceChange::Replace),
        ]
    }

    fn annotated(a: usize, terminating: bool) -> NamespaceState {
        NamespaceState {
            project_annotation: ANNOTATIONS[a].map(str::to_owned),
            terminating,
            ..NamespaceState::default()
        }
    }

    fn change(world: &mut World, change: &NamespaceChange) {
        match change {
            NamespaceChange::Upsert(ns, a, t) => {
                world.upsert_namespace(format!("n{ns}"), annotated(*a, *t))
            }
            NamespaceChange::Remove(ns) => world.remove_namespace(&format!("n{ns}")),
            NamespaceChange::Replace(all) => world.replace_namespaces(
                all.iter()
                    .map(|(ns, a)| (format!("n{ns}"), annotated(*a, false))),
            ),
        }
    }

    /// Every namespace whose annotation names `project`, found by walking them all.
    fn scanned<'a>(world: &'a World, project: &ProjectId) -> Vec<Member<'a>> {
        world
            .namespaces()
            .filter(|(_, ns)| ns.project().as_ref() == Some(project))
            .map(|(name, ns)| Member {
                name,
                terminating: ns.terminating,
            })
            .collect()
    }

    proptest! {
        /// A project's members are looked up in an index the namespace watch keeps; after any
        /// sequence of changes (a namespace joining, leaving, moving, going, a re-list) and in a
        /// downstream cluster's world, it holds exactly the namespaces a walk of them all finds.
        #[test]
        fn a_projects_members_looked_up_are_those_a_walk_of_every_namespace_finds(
            changes in prop::collection::vec(namespace_change(), 0..24),
            management_changes in prop::collection::vec(namespace_change(), 0..8),
            elsewhere in any::<bool>(),
        ) {
            let mut world = World::default();
            let mut management = World::default();
            let projects = [
                ProjectId::new("local", "p0"),
                ProjectId::new("local", "p1"),
                ProjectId::new("c-1", "p0"),
            ];
            for (i, c) in changes.iter().enumerate() {
                change(&mut world, c);
                if let Some(m) = management_changes.get(i) {
                    change(&mut management, m);
                }
            }
            // Downstream, the management cluster's n0 and n1 (backing namespaces of its
            // projects) replace this cluster's own.
            for (p, backing) in [("p0", "n0"), ("p1", "n1")] {
                let state = ProjectState {
                    backing_namespace: backing.to_owned(),
                    has_backing_status: true,
                    ..ProjectState::default()
                };
                management.upsert_project(ProjectId::new("c-1", p), state);
            }
            if elsewhere {
                world.serve_elsewhere(Arc::new(BTreeSet::from([projects[1].clone()])));
            }
            let downstream = World::for_cluster(&management, &world, "c-1");
            for w in [&world, &downstream] {
                for project in &projects {
                    let naming: Vec<_> = w.namespaces_naming(project).collect();
                    prop_assert_eq!(&naming, &scanned(w, project));
                    let members: Vec<_> = w.project_namespaces(project).collect();
                    let walked: Vec<_> = w
                        .namespaces()
                        .filter(|(_, ns)| w.is_member_of(ns, project))
                        .map(|(name, ns)| Member { name, terminating: ns.terminating })
                        .collect();
                    prop_assert_eq!(members, walked, "{}", project);
                }
            }
        }
    }

    #[test]
    fn copies_of_a_gone_namespace_naming_a_project_nobody_knows_point_at_a_deletion_no_watch_saw() {
        let mut world = World::default();
        let live = project(&mut world, "local", "p-live", "local-p-live");
        let gone = ProjectId::new("local", "p-gone");
        let copy = |ns: &str, label: &str, origin: Option<&str>| {
            let mut annotations = vec![(keys::COPY_ANNOTATION, keys::TRUE)];
            annotations.extend(origin.map(|o| (keys::ORIGIN_ANNOTATION, o)));
            secret(
                ns,
                "db",
                &[(keys::PROJECT_SCOPED_LABEL, label)],
                &annotations,
            )
        };
        namespace_in(&mut world, "team-live", &live);
        namespace_in(&mut world, "team-gone", &gone);
        namespace_in(&mut world, "team-rancher", &gone);
        // The live project's copy, and one of the gone project's, whose backing namespace
        // local-p-gone went with it.
        add_secret(
            &mut world,
            copy("team-live", "p-live", Some("local-p-live/db")),
        );
        add_secret(
            &mut world,
            copy("team-gone", "p-gone", Some("local-p-gone/db")),
        );
        // A Rancher copy (no origin) is never ours to infer from.
        add_secret(&mut world, copy("team-rancher", "p-gone", None));
        let suspected = |world: &World| world.unseen_deletions(world, None);
        let expected = BTreeSet::from([(gone.clone(), "local-p-gone".to_owned())]);
        assert_eq!(suspected(&world), expected);
        // A backing namespace being deleted counts as gone.
        let mut terminating = world.clone();
        edit_namespace(&mut terminating, "local-p-gone", |ns| ns.terminating = true);
        assert_eq!(suspected(&terminating), expected);

        // The origin namespace still there (a Project CRD re-installed, Projects not restored
        // yet): no evidence of a deletion.
        let mut restoring = world.clone();
        edit_namespace(&mut restoring, "local-p-gone", |_| {});
        assert_eq!(suspected(&restoring), BTreeSet::new());
        // A label that disagrees with the namespace's project says nothing.
        let mut disagreeing = world.clone();
        add_secret(
            &mut disagreeing,
            copy("team-gone", "p-other", Some("local-p-gone/db")),
        );
        assert_eq!(suspected(&disagreeing), BTreeSet::new());
        // Already remembered as deleted (the watch saw it, with another backing namespace):
        // nothing new.
        let mut remembered = world.clone();
        remembered.note_project_deleted(gone.clone(), "elsewhere".to_owned(), "u".to_owned());
        assert_eq!(suspected(&remembered), BTreeSet::new());
        // The project exists after all (its backing namespace elsewhere): not a deletion.
        let mut known = world.clone();
        project(&mut known, "local", "p-gone", "elsewhere");
        assert_eq!(suspected(&known), BTreeSet::new());
        // The origin namespace is claimed by a project (not made yet): the plan's business.
        let mut claimed = world.clone();
        claimed.upsert_project(
            ProjectId::new("local", "p-heir"),
            ProjectState {
                backing_namespace: "local-p-gone".to_owned(),
                has_backing_status: true,
                ..ProjectState::default()
            },
        );
        assert_eq!(suspected(&claimed), BTreeSet::new());
        // Without the Project CRD nothing can be proven, so nothing is suspected.
        let mut uninstalled = world.clone();
        uninstalled.projects_installed = false;
        assert_eq!(suspected(&uninstalled), BTreeSet::new());
    }

    /// A downstream cluster's copies are judged by the management cluster's projects and
    /// namespaces, never by the downstream cluster's own.
    #[test]
    fn a_downstream_clusters_copies_are_judged_by_the_management_clusters_projects() {
        let gone = ProjectId::new("c-1", "p-gone");
        let mut downstream = World::default();
        namespace_in(&mut downstream, "team", &gone);
        // A namespace of the backing namespace's name downstream is not the origin.
        downstream.upsert_namespace("c-1-p-gone".to_owned(), NamespaceState::default());
        add_secret(
            &mut downstream,
            secret(
                "team",
                "db",
                &[(keys::PROJECT_SCOPED_LABEL, "p-gone")],
                &[
                    (keys::COPY_ANNOTATION, keys::TRUE),
                    (keys::ORIGIN_ANNOTATION, "c-1-p-gone/db"),
                ],
            ),
        );
        // The management cluster serves Projects (one of c-1 is left).
        let mut management = World::default();
        project(&mut management, "c-1", "p-live", "c-1-p-live");
        let expected = BTreeSet::from([(gone.clone(), "c-1-p-gone".to_owned())]);
        assert_eq!(
            downstream.unseen_deletions(&management, Some("c-1")),
            expected
        );
        // Another cluster's worker never takes it for one of its own.
        assert_eq!(
            downstream.unseen_deletions(&management, Some("c-2")),
            BTreeSet::new()
        );
        // The management cluster still has the backing namespace: nothing.
        let mut kept = management.clone();
        kept.upsert_namespace("c-1-p-gone".to_owned(), NamespaceState::default());
        assert_eq!(
            downstream.unseen_deletions(&kept, Some("c-1")),
            BTreeSet::new()
        );
        // Judged by the downstream world alone (the CRD is not served there), nothing either.
        assert_eq!(
            downstream.unseen_deletions(&downstream, Some("c-1")),
            BTreeSet::new()
        );
    }

    #[test]
    fn originals_live_in_backing_namespaces_only() {
        let mut world = World::default();
        let p = project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        namespace_in(&mut world, "team-a", &p);
        let label = [(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")];
        add_secret(&mut world, secret("local-p-vwxyz", "db", &label, &[]));
        add_secret(&mut world, secret("team-a", "stray", &label, &[]));
        add_secret(
            &mut world,
            secret(
                "local-p-vwxyz",
                "wrong",
                &[(keys::PROJECT_SCOPED_LABEL, "p-other")],
                &[],
            ),
        );
        let names: Vec<_> = world.originals().map(|o| o.name().to_owned()).collect();
        assert_eq!(names, ["db"]);
        assert_eq!(world.secret_count(), 3);
    }

    #[test]
    fn the_label_alone_never_puts_a_namespace_in_a_project() {
        let mut world = World::default();
        let p = project(&mut world, "local", "p-vwxyz", "local-p-vwxyz");
        world.upsert_namespace(
            "sneaky".to_owned(),
            NamespaceState {
                project_label: Some("p-vwxyz".to_owned()),
                ..NamespaceState::default()
            },
        );
        namespace_in(&mut world, "team-a", &p);
        let members: Vec<_> = world.project_namespaces(&p).map(|m| m.name).collect();
        assert_eq!(members, ["team-a"]);
    }

    fn claim(world: &mut World, cluster: &str, name: &str, status: Option<&str>) -> ProjectId {
        let id = ProjectId::new(cluster, name);
        world.upsert_project(
            id.clone(),
            ProjectState {
                uid: String::new(),
                backing_namespace: status.unwrap_or(name).to_owned(),
                has_backing_status: status.is_some(),
                backing_not_ready: None,
                deleting: false,
            },
        );
        id
    }

    #[test]
    fn a_namespace_claimed_twice_belongs_to_neither_until_one_lets_go() {
        let mut world = World::default();
        let victim = claim(&mut world, "local", "p-vwxyz", Some("local-p-vwxyz"));
        let label = [(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")];
        add_secret(&mut world, secret("local-p-vwxyz", "db", &label, &[]));
        assert_eq!(world.backing_project("local-p-vwxyz"), Some(&victim));
        assert_eq!(world.backed_projects().collect::<Vec<_>>(), [&victim]);
        let rival = claim(&mut world, "local-p", "vwxyz", Some("local-p-vwxyz"));
        assert_eq!(world.backing_project("local-p-vwxyz"), None);
        assert_eq!(world.claims("local-p-vwxyz"), [&victim, &rival]);
        assert_eq!(world.rivals(&victim), Some(("local-p-vwxyz", vec![&rival])));
        assert_eq!(world.originals().count(), 0);
        assert_eq!(world.backed_projects().count(), 0);
        world.remove_project(&rival);
        assert_eq!(world.backing_project("local-p-vwxyz"), Some(&victim));
        assert_eq!(world.rivals(&victim), None);
        assert_eq!(world.originals().count(), 1);
    }

    #[test]
    fn a_project_without_status_claims_only_a_legacy_namespace_marked_for_it() {
        let mut world = World::default();
        let victim = claim(&mut world, "local", "a-team", Some("local-a-team"));
        // A bare Project named like the victim's backing namespace claims nothing there, marked
        // or not: the victim keeps it.
        let namesake = claim(&mut world, "local", "local-a-team", None);
        assert_eq!(world.claims("local-a-team"), [&victim]);
        assert_eq!(world.rivals(&namesake), None);

        // A namespace made beforehand under a future project's name, holding a labelled secret:
        // not the project's backing namespace, so the secret is no original.
        let project = ProjectId::new("local", "payments");
        let state = |uid: &str| ProjectState {
            uid: uid.to_owned(),
            backing_namespace: "payments".to_owned(),
            ..ProjectState::default()
        };
        world.upsert_namespace("payments".to_owned(), NamespaceState::default());
        let label = [(keys::PROJECT_SCOPED_LABEL, "payments")];
        add_secret(&mut world, secret("payments", "db", &label, &[]));
        world.upsert_project(project.clone(), state("uid-1"));
        assert_eq!(world.backing_project("payments"), None);
        assert_eq!(world.owned_backing_namespace(&project), None);
        assert_eq!(world.originals().count(), 0);

        // Marked for this very project (its uid), it is the project's.
        let marked = |uid: &str| NamespaceState {
            backing_of: Some(project.to_string()),
            backing_uid: Some(uid.to_owned()),
            ..NamespaceState::default()
        };
        world.upsert_namespace("payments".to_owned(), marked("uid-1"));
        assert_eq!(world.backing_project("payments"), Some(&project));
        assert_eq!(world.originals().count(), 1);
        // Marked for an earlier project of the same name: not this one's.
        world.upsert_namespace("payments".to_owned(), marked("uid-0"));
        assert_eq!(world.backing_project("payments"), None);
    }

    #[test]
    fn copies_are_recognised_by_either_marker() {
        let rancher = secret("a", "x", &[], &[(keys::COPY_ANNOTATION, "true")]);
        let ours = secret("a", "y", &[], &[(keys::ORIGIN_ANNOTATION, "b/y")]);
        let plain = secret("a", "z", &[], &[]);
        assert!(SecretMeta::from_meta(&rancher.metadata).is_copy());
        assert_eq!(
            SecretMeta::from_meta(&ours.metadata).copy_of.as_deref(),
            Some("b/y")
        );
        assert!(!SecretMeta::from_meta(&plain.metadata).is_copy());
    }
}
