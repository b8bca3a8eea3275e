//! Executes one [`Action`] against the apiserver.
//!
//! The index can lag behind the apiserver (and the webhook's uniqueness checks are never atomic), so
//! every write that replaces or deletes is conditional on the object the plan saw. An update of a copy
//! is sent at once with the resourceVersion the index holds as its precondition: that version was a
//! copy, different from the wanted one, so no read is needed; only when the apiserver answers 409
//! (the copy changed since) is it read and re-checked. Overwrites, recreates and deletes first GET
//! their target and re-check that it is still what the plan saw: the same uid, still a copy where a
//! copy is expected, not labelled project-scoped where a plain secret is to be overwritten, still
//! different from the wanted copy. A create needs no such check: the
//! apiserver itself refuses a name that is taken. Every write carries an optimistic-concurrency
//! precondition, and checks leadership right before it is sent. A target that changed, vanished or
//! raced us again (404, 409) is requeued for the next round, not an error.
//!
//! A delete re-checks the origin too, not only the copy: the index can hold a copy before its
//! original (right after a leader change or a re-list), so the namespace and the one original that
//! could want the copy are read fresh, and a copy they still want is requeued, never deleted.
//!
//! A secret that is already being deleted but held by finalizers is waited for: deleting it again or
//! creating over it would only fail (409) until its finalizers are gone.

use super::error::{Error, status_code};
use crate::apiserver::is_not_found;
use crate::keys::{self, ProjectId};
use crate::plan::{self, Action, BackingRefusal, Drift, Settings};
use crate::project::{project_resource, status_backing_namespace};
use crate::scoped::Shape;
use crate::world::{self, NamespaceState, World};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::watch;

/// A copy the apiserver accepted: [`Outcome::Written`] when it stored what was sent, else
/// [`Error::Altered`] naming what differs (never the values: they may be secret data).
fn stored_as_sent(stored: &Secret, sent: &Secret) -> Result<Outcome, Error> {
    let (stored, sent) = (Shape::of_secret(stored), Shape::of_secret(sent));
    let what = if stored.type_ != sent.type_ || stored.immutable != sent.immutable {
        "type or immutability"
    } else if stored.data != sent.data {
        "data"
    } else if stored.metadata != sent.metadata {
        "labels or annotations"
    } else {
        return Ok(Outcome::Written);
    };
    Err(Error::Altered { what })
}

/// What became of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The apiserver already has what we want (the index was behind).
    Unchanged,
    /// A conflict: reported, never written.
    Refused,
    /// Try again next round.
    Requeue(Requeue),
    /// The target is being deleted and held by these finalizers: wait for it to go.
    Waiting {
        finalizers: Vec<String>,
    },
}

/// Why an action was put off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// The target is no longer what the plan saw.
    Stale,
    /// The apiserver refused a precondition or found nothing (409, 404).
    Raced,
    /// Leadership was lost before the write.
    NotLeading,
}

impl Requeue {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::Raced => "raced",
            Self::NotLeading => "not_leading",
        }
    }
}

/// Executes actions for the leader.
#[derive(Clone)]
pub struct Applier {
    /// The cluster the copies are written in.
    client: Client,
    /// The cluster the originals live in (the management cluster): a delete's re-check reads the
    /// original there.
    origins: Client,
    leading: watch::Receiver<bool>,
    /// The settings the plan was made with: a delete's re-check must judge as the plan does.
    settings: Settings,
}

impl Applier {
    pub fn new(client: Client, leading: watch::Receiver<bool>, settings: Settings) -> Self {
        Self {
            origins: client.clone(),
            client,
            leading,
            settings,
        }
    }

    /// Writes copies through `self`'s client, reading originals through `origins` (a downstream
    /// cluster's worker: copies there, originals in the management cluster).
    pub fn with_origins(mut self, origins: Client) -> Self {
        self.origins = origins;
        self
    }

