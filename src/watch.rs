//! The watchers that feed the [`World`] index, and the shared [`Index`] everyone reads.
//!
//! Four watches: projects (when the CRD is served), namespaces, the metadata of every secret (the name
//! index; no secret data), and the full objects of secrets carrying the project-scoped label (originals
//! and copies, which the reconciler must compare). Each re-list replaces its part of the world whole,
//! so nothing deleted while a watch was down lingers. Readiness turns true only once every watch has
//! delivered its first list.

use crate::keys::{self, ProjectId};
use crate::world::{NamespaceState, ProjectState, SecretMeta, World};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The four watches, by name (used in logs and readiness).
const PROJECTS: usize = 0;
const NAMESPACES: usize = 1;
const SECRET_NAMES: usize = 2;
const SCOPED_SECRETS: usize = 3;
const WATCHES: [&str; 4] = ["projects", "namespaces", "secret-names", "scoped-secrets"];

/// The world behind a lock, with a change counter and per-watch sync flags.
pub struct Index {
    world: RwLock<World>,
    changes: watch::Sender<u64>,
    synced: watch::Sender<[bool; 4]>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(World::default())
    }
}

impl Index {
    pub fn new(world: World) -> Self {
        Self {
            world: RwLock::new(world),
            changes: watch::channel(0).0,
            synced: watch::channel([false; 4]).0,
        }
    }

    /// A read view of the world. Hold it briefly: writers wait.
    pub fn read(&self) -> RwLockReadGuard<'_, World> {
        // A panic while holding the lock cannot leave the world half-updated in a way that matters
        // more than stopping every reader, so a poisoned lock is read through.
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change and tells subscribers.
    pub fn update(&self, change: impl FnOnce(&mut World)) {
        change(&mut self.write());
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Bumped on every applied watch event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn mark_synced(&self, watch: usize) {
        self.synced
            .send_if_modified(|s| !std::mem::replace(&mut s[watch], true));
    }

    #[cfg(test)]
    pub fn mark_all_synced_for_tests(&self) {
        (0..WATCHES.len()).for_each(|w| self.mark_synced(w));
    }

    pub fn is_synced(&self) -> bool {
        self.synced.borrow().iter().all(|s| *s)
    }

    /// Resolves once every watch has delivered its first list.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we are borrowed.
        let _ = rx.wait_for(|s| s.iter().all(|s| *s)).await;
    }
}

/// The Project resource, served by the CRD in `deploy/` (or by Rancher).
pub fn project_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            keys::PROJECT_GROUP,
            keys::PROJECT_VERSION,
            keys::PROJECT_KIND,
        ),
        keys::PROJECT_PLURAL,
    )
}

/// A project's identity and state from its object: the cluster is the object's namespace.
pub fn project_state(project: &DynamicObject) -> Option<(ProjectId, ProjectState)> {
    let id = ProjectId::new(project.namespace()?, project.name_any());
    let status_backing = project
        .data
        .pointer("/status/backingNamespace")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let state = ProjectState {
        backing_namespace: status_backing
            .unwrap_or(id.legacy_backing_namespace())
            .to_owned(),
        has_backing_status: status_backing.is_some(),
        backing_not_ready: backing_not_ready(&project.data),
    };
    Some((id, state))
}

/// The reason of a `False` BackingNamespaceReady condition in a Project's status.
fn backing_not_ready(data: &serde_json::Value) -> Option<String> {
    let conditions = data.pointer("/status/conditions")?.as_array()?;
    let ours = conditions.iter().find(|c| {
        c.get("type").and_then(|t| t.as_str()) == Some(keys::BACKING_NAMESPACE_READY_CONDITION)
    })?;
    (ours.get("status").and_then(|s| s.as_str()) == Some("False")).then(|| {
        ours.get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_owned()
    })
}

