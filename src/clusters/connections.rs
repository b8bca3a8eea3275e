//! Connections to the registered downstream clusters, kept by the leader: the registration Secrets in
//! the product's namespace are watched, each accepted one gets a client with timeouts and a health
//! probe, and what happens is said where an operator looks (an Event on the registration Secret, and
//! `scoped_secrets_cluster_connected{cluster}`). Registrations are added, rotated and removed at
//! runtime: a changed Secret replaces its connection, a deleted one stops it.

use super::credentials::Refusal;
pub use super::metrics::ClusterMetrics;
use super::registration::{self, Registration};
use super::worker::{Shared, Worker};
use crate::keys::CLUSTER_REGISTRATION_LABEL;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the connections are kept.
#[derive(Debug, Clone)]
pub struct ConnectionsConfig {
    /// Where registration Secrets live: the product's own namespace.
    pub namespace: String,
    /// The management cluster's own id: it needs no registration, and one naming it is refused.
    pub local_cluster_id: String,
    /// The reporting instance in Events.
    pub identity: String,
    /// Probe period of a healthy cluster.
    pub probe_every: Duration,
    /// The longest wait between probes of a cluster that is down (doubling from one second).
    pub max_backoff: Duration,
    /// Connect and read timeout of every request to a downstream cluster.
    pub request_timeout: Duration,
}

impl ConnectionsConfig {
    pub fn new(
        namespace: impl Into<String>,
        local_cluster_id: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            local_cluster_id: local_cluster_id.into(),
            identity: identity.into(),
            probe_every: Duration::from_secs(10),
            max_backoff: Duration::from_secs(8),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What became of one registration Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted {
        cluster_id: String,
    },
    Refused(Refusal),
    /// It names the management cluster, which needs no registration.
    LocalCluster {
        cluster_id: String,
    },
    /// Another registration names the same cluster: neither is used until one goes.
    Duplicate {
        cluster_id: String,
        others: Vec<String>,
    },
}

/// Decides every registration Secret's fate (keyed by Secret name). Pure.
pub fn resolve(
    registrations: &BTreeMap<String, Result<Registration, Refusal>>,
    local_cluster_id: &str,
) -> BTreeMap<String, Verdict> {
    let mut by_cluster: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (secret, registration) in registrations {
        if let Ok(r) = registration {
            by_cluster.entry(&r.cluster_id).or_default().push(secret);
        }
    }
    registrations
        .iter()
        .map(|(secret, registration)| {
            let verdict = match registration {
                Err(refusal) => Verdict::Refused(refusal.clone()),
                Ok(r) if r.cluster_id == local_cluster_id => Verdict::LocalCluster {
                    cluster_id: r.cluster_id.clone(),
                },
                Ok(r) => match by_cluster.get(r.cluster_id.as_str()).map(Vec::as_slice) {
                    Some([_]) | None => Verdict::Accepted {
                        cluster_id: r.cluster_id.clone(),
                    },
                    Some(all) => Verdict::Duplicate {
                        cluster_id: r.cluster_id.clone(),
                        others: all
                            .iter()
                            .filter(|other| **other != secret)
                            .map(|other| (*other).to_owned())
                            .collect(),
                    },
                },
            };
            (secret.clone(), verdict)
        })
        .collect()
}

impl Verdict {
    /// What became of the registration, in words (never a credential).
    pub fn note(&self) -> String {
        match self {
            Verdict::Accepted { cluster_id } => format!("cluster {cluster_id} is registered"),
            Verdict::Refused(refusal) => refusal.to_string(),
            Verdict::LocalCluster { cluster_id } => format!(
                "{cluster_id} is the management cluster itself, which needs no registration"
            ),
            Verdict::Duplicate { cluster_id, others } => format!(
                "cluster {cluster_id} is also registered by {}: neither registration is used until one is removed",
                others.join(", ")
            ),
        }
    }
}

/// The Event that says a verdict, if it deserves one (an accepted registration is announced by its
/// probe, which says whether the cluster answers).
fn verdict_event(verdict: &Verdict) -> Option<Event> {
    let reason = match verdict {
        Verdict::Accepted { .. } => return None,
        Verdict::Refused(_) | Verdict::LocalCluster { .. } => "ClusterRegistrationRefused",
        Verdict::Duplicate { .. } => "ClusterRegistrationDuplicated",
    };
    Some(warning(reason, verdict.note()))
}

/// A cluster's health, as its probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Connected,
    /// No answer, or not an answer from an apiserver.
    Unreachable(String),
    /// The apiserver answered 401 or 403: the credentials are wrong, expired or lack permissions.
    CredentialsRefused(String),
    /// The apiserver is the management cluster's own (its `kube-system` namespace has the same
    /// uid): written to as a downstream cluster, its namespaces would be written by two rounds
    /// that undo each other's work.
    IsManagement,
}

