//! Spreading the downstream clusters over the replicas, with Kubernetes Leases in the product's
//! namespace (issue #11, item 7).
//!
//! Every replica announces itself with a Lease of its own (`<prefix>-replica-<hash of identity>`,
//! label `scoped-secrets.io/lease: replica`), renewed every few seconds; the live replicas are the
//! holders of unexpired replica Leases. Each registered cluster has a Lease
//! (`<prefix>-cluster-<id>`, label `scoped-secrets.io/lease: cluster`) that only its rendezvous owner
//! among the live replicas takes (`sharding::owner`), and only when it is free, expired or its own
//! (`decide`). Expiry is judged by our own clock (`coordination`), and every write carries the
//! Lease's resourceVersion, so two replicas never both hold one.
//!
//! A cluster is published in `owned` only while we hold its Lease by our own record: from a
//! successful take or renewal until the renew deadline counted from when that write was *sent*,
//! which ends before anyone else may judge the Lease expired. It leaves `owned` before its Lease is
//! released (when it moves to a joining replica, is no longer registered, or on shutdown), and when
//! renewing fails past the deadline. A replica that dies releases nothing: its Leases stand still
//! and the others take its clusters once they expire.

mod config;
mod decide;
mod metrics;
mod writes;

pub use config::OwnershipConfig;
pub use metrics::OwnershipMetrics;

pub use writes::{LEASE_CLUSTER_LABEL, LEASE_KIND_LABEL};

use self::decide::{Claim, Move, Stale, decide, forgettable, live_replicas};
use self::writes::{NewLease, Writer};
use super::credentials::check_cluster_id;
use crate::coordination::{ExpiryClock, Step, holder, step};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Keeps this replica's share of the clusters until `shutdown`, then releases every Lease it holds.
/// `registered`: the accepted cluster ids; `owned`: the clusters this replica may write to now.
pub async fn run(
    client: Client,
    cfg: OwnershipConfig,
    mut registered: watch::Receiver<BTreeSet<String>>,
    owned: watch::Sender<BTreeSet<String>>,
    metrics: OwnershipMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    // The whole namespace, not a label selector: a Lease of our name that lacks the label must be
    // seen too, or we would try to create it forever.
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut owner = Owner::new(api, cfg, metrics, owned);
    owner.set_registered(&registered.borrow_and_update());
    let mut registrations_open = true;
    loop {
        owner.act().await;
        let wake = owner.next_wake(Instant::now());
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                owner.observe(event);
                // Take in whatever else has arrived before deciding again.
                while let Some(Some(event)) = events.next().now_or_never() {
                    owner.observe(event);
                }
            }
            changed = registered.changed(), if registrations_open => match changed {
                Ok(()) => owner.set_registered(&registered.borrow_and_update()),
                // Whoever published registrations is gone: keep the last known set.
                Err(_) => registrations_open = false,
            },
            () = tokio::time::sleep_until(wake.into()) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    owner.release_all().await;
}

/// A Lease of ours as the watch last showed it, and how long its record has stood still.
struct Seen {
    lease: Lease,
    clock: ExpiryClock,
}

/// Our hold on a Lease: when it counts from, and the Lease as our last write returned it (the base of
/// the next renewal).
struct Held {
    claim: Claim,
    lease: Lease,
}

/// One Lease write to make.
enum Job {
    /// Create, take (an earlier run's) or renew our replica Lease.
    Announce {
        base: Option<Lease>,
        renewing: bool,
    },
    Take {
        cluster: String,
        base: Option<Lease>,
    },
    Renew {
        cluster: String,
        base: Lease,
    },
    Release {
        cluster: String,
        base: Lease,
    },
    /// Delete a Lease nobody needs any more, if it is still as we saw it.
    Forget {
        name: String,
        resource_version: String,
    },
}

/// How a write went: the Lease we hold afterwards, if any.
struct Outcome {
    job: Job,
    sent: Instant,
    result: Result<Option<Lease>, String>,
}

