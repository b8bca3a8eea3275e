//! Revocation: when a Project is deleted, the copies of its originals go. The projects watch remembers
//! a deleted project with its backing namespace; this module proves the deletion with a fresh read
//! before [`crate::plan::actions`] may remove anything for it.
//!
//! Proof is a GET of the Project answering 404 `NotFound` *for that object*, while discovery shows the
//! projects resource served and not terminating. A 404 because the resource is not served (no CRD: a
//! plain "404 page not found"), or a CRD being deleted (which deletes every Project with it, but
//! discovery then drops the `create` verb), never counts: a missing CRD must not wipe out copies.

use crate::apiserver::is_not_found;
use crate::index::Index;
use crate::keys::{self, ProjectId};
use crate::project::project_resource;
use crate::world::is_another_object;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::Status;
use std::collections::BTreeSet;

/// What a GET says about a project the watch saw deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    /// 404 `NotFound` for the object itself: gone, if the resource is still fully served.
    NotFound,
    /// A Project of that name exists, the object `uid`: the deleted one itself (its deletion was
    /// not what it seemed) keeps its copies; another object under its name does not save them.
    Exists { uid: String },
    /// A 404 because the resource is not served: nothing can be proven now.
    Unserved,
}

/// Remembers, unproven, the deletions that happened while no replica watched (see
/// [`crate::world::World::unseen_deletions`]): `copies` holds the copies, `projects` the projects
/// (the same index but for a downstream cluster's, whose projects are the management cluster's),
/// and only `in_cluster`'s projects are taken when given. [`confirm_deleted_projects`] then proves
/// or forgets them like any other. `found` holds the suspects a read found existing while the
/// projects watch did not have them yet: suspecting them again would read them in every round.
/// Returns the projects suspected now.
pub fn suspect_unseen_deletions(
    copies: &Index,
    projects: &Index,
    in_cluster: Option<&str>,
    found: &mut BTreeSet<ProjectId>,
) -> Vec<ProjectId> {
    let world = projects.read();
    // The watch has caught up with those found: it sees their deletion from now on.
    found.retain(|id| world.project(id).is_none());
    let unseen: Vec<(ProjectId, String)> = copies
        .read()
        .unseen_deletions(&world, in_cluster)
        .into_iter()
        .filter(|(id, _)| !found.contains(id))
        .collect();
    drop(world);
    if unseen.is_empty() {
        return Vec::new();
    }
    for (id, backing) in &unseen {
        tracing::info!(project = %id, backing_namespace = %backing, "reconciler: copies name a project that is not known and whose backing namespace is gone; reading whether it was deleted");
    }
    let suspects = unseen.iter().map(|(id, _)| id.clone()).collect();
    projects.update(|world| {
        for (id, backing) in unseen {
            // The watch may have learnt of it meanwhile: what it knows stands.
            if world.project(&id).is_none() && world.deleted_project_uid(&id).is_none() {
                world.note_project_deleted(id, backing, String::new());
            }
        }
    });
    suspects
}

/// After [`confirm_deleted_projects`]: the suspects it forgot, because a read found them, go to
/// `found` (see [`suspect_unseen_deletions`]).
pub fn note_found(projects: &Index, suspects: Vec<ProjectId>, found: &mut BTreeSet<ProjectId>) {
    let world = projects.read();
    found.extend(
        suspects
            .into_iter()
            .filter(|id| world.deleted_project_uid(id).is_none()),
    );
}