impl Health {
    pub(super) fn event(&self, server: &str) -> Event {
        match self {
            Health::Connected => Event {
                type_: EventType::Normal,
                reason: "ClusterConnected".into(),
                note: Some(format!("connected to {server}")),
                action: "Probe".into(),
                secondary: None,
            },
            Health::Unreachable(why) => warning(
                "ClusterUnreachable",
                format!("{server} cannot be reached: {why}"),
            ),
            Health::CredentialsRefused(why) => warning(
                "ClusterCredentialsRefused",
                format!("{server} refuses the credentials: {why}"),
            ),
            Health::IsManagement => warning(IS_MANAGEMENT, is_management_note(server)),
        }
    }
}

/// The reason of [`Health::IsManagement`].
pub const IS_MANAGEMENT: &str = "ClusterIsManagement";

/// What [`Health::IsManagement`] says.
pub fn is_management_note(server: &str) -> String {
    format!(
        "{server} is the management cluster itself (its kube-system namespace has the same uid): \
         nothing is written through this registration; its projects' namespaces there are the \
         management cluster's, and projects of a cluster are served in the management cluster \
         under --local-cluster-id; remove the registration, or point it at the downstream cluster"
    )
}

fn warning(reason: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Register".into(),
        secondary: None,
    }
}

/// Keeps a worker per registered cluster until `shutdown`, on every replica: each knows every
/// cluster (the webhook and the management cluster's round read it); only the writer of a cluster
/// (the holder of its Lease, `owned`) writes to it and speaks of it in Events; the registrations'
/// Events are the leader's (`leading`). The accepted clusters are published to `registered`, for
/// [`super::ownership`].
pub async fn run(
    shared: Shared,
    leading: watch::Receiver<bool>,
    registered: watch::Sender<BTreeSet<String>>,
    owned: watch::Receiver<BTreeSet<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut keeper = Keeper::new(shared, leading, registered, owned);
    tokio::select! {
        () = keeper.watch_registrations() => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    keeper.stop_all();
}

/// One connection: the registration it came from and its worker.
struct Connection {
    secret: String,
    resource_version: Option<String>,
    worker: tokio::task::AbortHandle,
}

struct Keeper {
    client: Client,
    cfg: ConnectionsConfig,
    metrics: ClusterMetrics,
    shared: Shared,
    leading: watch::Receiver<bool>,
    registered: watch::Sender<BTreeSet<String>>,
    owned: watch::Receiver<BTreeSet<String>>,
    recorder: Recorder,
    secrets: BTreeMap<String, Secret>,
    announced: BTreeMap<String, Verdict>,
    connections: BTreeMap<String, Connection>,
    workers: JoinSet<()>,
}

impl Keeper {
    fn new(
        shared: Shared,
        leading: watch::Receiver<bool>,
        registered: watch::Sender<BTreeSet<String>>,
        owned: watch::Receiver<BTreeSet<String>>,
    ) -> Self {
        let (client, cfg) = (shared.management.clone(), shared.cfg.clusters.clone());
        let metrics = shared.metrics.clusters.clone();
        let reporter = Reporter {
            controller: crate::reconciler::CONTROLLER_NAME.to_owned(),
            instance: Some(cfg.identity.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cfg,
            metrics,
            shared,
            leading,
            registered,
            owned,
            secrets: BTreeMap::new(),
            announced: BTreeMap::new(),
            connections: BTreeMap::new(),
            workers: JoinSet::new(),
        }
    }

    async fn watch_registrations(&mut self) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let config = watcher::Config::default().labels(CLUSTER_REGISTRATION_LABEL);
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut relisting: Option<BTreeMap<String, Secret>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => relisting = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(secret)) => {
                    if let Some(listed) = relisting.as_mut() {
                        listed.insert(secret.name_any(), secret);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    self.secrets = relisting.take().unwrap_or_default();
                    self.converge().await;
                    self.shared.placement.registrations_read();
                }
                Ok(watcher::Event::Apply(secret)) => {
                    self.secrets.insert(secret.name_any(), secret);
                    self.converge().await;
                }
                Ok(watcher::Event::Delete(secret)) => {
                    self.secrets.remove(&secret.name_any());
                    self.converge().await;
                }
                Err(error) => {
                    tracing::warn!(%error, namespace = %self.cfg.namespace, "watching cluster registrations");
                }
            }
        }
    }

    /// Brings the connections in line with the registrations, and announces changed verdicts.
    async fn converge(&mut self) {
        let registrations: BTreeMap<String, Result<Registration, Refusal>> = self
            .secrets
            .iter()
            .filter_map(|(name, secret)| Some((name.clone(), registration::read(secret)?)))
            .collect();
        let verdicts = resolve(&registrations, &self.cfg.local_cluster_id);

        let leading = *self.leading.borrow();
        for (name, verdict) in &verdicts {
            if self.announced.get(name) != Some(verdict) {
                tracing::info!(secret = %name, ?verdict, "cluster registration");
                if let (Some(event), Some(secret), true) =
                    (verdict_event(verdict), self.secrets.get(name), leading)
                {
                    self.publish(&event, secret).await;
                }
            }
        }
        self.announced = verdicts.clone();

        let wanted: BTreeMap<&str, &str> = verdicts
            .iter()
            .filter_map(|(secret, verdict)| match verdict {
                Verdict::Accepted { cluster_id } => Some((cluster_id.as_str(), secret.as_str())),
                _ => None,
            })
            .collect();
        let accepted: BTreeSet<String> = wanted.keys().map(|c| (*c).to_owned()).collect();
        self.registered
            .send_if_modified(|current| std::mem::replace(current, accepted.clone()) != accepted);
        let stale: Vec<String> = self
            .connections
            .iter()
            .filter(|(cluster, connection)| {
                wanted.get(cluster.as_str()) != Some(&connection.secret.as_str())
                    || self
                        .secrets
                        .get(&connection.secret)
                        .and_then(|s| s.resource_version())
                        != connection.resource_version
            })
            .map(|(cluster, _)| cluster.clone())
            .collect();
        for cluster in stale {
            if let Some(connection) = self.connections.remove(&cluster) {
                connection.worker.abort();
                self.metrics.forget(&cluster);
                // Its world is no longer kept: nobody may read it as current.
                self.shared.placement.drop_world(&cluster);
                // Rotated credentials keep the cluster's place; a removed registration gives its
                // projects back to the management cluster (their copies downstream stay).
                if !wanted.contains_key(cluster.as_str()) {
                    self.shared.placement.forget(&cluster);
                }
                tracing::info!(%cluster, "stopped the connection of a removed or changed registration");
            }
        }
        for (cluster, secret_name) in wanted {
            if self.connections.contains_key(cluster) {
                continue;
            }
            let (Some(secret), Some(Ok(registration))) = (
                self.secrets.get(secret_name),
                registrations.get(secret_name),
            ) else {
                continue;
            };
            let seat = self.shared.placement.register(cluster);
            let worker = Worker {
                cluster: cluster.to_owned(),
                secret: reference(secret),
                kubeconfig: registration.kubeconfig.clone(),
                cfg: self.cfg.clone(),
                recorder: self.recorder.clone(),
                shared: self.shared.clone(),
                owned: self.owned.clone(),
                seat,
            };
            let handle = self.workers.spawn(worker.run());
            self.connections.insert(
                cluster.to_owned(),
                Connection {
                    secret: secret_name.to_owned(),
                    resource_version: secret.resource_version(),
                    worker: handle,
                },
            );
        }
    }

    async fn publish(&self, event: &Event, secret: &Secret) {
        if let Err(error) = self.recorder.publish(event, &reference(secret)).await {
            tracing::warn!(%error, reason = %event.reason, "could not publish an event");
        }
    }

    fn stop_all(&mut self) {
        self.workers.abort_all();
        for cluster in std::mem::take(&mut self.connections).into_keys() {
            self.metrics.forget(&cluster);
            self.shared.placement.forget(&cluster);
        }
    }
}

