//! Connections to the registered downstream clusters, kept by the leader: the registration Secrets in
//! the product's namespace are watched, each accepted one gets a client with timeouts and a health
//! probe, and what happens is said where an operator looks (an Event on the registration Secret, and
//! `scoped_secrets_cluster_connected{cluster}`). Registrations are added, rotated and removed at
//! runtime: a changed Secret replaces its connection, a deleted one stops it.

use super::credentials::{InlineKubeconfig, Refusal};
use super::registration::{self, Registration};
use crate::keys::CLUSTER_REGISTRATION_LABEL;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret};
use kube::api::{Api, ListParams};
use kube::config::KubeConfigOptions;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
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
            probe_every: Duration::from_secs(30),
            max_backoff: Duration::from_secs(60),
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

/// The Event that says a verdict, if it deserves one (an accepted registration is announced by its
/// probe, which says whether the cluster answers).
fn verdict_event(verdict: &Verdict) -> Option<Event> {
    let (reason, note) = match verdict {
        Verdict::Accepted { .. } => return None,
        Verdict::Refused(refusal) => ("ClusterRegistrationRefused", refusal.to_string()),
        Verdict::LocalCluster { cluster_id } => (
            "ClusterRegistrationRefused",
            format!("{cluster_id} is the management cluster itself, which needs no registration"),
        ),
        Verdict::Duplicate { cluster_id, others } => (
            "ClusterRegistrationDuplicated",
            format!(
                "cluster {cluster_id} is also registered by {}: neither registration is used until one is removed",
                others.join(", ")
            ),
        ),
    };
    Some(warning(reason, note))
}

/// A cluster's health, as its probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Connected,
    /// No answer, or not an answer from an apiserver.
    Unreachable(String),
    /// The apiserver answered 401 or 403: the credentials are wrong, expired or lack permissions.
    CredentialsRefused(String),
}

impl Health {
    fn event(&self, server: &str) -> Event {
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
        }
    }
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

/// Per-cluster metrics.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    connected: Family<ClusterLabels, Gauge>,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "scoped_secrets_cluster_connected",
            "Whether a registered downstream cluster answered its last probe with the registered credentials (1) or not (0)",
            metrics.connected.clone(),
        );
        metrics
    }

    fn set_connected(&self, cluster: &str, connected: bool) {
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        self.connected
            .get_or_create(&labels)
            .set(i64::from(connected));
    }

    fn forget(&self, cluster: &str) {
        self.connected.remove(&ClusterLabels {
            cluster: cluster.to_owned(),
        });
    }
}

