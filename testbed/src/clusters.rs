//! Downstream clusters for the tests and benchmarks of issue #11: the registration Secret that makes
//! a control plane a registered cluster (its admin kubeconfig under `value`, the Cluster API and
//! Rancher shape, labelled with the cluster's id in the product's namespace).

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use scoped_secrets::keys;
use std::collections::BTreeMap;
use std::path::Path;

/// The product's namespace, where registrations live.
pub const REGISTRATION_NAMESPACE: &str = "scoped-secrets-system";

/// The registration Secret `name` of cluster `cluster` holding `kubeconfig` (its text).
pub fn registration_secret(name: &str, cluster: &str, kubeconfig: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(REGISTRATION_NAMESPACE.to_owned()),
            labels: Some(BTreeMap::from([(
                keys::CLUSTER_REGISTRATION_LABEL.to_owned(),
                cluster.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            keys::KUBECONFIG_KEY.to_owned(),
            kubeconfig.to_owned(),
        )])),
        ..Secret::default()
    }
}

/// Registers cluster `cluster` in the management cluster `management` with the kubeconfig file
/// `kubeconfig` (a [`crate::control_plane::ControlPlane`]'s admin kubeconfig has inline token and
/// CA data, as registrations must). Returns the registration Secret's name.
pub async fn register(
    management: &kube::Client,
    cluster: &str,
    kubeconfig: &Path,
) -> Result<String> {
    let name = format!("cluster-{cluster}");
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let secrets: Api<Secret> = Api::namespaced(management.clone(), REGISTRATION_NAMESPACE);
    secrets
        .patch(
            &name,
            &PatchParams::apply("testbed").force(),
            &Patch::Apply(&registration_secret(&name, cluster, &text)),
        )
        .await?;
    Ok(name)
}