/// Proves or forgets the deletions the watch has seen, of every cluster's projects or (`in_cluster`)
/// of one cluster's only. Returns how many are still unproven because a read failed or the resource
/// is not served right now (the caller looks again later).
///
/// Every pending project is read first, then discovery once: a CRD deletion (which deletes every
/// Project) that starts while the objects are read is still seen, and a pass costs one GET per
/// deleted project and one discovery call.
pub async fn confirm_deleted_projects(
    client: &Client,
    index: &Index,
    in_cluster: Option<&str>,
) -> usize {
    let pending: Vec<ProjectId> = index
        .read()
        .unconfirmed_deleted_projects()
        .filter(|id| in_cluster.is_none_or(|cluster| id.cluster == cluster))
        .cloned()
        .collect();
    let mut not_found = Vec::new();
    let mut unproven = 0;
    for (done, id) in pending.iter().enumerate() {
        match read(client, id).await {
            Ok(Read::NotFound) => not_found.push(id),
            // Another object under the name (deleted and created again): the deleted one is gone.
            Ok(Read::Exists { uid }) if deleted_uid_differs(index, id, &uid) => not_found.push(id),
            Ok(Read::Exists { uid }) => {
                index.update(|world| world.forget_deleted_project(id, &uid));
            }
            Ok(Read::Unserved) => {
                // Not served for one means not served for all: no need to read the others.
                unproven += pending.len() - done;
                break;
            }
            Err(error) => {
                tracing::warn!(project = %id, %error, "reconciler: could not re-read a deleted project");
                unproven += 1;
            }
        }
    }
    if not_found.is_empty() {
        return unproven;
    }
    match projects_served(client).await {
        Ok(true) => {
            for id in &not_found {
                tracing::info!(project = %id, "reconciler: project deleted; removing the copies of its originals");
            }
            // A project re-created since its read has been forgotten: it is not confirmed.
            index.update(|world| {
                for id in &not_found {
                    world.confirm_project_deleted(id);
                }
            });
            unproven
        }
        Ok(false) => unproven + not_found.len(),
        Err(error) => {
            tracing::warn!(%error, "reconciler: could not read discovery for the projects resource");
            unproven + not_found.len()
        }
    }
}

/// Whether the project found under `id` is another object than the deleted one remembered.
fn deleted_uid_differs(index: &Index, id: &ProjectId, found: &str) -> bool {
    index
        .read()
        .deleted_project_uid(id)
        .is_some_and(|deleted| is_another_object(deleted, found))
}

async fn read(client: &Client, id: &ProjectId) -> Result<Read, kube::Error> {
    let projects: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &id.cluster, &project_resource());
    match projects.get(&id.project).await {
        Ok(found) => Ok(Read::Exists {
            uid: found.metadata.uid.unwrap_or_default(),
        }),
        Err(kube::Error::Api(status)) if is_object_not_found(&status, id) => Ok(Read::NotFound),
        Err(error) if is_not_found(&error) => Ok(Read::Unserved),
        Err(error) => Err(error),
    }
}

/// A 404 about this very Project, not about a resource that is not served.
pub fn is_object_not_found(status: &Status, id: &ProjectId) -> bool {
    status.code == 404
        && status.reason == "NotFound"
        && status.details.as_ref().is_some_and(|d| {
            d.name == id.project && d.kind == keys::PROJECT_PLURAL && d.group == keys::PROJECT_GROUP
        })
}

/// Whether discovery lists the projects resource as fully served: a terminating CRD loses `create`.
async fn projects_served(client: &Client) -> Result<bool, kube::Error> {
    let group_version = format!("{}/{}", keys::PROJECT_GROUP, keys::PROJECT_VERSION);
    match client.list_api_group_resources(&group_version).await {
        Ok(list) => Ok(list
            .resources
            .iter()
            .any(|r| r.name == keys::PROJECT_PLURAL && r.verbs.iter().any(|v| v == "create"))),
        Err(error) if is_not_found(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;

    fn not_found(name: &str, kind: &str) -> Status {
        Status::failure("not found", "NotFound")
            .with_code(404)
            .with_details(StatusDetails {
                name: name.to_owned(),
                group: keys::PROJECT_GROUP.to_owned(),
                kind: kind.to_owned(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            })
    }

    #[test]
    fn only_a_404_about_the_project_itself_proves_it_gone() {
        let id = ProjectId::new("local", "p-x");
        assert!(is_object_not_found(&not_found("p-x", "projects"), &id));
        assert!(!is_object_not_found(&not_found("p-y", "projects"), &id));
        assert!(!is_object_not_found(&not_found("p-x", "namespaces"), &id));
        // What kube-client makes of the plain-text 404 of a resource that is not served.
        let unserved =
            Status::failure("404 page not found", "Failed to parse error data").with_code(404);
        assert!(!is_object_not_found(&unserved, &id));
    }
}
