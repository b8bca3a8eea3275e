//! The world for the `plan` command: read once from the cluster (no watches), with a manifest's
//! Secrets, Namespaces and Projects laid over it.

use crate::apiserver::is_not_found;
use crate::keys;
use crate::project::{project_resource, project_state};
use crate::world::{self, NamespaceState, SecretMeta, World};
use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, ObjectList};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

const PAGE: u32 = 500;

/// Lists projects (none when the CRD is not served), namespaces, the metadata of every secret and the
/// full objects of project-scoped ones; backing namespaces read as `serve --manage-backing-namespaces`
/// reads them ([`World::for_backing`]).
pub async fn load_world(client: Client, manage_backing_namespaces: bool) -> Result<World> {
    let mut world = World::for_backing(manage_backing_namespaces);
    let projects = Api::<DynamicObject>::all_with(client.clone(), &project_resource());
    match list_all(&projects, ListParams::default(), None).await {
        Ok(all) => {
            world.projects_installed = true;
            world.replace_projects(all.iter().filter_map(project_state));
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e).context("listing projects"),
    }
    load_cluster_objects(&client, &mut world, None)
        .await
        .map_err(|(what, e)| anyhow::Error::new(e).context(what))?;
    Ok(world)
}

/// A downstream cluster's own world: its namespaces, secret names and labelled secrets, never
/// Projects (they live in the management cluster). Each request gets `timeout`; the error names
/// what was being listed.
pub async fn load_downstream_world(
    client: &Client,
    timeout: Duration,
) -> Result<World, (&'static str, kube::Error)> {
    let mut world = World::default();
    load_cluster_objects(client, &mut world, Some(timeout)).await?;
    Ok(world)
}

async fn load_cluster_objects(
    client: &Client,
    world: &mut World,
    timeout: Option<Duration>,
) -> Result<(), (&'static str, kube::Error)> {
    let namespaces = list_all(
        &Api::<Namespace>::all(client.clone()),
        ListParams::default(),
        timeout,
    )
    .await
    .map_err(|e| ("listing namespaces", e))?;
    world.replace_namespaces(namespaces.iter().filter_map(|ns| {
        Some((
            ns.metadata.name.clone()?,
            NamespaceState::from_namespace(ns),
        ))
    }));
    let secrets = Api::<Secret>::all(client.clone());
    let metas = list_all_metadata(&secrets, timeout)
        .await
        .map_err(|e| ("listing secret names", e))?;
    world.replace_secret_metas(metas);
    let scoped = list_all(
        &secrets,
        ListParams::default().labels(keys::PROJECT_SCOPED_LABEL),
        timeout,
    )
    .await
    .map_err(|e| ("listing project-scoped secrets", e))?;
    for secret in scoped {
        world.upsert_scoped(secret);
    }
    Ok(())
}

/// One request, given at most `timeout` when one is set (a downstream cluster may never answer).
async fn bounded<T>(
    timeout: Option<Duration>,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match timeout {
        None => request.await,
        Some(limit) => tokio::time::timeout(limit, request)
            .await
            .unwrap_or_else(|_| Err(no_answer(limit))),
    }
}

/// The error of a request that got no answer in time.
fn no_answer(limit: Duration) -> kube::Error {
    kube::Error::Service(format!("no answer within {}s", limit.as_secs()).into())
}

async fn list_all<K>(
    api: &Api<K>,
    params: ListParams,
    timeout: Option<Duration>,
) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.limit(PAGE);
    let mut all = Vec::new();
    loop {
        let page: ObjectList<K> = bounded(timeout, api.list(&params)).await?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}

