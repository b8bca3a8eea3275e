//! The four watches that feed the [`Index`]: projects (when the CRD is served), namespaces, the
//! metadata of every secret (the name index; no secret data), and the secrets carrying the
//! project-scoped label (originals whole, copies reduced to metadata and digests on arrival). Each
//! drives its resource's [`Indexed`] implementation and releases its readiness on its first complete
//! list.

use super::{Index, Indexed, ReadyHandle, ScopedSecret, SecretName};
use crate::project::project_resource;
use crate::{apiserver, keys};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Starts the four watches; they run until the returned set is dropped.
pub fn spawn(client: Client, index: Arc<Index>) -> JoinSet<()> {
    let mut tasks = spawn_cluster(client.clone(), index.clone(), ScopedSecret::new);
    let projects = Api::<DynamicObject>::all_with(client, &project_resource());
    // The Project CRD can be deleted and re-installed at runtime: a short backoff makes projects
    // indexed again within seconds of it being served (the default backoff grows to 30 s).
    let project_events = kube::runtime::watcher(projects, watcher::Config::default())
        .backoff(projects_backoff())
        .map(|event| event.map(|e| e.modify(strip_managed_fields)));
    tasks.spawn(feed(index, project_events));
    tasks
}

/// Starts the watches of a downstream cluster: namespaces, secret names and labelled secrets.
/// Its projects are the management cluster's (see [`super::compose`]): the projects watch is not
/// started, and none is waited for.
pub fn spawn_downstream(client: Client, index: Arc<Index>) -> JoinSet<()> {
    index.ready_handle(super::Watch::Projects).release();
    spawn_cluster(client, index, ScopedSecret::downstream)
}

/// The three watches every cluster has; `keep` makes what the index holds of a labelled secret.
fn spawn_cluster(
    client: Client,
    index: Arc<Index>,
    keep: fn(Secret) -> ScopedSecret,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(feed(
        index.clone(),
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    ));
    // Only what the name index keeps is held, never the full metadata.
    let metadata = Api::<PartialObjectMeta<Secret>>::all(client.clone());
    let names = kube::runtime::watcher(metadata, watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(|e| e.map(|o| SecretName::from_meta(o.metadata))));
    tasks.spawn(feed(index.clone(), names));
    // Copies are reduced to metadata and digests as they arrive: a list of 100,000 copies is never
    // held whole.
    let scoped = watcher::Config::default().labels(keys::PROJECT_SCOPED_LABEL);
    let scoped =
        watcher(Api::<Secret>::all(client), scoped).map(move |event| event.map(|e| e.map(keep)));
    tasks.spawn(feed(index, scoped));
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
async fn feed<T: Indexed + Send + 'static>(
    index: Arc<Index>,
    stream: impl Stream<Item = Result<Event<T>, watcher::Error>> + Send,
) {
    let name = T::WATCH.name();
    // Held until the first complete list (or the news that there is nothing to list).
    let mut unlisted = Some(index.ready_handle(T::WATCH));
    let mut stream = std::pin::pin!(stream);
    let mut listing: Vec<T> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(o)) => listing.push(o),
            Ok(Event::InitDone) => {
                let all = std::mem::take(&mut listing);
                tracing::debug!(watch = name, objects = all.len(), "listed");
                index.update(|w| T::reset(w, all));
                release(&mut unlisted);
            }
            Ok(Event::Apply(o)) => index.update(|w| T::apply(w, o)),
            Ok(Event::Delete(o)) => index.update(|w| T::delete(w, o)),
            Err(e) if T::MAY_BE_UNSERVED && is_not_found(&e) => {
                // Not served (the CRD is missing or was deleted): none exist. Keep retrying (with
                // backoff) in case it is installed later.
                let was_served = T::is_served(&index.read());
                if was_served || unlisted.is_some() {
                    tracing::info!(
                        watch = name,
                        "not served (its CRD is missing); none are known"
                    );
                    index.update(T::unserved);
                }
                release(&mut unlisted);
            }
            Err(e) => tracing::warn!(watch = name, error = %e, "watch failed; retrying"),
        }
    }
}

fn release(unlisted: &mut Option<ReadyHandle>) {
    if let Some(handle) = unlisted.take() {
        handle.release();
    }
}

