//! Registers the webhook configurations of `deploy/` with a local apiserver: the same entries, rules,
//! selectors, match conditions and failure policies the manifests ship, with each `clientConfig`
//! pointed at a URL on 127.0.0.1 instead of the in-cluster Service. Used by `make run` and the tests,
//! so what is tested is what is deployed.

use anyhow::{Context, Result, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use std::path::Path;

/// Kinds of `deploy/base` a local control plane needs before the server starts: not the Deployment
/// (no kubelet runs there) and not the webhooks (registered with a local URL instead).
const PREREQUISITE_KINDS: [&str; 7] = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

pub const WEBHOOK_KINDS: [&str; 2] = [
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
];

/// Renders a kustomization with the machine's `kubectl kustomize`.
pub fn render_kustomization(dir: &Path) -> Result<String> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running kubectl kustomize")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The documents of `manifests` a local control plane needs before the server starts (the Project
/// CRD, our namespace, service account and RBAC), as multi-document YAML for `kubectl apply -f -`.
pub fn prerequisites(manifests: &str) -> Result<String> {
    of_kinds(manifests, &PREREQUISITE_KINDS)
}

/// The documents of `manifests` (multi-document YAML) whose kind is one of `kinds`, as
/// multi-document YAML for `kubectl apply -f -`.
pub fn of_kinds(manifests: &str, kinds: &[&str]) -> Result<String> {
    let mut out = String::new();
    for document in serde_yaml::Deserializer::from_str(manifests) {
        let object: Value = serde::Deserialize::deserialize(document)?;
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kinds.contains(&kind) {
            out.push_str(&serde_yaml::to_string(&object)?);
            out.push_str("---\n");
        }
    }
    Ok(out)
}

/// Applies [`prerequisites`] of `deploy/base` with the machine's `kubectl` and waits for the
/// Project CRD to be served.
pub fn apply_prerequisites(repo: &Path, kubeconfig: &Path) -> Result<()> {
    let setup = prerequisites(&render_kustomization(&repo.join("deploy/base"))?)?;
    kubectl(kubeconfig, &["apply", "--server-side", "-f", "-"], &setup)?;
    kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/projects.management.cattle.io",
        ],
        "",
    )
}

fn kubectl(kubeconfig: &Path, args: &[&str], input: &str) -> Result<()> {
    crate::kubectl::try_kubectl(kubeconfig, args, Some(input)).map(drop)
}

/// The webhook configurations in `manifests` (multi-document YAML), each webhook's `clientConfig`
/// replaced by `url: <base_url><service path>` and `caBundle: <ca_bundle_base64>`.
pub fn local_webhook_configurations(
    manifests: &str,
    base_url: &str,
    ca_bundle_base64: &str,
) -> Result<Vec<Value>> {
    let mut configurations = Vec::new();
    for document in serde_yaml::Deserializer::from_str(manifests) {
        let mut object: Value = serde::Deserialize::deserialize(document)?;
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !WEBHOOK_KINDS.contains(&kind) {
            continue;
        }
        if let Some(annotations) = object
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            // cert-manager's CA injector is not there locally; the bundle is set directly.
            annotations.retain(|key, _| !key.starts_with("cert-manager.io/"));
        }
        let webhooks = object
            .get_mut("webhooks")
            .and_then(Value::as_array_mut)
            .context("a webhook configuration without webhooks")?;
        for webhook in webhooks {
            let path = webhook
                .pointer("/clientConfig/service/path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned();
            webhook["clientConfig"] = json!({
                "url": format!("{base_url}{path}"),
                "caBundle": ca_bundle_base64,
            });
        }
        configurations.push(object);
    }
    if configurations.is_empty() {
        bail!("the manifests hold no webhook configuration");
    }
    Ok(configurations)
}