async fn list_all_metadata(
    api: &Api<Secret>,
    timeout: Option<Duration>,
) -> Result<Vec<(String, String, SecretMeta)>, kube::Error> {
    let mut params = ListParams::default().limit(PAGE);
    let mut all = Vec::new();
    loop {
        let page = bounded(timeout, api.list_metadata(&params)).await?;
        all.extend(page.items.into_iter().filter_map(|object| {
            let meta = object.metadata;
            let entry = SecretMeta::from_meta(&meta);
            Some((meta.namespace?, meta.name?, entry))
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}

/// What a manifest contributed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overlaid {
    pub secrets: usize,
    pub namespaces: usize,
    pub projects: usize,
    /// Objects of other kinds, which do not affect the plan.
    pub ignored: usize,
}

/// Lays a multi-document YAML (or JSON) manifest over the world, as if it were applied: Secrets,
/// Namespaces and Projects are upserted; `List` objects are unpacked; other kinds are counted and
/// skipped. A Secret without a namespace lands in `default`, as `kubectl apply` would put it.
pub fn overlay_manifest(world: &mut World, text: &str) -> Result<Overlaid> {
    let mut overlaid = Overlaid::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .with_context(|| format!("document {} of the manifest is not valid YAML", index + 1))?;
        if value.is_null() {
            continue;
        }
        overlay_object(world, value, &mut overlaid)
            .with_context(|| format!("document {} of the manifest", index + 1))?;
    }
    Ok(overlaid)
}

fn overlay_object(world: &mut World, value: serde_json::Value, out: &mut Overlaid) -> Result<()> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    match (api_version, kind) {
        ("v1", "List") => {
            let items = value.get("items").and_then(|i| i.as_array()).cloned();
            for item in items.unwrap_or_default() {
                overlay_object(world, item, out)?;
            }
        }
        ("v1", "Secret") => {
            overlay_secret(world, parse(value, "Secret")?);
            out.secrets += 1;
        }
        ("v1", "Namespace") => {
            let ns: Namespace = parse(value, "Namespace")?;
            let Some(name) = ns.metadata.name.clone() else {
                bail!("a Namespace without metadata.name");
            };
            world.upsert_namespace(name, NamespaceState::from_namespace(&ns));
            out.namespaces += 1;
        }
        (version, "Project") if version == project_api_version() => {
            let project: DynamicObject = parse(value, "Project")?;
            let Some((id, state)) = project_state(&project) else {
                bail!("a Project needs metadata.namespace (its cluster's name) and metadata.name");
            };
            world.projects_installed = true;
            world.upsert_project(id, state);
            out.projects += 1;
        }
        _ => out.ignored += 1,
    }
    Ok(())
}

fn project_api_version() -> String {
    format!("{}/{}", keys::PROJECT_GROUP, keys::PROJECT_VERSION)
}

fn parse<K: DeserializeOwned>(value: serde_json::Value, kind: &str) -> Result<K> {
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("(unnamed)")
        .to_owned();
    // serde's message can quote the offending value, which may be secret data: name the object only.
    serde_json::from_value(value)
        .map_err(|_| anyhow::anyhow!("{kind} {name:?} is not a valid {kind}"))
}

/// Upserts a manifest Secret as the apiserver would store it: `stringData` folded into `data`, and
/// the uid and resourceVersion of the object it replaces, so unchanged copies stay unchanged.
fn overlay_secret(world: &mut World, mut secret: Secret) {
    let meta = &mut secret.metadata;
    let namespace = meta
        .namespace
        .get_or_insert_with(|| "default".to_owned())
        .clone();
    let name = meta.name.clone().unwrap_or_default();
    if let Some(existing) = world.scoped(&namespace, &name) {
        meta.uid = existing.uid().map(str::to_owned);
        meta.resource_version = existing.resource_version().map(str::to_owned);
    } else if let Some(existing) = world.secret_meta(&namespace, &name) {
        meta.uid = Some(existing.uid.clone());
    }
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_default();
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
    world.upsert_secret_meta(&namespace, &name, SecretMeta::from_meta(&secret.metadata));
    if world::label(&secret.metadata, keys::PROJECT_SCOPED_LABEL).is_some() {
        world.upsert_scoped(secret);
    } else {
        world.remove_scoped(&namespace, &name);
    }
}

/// Rancher's example project, p-vwxyz of cluster `local` with its backing namespace recorded, and
/// `members` as its namespaces: the start of the manifests the tests of `plan`'s inputs and reports
/// read.
#[cfg(test)]
pub(crate) fn example_project_manifest(members: &[&str]) -> String {
    let mut manifest = String::from(
        "apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p-vwxyz, namespace: local}
spec: {clusterName: local}
status: {backingNamespace: local-p-vwxyz}
",
    );
    for member in members {
        manifest.push_str(&format!(
            "---
apiVersion: v1
kind: Namespace
metadata:
  name: {member}
  annotations: {{field.cattle.io/projectId: \"local:p-vwxyz\"}}
  labels: {{field.cattle.io/projectId: p-vwxyz}}
"
        ));
    }
    manifest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ProjectId;

    /// The example project with one namespace, its original inside a List, and an object the plan
    /// ignores.
    fn manifest() -> String {
        example_project_manifest(&["team-a"]) + MORE
    }

    const MORE: &str = r#"---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata:
    name: test-secret
    namespace: local-p-vwxyz
    labels: {management.cattle.io/project-scoped-secret: p-vwxyz}
  stringData: {key: dog}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
"#;

    #[test]
    fn a_manifest_is_laid_over_the_world() {
        let mut world = World::default();
        let overlaid = overlay_manifest(&mut world, &manifest()).expect("valid manifest");
        assert_eq!(
            overlaid,
            Overlaid {
                secrets: 1,
                namespaces: 1,
                projects: 1,
                ignored: 1
            }
        );
        let p = ProjectId::new("local", "p-vwxyz");
        assert!(world.project(&p).is_some_and(|s| s.has_backing_status));
        let original = world.originals().next().expect("the secret is an original");
        assert_eq!(original.name(), "test-secret");
        let data = original
            .secret
            .data
            .as_ref()
            .expect("stringData folded into data");
        assert_eq!(data["key"].0, b"dog");
    }

    #[test]
    fn a_manifest_secret_keeps_the_identity_of_the_one_it_replaces() {
        let mut world = World::default();
        overlay_manifest(&mut world, &manifest()).expect("valid manifest");
        let mut stored = world
            .scoped("local-p-vwxyz", "test-secret")
            .and_then(|s| s.whole().cloned())
            .expect("stored");
        stored.metadata.uid = Some("live-uid".to_owned());
        world.upsert_scoped(stored);
        overlay_manifest(&mut world, &manifest()).expect("valid manifest");
        let again = world
            .scoped("local-p-vwxyz", "test-secret")
            .expect("stored");
        assert_eq!(again.uid(), Some("live-uid"));
    }

    #[test]
    fn errors_name_the_document_and_never_the_data() {
        let mut world = World::default();
        let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {key: [hunter2]}\n";
        let error = format!(
            "{:#}",
            overlay_manifest(&mut world, bad).expect_err("invalid")
        );
        assert!(error.contains("document 1"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