/// Whether a watch failed because the resource is not served (the CRD is missing or was deleted).
/// Listing or watching a collection answers 404 only then; kube-runtime reports it as a failed
/// initial list, a failed watch start (the usual shape once a running watch loses its CRD), a failed
/// stream, or an error event.
fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => apiserver::is_not_found(e),
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
    use crate::index::Watch;
    use crate::index::resources::tests::{namespace, project};
    use crate::keys::ProjectId;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            Status::failure("404 page not found", "NotFound")
                .with_code(code)
                .boxed(),
        )
    }

    fn not_served() -> watcher::Error {
        watcher::Error::WatchStartFailed(api(404))
    }

    /// Feeds `events` into `index` as a watch would, to the end of the stream.
    async fn fed<T: Indexed + Send + 'static>(
        index: &Arc<Index>,
        events: Vec<Result<Event<T>, watcher::Error>>,
    ) {
        feed(index.clone(), futures::stream::iter(events)).await;
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

    #[tokio::test]
    async fn a_watch_is_ready_after_its_first_complete_list_only() {
        let index = Arc::new(Index::default());
        fed(
            &index,
            vec![
                Ok(Event::Init),
                Ok(Event::InitApply(namespace("team-a", None))),
            ],
        )
        .await;
        assert!(index.pending().contains(&Watch::Namespaces));
        assert_eq!(
            index.read().namespaces().count(),
            0,
            "a partial list is not applied"
        );
        fed(
            &index,
            vec![
                Ok(Event::Init),
                Ok(Event::InitApply(namespace("team-a", None))),
                Ok(Event::InitDone),
                Ok(Event::Apply(namespace("team-b", None))),
                Ok(Event::Delete(namespace("team-a", None))),
            ],
        )
        .await;
        assert!(!index.pending().contains(&Watch::Namespaces));
        let names: Vec<_> = index
            .read()
            .namespaces()
            .map(|(n, _)| n.to_owned())
            .collect();
        assert_eq!(names, ["team-b"]);
        assert!(!index.is_synced(), "the other watches have not listed");
    }

    #[tokio::test]
    async fn a_failing_watch_keeps_its_world_and_stays_unready() {
        let index = Arc::new(Index::default());
        index.update(|w| Namespace::apply(w, namespace("team-a", None)));
        // A 404 is a failure like any other for an always-served resource.
        fed::<Namespace>(&index, vec![Err(not_served())]).await;
        assert!(index.pending().contains(&Watch::Namespaces));
        assert_eq!(index.read().namespaces().count(), 1);
    }

    #[tokio::test]
    async fn projects_not_served_are_none_and_ready() {
        let index = Arc::new(Index::default());
        fed::<DynamicObject>(&index, vec![Err(not_served())]).await;
        assert!(!index.pending().contains(&Watch::Projects));
        assert!(!index.read().projects_installed);

        // Served, then the CRD goes: its projects and remembered deletions are forgotten.
        let a = ProjectId::new("local", "a");
        fed(
            &index,
            vec![
                Ok(Event::Init),
                Ok(Event::InitApply(project("local", "a", Some("local-a")))),
                Ok(Event::InitDone),
                Ok(Event::Delete(project("local", "b", Some("local-b")))),
            ],
        )
        .await;
        assert!(index.read().projects_installed);
        assert!(index.read().project(&a).is_some());
        assert_eq!(index.read().unconfirmed_deleted_projects().count(), 1);
        fed::<DynamicObject>(&index, vec![Err(not_served()), Err(not_served())]).await;
        let world = index.read();
        assert!(!world.projects_installed);
        assert_eq!(world.projects().count(), 0);
        assert_eq!(world.unconfirmed_deleted_projects().count(), 0);
    }

    #[tokio::test]
    async fn a_lasting_missing_crd_changes_the_world_once_not_every_retry() {
        let index = Arc::new(Index::default());
        let changes = index.subscribe();
        fed::<DynamicObject>(
            &index,
            vec![Err(not_served()), Err(not_served()), Err(not_served())],
        )
        .await;
        assert_eq!(*changes.borrow(), 1);
        assert!(!index.pending().contains(&Watch::Projects));
    }
}