/// Server-side applies the configurations (idempotent; the previous registration is replaced).
pub async fn apply(client: &kube::Client, configurations: &[Value]) -> Result<()> {
    for configuration in configurations {
        let object: DynamicObject = serde_json::from_value(configuration.clone())?;
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let resource = ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            plural: format!("{}s", kind.to_lowercase()),
            kind,
        };
        let name = object
            .metadata
            .name
            .clone()
            .context("a webhook configuration without a name")?;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        api.patch(
            &name,
            &PatchParams::apply("scoped-secrets-local").force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("registering {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_every_webhook_at_the_local_url() {
        let manifests = r#"
apiVersion: v1
kind: Service
metadata: {name: scoped-secrets}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: scoped-secrets
  annotations: {cert-manager.io/inject-ca-from: x/y, keep: "me"}
webhooks:
- name: secret-guard.scoped-secrets.io
  failurePolicy: Fail
  clientConfig:
    service: {name: scoped-secrets, namespace: scoped-secrets-system, path: /validate/secret-guard, port: 443}
"#;
        let out = local_webhook_configurations(manifests, "https://127.0.0.1:9443", "Q0E=")
            .expect("rendered");
        assert_eq!(out.len(), 1);
        let webhook = &out[0]["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"]["url"],
            "https://127.0.0.1:9443/validate/secret-guard"
        );
        assert_eq!(webhook["clientConfig"]["caBundle"], "Q0E=");
        assert!(webhook["clientConfig"].get("service").is_none());
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(out[0]["metadata"]["annotations"], json!({"keep": "me"}));
    }

    /// N1 must not be bypassable: the namespaces/status and namespaces/finalize subresources write a
    /// namespace's metadata (its projectId annotation) too, so every webhook for namespaces covers
    /// them — and only when they change the annotation, so the namespace controller's own status and
    /// finalize writes are not held up by an outage.
    #[test]
    fn namespace_webhooks_cover_the_subresources_that_write_metadata() {
        let manifests =
            std::fs::read_to_string(Path::new(crate::env::REPO).join("deploy/base/webhooks.yaml"))
                .expect("deploy/base/webhooks.yaml");
        let mut namespace_webhooks = 0;
        for document in serde_yaml::Deserializer::from_str(&manifests) {
            let object: Value = serde::Deserialize::deserialize(document).expect("YAML");
            for webhook in object["webhooks"].as_array().into_iter().flatten() {
                let rules = webhook["rules"].as_array().expect("rules");
                let covers = |resource: &str| {
                    rules.iter().any(|rule| {
                        rule["resources"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|r| r == resource))
                            && rule["operations"]
                                .as_array()
                                .is_some_and(|o| o.iter().any(|o| o == "UPDATE"))
                    })
                };
                if !covers("namespaces") {
                    continue;
                }
                namespace_webhooks += 1;
                let name = &webhook["name"];
                for subresource in ["namespaces/status", "namespaces/finalize"] {
                    assert!(covers(subresource), "{name} misses {subresource}");
                }
                let conditions = webhook["matchConditions"].to_string();
                assert!(
                    conditions.contains(
                        "oldObject.metadata.annotations['field.cattle.io/projectId'] : '')"
                    ) && conditions.contains("!="),
                    "{name}: subresource writes are not limited to annotation changes"
                );
            }
        }
        assert_eq!(namespace_webhooks, 2, "the namespace guard and mutator");
    }

    /// No rule is about deleting a namespace, so no webhook is called for it: a guard that fails
    /// closed would otherwise keep project namespaces from being deleted during an outage.
    #[test]
    fn no_webhook_is_called_for_deleting_a_namespace() {
        let manifests =
            std::fs::read_to_string(Path::new(crate::env::REPO).join("deploy/base/webhooks.yaml"))
                .expect("deploy/base/webhooks.yaml");
        for document in serde_yaml::Deserializer::from_str(&manifests) {
            let object: Value = serde::Deserialize::deserialize(document).expect("YAML");
            for webhook in object["webhooks"].as_array().into_iter().flatten() {
                for rule in webhook["rules"].as_array().into_iter().flatten() {
                    let namespaces = rule["resources"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r == "namespaces"));
                    let deletes = rule["operations"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o == "DELETE" || o == "*"));
                    assert!(
                        !(namespaces && deletes),
                        "{} is called for deleting namespaces",
                        webhook["name"]
                    );
                }
            }
        }
    }
}