fn reference(secret: &Secret) -> ObjectReference {
    secret.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clusters::credentials::read_kubeconfig;

    fn accepted(cluster: &str) -> Result<Registration, Refusal> {
        let text = "current-context: c
contexts: [{name: c, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443'}}]
users: [{name: u, user: {token: abc}}]
";
        Ok(Registration {
            cluster_id: cluster.to_owned(),
            kubeconfig: read_kubeconfig(Some(text.as_bytes())).unwrap(),
        })
    }

    #[test]
    fn each_cluster_has_one_registration_or_none() {
        let registrations = BTreeMap::from([
            ("a".to_owned(), accepted("c-one")),
            ("b".to_owned(), accepted("c-two")),
            ("c".to_owned(), accepted("c-two")),
            ("d".to_owned(), accepted("local")),
            ("e".to_owned(), Err(Refusal::MissingKubeconfig)),
        ]);
        let verdicts = resolve(&registrations, "local");
        assert_eq!(
            verdicts["a"],
            Verdict::Accepted {
                cluster_id: "c-one".into()
            }
        );
        assert_eq!(
            verdicts["b"],
            Verdict::Duplicate {
                cluster_id: "c-two".into(),
                others: vec!["c".into()]
            }
        );
        assert_eq!(
            verdicts["c"],
            Verdict::Duplicate {
                cluster_id: "c-two".into(),
                others: vec!["b".into()]
            }
        );
        assert_eq!(
            verdicts["d"],
            Verdict::LocalCluster {
                cluster_id: "local".into()
            }
        );
        assert_eq!(verdicts["e"], Verdict::Refused(Refusal::MissingKubeconfig));
    }

    #[test]
    fn every_verdict_but_acceptance_is_a_warning() {
        assert!(
            verdict_event(&Verdict::Accepted {
                cluster_id: "x".into()
            })
            .is_none()
        );
        for verdict in [
            Verdict::Refused(Refusal::Forbidden("exec")),
            Verdict::LocalCluster {
                cluster_id: "local".into(),
            },
            Verdict::Duplicate {
                cluster_id: "x".into(),
                others: vec!["y".into()],
            },
        ] {
            let event = verdict_event(&verdict).unwrap();
            assert_eq!(event.type_, EventType::Warning, "{verdict:?}");
        }
    }
}
