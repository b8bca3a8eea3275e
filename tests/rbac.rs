//! Least privilege, both ways, against a real kube-apiserver of its own: with `deploy/base`'s RBAC the
//! product's service account can make every API call the binary makes, and removing any single verb
//! from its ClusterRole or Role makes the named feature's call fail with 403.

use futures::TryFutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    WatchParams,
};
use scoped_secrets::project::project_resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;
use testbed::control_plane::{ControlPlane, Options};
use testbed::prelude::*;
use testbed::registration;

const OWN_NAMESPACE: &str = "scoped-secrets-system";
const PROJECT: &str = "p-rbac";
const MEMBER: &str = "rbac-member";

/// One API call the binary makes, the feature it serves, and the rule verb it needs.
struct Probe {
    /// "ClusterRole" or "Role".
    role: &'static str,
    resource: &'static str,
    verb: &'static str,
    feature: &'static str,
    call: Call,
}

/// A call made with a client; its answer is dropped: only whether it was allowed counts.
type Call = Box<dyn Fn(Client) -> BoxFuture<'static, Result<(), kube::Error>> + Send + Sync>;

/// A resource's rules, in the ClusterRole or the Role, and the objects of it that the probes call,
/// through an `Api` made from the probing client.
#[derive(Clone, Copy)]
struct Resource<K> {
    role: &'static str,
    resource: &'static str,
    api: fn(Client) -> Api<K>,
}

fn cluster_role<K>(resource: &'static str, api: fn(Client) -> Api<K>) -> Resource<K> {
    Resource {
        role: "ClusterRole",
        resource,
        api,
    }
}

fn role_of_own_namespace<K>(resource: &'static str, api: fn(Client) -> Api<K>) -> Resource<K> {
    Resource {
        role: "Role",
        resource,
        api,
    }
}