struct Owner {
    api: Api<Lease>,
    cfg: OwnershipConfig,
    metrics: OwnershipMetrics,
    owned: watch::Sender<BTreeSet<String>>,
    registered: BTreeSet<String>,
    /// Our Leases (replica and cluster ones) by name; complete once `listed`.
    seen: BTreeMap<String, Seen>,
    relisting: Option<BTreeMap<String, Lease>>,
    listed: bool,
    replica: Option<Held>,
    /// The clusters whose Lease we hold, by cluster id.
    clusters: BTreeMap<String, Held>,
    /// Lease names not to write again before the given time (a write failed or lost a race).
    retry_at: BTreeMap<String, Instant>,
    /// Failed writes in a row, by Lease name: the wait before the next one doubles with each.
    failures: BTreeMap<String, u32>,
}

impl Owner {
    fn new(
        api: Api<Lease>,
        cfg: OwnershipConfig,
        metrics: OwnershipMetrics,
        owned: watch::Sender<BTreeSet<String>>,
    ) -> Self {
        Self {
            api,
            cfg,
            metrics,
            owned,
            registered: BTreeSet::new(),
            seen: BTreeMap::new(),
            relisting: None,
            listed: false,
            replica: None,
            clusters: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    fn set_registered(&mut self, registered: &BTreeSet<String>) {
        self.registered = registered
            .iter()
            .filter(|id| match check_cluster_id(id) {
                Ok(()) => true,
                Err(refusal) => {
                    tracing::warn!(cluster = %id, %refusal, "not a cluster id a Lease can be named after; not owned");
                    false
                }
            })
            .cloned()
            .collect();
    }

    fn is_ours(&self, name: &str) -> bool {
        self.cfg.is_replica_lease(name) || self.cfg.cluster_of(name).is_some()
    }

    fn observe(&mut self, event: Result<watcher::Event<Lease>, watcher::Error>) {
        let now = Instant::now();
        match event {
            Ok(watcher::Event::Init) => self.relisting = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(lease)) => {
                let name = lease.name_any();
                if let (true, Some(listed)) = (self.is_ours(&name), self.relisting.as_mut()) {
                    listed.insert(name, lease);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let listed = self.relisting.take().unwrap_or_default();
                self.seen.retain(|name, _| listed.contains_key(name));
                for lease in listed.into_values() {
                    self.saw(lease, now);
                }
                self.listed = true;
            }
            Ok(watcher::Event::Apply(lease)) => {
                if self.is_ours(&lease.name_any()) {
                    self.saw(lease, now);
                }
            }
            Ok(watcher::Event::Delete(lease)) => {
                self.seen.remove(&lease.name_any());
            }
            Err(error) => {
                tracing::warn!(%error, namespace = %self.cfg.namespace, "watching the ownership Leases");
            }
        }
    }

    fn saw(&mut self, lease: Lease, now: Instant) {
        let seen = self.seen.entry(lease.name_any()).or_insert_with(|| Seen {
            lease: lease.clone(),
            clock: ExpiryClock::default(),
        });
        seen.clock.observe(
            &lease.spec.clone().unwrap_or_default(),
            self.cfg.lease_duration,
            now,
        );
        seen.lease = lease;
    }

    /// The live replicas as seen now.
    fn live(&self, now: Instant) -> BTreeSet<String> {
        let replicas = self
            .seen
            .iter()
            .filter(|(name, _)| self.cfg.is_replica_lease(name))
            .map(|(_, seen)| {
                let holder = seen.lease.spec.as_ref().and_then(holder);
                (holder, seen.clock.expired_at(now))
            });
        live_replicas(&self.cfg.identity, replicas)
    }

    /// Decides what to write now, writes it, and publishes what we own.
    async fn act(&mut self) {
        let now = Instant::now();
        self.drop_lapsed_claims(now);
        self.publish(now);
        if !self.listed {
            return;
        }
        let mut jobs = Vec::new();
        let replica_name = self.cfg.replica_lease(&self.cfg.identity);
        if self.may_write(&replica_name, now) {
            match &self.replica {
                Some(held) if now < held.claim.due(self.cfg.renew_every) => {}
                Some(held) => jobs.push(Job::Announce {
                    base: Some(held.lease.clone()),
                    renewing: true,
                }),
                None => jobs.push(Job::Announce {
                    base: self.seen.get(&replica_name).map(|seen| seen.lease.clone()),
                    renewing: false,
                }),
            }
        }
        let live = self.live(now);
        self.metrics
            .replicas_live
            .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
        let steps: BTreeMap<String, Step> = self
            .seen
            .iter()
            .filter_map(|(name, seen)| {
                let cluster = self.cfg.cluster_of(name)?;
                let spec = seen.lease.spec.clone().unwrap_or_default();
                let expired = seen.clock.expired_at(now);
                Some((cluster.to_owned(), step(&spec, &self.cfg.identity, expired)))
            })
            .collect();
        let claimed: BTreeSet<String> = self.clusters.keys().cloned().collect();
        let moves = decide(
            &self.cfg.identity,
            &live,
            &self.registered,
            &steps,
            &claimed,
        );
        for (cluster, action) in moves {
            let name = self.cfg.cluster_lease(&cluster);
            let seen = self.seen.get(&name).map(|seen| seen.lease.clone());
            match action {
                Move::Release => {
                    // Stop writing first (published below, before any release is sent).
                    let held = self.clusters.remove(&cluster).map(|held| held.lease);
                    if let Some(base) = held.or(seen)
                        && self.may_write(&name, now)
                    {
                        jobs.push(Job::Release { cluster, base });
                    }
                }
                Move::Take if self.may_write(&name, now) => {
                    jobs.push(Job::Take {
                        cluster,
                        base: seen,
                    });
                }
                Move::Renew if self.may_write(&name, now) => match self.clusters.get(&cluster) {
                    Some(held) if now < held.claim.due(self.cfg.renew_every) => {}
                    Some(held) => jobs.push(Job::Renew {
                        base: held.lease.clone(),
                        cluster,
                    }),
                    // Ours by its record, not by ours (a previous run under our identity): renew
                    // from the Lease as seen.
                    None => {
                        if let Some(base) = seen {
                            jobs.push(Job::Renew { cluster, base });
                        }
                    }
                },
                Move::Take | Move::Renew => {}
            }
        }
        jobs.extend(self.forgotten(&live, now));
        self.publish(now);
        if jobs.is_empty() {
            return;
        }
        let outcomes = self.write(jobs).await;
        for outcome in outcomes {
            self.settle(outcome);
        }
        self.publish(Instant::now());
    }

    /// Leases to delete: see `decide::forgettable`.
    fn forgotten(&self, live: &BTreeSet<String>, now: Instant) -> Vec<Job> {
        self.seen
            .iter()
            .filter(|(name, seen)| {
                let Some(expires) = seen.clock.deadline() else {
                    return false;
                };
                let cluster = self.cfg.cluster_of(name);
                let stale = Stale {
                    name,
                    cluster,
                    holder: seen.lease.spec.as_ref().and_then(holder),
                    expires,
                };
                let held = cluster.is_some_and(|c| self.clusters.contains_key(c));
                !held
                    && self.may_write(name, now)
                    && forgettable(
                        &stale,
                        &self.cfg.identity,
                        live,
                        &self.registered,
                        now,
                        self.cfg.forget_after,
                    )
            })
            // Never unconditionally: only the record we judged.
            .filter_map(|(name, seen)| {
                Some(Job::Forget {
                    name: name.clone(),
                    resource_version: seen.lease.resource_version()?,
                })
            })
            .collect()
    }

    fn may_write(&self, name: &str, now: Instant) -> bool {
        self.retry_at.get(name).is_none_or(|at| now >= *at)
    }

    /// Claims whose renew deadline has passed: we may no longer write there.
    fn drop_lapsed_claims(&mut self, now: Instant) {
        let deadline = self.cfg.renew_deadline;
        self.clusters.retain(|cluster, held| {
            let holds = held.claim.holds(now, deadline);
            if !holds {
                tracing::warn!(%cluster, "could not renew the cluster's Lease in time: stopped writing there");
            }
            holds
        });
    }

    /// Publishes the clusters whose claim holds at `now`.
    fn publish(&self, now: Instant) {
        let owned: BTreeSet<String> = self
            .clusters
            .iter()
            .filter(|(_, held)| held.claim.holds(now, self.cfg.renew_deadline))
            .map(|(cluster, _)| cluster.clone())
            .collect();
        let mut before = BTreeSet::new();
        let changed = self.owned.send_if_modified(|current| {
            if *current == owned {
                return false;
            }
            before = std::mem::replace(current, owned.clone());
            true
        });
        if changed {
            tracing::info!(identity = %self.cfg.identity, owned = ?owned, "clusters owned");
            self.metrics.owned_changed(&before, &owned);
        }
    }

    /// Makes the writes, a few at a time, each within its time budget.
    async fn write(&self, jobs: Vec<Job>) -> Vec<Outcome> {
        let writer = Writer {
            api: &self.api,
            identity: &self.cfg.identity,
            duration: self.cfg.lease_duration,
        };
        let writer = &writer;
        futures::stream::iter(jobs)
            .map(|job| async move {
                let sent = Instant::now();
                // A renewal must not outlive the claim it renews; no write may stall the loop.
                let budget = match &job {
                    Job::Renew { cluster, .. } => {
                        self.clusters
                            .get(cluster)
                            .map_or(self.cfg.renew_every, |held| {
                                held.claim
                                    .ends(self.cfg.renew_deadline)
                                    .saturating_duration_since(sent)
                                    .min(self.cfg.renew_every)
                            })
                    }
                    _ => self.cfg.renew_every,
                };
                let written = tokio::time::timeout(budget, self.execute(writer, &job)).await;
                let result = match written {
                    Ok(Ok(lease)) => Ok(lease),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", budget.as_millis())),
                };
                Outcome { job, sent, result }
            })
            .buffer_unordered(self.cfg.concurrent_writes.max(1))
            .collect()
            .await
    }

    async fn execute(&self, writer: &Writer<'_>, job: &Job) -> Result<Option<Lease>, kube::Error> {
        match job {
            Job::Announce {
                base: Some(base),
                renewing: true,
            } => writer.renew(base.clone()).await,
            // Our own name: whoever wrote it last (an earlier run under our identity), it is ours.
            Job::Announce { base, .. } => writer.take(self.replica_new(), base.clone()).await,
            Job::Take { cluster, base } => {
                let new = NewLease {
                    name: self.cfg.cluster_lease(cluster),
                    labels: self.cfg.labels("cluster", Some(cluster)),
                };
                writer.take(new, base.clone()).await
            }
            Job::Renew { base, .. } => writer.renew(base.clone()).await,
            Job::Release { base, .. } => writer.release(base.clone()).await,
            Job::Forget {
                name,
                resource_version,
            } => writer
                .delete(name, resource_version.clone())
                .await
                .map(|()| None),
        }
    }

    fn replica_new(&self) -> NewLease {
        NewLease {
            name: self.cfg.replica_lease(&self.cfg.identity),
            labels: self.cfg.labels("replica", None),
        }
    }

    /// Records how a write went.
    fn settle(&mut self, outcome: Outcome) {
        let Outcome { job, sent, result } = outcome;
        let claim = Claim { sent };
        let now = Instant::now();
        // After a failed or lost write, wait a little: a fresher view is on its way.
        let soon = now + self.cfg.renew_every / 5;
        let name = match &job {
            Job::Announce { .. } => self.cfg.replica_lease(&self.cfg.identity),
            Job::Take { cluster, .. }
            | Job::Renew { cluster, .. }
            | Job::Release { cluster, .. } => self.cfg.cluster_lease(cluster),
            Job::Forget { name, .. } => name.clone(),
        };
        if result.is_ok() {
            self.failures.remove(&name);
        }
        match (job, result) {
            (Job::Announce { .. }, Ok(Some(lease))) => {
                self.replica = Some(Held { claim, lease });
            }
            (Job::Announce { .. }, Ok(None)) => {
                self.replica = None;
                self.retry_at.insert(name, soon);
            }
            (Job::Take { cluster, .. } | Job::Renew { cluster, .. }, Ok(Some(lease))) => {
                self.retry_at.remove(&name);
                if !self.clusters.contains_key(&cluster) {
                    tracing::info!(%cluster, identity = %self.cfg.identity, "took the cluster's Lease");
                }
                self.clusters.insert(cluster, Held { claim, lease });
            }
            (Job::Take { .. }, Ok(None)) => {
                self.retry_at.insert(name, soon);
            }
            (Job::Renew { cluster, .. }, Ok(None)) => {
                if self.clusters.remove(&cluster).is_some() {
                    tracing::warn!(%cluster, "the cluster's Lease is no longer ours: stopped writing there");
                }
            }
            (Job::Release { cluster, .. }, Ok(_)) => {
                // Not again before the watch shows the release.
                self.retry_at.insert(name, soon);
                tracing::info!(%cluster, identity = %self.cfg.identity, "released the cluster's Lease");
            }
            (Job::Forget { .. }, Ok(_)) => {
                // Not again before the watch shows the deletion.
                self.retry_at.insert(name.clone(), soon);
                tracing::info!(lease = %name, "deleted a Lease nobody renews any more");
            }
            (job, Err(error)) => {
                let what = match job {
                    Job::Announce { .. } => "announce this replica",
                    Job::Take { .. } => "take a cluster's Lease",
                    Job::Renew { .. } => "renew a cluster's Lease",
                    Job::Release { .. } => "release a cluster's Lease",
                    Job::Forget { .. } => "delete a Lease nobody renews",
                };
                let failures = self.failures.entry(name.clone()).or_default();
                *failures = failures.saturating_add(1);
                let wait = backoff(self.cfg.renew_every / 5, *failures, self.cfg.lease_duration);
                tracing::warn!(lease = %name, %error, retry_in = ?wait, "could not {what}");
                self.retry_at.insert(name, now + wait);
            }
        }
    }

    /// When to look again: the next renewal, the end of a claim, another holder's Lease expiring, a
    /// write allowed again; at the latest one renewal period from now.
    fn next_wake(&self, now: Instant) -> Instant {
        let renewals = self
            .clusters
            .values()
            .chain(&self.replica)
            .flat_map(|held| {
                [
                    held.claim.due(self.cfg.renew_every),
                    held.claim.ends(self.cfg.renew_deadline),
                ]
            });
        let expiries = self.seen.values().filter_map(|seen| seen.clock.deadline());
        let soonest = renewals
            .chain(expiries)
            .filter(|at| *at > now)
            .chain(self.retry_at.values().copied().filter(|at| *at > now))
            .min();
        let latest = now + self.cfg.renew_every;
        soonest.map_or(latest, |at| at.min(latest))
    }

    /// On shutdown: stop writing everywhere, then release every Lease we hold so the others need not
    /// wait for expiry.
    async fn release_all(&mut self) {
        let mut held: BTreeMap<String, Lease> = std::mem::take(&mut self.clusters)
            .into_iter()
            .map(|(cluster, held)| (cluster, held.lease))
            .collect();
        self.publish(Instant::now());
        // Also what names us without our record of it (a take that timed out yet landed).
        for (name, seen) in &self.seen {
            if let Some(cluster) = self.cfg.cluster_of(name)
                && seen.lease.spec.as_ref().and_then(holder) == Some(self.cfg.identity.as_str())
                && !held.contains_key(cluster)
            {
                held.insert(cluster.to_owned(), seen.lease.clone());
            }
        }
        let jobs: Vec<Job> = held
            .into_iter()
            .map(|(cluster, base)| Job::Release { cluster, base })
            .collect();
        let replica = self.replica.take().map(|held| held.lease).or_else(|| {
            self.seen
                .get(&self.cfg.replica_lease(&self.cfg.identity))
                .map(|seen| seen.lease.clone())
        });
        self.retry_at.clear();
        for outcome in self.write(jobs).await {
            self.settle(outcome);
        }
        // The replica last: until its clusters are free, the others need not recompute.
        if let Some(base) = replica {
            let writer = Writer {
                api: &self.api,
                identity: &self.cfg.identity,
                duration: self.cfg.lease_duration,
            };
            match tokio::time::timeout(self.cfg.renew_every, writer.release(base)).await {
                Ok(Ok(_)) => {
                    tracing::info!(identity = %self.cfg.identity, "released this replica's Lease")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not release this replica's Lease; the others wait for it to expire")
                }
                Err(_) => tracing::warn!(
                    "releasing this replica's Lease timed out; the others wait for it to expire"
                ),
            }
        }
        self.metrics.replicas_live.set(0);
    }
}

/// `first` doubled for each failure after the first, at most `max`.
fn backoff(first: Duration, failures: u32, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    first.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_back_off_to_the_lease_duration() {
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(15));
        let waits: Vec<u64> = (1..=6).map(|n| backoff(first, n, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 15, 15]);
        assert_eq!(backoff(first, u32::MAX, max), max);
    }
}