    /// Executes `action`. `world` is the snapshot it was planned from, which only a delete's
    /// re-check reads: a round without deletes lets go of it (see `controller::round`), and a
    /// delete without it is never made, only requeued.
    pub async fn apply(&self, action: &Action, world: Option<&World>) -> Result<Outcome, Error> {
        match self.execute(action, world).await {
            Err(Error::NotLeading) => Ok(Outcome::Requeue(Requeue::NotLeading)),
            Err(Error::Kube(e)) if matches!(status_code(&e), Some(404 | 409)) => {
                Ok(Outcome::Requeue(Requeue::Raced))
            }
            other => other,
        }
    }

    async fn execute(&self, action: &Action, world: Option<&World>) -> Result<Outcome, Error> {
        match action {
            // Placed one at a time, as each is written: the plan shares one copy per original.
            Action::Create { copy } => self.create(&copy.placed()).await,
            Action::Overwrite {
                copy,
                existing_uid,
                label,
            } => {
                let label = label.as_deref();
                self.overwrite(&copy.placed(), existing_uid, label).await
            }
            Action::Update {
                copy,
                resource_version,
            } => self.update(&copy.placed(), resource_version).await,
            Action::Recreate { copy, existing_uid } => {
                self.recreate(&copy.placed(), existing_uid).await
            }
            Action::Delete {
                namespace,
                name,
                uid,
                ..
            } => match world {
                Some(world) => self.delete(namespace, name, uid, world).await,
                None => Ok(Outcome::Requeue(Requeue::Stale)),
            },
            Action::Conflict { .. } => Ok(Outcome::Refused),
            Action::SetBackingNamespace {
                project,
                backing_namespace,
                create_namespace,
                refusal,
            } => {
                self.set_backing_namespace(
                    project,
                    backing_namespace,
                    *create_namespace,
                    refusal.as_ref(),
                )
                .await
            }
            Action::FixNamespaceLabel { namespace, .. } => {
                self.fix_namespace_label(namespace).await
            }
            Action::AddClusterLabel {
                namespace,
                name,
                cluster,
            } => self.add_cluster_label(namespace, name, cluster).await,
        }
    }