impl<K> Resource<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
{
    /// The probe of `verb` on this resource: `make`'s call on the probing client's `Api`.
    fn probe<T: 'static, F>(
        &self,
        verb: &'static str,
        feature: &'static str,
        make: impl Fn(Api<K>) -> F + Send + Sync + 'static,
    ) -> Probe
    where
        F: Future<Output = Result<T, kube::Error>> + Send + 'static,
    {
        let api = self.api;
        Probe {
            role: self.role,
            resource: self.resource,
            verb,
            feature,
            call: Box::new(move |c| Box::pin(make(api(c)).map_ok(drop))),
        }
    }

    fn get(&self, name: &'static str, feature: &'static str) -> Probe {
        self.probe(
            "get",
            feature,
            move |api| async move { api.get(name).await },
        )
    }

    fn list(&self, params: ListParams, feature: &'static str) -> Probe {
        self.probe("list", feature, move |api| {
            let params = params.clone();
            async move { api.list(&params).await }
        })
    }

    fn list_metadata(&self, params: ListParams, feature: &'static str) -> Probe {
        self.probe("list", feature, move |api| {
            let params = params.clone();
            async move { api.list_metadata(&params).await }
        })
    }

    fn watch(&self, feature: &'static str) -> Probe {
        self.probe("watch", feature, |api| async move {
            api.watch(&WatchParams::default().timeout(1), "0").await
        })
    }

    fn watch_metadata(&self, feature: &'static str) -> Probe {
        self.probe("watch", feature, |api| async move {
            api.watch_metadata(&WatchParams::default().timeout(1), "0")
                .await
        })
    }

    /// A dry-run create of `object`.
    fn create(&self, object: K, feature: &'static str) -> Probe {
        self.probe("create", feature, move |api| {
            let object = object.clone();
            async move { api.create(&dry_post(), &object).await }
        })
    }

    /// A dry-run merge patch of `name`, or of its status with `patch_status`.
    fn patch(&self, name: &'static str, patch: Value, feature: &'static str) -> Probe {
        self.probe("patch", feature, move |api| {
            let patch = patch.clone();
            async move { api.patch(name, &dry_patch(), &Patch::Merge(&patch)).await }
        })
    }

    fn patch_status(&self, name: &'static str, patch: Value, feature: &'static str) -> Probe {
        self.probe("patch", feature, move |api| {
            let patch = patch.clone();
            async move {
                api.patch_status(name, &dry_patch(), &Patch::Merge(&patch))
                    .await
            }
        })
    }

    /// A dry-run replace of `name` with itself, as an admin reads it.
    fn update(&self, name: &'static str, feature: &'static str) -> Probe {
        let of = self.api;
        self.probe("update", feature, move |api| async move {
            let mut live = of(admin().await).get(name).await?;
            live.meta_mut().managed_fields = None;
            api.replace(name, &dry_post(), &live).await
        })
    }

    /// A dry-run delete of `name`.
    fn delete(&self, name: &'static str, feature: &'static str) -> Probe {
        self.probe("delete", feature, move |api| async move {
            let params = DeleteParams {
                dry_run: true,
                ..DeleteParams::default()
            };
            api.delete(name, &params).await
        })
    }

    /// A dry-run delete of `name` on the condition that it is still as an admin reads it.
    fn delete_unchanged(&self, name: &'static str, feature: &'static str) -> Probe {
        let of = self.api;
        self.probe("delete", feature, move |api| async move {
            let live = of(admin().await).get(name).await?;
            let params = DeleteParams {
                dry_run: true,
                preconditions: Some(Preconditions {
                    resource_version: live.meta().resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            api.delete(name, &params).await
        })
    }
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

/// A new object with only a name, and a namespace unless it is cluster-scoped.
fn named<K: kube::Resource + Default>(name: &str, namespace: Option<&str>) -> K {
    let mut object = K::default();
    object.meta_mut().name = Some(name.to_owned());
    object.meta_mut().namespace = namespace.map(str::to_owned);
    object
}

fn probes() -> Vec<Probe> {
    let projects = cluster_role("projects", |c| {
        Api::<DynamicObject>::namespaced_with(c, "local", &project_resource())
    });
    let project_status = Resource {
        resource: "projects/status",
        ..projects
    };
    let namespaces = cluster_role("namespaces", Api::<Namespace>::all);
    let secrets = cluster_role("secrets", |c| Api::<Secret>::namespaced(c, MEMBER));
    let secrets_everywhere = cluster_role("secrets", Api::<Secret>::all);
    let reviews = cluster_role("subjectaccessreviews", Api::<SubjectAccessReview>::all);
    let events = cluster_role("events", |c| Api::<Event>::namespaced(c, MEMBER));
    let leases = role_of_own_namespace("leases", |c| Api::<Lease>::namespaced(c, OWN_NAMESPACE));
    vec![
        projects.get(
            PROJECT,
            "backing namespaces: re-read the project before setting its status; revocation: prove a deleted project gone",
        ),
        projects.list(
            ListParams::default().limit(1),
            "the projects watch (readiness, N2, every rule)",
        ),
        projects.watch("the projects watch (readiness, N2, every rule)"),
        project_status.patch_status(
            PROJECT,
            json!({"status": {"backingNamespace": "local-p-rbac"}}),
            "backing namespaces: set status.backingNamespace and BackingNamespaceReady",
        ),
        namespaces.get(
            MEMBER,
            "label repair: re-read the namespace before patching; backing namespaces: check the namespace is marked for the project",
        ),
        namespaces.list(
            ListParams::default().limit(1),
            "the namespaces watch (readiness, project membership)",
        ),
        namespaces.watch("the namespaces watch (readiness, project membership)"),
        namespaces.create(
            named("local-p-new", None),
            "backing namespaces: create the namespace",
        ),
        namespaces.patch(
            MEMBER,
            json!({"metadata": {"labels": {"field.cattle.io/projectId": PROJECT}}}),
            "label repair: mirror the projectId annotation",
        ),
        secrets.get(
            "existing",
            "copies: re-read the target before every write; S1's type",
        ),
        secrets_everywhere.list_metadata(
            ListParams::default().limit(1),
            "the secret watches (readiness, S1, every copy)",
        ),
        secrets_everywhere.watch_metadata("the secret watches (readiness, S1, every copy)"),
        secrets.create(named("new", Some(MEMBER)), "copies: create"),
        secrets.update("existing", "copies: update; cluster label on originals"),
        secrets.delete("existing", "copies: clean-up and recreate"),
        // Not a dry run: a review is an answer, never stored.
        reviews.probe("create", "N1: manage-namespaces check", |api| async move {
            api.create(&PostParams::default(), &manage_namespaces_review())
                .await
        }),
        events.create(
            event("new-event"),
            "Events on originals, and on Projects refused a backing namespace",
        ),
        events.patch(
            "existing-event",
            json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}}),
            "Events on originals (series of a repeated event)",
        ),
        leases.get("existing-lease", "leader election: read the lease"),
        leases.list(
            ListParams::default(),
            "cluster ownership: list the replica and cluster Leases",
        ),
        leases.watch("cluster ownership: watch who is alive and who holds which cluster"),
        leases.create(named("new-lease", Some(OWN_NAMESPACE)), "leader election: first lease"),
        leases.update(
            "existing-lease",
            "leader election: renew, take over, release",
        ),
        leases.delete_unchanged(
            "existing-lease",
            "cluster ownership: delete the Leases of replicas long gone",
        ),
    ]
}

