//! Leader election on a `coordination.k8s.io/v1` Lease in the reconciler's own namespace.
//!
//! The holder renews every few seconds with the Lease's resourceVersion as precondition, so two
//! instances can never both win a round. Another holder's lease counts as expired once its record has
//! not changed for a lease duration *by our own clock* (client-go's rule: no trust in other clocks).
//! Leadership is published on a `watch` channel that every write checks first; it turns false at once
//! when another holder is seen, when renewing fails past the renew deadline, and on shutdown, before
//! the lease is released (holder cleared) so a successor takes over without waiting for expiry.

use super::metrics::ReconcilerMetrics;
use crate::coordination::{ExpiryClock, seconds};
pub use crate::coordination::{Step, step};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where the Lease lives, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This instance's identity (the pod name, unique per replica).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// The leader steps down if it could not renew for this long (less than `duration`).
    pub renew_deadline: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a follower tries to acquire.
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: super::CONTROLLER_NAME.to_owned(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Runs the election until `shutdown` turns true, then steps down at once and, when `writes_done`
/// resolves (no write of ours is in flight any more), releases the lease.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
    writes_done: impl Future<Output = ()>,
    metrics: ReconcilerMetrics,
) {
    let mut elector = Elector {
        api: Api::namespaced(client, &cfg.namespace),
        cfg,
        clock: ExpiryClock::default(),
        last_renewed: None,
        attempt_started: Instant::now(),
    };
    loop {
        // An attempt never outlives our claim: past the renew deadline (counted from when the last
        // successful renewal was *sent*) we must already have stopped writing, well before a
        // follower may take the lease over at `duration`.
        let budget = elector.time_left().map_or(elector.cfg.renew_every, |left| {
            left.min(elector.cfg.renew_every)
        });
        let attempt = tokio::time::timeout(budget, elector.try_acquire_or_renew());
        let held = match attempt.await {
            Ok(Ok(held)) => held,
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %elector.cfg.name, "could not acquire or renew the lease");
                elector.within_renew_deadline()
            }
            Err(_) => {
                tracing::warn!(lease = %elector.cfg.name, "acquiring or renewing the lease timed out");
                elector.within_renew_deadline()
            }
        };
        publish(&leading, held, &metrics, &elector.cfg.identity);
        let wait = if held {
            elector.cfg.renew_every
        } else {
            elector.cfg.retry_every
        };
        let claim_ends = elector.time_left().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = super::stopped(&mut shutdown) => break,
            () = tokio::time::sleep(wait) => {}
            () = tokio::time::sleep(claim_ends), if held => {
                publish(&leading, false, &metrics, &elector.cfg.identity);
            }
        }
    }
    // Stop writing first, then let a successor in.
    publish(&leading, false, &metrics, &elector.cfg.identity);
    writes_done.await;
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "could not release the lease; a successor waits for it to expire");
    }
}

fn publish(leading: &watch::Sender<bool>, held: bool, metrics: &ReconcilerMetrics, identity: &str) {
    let changed = leading.send_if_modified(|now| std::mem::replace(now, held) != held);
    if changed {
        tracing::info!(identity, leading = held, "leadership changed");
    }
    metrics.set_leader(held);
}

struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    clock: ExpiryClock,
    /// When the last successful acquire or renew request was sent.
    last_renewed: Option<Instant>,
    attempt_started: Instant,
}

impl Elector {
    fn within_renew_deadline(&self) -> bool {
        self.time_left().is_some()
    }

    /// How long our claim still holds: until the renew deadline after the last successful renewal
    /// was sent; `None` when we hold no claim.
    fn time_left(&self) -> Option<Duration> {
        let ends = self.last_renewed? + self.cfg.renew_deadline;
        ends.checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// One round; `Ok(true)` when we hold the lease afterwards. A lost race (409) is `Ok(false)`.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        // The claim counts from before the request: the apiserver may record it any time after.
        self.attempt_started = Instant::now();
        let now = MicroTime(Timestamp::now());
        let Some(lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(Some(now.clone()), now, 0)),
            };
            return self.won(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let expired = self.expired(&spec);
        let (acquired, transitions) = match step(&spec, &self.cfg.identity, expired) {
            Step::Follow => {
                self.last_renewed = None;
                return Ok(false);
            }
            Step::Renew => (
                spec.acquire_time.clone(),
                spec.lease_transitions.unwrap_or(0),
            ),
            Step::TakeOver => (
                Some(now.clone()),
                spec.lease_transitions.unwrap_or(0).saturating_add(1),
            ),
        };
        let renewed = Lease {
            metadata: lease.metadata,
            spec: Some(self.spec(acquired, now, transitions)),
        };
        let replaced = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &renewed)
            .await;
        self.won(replaced)
    }

    fn won(&mut self, result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match result {
            Ok(_) => {
                self.last_renewed = Some(self.attempt_started);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.last_renewed = None;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn spec(&self, acquired: Option<MicroTime>, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            acquire_time: acquired,
            renew_time: Some(renewed),
            lease_duration_seconds: Some(seconds(self.cfg.duration)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn expired(&mut self, spec: &LeaseSpec) -> bool {
        self.clock.expired(spec, self.cfg.duration, Instant::now())
    }

    /// Clears the holder so a successor need not wait for expiry; only if we still hold it.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(identity = %self.cfg.identity, "released the lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_deadline_is_shorter_than_the_lease() {
        let cfg = LeaseConfig::new("ns", "me");
        assert!(cfg.renew_every < cfg.renew_deadline && cfg.renew_deadline < cfg.duration);
    }
}