    /// Fails with [`Error::NotLeading`] unless this instance holds the lease right now.
    fn guard(&self) -> Result<(), Error> {
        if *self.leading.borrow() {
            Ok(())
        } else {
            Err(Error::NotLeading)
        }
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// A create never replaces anything (the apiserver refuses a taken name), so it needs no GET
    /// first; only when the name turns out taken do we look at what holds it.
    async fn create(&self, copy: &Secret) -> Result<Outcome, Error> {
        let (api, name) = (self.secrets(namespace_of(copy)), name_of(copy));
        self.guard()?;
        match api.create(&post_params(), copy).await {
            Ok(stored) => stored_as_sent(&stored, copy),
            Err(kube::Error::Api(status)) if status.code == 409 => match api.get_opt(name).await? {
                Some(existing) if is_exact_copy(&existing, copy) => Ok(Outcome::Unchanged),
                _ => Ok(Outcome::Requeue(Requeue::Stale)),
            },
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces the secret of uid `planned_uid` (carrying the project-scoped label `planned_label`
    /// when planned) with `copy`.
    async fn overwrite(
        &self,
        copy: &Secret,
        planned_uid: &str,
        planned_label: Option<&str>,
    ) -> Result<Outcome, Error> {
        let api = self.secrets(namespace_of(copy));
        let Some(existing) = api.get_opt(name_of(copy)).await? else {
            return Ok(Outcome::Requeue(Requeue::Stale));
        };
        // Labelled since the plan, or labelled otherwise (another project's backing namespace may
        // hold it, making it an original): planned again with the label known, never overwritten
        // on a stale view.
        let label = world::label(&existing.metadata, keys::PROJECT_SCOPED_LABEL);
        let relabelled = label != planned_label && !world::is_copy(&existing.metadata);
        if uid_of(&existing) != planned_uid || relabelled {
            return Ok(Outcome::Requeue(Requeue::Stale));
        }
        if let Some(waiting) = being_deleted(&existing) {
            return Ok(waiting);
        }
        if is_exact_copy(&existing, copy) {
            return Ok(Outcome::Unchanged);
        }
        // A secret's type cannot change in place, nor can an immutable secret's data.
        if plan::replaceable_in_place(&existing, copy) {
            self.replace(&api, &existing, copy).await
        } else {
            self.delete_then_create(&api, &existing, copy).await
        }
    }

    /// Replaces the copy the index holds at `resource_version`; reads it only if that version is gone.
    async fn update(&self, copy: &Secret, resource_version: &str) -> Result<Outcome, Error> {
        let api = self.secrets(namespace_of(copy));
        // Without a version to hold on to, read first (a replace without one is unconditional).
        if resource_version.is_empty() {
            return self.update_live(&api, copy).await;
        }
        let mut next = copy.clone();
        next.metadata.resource_version = Some(resource_version.to_owned());
        self.guard()?;
        match api.replace(name_of(copy), &post_params(), &next).await {
            Ok(stored) => stored_as_sent(&stored, copy),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.update_live(&api, copy).await
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Reads the copy, re-checks it and replaces it conditional on what was read.
    async fn update_live(&self, api: &Api<Secret>, copy: &Secret) -> Result<Outcome, Error> {
        let Some(existing) = api.get_opt(name_of(copy)).await? else {
            return Ok(Outcome::Requeue(Requeue::Stale));
        };
        if !world::is_copy(&existing.metadata) {
            return Ok(Outcome::Requeue(Requeue::Stale));
        }
        match plan::drift(&existing, copy) {
            Drift::None => Ok(Outcome::Unchanged),
            Drift::Replace => Ok(Outcome::Requeue(Requeue::Stale)),
            // The wanted copy derives from the original alone, so the live resourceVersion is the
            // right precondition: it guards the window between this GET and the write.
            Drift::Changed => self.replace(api, &existing, copy).await,
        }
    }

    async fn recreate(&self, copy: &Secret, planned_uid: &str) -> Result<Outcome, Error> {
        let api = self.secrets(namespace_of(copy));
        let Some(existing) = api.get_opt(name_of(copy)).await? else {
            return Ok(Outcome::Requeue(Requeue::Stale));
        };
        if uid_of(&existing) != planned_uid || !world::is_copy(&existing.metadata) {
            return Ok(Outcome::Requeue(Requeue::Stale));
        }
        if let Some(waiting) = being_deleted(&existing) {
            return Ok(waiting);
        }
        if is_exact_copy(&existing, copy) {
            return Ok(Outcome::Unchanged);
        }
        self.delete_then_create(&api, &existing, copy).await
    }

    async fn delete(
        &self,
        namespace: &str,
        name: &str,
        planned_uid: &str,
        world: &World,
    ) -> Result<Outcome, Error> {
        let api = self.secrets(namespace);
        let Some(existing) = api.get_opt(name).await? else {
            return Ok(Outcome::Unchanged);
        };
        if uid_of(&existing) != planned_uid || !world::is_copy(&existing.metadata) {
            return Ok(Outcome::Requeue(Requeue::Stale));
        }
        if let Some(waiting) = being_deleted(&existing) {
            return Ok(waiting);
        }
        let origin = world::annotation(&existing.metadata, keys::ORIGIN_ANNOTATION);
        if self
            .wanted_after_all(namespace, name, origin, world)
            .await?
        {
            tracing::info!(
                namespace,
                name,
                "reconciler: a fresh read of the origin still wants this copy; not deleting it \
                 (the index is behind)"
            );
            return Ok(Outcome::Requeue(Requeue::Stale));
        }
        self.guard()?;
        api.delete(name, &preconditions(&existing.metadata)).await?;
        Ok(Outcome::Written)
    }

    /// Whether fresh reads of the copy's namespace and of the one original that could want it say
    /// the copy is wanted after all (see [`plan::wanted_after_all`]).
    async fn wanted_after_all(
        &self,
        namespace: &str,
        name: &str,
        copy_origin: Option<&str>,
        world: &World,
    ) -> Result<bool, Error> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let Some(live_namespace) = namespaces.get_opt(namespace).await? else {
            return Ok(false);
        };
        let live_namespace = NamespaceState::from_namespace(&live_namespace);
        let Some((origin_namespace, origin_name)) =
            plan::wanting_original(world, &live_namespace, name)
        else {
            return Ok(false);
        };
        let live_original = Api::<Secret>::namespaced(self.origins.clone(), origin_namespace)
            .get_opt(&origin_name)
            .await?;
        Ok(plan::wanted_after_all(
            world,
            &self.settings,
            namespace,
            name,
            copy_origin,
            Some(&live_namespace),
            live_original.as_ref(),
        ))
    }

    async fn replace(
        &self,
        api: &Api<Secret>,
        existing: &Secret,
        copy: &Secret,
    ) -> Result<Outcome, Error> {
        let mut next = copy.clone();
        next.metadata.resource_version = existing.metadata.resource_version.clone();
        self.guard()?;
        let stored = api.replace(name_of(copy), &post_params(), &next).await?;
        stored_as_sent(&stored, copy)
    }

    async fn delete_then_create(
        &self,
        api: &Api<Secret>,
        existing: &Secret,
        copy: &Secret,
    ) -> Result<Outcome, Error> {
        self.guard()?;
        let deleted = api
            .delete(name_of(copy), &preconditions(&existing.metadata))
            .await?;
        // The apiserver answers with the object while finalizers still hold it: a create now would
        // only be refused with 409 until they are gone.
        if let Some(held) = deleted.left()
            && let Some(waiting) = being_deleted(&held)
        {
            return Ok(waiting);
        }
        self.guard()?;
        let stored = api.create(&post_params(), copy).await?;
        stored_as_sent(&stored, copy)
    }

    /// Records a project's backing namespace (creating it, marked as the project's, when missing)
    /// with a ready BackingNamespaceReady condition; or, with a refusal, only the condition and an
    /// Event on the Project. An existing namespace is used only when it is marked for the project.
    async fn set_backing_namespace(
        &self,
        project: &ProjectId,
        backing_namespace: &str,
        create_namespace: bool,
        refusal: Option<&BackingRefusal>,
    ) -> Result<Outcome, Error> {
        let projects: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &project.cluster, &project_resource());
        let Some(live) = projects.get_opt(&project.project).await? else {
            return Ok(Outcome::Requeue(Requeue::Stale));
        };
        let live_backing = status_backing_namespace(&live.data);
        if let Some(refusal) = refusal {
            let message = refusal.message(project, backing_namespace);
            let status =
                json!({"conditions": conditions(&live, false, refusal.reason(), &message)});
            self.patch_project_status(&projects, &live, status).await?;
            self.announce_refusal(project, &live, refusal.reason(), &message)
                .await;
            return Ok(Outcome::Written);
        }
        match live_backing {
            Some(current) if current != backing_namespace => {
                return Ok(Outcome::Requeue(Requeue::Stale));
            }
            // A recorded backing namespace that was deleted is created again below.
            Some(_) if !create_namespace => {
                let message = format!("owns backing namespace {backing_namespace:?}");
                let ready = conditions(&live, true, keys::BACKING_NAMESPACE_ASSIGNED, &message);
                self.patch_project_status(&projects, &live, json!({"conditions": ready}))
                    .await?;
                return Ok(Outcome::Written);
            }
            Some(_) | None => {}
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        // The namespace is marked for this very Project object: one re-created under the same name
        // has another uid and does not inherit it.
        let uid = live.metadata.uid.clone().unwrap_or_default();
        if create_namespace {
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(backing_namespace.to_owned()),
                    annotations: Some(
                        [
                            (
                                keys::BACKING_NAMESPACE_OF_ANNOTATION.to_owned(),
                                project.to_string(),
                            ),
                            (
                                keys::BACKING_NAMESPACE_UID_ANNOTATION.to_owned(),
                                uid.clone(),
                            ),
                        ]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            self.guard()?;
            match namespaces.create(&post_params(), &namespace).await {
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                other => {
                    other?;
                }
            }
        }
        // Whether just created or found, the namespace must be marked for this project: one made
        // by someone else a moment ago is never adopted (the next round reports it).
        let marked = namespaces
            .get_opt(backing_namespace)
            .await?
            .is_some_and(|ns| NamespaceState::from_namespace(&ns).is_marked_for(project, &uid));
        if !marked {
            return Ok(Outcome::Requeue(Requeue::Stale));
        }
        let message = format!("owns backing namespace {backing_namespace:?}");
        let status = json!({
            "backingNamespace": backing_namespace,
            "conditions": conditions(&live, true, keys::BACKING_NAMESPACE_ASSIGNED, &message),
        });
        self.patch_project_status(&projects, &live, status).await?;
        Ok(Outcome::Written)
    }

    /// A merge patch of a Project's status, conditional on the resourceVersion that was read.
    /// Sets the Project's `CopiesInPlace` condition (own Project CRD only: never Rancher's).
    pub async fn set_copies_condition(
        &self,
        project: &ProjectId,
        condition: &crate::clusters::condition::Condition,
    ) -> Result<(), Error> {
        let projects: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &project.cluster, &project_resource());
        let Some(live) = projects.get_opt(&project.project).await? else {
            return Ok(());
        };
        let all = conditions_with(
            &live,
            keys::COPIES_IN_PLACE_CONDITION,
            condition.in_place,
            condition.reason,
            &condition.message,
        );
        self.patch_project_status(&projects, &live, json!({ "conditions": all }))
            .await
    }

    async fn patch_project_status(
        &self,
        projects: &Api<DynamicObject>,
        live: &DynamicObject,
        status: serde_json::Value,
    ) -> Result<(), Error> {
        let name = live.metadata.name.as_deref().unwrap_or_default();
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": live.metadata.resource_version},
            "status": status,
        }));
        self.guard()?;
        // The status subresource where the CRD has one, else the object itself.
        match projects.patch_status(name, &patch_params(), &patch).await {
            Err(error) if is_not_found(&error) => {
                projects.patch(name, &patch_params(), &patch).await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// A Warning Event on the Project; a failure is only logged (the condition says it too).
    async fn announce_refusal(
        &self,
        project: &ProjectId,
        live: &DynamicObject,
        reason: &str,
        message: &str,
    ) {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: super::CONTROLLER_NAME.to_owned(),
                instance: None,
            },
        );
        let reference = ObjectReference {
            api_version: Some(format!("{}/{}", keys::PROJECT_GROUP, keys::PROJECT_VERSION)),
            kind: Some(keys::PROJECT_KIND.to_owned()),
            namespace: Some(project.cluster.clone()),
            name: Some(project.project.clone()),
            uid: live.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(crate::message::one_line(message)),
            action: "SetBackingNamespace".to_owned(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }

    async fn fix_namespace_label(&self, namespace: &str) -> Result<Outcome, Error> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let Some(live) = namespaces.get_opt(namespace).await? else {
            return Ok(Outcome::Unchanged);
        };
        let state = NamespaceState::from_namespace(&live);
        let Some(wanted) = plan::wanted_project_label(&state) else {
            return Ok(Outcome::Unchanged);
        };
        if state.terminating || state.project_label == wanted {
            return Ok(Outcome::Unchanged);
        }
        let patch = Patch::Merge(json!({"metadata": {
            "resourceVersion": live.metadata.resource_version,
            "labels": {keys::PROJECT_ID_KEY: wanted},
        }}));
        self.guard()?;
        let stored = namespaces.patch(namespace, &patch_params(), &patch).await?;
        // A policy that rewrites the label would have it repaired every round, without end.
        if NamespaceState::from_namespace(&stored).project_label != wanted {
            return Err(Error::Altered { what: "labels" });
        }
        Ok(Outcome::Written)
    }

    /// Replaced rather than patched: the RBAC of `deploy/` grants secrets `update`, not `patch`.
    async fn add_cluster_label(
        &self,
        namespace: &str,
        name: &str,
        cluster: &str,
    ) -> Result<Outcome, Error> {
        let api = self.secrets(namespace);
        let Some(mut live) = api.get_opt(name).await? else {
            return Ok(Outcome::Unchanged);
        };
        let meta = &live.metadata;
        if world::label(meta, keys::PROJECT_SCOPED_CLUSTER_LABEL).is_some() {
            return Ok(Outcome::Unchanged);
        }
        if world::is_copy(meta) || world::label(meta, keys::PROJECT_SCOPED_LABEL).is_none() {
            return Ok(Outcome::Requeue(Requeue::Stale));
        }
        live.metadata.labels.get_or_insert_default().insert(
            keys::PROJECT_SCOPED_CLUSTER_LABEL.to_owned(),
            cluster.to_owned(),
        );
        // `live` carries its resourceVersion: the replace is conditional on it.
        self.guard()?;
        let stored = api.replace(name, &post_params(), &live).await?;
        let label = world::label(&stored.metadata, keys::PROJECT_SCOPED_CLUSTER_LABEL);
        if label != Some(cluster) {
            return Err(Error::Altered { what: "labels" });
        }
        Ok(Outcome::Written)
    }
}

/// The Project's status conditions with ours (BackingNamespaceReady) set; others are kept, and the
/// transition time only moves when the status does.
fn conditions(live: &DynamicObject, ready: bool, reason: &str, message: &str) -> serde_json::Value {
    conditions_with(
        live,
        keys::BACKING_NAMESPACE_READY_CONDITION,
        ready,
        reason,
        message,
    )
}

/// The Project's status conditions with condition `kind` set; the others are kept, and the transition
/// time only moves when the status does.
fn conditions_with(
    live: &DynamicObject,
    kind: &str,
    ready: bool,
    reason: &str,
    message: &str,
) -> serde_json::Value {
    let status = if ready { "True" } else { "False" };
    let existing: Vec<serde_json::Value> = live
        .data
        .pointer("/status/conditions")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let is_ours = |c: &serde_json::Value| c.get("type").and_then(|t| t.as_str()) == Some(kind);
    let since = existing
        .iter()
        .find(|c| is_ours(c) && c.get("status").and_then(|s| s.as_str()) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(Time(k8s_openapi::jiff::Timestamp::now())));
    let mut all: Vec<serde_json::Value> = existing.into_iter().filter(|c| !is_ours(c)).collect();
    all.push(json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }));
    serde_json::Value::Array(all)
}

/// `Waiting` when the secret is being deleted: with finalizers, until they are removed; without, it is
/// about to vanish, and the next round sees the name free.
fn being_deleted(secret: &Secret) -> Option<Outcome> {
    let meta = &secret.metadata;
    meta.deletion_timestamp.as_ref()?;
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    Some(if finalizers.is_empty() {
        Outcome::Requeue(Requeue::Stale)
    } else {
        Outcome::Waiting { finalizers }
    })
}

fn is_exact_copy(existing: &Secret, copy: &Secret) -> bool {
    world::is_copy(&existing.metadata) && plan::drift(existing, copy) == Drift::None
}

fn namespace_of(secret: &Secret) -> &str {
    secret.metadata.namespace.as_deref().unwrap_or_default()
}

fn name_of(secret: &Secret) -> &str {
    secret.metadata.name.as_deref().unwrap_or_default()
}

fn uid_of(secret: &Secret) -> &str {
    secret.metadata.uid.as_deref().unwrap_or_default()
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(super::CONTROLLER_NAME.to_owned()),
        ..PostParams::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(super::CONTROLLER_NAME.to_owned()),
        ..PatchParams::default()
    }
}

/// Deletes exactly the object that was checked: same uid, same resourceVersion.
fn preconditions(meta: &ObjectMeta) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    }
}