/// Starts the four watches; they run until the returned set is dropped.
pub fn spawn(client: Client, index: Arc<Index>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let projects = Api::<DynamicObject>::all_with(client.clone(), &project_resource());
    // The Project CRD can be deleted and re-installed at runtime: a short backoff makes projects
    // indexed again within seconds of it being served (the default backoff grows to 30 s).
    let project_events = kube::runtime::watcher(projects, watcher::Config::default())
        .backoff(projects_backoff())
        .map(|event| event.map(|e| e.modify(strip_managed_fields)));
    tasks.spawn(feed(
        index.clone(),
        PROJECTS,
        project_events,
        |world, all: Vec<DynamicObject>| {
            world.projects_installed = true;
            let listed: BTreeMap<ProjectId, ProjectState> =
                all.iter().filter_map(project_state).collect();
            // Projects gone while the watch was down left no Delete event: remember them too.
            let vanished: Vec<_> = world
                .projects()
                .filter(|(id, _)| !listed.contains_key(*id))
                .map(|(id, state)| (id.clone(), state.backing_namespace.clone()))
                .collect();
            for (id, backing) in vanished {
                world.note_project_deleted(id, backing);
            }
            for id in listed.keys() {
                world.forget_deleted_project(id);
            }
            world.replace_projects(listed);
        },
        |world, p| {
            world.projects_installed = true;
            if let Some((id, state)) = project_state(&p) {
                world.forget_deleted_project(&id);
                world.upsert_project(id, state);
            }
        },
        |world, p| {
            if let Some((id, state)) = project_state(&p) {
                world.remove_project(&id);
                // Its copies can only be found through its backing namespace, which the Delete
                // event still carries; the reconciler removes them once a fresh read proves it gone.
                world.note_project_deleted(id, state.backing_namespace);
            }
        },
    ));
    tasks.spawn(feed(
        index.clone(),
        NAMESPACES,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
        |world, all: Vec<Namespace>| {
            world.replace_namespaces(
                all.iter()
                    .map(|ns| (ns.name_any(), NamespaceState::from_namespace(ns))),
            )
        },
        |world, ns| world.upsert_namespace(ns.name_any(), NamespaceState::from_namespace(&ns)),
        |world, ns| world.remove_namespace(&ns.name_any()),
    ));
    // Only what the name index keeps is held, never the full metadata (which can carry a
    // last-applied-configuration with the secret's data in it).
    let metadata = Api::<PartialObjectMeta<Secret>>::all(client.clone());
    let names = kube::runtime::watcher(metadata, watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(|e| e.modify(strip_meta).map(name_entry)));
    tasks.spawn(feed(
        index.clone(),
        SECRET_NAMES,
        names,
        |world, all: Vec<(String, String, SecretMeta)>| world.replace_secret_metas(all),
        |world, (ns, name, meta)| world.upsert_secret_meta(&ns, &name, meta),
        |world, (ns, name, _)| world.remove_secret_meta(&ns, &name),
    ));
    let scoped = watcher::Config::default().labels(keys::PROJECT_SCOPED_LABEL);
    tasks.spawn(feed(
        index,
        SCOPED_SECRETS,
        watcher(Api::<Secret>::all(client), scoped),
        |world, all: Vec<Secret>| world.replace_scoped(all.into_iter().map(Arc::new)),
        |world, s| world.upsert_scoped(Arc::new(s)),
        |world, s| world.remove_scoped(&s.namespace().unwrap_or_default(), &s.name_any()),
    ));
    tasks
}

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    kube::runtime::watcher(api, config)
        .default_backoff()
        .map(|event| event.map(|e| e.modify(strip_managed_fields)))
}

fn strip_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

fn strip_meta(object: &mut PartialObjectMeta<Secret>) {
    object.metadata.managed_fields = None;
}

fn name_entry(object: PartialObjectMeta<Secret>) -> (String, String, SecretMeta) {
    let meta = SecretMeta::from_meta(&object.metadata);
    let ns = object.metadata.namespace.unwrap_or_default();
    (ns, object.metadata.name.unwrap_or_default(), meta)
}

trait MapEvent<K> {
    fn map<T>(self, f: impl FnMut(K) -> T) -> Event<T>;
}

