//! One worker per registered downstream cluster: a client of its own (with timeouts), a health
//! probe, and while the cluster answers, watches of it composed with the management cluster's
//! index and the reconciler's rounds over that world, writing copies there.
//!
//! While the cluster is down or refuses the credentials nothing is written to it and no decision is
//! made from what was seen of it before: the watches are dropped, and when it answers again it is
//! listed afresh before the first round. Nothing in other clusters changes meanwhile: the
//! management cluster lets go of a project only once its copies are in place downstream, and
//! keeps letting go while the cluster is down (the copies there are still there).

use super::connections::{ConnectionsConfig, Health};
use super::credentials::InlineKubeconfig;
use super::placement::{Placement, Seat};
use crate::index::{self, Index};
use crate::reconciler::controller::{Context, reconcile_until_shutdown};
use crate::reconciler::{Config, ReconcilerMetrics};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::config::KubeConfigOptions;
use kube::runtime::events::Recorder;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every worker shares with the management cluster's reconciler.
#[derive(Clone)]
pub struct Shared {
    /// The management cluster (originals, Projects, Events, registrations).
    pub management: Client,
    /// The management cluster's index.
    pub index: Arc<Index>,
    pub cfg: Config,
    pub metrics: ReconcilerMetrics,
    pub placement: Arc<Placement>,
}

/// One registered cluster's worker.
pub(super) struct Worker {
    pub cluster: String,
    /// The registration Secret, which the cluster's Events are on.
    pub secret: ObjectReference,
    pub kubeconfig: InlineKubeconfig,
    pub cfg: ConnectionsConfig,
    pub recorder: Recorder,
    pub shared: Shared,
    /// The clusters this replica holds the Lease of (see [`super::ownership`]).
    pub owned: watch::Receiver<BTreeSet<String>>,
    /// Its seat in the placement: what it reports is heard only while it is the cluster's worker.
    pub seat: Seat,
}

impl Worker {
    /// Runs until aborted (the registration changed or went, or leadership was lost).
    pub async fn run(self) {
        let server = self.kubeconfig.server().to_owned();
        let client = match connect(&self.kubeconfig, self.cfg.request_timeout).await {
            Ok(client) => client,
            Err(why) => {
                let writer = watch::channel(true).1;
                self.report(&server, &mut None, Health::Unreachable(why), &writer)
                    .await;
                return;
            }
        };
        let (health_tx, health) = watch::channel(None);
        // Whether this replica writes the cluster: checked by every write, right before it is sent.
        let (writer_tx, writer) = watch::channel(false);
        tokio::select! {
            () = self.probe(&client, &server, health_tx, &writer) => {}
            () = self.serve(&client, health, &writer) => {}
            () = self.follow_ownership(writer_tx) => {}
        }
    }