/// Keeps the connections while `leading` is true, until `shutdown`.
pub async fn run(
    client: Client,
    cfg: ConnectionsConfig,
    metrics: ClusterMetrics,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = leading.wait_for(|leading| *leading) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let mut keeper = Keeper::new(client.clone(), cfg.clone(), metrics.clone());
        tokio::select! {
            () = keeper.watch_registrations() => {}
            _ = leading.wait_for(|leading| !*leading) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        // A follower keeps no connection and reports none.
        keeper.stop_all();
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One connection: the registration it came from and its probe task.
struct Connection {
    secret: String,
    resource_version: Option<String>,
    probe: tokio::task::AbortHandle,
}

struct Keeper {
    client: Client,
    cfg: ConnectionsConfig,
    metrics: ClusterMetrics,
    recorder: Recorder,
    secrets: BTreeMap<String, Secret>,
    announced: BTreeMap<String, Verdict>,
    connections: BTreeMap<String, Connection>,
    probes: JoinSet<()>,
}

impl Keeper {
    fn new(client: Client, cfg: ConnectionsConfig, metrics: ClusterMetrics) -> Self {
        let reporter = Reporter {
            controller: crate::reconciler::CONTROLLER_NAME.to_owned(),
            instance: Some(cfg.identity.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cfg,
            metrics,
            secrets: BTreeMap::new(),
            announced: BTreeMap::new(),
            connections: BTreeMap::new(),
            probes: JoinSet::new(),
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

        for (name, verdict) in &verdicts {
            if self.announced.get(name) != Some(verdict) {
                tracing::info!(secret = %name, ?verdict, "cluster registration");
                if let (Some(event), Some(secret)) =
                    (verdict_event(verdict), self.secrets.get(name))
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
                connection.probe.abort();
                self.metrics.forget(&cluster);
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
            let probe = Probe {
                cluster: cluster.to_owned(),
                secret: reference(secret),
                kubeconfig: registration.kubeconfig.clone(),
                cfg: self.cfg.clone(),
                metrics: self.metrics.clone(),
                recorder: self.recorder.clone(),
            };
            let handle = self.probes.spawn(probe.run());
            self.connections.insert(
                cluster.to_owned(),
                Connection {
                    secret: secret_name.to_owned(),
                    resource_version: secret.resource_version(),
                    probe: handle,
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
        self.probes.abort_all();
        for cluster in std::mem::take(&mut self.connections).into_keys() {
            self.metrics.forget(&cluster);
        }
    }
}

fn reference(secret: &Secret) -> ObjectReference {
    secret.object_ref(&())
}

/// The health probe of one registered cluster: a client of its own, then a probe every
/// `probe_every` while it answers, and with a doubling wait while it does not. An Event is
/// published when the health changes, never on every probe.
struct Probe {
    cluster: String,
    secret: ObjectReference,
    kubeconfig: InlineKubeconfig,
    cfg: ConnectionsConfig,
    metrics: ClusterMetrics,
    recorder: Recorder,
}

impl Probe {
    async fn run(self) {
        let server = self.kubeconfig.server().to_owned();
        let mut last: Option<Health> = None;
        let mut backoff = Duration::from_secs(1);
        let client = match connect(&self.kubeconfig, self.cfg.request_timeout).await {
            Ok(client) => Some(client),
            Err(why) => {
                self.report(&server, &mut last, Health::Unreachable(why))
                    .await;
                None
            }
        };
        let Some(client) = client else { return };
        loop {
            let health = probe(&client, self.cfg.request_timeout).await;
            let wait = if health == Health::Connected {
                backoff = Duration::from_secs(1);
                self.cfg.probe_every
            } else {
                let wait = backoff;
                backoff = (backoff * 2).min(self.cfg.max_backoff);
                wait
            };
            self.report(&server, &mut last, health).await;
            tokio::time::sleep(wait).await;
        }
    }

    async fn report(&self, server: &str, last: &mut Option<Health>, health: Health) {
        self.metrics
            .set_connected(&self.cluster, health == Health::Connected);
        if last.as_ref() == Some(&health) {
            return;
        }
        tracing::info!(cluster = %self.cluster, %server, ?health, "downstream cluster health");
        let event = health.event(server);
        if let Err(error) = self.recorder.publish(&event, &self.secret).await {
            tracing::warn!(%error, reason = %event.reason, "could not publish an event");
        }
        *last = Some(health);
    }
}

/// A client for a checked kubeconfig, with timeouts on every request.
pub(crate) async fn connect(
    kubeconfig: &InlineKubeconfig,
    timeout: Duration,
) -> Result<Client, String> {
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig.kubeconfig().clone(),
        &KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| format!("the kubeconfig cannot make a client: {e}"))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| format!("the kubeconfig cannot make a client: {e}"))
}

/// Lists one namespace's metadata: it needs an apiserver, credentials it accepts, and the right to
/// list namespaces, which the copier needs first of all.
async fn probe(client: &Client, timeout: Duration) -> Health {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let listed = tokio::time::timeout(
        timeout,
        namespaces.list_metadata(&ListParams::default().limit(1)),
    )
    .await;
    match listed {
        Ok(Ok(_)) => Health::Connected,
        Ok(Err(kube::Error::Api(status))) if status.code == 401 || status.code == 403 => {
            Health::CredentialsRefused(format!("{} {}", status.code, status.reason))
        }
        Ok(Err(error)) => Health::Unreachable(error.to_string()),
        Err(_) => Health::Unreachable(format!("no answer within {}s", timeout.as_secs())),
    }
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
