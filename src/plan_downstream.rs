//! The downstream clusters for `plan`: the registration Secrets in the product's namespace are read
//! from the management cluster, and each accepted cluster's own world is listed through its
//! registered credentials, every request bounded. A cluster that cannot be read says why; its world
//! is never taken for an empty one.

use crate::clusters::connections::{self, Health, Verdict, is_management_note};
use crate::clusters::credentials::Refusal;
use crate::clusters::registration::{self, Registration};
use crate::clusters::worker;
use crate::keys::CLUSTER_REGISTRATION_LABEL;
use crate::plan_load::load_downstream_world;
use crate::world::World;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Where downstream clusters are registered, and how long each of their requests may take.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The product's namespace, holding the registration Secrets.
    pub namespace: String,
    /// The management cluster's id (a registration naming it is refused).
    pub local_cluster_id: String,
    /// Connect, read and write timeout of every request to a downstream cluster.
    pub timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            namespace: "scoped-secrets-system".to_owned(),
            local_cluster_id: "local".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// One registration, and the cluster's world as read through it.
#[derive(Debug)]
pub struct Downstream {
    /// The cluster id the registration names (its label).
    pub cluster: String,
    /// The registration Secret's name (in [`ClusterOptions::namespace`]).
    pub registration: String,
    /// The apiserver it points at, when the registration is readable.
    pub server: Option<String>,
    pub world: Result<World, Unreadable>,
}

/// Why a registered cluster's world is unknown. Never quotes the kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The registration is not used (refused, duplicated, or naming the management cluster).
    Registration(String),
    /// No answer, or not one from an apiserver that served the lists.
    Unreachable(String),
    /// The apiserver answered 401 or 403.
    CredentialsRefused(String),
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registration(why) => write!(f, "registration not used: {why}"),
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::CredentialsRefused(why) => write!(f, "credentials refused: {why}"),
        }
    }
}

/// Every registration in the product's namespace, each with its cluster's world or why there is
/// none, sorted by cluster id. Clusters are read concurrently, so one that never answers delays
/// the others by at most its timeouts.
pub async fn load_downstream(
    management: &Client,
    options: &ClusterOptions,
) -> Result<Vec<Downstream>> {
    let secrets: Api<Secret> = Api::namespaced(management.clone(), &options.namespace);
    let listed = secrets
        .list(&ListParams::default().labels(CLUSTER_REGISTRATION_LABEL))
        .await
        .with_context(|| {
            format!(
                "listing the cluster registrations in namespace {}",
                options.namespace
            )
        })?;
    let registrations: BTreeMap<String, (Option<String>, Result<Registration, Refusal>)> = listed
        .items
        .iter()
        .filter_map(|secret| {
            let label = secret.labels().get(CLUSTER_REGISTRATION_LABEL).cloned();
            Some((secret.name_any(), (label, registration::read(secret)?)))
        })
        .collect();
    // Who the management cluster is, read once: a registration reaching it is no downstream
    // cluster (the workers refuse it, ClusterIsManagement), and planned as one it would show the
    // management cluster's namespaces written twice over.
    let management_identity = if registrations.is_empty() {
        None
    } else {
        worker::cluster_identity(management, options.timeout).await
    };
    let management_identity = management_identity.as_deref();
    let verdicts = connections::resolve(
        &registrations
            .iter()
            .map(|(name, (_, read))| (name.clone(), read.clone()))
            .collect(),
        &options.local_cluster_id,
    );
    let reads = registrations.into_iter().map(|(name, (label, read))| {
        let verdict = verdicts.get(&name).cloned();
        async move {
            let server = read.as_ref().ok().map(|r| r.kubeconfig.server().to_owned());
            let cluster = match &read {
                Ok(r) => r.cluster_id.clone(),
                Err(_) => label.unwrap_or_default(),
            };
            let world = match (verdict, read) {
                (Some(Verdict::Accepted { .. }), Ok(registration)) => {
                    read_cluster(&registration, management_identity, options.timeout).await
                }
                (Some(verdict), _) => Err(Unreadable::Registration(unused(&verdict))),
                (None, _) => Err(Unreadable::Registration("not resolved".to_owned())),
            };
            Downstream {
                cluster,
                registration: name,
                server,
                world,
            }
        }
    });
    let mut all = futures::future::join_all(reads).await;
    all.sort_by(|a, b| (&a.cluster, &a.registration).cmp(&(&b.cluster, &b.registration)));
    Ok(all)
}

/// Why a registration that is not accepted is not used (as the keeper's Event says it).
fn unused(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Accepted { .. } => "accepted".to_owned(),
        other => other.note(),
    }
}

/// The cluster's world, once it is known to be another cluster than the management cluster (by
/// their `kube-system` uids, as its worker tells them apart).
async fn read_cluster(
    registration: &Registration,
    management_identity: Option<&str>,
    timeout: Duration,
) -> Result<World, Unreadable> {
    let client = worker::connect(&registration.kubeconfig, timeout)
        .await
        .map_err(Unreadable::Unreachable)?;
    // Listed first: a cluster that cannot be read says why (the identity look-up only says it
    // could not be made).
    let world = load_downstream_world(&client, timeout)
        .await
        .map_err(|(what, error)| classify(what, &error))?;
    let own_identity = worker::cluster_identity(&client, timeout).await;
    match worker::told_apart(own_identity.as_deref(), management_identity) {
        Health::Connected => Ok(world),
        Health::IsManagement => Err(Unreadable::Registration(is_management_note(
            registration.kubeconfig.server(),
        ))),
        Health::Unreachable(why) | Health::CredentialsRefused(why) => {
            Err(Unreadable::Unreachable(why))
        }
    }
}

fn classify(what: &str, error: &kube::Error) -> Unreadable {
    match error {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            Unreadable::CredentialsRefused(format!(
                "{what}: {} {}: {}",
                status.code, status.reason, status.message
            ))
        }
        other => Unreadable::Unreachable(format!("{what}: {}", chain(other))),
    }
}

/// An error with its causes (`a: b: c`), without repeating a cause its parent already says.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_told_apart_from_silence() {
        let status =
            kube::core::Status::failure("namespaces is forbidden", "Forbidden").with_code(403);
        let refused = classify("listing namespaces", &kube::Error::Api(status.boxed()));
        assert_eq!(
            refused.to_string(),
            "credentials refused: listing namespaces: 403 Forbidden: namespaces is forbidden"
        );
        let silent = classify(
            "listing namespaces",
            &kube::Error::Service("no answer within 10s".into()),
        );
        assert!(
            matches!(&silent, Unreadable::Unreachable(why) if why.contains("no answer within 10s")),
            "{silent:?}"
        );
    }
}