impl<K> MapEvent<K> for Event<K> {
    fn map<T>(self, mut f: impl FnMut(K) -> T) -> Event<T> {
        match self {
            Event::Apply(o) => Event::Apply(f(o)),
            Event::Delete(o) => Event::Delete(f(o)),
            Event::Init => Event::Init,
            Event::InitApply(o) => Event::InitApply(f(o)),
            Event::InitDone => Event::InitDone,
        }
    }
}

/// Drives one watch into the index: a re-list is collected and replaces that watch's part whole.
async fn feed<T: Send + 'static>(
    index: Arc<Index>,
    which: usize,
    stream: impl Stream<Item = Result<Event<T>, watcher::Error>> + Send,
    replace: impl Fn(&mut World, Vec<T>) + Send,
    apply: impl Fn(&mut World, T) + Send,
    delete: impl Fn(&mut World, T) + Send,
) {
    let name = WATCHES[which];
    let mut stream = std::pin::pin!(stream);
    let mut listing: Vec<T> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(o)) => listing.push(o),
            Ok(Event::InitDone) => {
                let all = std::mem::take(&mut listing);
                tracing::debug!(watch = name, objects = all.len(), "listed");
                index.update(|w| replace(w, all));
                index.mark_synced(which);
            }
            Ok(Event::Apply(o)) => index.update(|w| apply(w, o)),
            Ok(Event::Delete(o)) => index.update(|w| delete(w, o)),
            Err(e) if which == PROJECTS && is_not_found(&e) => {
                // The Project CRD is not installed: there are no projects, and N2 cannot check
                // existence. Keep retrying (with backoff) in case it is installed later.
                let was_installed = index.read().projects_installed;
                if was_installed || !index.synced.borrow()[PROJECTS] {
                    tracing::info!("the Project CRD is not served; no projects are known");
                    index.update(|w| {
                        w.projects_installed = false;
                        w.replace_projects([]);
                        w.forget_deleted_projects();
                    });
                }
                index.mark_synced(which);
            }
            Err(e) => tracing::warn!(watch = name, error = %e, "watch failed; retrying"),
        }
    }
}

/// Whether the projects watch failed because the resource is not served (the CRD is missing or was
/// deleted). Listing or watching a collection answers 404 only then; kube-runtime reports it as a
/// failed initial list, a failed watch start (the usual shape once a running watch loses its CRD), a
/// failed stream, or an error event.
fn is_not_found(error: &watcher::Error) -> bool {
    use kube::Error::Api;
    match error {
        watcher::Error::InitialListFailed(Api(s))
        | watcher::Error::WatchStartFailed(Api(s))
        | watcher::Error::WatchFailed(Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

/// The projects watch retries quickly (at most 2 s apart) so that a re-installed CRD is seen at once.
/// Jitter adds up to the delay itself, so the base is capped at half of that.
fn projects_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(PROJECTS_MAX_BACKOFF / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// The longest wait between two attempts of the projects watch.
pub const PROJECTS_MAX_BACKOFF: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            Status::failure("404 page not found", "NotFound")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn every_shape_of_a_missing_crd_is_recognised() {
        for error in [
            watcher::Error::InitialListFailed(api(404)),
            watcher::Error::WatchStartFailed(api(404)),
            watcher::Error::WatchFailed(api(404)),
            watcher::Error::WatchError(Status::failure("gone", "NotFound").with_code(404).boxed()),
        ] {
            assert!(is_not_found(&error), "{error}");
        }
        assert!(!is_not_found(&watcher::Error::WatchStartFailed(api(403))));
        assert!(!is_not_found(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn the_projects_watch_never_waits_longer_than_its_cap() {
        let delays: Vec<Duration> = projects_backoff().take(20).collect();
        assert_eq!(delays.len(), 20);
        assert!(
            delays.iter().all(|d| *d <= PROJECTS_MAX_BACKOFF),
            "{delays:?}"
        );
    }
}
