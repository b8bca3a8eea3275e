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
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
    Preconditions, WatchParams,
};
use scoped_secrets::project::project_resource;
use serde_json::{Value, json};
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

fn call<T: 'static, F>(make: impl Fn(Client) -> F + Send + Sync + 'static) -> Call
where
    F: Future<Output = Result<T, kube::Error>> + Send + 'static,
{
    Box::new(move |c| Box::pin(make(c).map_ok(drop)))
}

impl Probe {
    fn new(
        role: &'static str,
        resource: &'static str,
        verb: &'static str,
        feature: &'static str,
        call: Call,
    ) -> Self {
        Self {
            role,
            resource,
            verb,
            feature,
            call,
        }
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

fn projects(c: Client) -> Api<DynamicObject> {
    Api::namespaced_with(c, "local", &project_resource())
}

fn secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(MEMBER.to_owned()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    }
}

fn probes() -> Vec<Probe> {
    vec![
        Probe::new(
            "ClusterRole",
            "projects",
            "get",
            "backing namespaces: re-read the project before setting its status; revocation: prove a deleted project gone",
            call(|c| async move { projects(c).get(PROJECT).await }),
        ),
        Probe::new(
            "ClusterRole",
            "projects",
            "list",
            "the projects watch (readiness, N2, every rule)",
            call(|c| async move { projects(c).list(&ListParams::default().limit(1)).await }),
        ),
        Probe::new(
            "ClusterRole",
            "projects",
            "watch",
            "the projects watch (readiness, N2, every rule)",
            call(|c| async move {
                projects(c)
                    .watch(&WatchParams::default().timeout(1), "0")
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "projects/status",
            "patch",
            "backing namespaces: set status.backingNamespace and BackingNamespaceReady",
            call(|c| async move {
                let patch = json!({"status": {"backingNamespace": "local-p-rbac"}});
                projects(c)
                    .patch_status(PROJECT, &dry_patch(), &Patch::Merge(&patch))
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "namespaces",
            "get",
            "label repair: re-read the namespace before patching; backing namespaces: check the namespace is marked for the project",
            call(|c| async move { Api::<Namespace>::all(c).get(MEMBER).await }),
        ),
        Probe::new(
            "ClusterRole",
            "namespaces",
            "list",
            "the namespaces watch (readiness, project membership)",
            call(|c| async move {
                Api::<Namespace>::all(c)
                    .list(&ListParams::default().limit(1))
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "namespaces",
            "watch",
            "the namespaces watch (readiness, project membership)",
            call(|c| async move {
                Api::<Namespace>::all(c)
                    .watch(&WatchParams::default().timeout(1), "0")
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "namespaces",
            "create",
            "backing namespaces: create the namespace",
            call(|c| async move {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some("local-p-new".into()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                Api::<Namespace>::all(c).create(&dry_post(), &ns).await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "namespaces",
            "patch",
            "label repair: mirror the projectId annotation",
            call(|c| async move {
                let patch = json!({"metadata": {"labels": {"field.cattle.io/projectId": PROJECT}}});
                Api::<Namespace>::all(c)
                    .patch(MEMBER, &dry_patch(), &Patch::Merge(&patch))
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "secrets",
            "get",
            "copies: re-read the target before every write; S1's type",
            call(|c| async move { Api::<Secret>::namespaced(c, MEMBER).get("existing").await }),
        ),
        Probe::new(
            "ClusterRole",
            "secrets",
            "list",
            "the secret watches (readiness, S1, every copy)",
            call(|c| async move {
                Api::<Secret>::all(c)
                    .list_metadata(&ListParams::default().limit(1))
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "secrets",
            "watch",
            "the secret watches (readiness, S1, every copy)",
            call(|c| async move {
                Api::<Secret>::all(c)
                    .watch_metadata(&WatchParams::default().timeout(1), "0")
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "secrets",
            "create",
            "copies: create",
            call(|c| async move {
                Api::<Secret>::namespaced(c, MEMBER)
                    .create(&dry_post(), &secret("new"))
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "secrets",
            "update",
            "copies: update; cluster label on originals",
            call(|c| async move {
                let api = Api::<Secret>::namespaced(c.clone(), MEMBER);
                let mut live = Api::<Secret>::namespaced(admin_of(&c).await, MEMBER)
                    .get("existing")
                    .await?;
                live.metadata.managed_fields = None;
                api.replace("existing", &dry_post(), &live).await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "secrets",
            "delete",
            "copies: clean-up and recreate",
            call(|c| async move {
                let params = DeleteParams {
                    dry_run: true,
                    ..DeleteParams::default()
                };
                Api::<Secret>::namespaced(c, MEMBER)
                    .delete("existing", &params)
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "subjectaccessreviews",
            "create",
            "N1: manage-namespaces check",
            call(|c| async move {
                let review = SubjectAccessReview {
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
                };
                Api::<SubjectAccessReview>::all(c)
                    .create(&PostParams::default(), &review)
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "events",
            "create",
            "Events on originals, and on Projects refused a backing namespace",
            call(|c| async move {
                Api::<Event>::namespaced(c, MEMBER)
                    .create(&dry_post(), &event("new-event"))
                    .await
            }),
        ),
        Probe::new(
            "ClusterRole",
            "events",
            "patch",
            "Events on originals (series of a repeated event)",
            call(|c| async move {
                let patch = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}});
                Api::<Event>::namespaced(c, MEMBER)
                    .patch("existing-event", &dry_patch(), &Patch::Merge(&patch))
                    .await
            }),
        ),
        Probe::new(
            "Role",
            "leases",
            "get",
            "leader election: read the lease",
            call(|c| async move {
                Api::<Lease>::namespaced(c, OWN_NAMESPACE)
                    .get("existing-lease")
                    .await
            }),
        ),
        Probe::new(
            "Role",
            "leases",
            "list",
            "cluster ownership: list the replica and cluster Leases",
            call(|c| async move {
                Api::<Lease>::namespaced(c, OWN_NAMESPACE)
                    .list(&ListParams::default())
                    .await
            }),
        ),
        Probe::new(
            "Role",
            "leases",
            "watch",
            "cluster ownership: watch who is alive and who holds which cluster",
            call(|c| async move {
                Api::<Lease>::namespaced(c, OWN_NAMESPACE)
                    .watch(&WatchParams::default().timeout(1), "0")
                    .await
            }),
        ),
        Probe::new(
            "Role",
            "leases",
            "create",
            "leader election: first lease",
            call(|c| async move {
                Api::<Lease>::namespaced(c, OWN_NAMESPACE)
                    .create(&dry_post(), &lease("new-lease"))
                    .await
            }),
        ),
        Probe::new(
            "Role",
            "leases",
            "update",
            "leader election: renew, take over, release",
            call(|c| async move {
                let mut live = Api::<Lease>::namespaced(admin_of(&c).await, OWN_NAMESPACE)
                    .get("existing-lease")
                    .await?;
                live.metadata.managed_fields = None;
                Api::<Lease>::namespaced(c, OWN_NAMESPACE)
                    .replace("existing-lease", &dry_post(), &live)
                    .await
            }),
        ),
        Probe::new(
            "Role",
            "leases",
            "delete",
            "cluster ownership: delete the Leases of replicas long gone",
            call(|c| async move {
                let live = Api::<Lease>::namespaced(admin_of(&c).await, OWN_NAMESPACE)
                    .get("existing-lease")
                    .await?;
                let params = DeleteParams {
                    dry_run: true,
                    preconditions: Some(Preconditions {
                        resource_version: live.metadata.resource_version,
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                Api::<Lease>::namespaced(c, OWN_NAMESPACE)
                    .delete("existing-lease", &params)
                    .await
            }),
        ),
    ]
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

fn lease(name: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(OWN_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    }
}

static ADMIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// An admin client, for reading the objects an update probe replaces.
async fn admin_of(_: &Client) -> Client {
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
