//! Rancher-style projects for the benchmarks that make the reconciler work: a Project with its
//! backing namespace, member namespaces, originals, and a wait for their copies.

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use scoped_secrets::keys;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct BenchProject {
    /// The cluster its namespaces live in (`local`: the management cluster).
    pub cluster: String,
    pub project: String,
    pub backing: String,
}

/// Project `local:<name>`: its namespaces in the management cluster.
pub async fn project(client: &kube::Client, name: &str) -> Result<BenchProject> {
    project_in(client, "local", name).await
}

/// Project `<cluster>:<name>` in the management cluster `client` (namespace `<cluster>`, backing
/// namespace `<cluster>-<name>`).
pub async fn project_in(client: &kube::Client, cluster: &str, name: &str) -> Result<BenchProject> {
    let backing = format!("{cluster}-{name}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    apply_namespace(&namespaces, cluster, BTreeMap::new()).await?;
    let projects: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        cluster,
        &scoped_secrets::project::project_resource(),
    );
    let object: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "management.cattle.io/v3", "kind": "Project",
        "metadata": {"name": name, "namespace": cluster},
        "spec": {"clusterName": cluster, "displayName": name}
    }))?;
    let project = projects
        .patch(name, &PatchParams::apply("bench"), &Patch::Apply(&object))
        .await?;
    // Marked for the Project, as the reconciler makes a backing namespace: only a marked one is
    // the project's where the reconciler manages them.
    let marks = BTreeMap::from([
        (
            keys::BACKING_NAMESPACE_OF_ANNOTATION.to_owned(),
            format!("{cluster}:{name}"),
        ),
        (
            keys::BACKING_NAMESPACE_UID_ANNOTATION.to_owned(),
            project.metadata.uid.clone().unwrap_or_default(),
        ),
    ]);
    apply_namespace(&namespaces, &backing, marks).await?;
    let status = json!({"status": {"backingNamespace": backing}});
    projects
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(BenchProject {
        cluster: cluster.to_owned(),
        project: name.to_owned(),
        backing,
    })
}

/// Creates or updates namespace `name` with `annotations`.
async fn apply_namespace(
    namespaces: &Api<Namespace>,
    name: &str,
    annotations: BTreeMap<String, String>,
) -> Result<()> {
    let object = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .patch(name, &PatchParams::apply("bench"), &Patch::Apply(&object))
        .await?;
    Ok(())
}

pub fn member_namespace(project: &BenchProject, name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(BTreeMap::from([(
                keys::PROJECT_ID_KEY.to_owned(),
                format!("{}:{}", project.cluster, project.project),
            )])),
            labels: Some(BTreeMap::from([(
                keys::PROJECT_ID_KEY.to_owned(),
                project.project.clone(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

pub async fn create_namespaces(
    client: &kube::Client,
    project: &BenchProject,
    prefix: &str,
    n: usize,
) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let ns = member_namespace(project, &format!("{prefix}-{i}"));
            async move { api.create(&PostParams::default(), &ns).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

pub async fn original(client: &kube::Client, project: &BenchProject, name: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &project.backing);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                keys::PROJECT_SCOPED_LABEL.to_owned(),
                project.project.clone(),
            )])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            "password".to_owned(),
            format!("value of {name}"),
        )])),
        ..Secret::default()
    };
    api.create(&PostParams::default(), &secret).await?;
    Ok(())
}

/// Waits until the project's copies number at least `n`, following a watch (polling a list of
/// thousands of secrets would load the very apiserver being measured).
pub async fn wait_copies(client: &kube::Client, project: &str, n: usize) -> Result<()> {
    use kube::api::PartialObjectMeta;
    use kube::runtime::watcher::{self, Event};
    let api: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let selector = format!("{}={project}", keys::PROJECT_SCOPED_LABEL);
    let is_copy = |s: &PartialObjectMeta<Secret>| {
        s.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(keys::ORIGIN_ANNOTATION))
    };
    let key =
        |s: &PartialObjectMeta<Secret>| (s.metadata.namespace.clone(), s.metadata.name.clone());
    let mut copies = std::collections::HashSet::new();
    let stream = watcher::watcher(api, watcher::Config::default().labels(&selector));
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while copies.len() < n {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .with_context(|| format!("only {} of {n} copies after 300 s", copies.len()))?;
        match event.context("watch ended")?? {
            Event::Apply(s) | Event::InitApply(s) if is_copy(&s) => {
                copies.insert(key(&s));
            }
            Event::Delete(s) => {
                copies.remove(&key(&s));
            }
            _ => {}
        }
    }
    Ok(())
}