    /// Keeps `writer` true exactly while this replica holds the cluster's Lease.
    async fn follow_ownership(&self, writer: watch::Sender<bool>) {
        let mut owned = self.owned.clone();
        loop {
            let holds = owned.borrow_and_update().contains(&self.cluster);
            writer.send_if_modified(|w| std::mem::replace(w, holds) != holds);
            if owned.changed().await.is_err() {
                writer.send_replace(false);
                // Ownership is over: stay here (never writing) until aborted.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Probes every `probe_every` while the cluster answers, with a doubling wait while it does
    /// not, and says so: the metric always, an Event when the health changes.
    async fn probe(
        &self,
        client: &Client,
        server: &str,
        health_tx: watch::Sender<Option<Health>>,
        writer: &watch::Receiver<bool>,
    ) {
        let mut last = None;
        let mut backoff = Duration::from_secs(1);
        let mut management = None;
        loop {
            let timeout = self.cfg.request_timeout;
            let mut health = probe(client, timeout).await;
            if health == Health::Connected {
                if management.is_none() {
                    management = cluster_identity(&self.shared.management, timeout).await;
                }
                let own = cluster_identity(client, timeout).await;
                health = told_apart(own.as_deref(), management.as_deref());
            }
            let wait = if health == Health::Connected {
                backoff = Duration::from_secs(1);
                self.cfg.probe_every
            } else {
                let wait = backoff;
                backoff = (backoff * 2).min(self.cfg.max_backoff);
                wait
            };
            self.report(server, &mut last, health.clone(), writer).await;
            health_tx.send_replace(Some(health));
            tokio::time::sleep(wait).await;
        }
    }

    /// While the cluster answers: a fresh list of it, then its progress kept current and (on its
    /// writer) rounds; all dropped as soon as it does not answer.
    async fn serve(
        &self,
        client: &Client,
        mut health: watch::Receiver<Option<Health>>,
        writer: &watch::Receiver<bool>,
    ) {
        let shared = &self.shared;
        let ctx = Context::downstream(shared, client.clone(), &self.cluster, writer.clone());
        // Rounds end only with the cluster's health: this never turns true.
        let (_never, no_shutdown) = watch::channel(false);
        loop {
            let connected = |h: &Option<Health>| h.as_ref() == Some(&Health::Connected);
            if health.wait_for(connected).await.is_err() {
                return;
            }
            let own = Arc::new(Index::default());
            let _watches = index::spawn_downstream(client.clone(), own.clone());
            let (world, compose) =
                index::compose::spawn(shared.index.clone(), own, self.cluster.clone());
            // Stopped with this pass, also when the whole worker is aborted (a registration changed
            // or removed): a composing task left behind would recompose forever.
            let _composing = AbortOnDrop(compose.abort_handle());
            tracing::info!(cluster = %self.cluster, "listing the downstream cluster");
            tokio::select! {
                () = reconcile_until_shutdown(&ctx, &world, writer.clone(), no_shutdown.clone()) => {}
                () = self.keep_progress(&world) => {}
                _ = health.wait_for(|h| !connected(h)) => {
                    tracing::info!(cluster = %self.cluster, "the downstream cluster is down: not writing to it until it answers and is listed again");
                }
            }
            shared.placement.set_world(&self.cluster, self.seat, None);
        }
    }

    /// Once the cluster is listed: publishes its world, and after every change its projects'
    /// progress (every replica does, so the management cluster's round and the Projects'
    /// conditions on the leader know it whichever replica writes the cluster).
    async fn keep_progress(&self, world: &Arc<Index>) {
        let mut changes = world.subscribe();
        world.wait_synced().await;
        let placement = &self.shared.placement;
        placement.set_world(&self.cluster, self.seat, Some(world.clone()));
        loop {
            changes.borrow_and_update();
            let snapshot = world.read();
            let actions = crate::plan::downstream_actions(&snapshot, &self.shared.cfg.copies);
            placement.report(
                &self.cluster,
                self.seat,
                crate::plan::progress(&snapshot, &actions),
            );
            if changes.changed().await.is_err() {
                return;
            }
            // Let a burst of events settle, as the rounds do.
            tokio::time::sleep(self.shared.cfg.debounce).await;
        }
    }

    async fn report(
        &self,
        server: &str,
        last: &mut Option<Health>,
        health: Health,
        writer: &watch::Receiver<bool>,
    ) {
        let metrics = &self.shared.metrics.clusters;
        metrics.set_connected(&self.cluster, health == Health::Connected);
        match &health {
            Health::Connected => {}
            Health::Unreachable(why) => self.shared.placement.report_down(
                &self.cluster,
                self.seat,
                "ClusterUnreachable",
                format!("{server} cannot be reached: {why}"),
            ),
            Health::CredentialsRefused(why) => self.shared.placement.report_down(
                &self.cluster,
                self.seat,
                "ClusterCredentialsRefused",
                format!("{server} refuses the credentials: {why}"),
            ),
            Health::IsManagement => self.shared.placement.report_down(
                &self.cluster,
                self.seat,
                super::connections::IS_MANAGEMENT,
                super::connections::is_management_note(server),
            ),
        }
        if last.as_ref() == Some(&health) {
            return;
        }
        tracing::info!(cluster = %self.cluster, %server, ?health, "downstream cluster health");
        // Only the cluster's writer speaks of it; the others know it as well.
        if !*writer.borrow() {
            *last = Some(health);
            return;
        }
        let event = health.event(server);
        if let Err(error) = self.recorder.publish(&event, &self.secret).await {
            tracing::warn!(%error, reason = %event.reason, "could not publish an event");
        }
        *last = Some(health);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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

/// The health of a cluster that answers, by its `kube-system` uid and the management cluster's:
/// connected only once it is known to be another cluster. While either uid cannot be read it cannot
/// be told apart, and written to as a downstream cluster the management cluster's own namespaces
/// would get two rounds undoing each other's work; so it waits, as an unreachable cluster does.
pub(crate) fn told_apart(own: Option<&str>, management: Option<&str>) -> Health {
    match (own, management) {
        (Some(own), Some(management)) if own == management => Health::IsManagement,
        (Some(_), Some(_)) => Health::Connected,
        (None, _) => Health::Unreachable(
            "its kube-system namespace's uid could not be read (it tells the cluster from the \
             management cluster)"
                .to_owned(),
        ),
        (_, None) => Health::Unreachable(
            "the management cluster's kube-system namespace's uid could not be read (it tells the \
             cluster from the management cluster)"
                .to_owned(),
        ),
    }
}

/// Who a cluster is: the uid of its `kube-system` namespace (which every apiserver creates and
/// nobody deletes), read with the right to list namespaces the copier has; `None` when it cannot
/// be read (see [`told_apart`]).
pub(crate) async fn cluster_identity(client: &Client, timeout: Duration) -> Option<String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let params = ListParams::default().fields("metadata.name=kube-system");
    let listed = tokio::time::timeout(timeout, namespaces.list_metadata(&params))
        .await
        .ok()?
        .ok()?;
    listed.items.into_iter().next()?.metadata.uid
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

    #[test]
    fn a_cluster_is_connected_only_once_told_apart_from_the_management_cluster() {
        assert_eq!(told_apart(Some("a"), Some("b")), Health::Connected);
        assert_eq!(told_apart(Some("a"), Some("a")), Health::IsManagement);
        // Either uid unreadable: it might be the management cluster itself; it waits.
        assert!(matches!(
            told_apart(None, Some("b")),
            Health::Unreachable(why) if why.contains("its kube-system")
        ));
        assert!(matches!(
            told_apart(Some("a"), None),
            Health::Unreachable(why) if why.contains("management cluster's kube-system")
        ));
    }
}