/// N1's question: may alice manage the namespaces of the project?
fn manage_namespaces_review() -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("alice".into()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("management.cattle.io".into()),
                resource: Some("projects".into()),
                name: Some(PROJECT.into()),
                namespace: Some("local".into()),
                verb: Some("manage-namespaces".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

fn event(name: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": MEMBER},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "scoped-secrets.io/reconciler", "reportingInstance": "probe",
        "action": "CreateCopy", "reason": "Copied", "type": "Normal", "note": "probe",
        "regarding": {"apiVersion": "v1", "kind": "Secret", "namespace": MEMBER, "name": "existing"}
    }))
    .expect("a valid event")
}

static ADMIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// An admin client, for reading the objects an update or a conditional delete probe sends back.
async fn admin() -> Client {
    client(ADMIN.get().expect("admin kubeconfig"))
        .await
        .expect("admin client")
}

fn is_forbidden(result: &Result<(), kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// The rendered role of `kind`, as JSON.
fn role(manifests: &str, kind: &str) -> Value {
    for document in serde_yaml::Deserializer::from_str(manifests) {
        let object: Value = serde::Deserialize::deserialize(document).expect("yaml");
        if object["kind"] == kind
            && object["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("scoped-secrets"))
        {
            return object;
        }
    }
    panic!("deploy/base has no {kind}");
}

/// `role` without `verb` on `resource`.
fn without(role: &Value, resource: &str, verb: &str) -> Value {
    let mut role = role.clone();
    let mut found = false;
    for rule in role["rules"].as_array_mut().expect("rules") {
        if rule["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == resource))
        {
            let verbs = rule["verbs"].as_array_mut().expect("verbs");
            let before = verbs.len();
            verbs.retain(|v| v != verb);
            found |= verbs.len() < before;
        }
    }
    assert!(found, "deploy/base grants no {verb} on {resource}");
    // A rule left without verbs is invalid: drop it.
    if let Some(rules) = role["rules"].as_array_mut() {
        rules.retain(|rule| rule["verbs"].as_array().is_some_and(|v| !v.is_empty()));
    }
    role
}

fn apply(kubeconfig: &Path, object: &Value) {
    let out = kubectl_stdin(
        kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &object.to_string(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_is_enough_and_needed_for_a_named_feature() {
    let dir = Path::new(REPO).join(format!("target/rbac/{}", std::process::id()));
    let control_plane = ControlPlane::start(&Options::new(dir))
        .await
        .expect("control plane");
    let (kubeconfig, sa_kubeconfig) = (&control_plane.kubeconfig, &control_plane.sa_kubeconfig);
    let _ = ADMIN.set(kubeconfig.clone());
    registration::apply_prerequisites(Path::new(REPO), kubeconfig).expect("prerequisites");
    let fixtures = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: local}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: {MEMBER}}}\n---\n\
         apiVersion: management.cattle.io/v3\nkind: Project\nmetadata: {{name: {PROJECT}, namespace: local}}\nspec: {{clusterName: local}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: existing, namespace: {MEMBER}}}\n---\n\
         apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: existing-lease, namespace: {OWN_NAMESPACE}}}\n"
    );
    let out = kubectl_stdin(kubeconfig, &["apply", "-f", "-"], &fixtures);
    assert!(out.status.success(), "{}", stderr(&out));
    let admin = client(kubeconfig).await.expect("admin");
    Api::<Event>::namespaced(admin, MEMBER)
        .create(&PostParams::default(), &event("existing-event"))
        .await
        .expect("an event to patch");

    let sa = client(sa_kubeconfig).await.expect("service-account client");
    let probes = probes();
    // Enough: every call the binary makes is allowed.
    for probe in &probes {
        let result = (probe.call)(sa.clone()).await;
        assert!(
            result.is_ok(),
            "{} {} ({}) refused with deploy/'s RBAC: {result:?}",
            probe.verb,
            probe.resource,
            probe.feature
        );
    }
    // Needed: without the verb, the feature's call is forbidden.
    let manifests =
        registration::render_kustomization(&Path::new(REPO).join("deploy/base")).expect("render");
    for probe in &probes {
        let full = role(&manifests, probe.role);
        apply(kubeconfig, &without(&full, probe.resource, probe.verb));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let result = (probe.call)(sa.clone()).await;
            if is_forbidden(&result) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "removing {} on {} did not break {}: {result:?}",
                probe.verb,
                probe.resource,
                probe.feature
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        apply(kubeconfig, &full);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while (probe.call)(sa.clone()).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "restoring {} on {} did not take",
                probe.verb,
                probe.resource
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // And nothing more: every verb the roles grant has a probe.
    for kind in ["ClusterRole", "Role"] {
        for rule in role(&manifests, kind)["rules"].as_array().expect("rules") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    assert!(
                        probes
                            .iter()
                            .any(|p| p.role == kind && p.resource == resource && p.verb == verb),
                        "{kind} grants {verb} on {resource}, which no feature needs"
                    );
                }
            }
        }
    }
}
