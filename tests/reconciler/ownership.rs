//! Spreading downstream clusters over replicas with Leases (issue #11, item 7), against the real
//! apiserver as the product's service account (so `deploy/`'s Role is what allows the Lease writes).
//! Each replica is `clusters::ownership::run` on a runtime of its own; a crash is that runtime dropped
//! with `shutdown_background()`, so nothing is released. Each test has its own Lease prefix, so the
//! tests of this binary never see each other's replicas; each still runs alone (`serial()`), since
//! its cluster registrations are secret writes, which other tests count at the apiserver.
//!
//! "Never owned by two replicas at once" is checked on every poll by reading the replicas' `owned`
//! sets one after the other: a handover needs at least an apiserver round trip (a release, then a
//! take), far longer than the reads.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use scoped_secrets::clusters::ownership::{self, OwnershipConfig, OwnershipMetrics};
use scoped_secrets::clusters::sharding;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use testbed::harness::*;
use testbed::prelude::*;
use tokio::sync::watch;

/// One replica: `ownership::run` on its own runtime (one worker thread of its own).
struct Replica {
    identity: String,
    owned: watch::Receiver<BTreeSet<String>>,
    stop: watch::Sender<bool>,
    registered: watch::Sender<BTreeSet<String>>,
    registry: Registry,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    fn start(cfg: OwnershipConfig, clusters: &BTreeSet<String>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(cfg.identity.clone())
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime
            .block_on(client(&env().sa_kubeconfig))
            .expect("a client for the service account");
        let (registered_tx, registered) = watch::channel(clusters.clone());
        let (owned_tx, owned) = watch::channel(BTreeSet::new());
        let (stop, stopped) = watch::channel(false);
        let mut registry = Registry::default();
        let metrics = OwnershipMetrics::register(&mut registry);
        let identity = cfg.identity.clone();
        let task = runtime.spawn(ownership::run(
            client, cfg, registered, owned_tx, metrics, stopped,
        ));
        Self {
            identity,
            owned,
            stop,
            registered: registered_tx,
            registry,
            task: Some(task),
            runtime: Some(runtime),
        }
    }

    /// What the registrations say now.
    fn register(&self, clusters: &BTreeSet<String>) {
        self.registered.send_replace(clusters.clone());
    }

    fn owned(&self) -> BTreeSet<String> {
        self.owned.borrow().clone()
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("metrics encode");
        text
    }

    /// A crash: the runtime goes away with every task in it, nothing is released.
    fn crash(mut self) {
        self.task = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// A graceful stop: `run` must return (having released its Leases) within `within`.
    fn stop(mut self, within: Duration) {
        self.stop.send_replace(true);
        let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) else {
            return;
        };
        runtime
            .block_on(async { tokio::time::timeout(within, task).await })
            .expect("run returns after shutdown")
            .expect("run did not panic");
        runtime.shutdown_background();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A test that failed half-way: stop releasing nothing, quietly.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Unused Leases are deleted this long after they expire.
const FORGET_AFTER: Duration = Duration::from_secs(2);

/// A test's Lease prefix, identities and config: lease duration `lease`.
fn config(prefix: &str, identity: &str, lease: Duration) -> OwnershipConfig {
    let mut cfg = OwnershipConfig::new(LEASE_NAMESPACE, identity).with_lease_duration(lease);
    cfg.prefix = prefix.to_owned();
    cfg.forget_after = FORGET_AFTER;
    cfg
}

/// Whether Lease `name` exists.
fn lease_exists(name: &str) -> bool {
    let listed = ok(kubectl(&[
        "get",
        "leases",
        "-n",
        LEASE_NAMESPACE,
        "--field-selector",
        &format!("metadata.name={name}"),
        "-o",
        "name",
    ]));
    !listed.trim().is_empty()
}

/// The rendezvous owner of `cluster` among `replicas`.
fn owner_among(cluster: &str, replicas: &[impl AsRef<str>]) -> String {
    sharding::owner(cluster, replicas.iter().map(AsRef::as_ref))
        .expect("some replica")
        .to_owned()
}

/// Cluster ids, one for each wanted (owner among `before`, owner among `after`) pair, so every test
/// has clusters on every replica whatever the identities hash to.
fn clusters_for(wanted: &[(&str, &str)], before: &[&str], after: &[&str]) -> BTreeSet<String> {
    let mut chosen = BTreeSet::new();
    for (was, will) in wanted {
        let cluster = (0..)
            .map(|i| format!("c-{i}"))
            .find(|c| {
                !chosen.contains(c)
                    && owner_among(c, before) == *was
                    && owner_among(c, after) == *will
            })
            .expect("a cluster id hashing so");
        chosen.insert(cluster);
    }
    chosen
}

/// Who owns each cluster now, by the replicas' `owned` sets; fails if any cluster has two owners.
#[track_caller]
fn owners(replicas: &[&Replica]) -> BTreeMap<String, String> {
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for replica in replicas {
        for cluster in replica.owned() {
            if let Some(other) = owners.insert(cluster.clone(), replica.identity.clone()) {
                panic!(
                    "{cluster} owned by {other} and {} at once",
                    replica.identity
                );
            }
        }
    }
    owners
}

/// The expected owner of every cluster among `replicas`.
fn expected(clusters: &BTreeSet<String>, replicas: &[impl AsRef<str>]) -> BTreeMap<String, String> {
    clusters
        .iter()
        .map(|c| (c.clone(), owner_among(c, replicas)))
        .collect()
}

/// The holder of each of this test's cluster Leases, as `kubectl` shows them (empty: no holder).
fn lease_holders(cfg: &OwnershipConfig, clusters: &BTreeSet<String>) -> BTreeMap<String, String> {
    let listed = ok(kubectl(&[
        "get",
        "leases",
        "-n",
        LEASE_NAMESPACE,
        "-l",
        ownership::LEASE_KIND_LABEL,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity}{\"\\n\"}{end}",
    ]));
    let holders: BTreeMap<&str, &str> = listed
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    clusters
        .iter()
        .filter_map(|c| {
            let holder = holders.get(cfg.cluster_lease(c).as_str())?;
            Some((c.clone(), (*holder).to_owned()))
        })
        .collect()
}

fn replica_lease_holder(cfg: &OwnershipConfig, identity: &str) -> String {
    ok(kubectl(&[
        "get",
        "lease",
        &cfg.replica_lease(identity),
        "-n",
        LEASE_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]))
}

/// Starts one replica per identity and waits until the clusters are spread as hashing says, in
/// the replicas' `owned` sets and in the Lease objects.
fn start_all(
    prefix: &str,
    identities: &[impl AsRef<str>],
    clusters: &BTreeSet<String>,
    lease: Duration,
) -> Vec<Replica> {
    let replicas: Vec<Replica> = identities
        .iter()
        .map(|id| Replica::start(config(prefix, id.as_ref(), lease), clusters))
        .collect();
    let want = expected(clusters, identities);
    let refs: Vec<&Replica> = replicas.iter().collect();
    eventually("every cluster owned by its rendezvous owner", WAIT, || {
        (owners(&refs) == want).then_some(())
    });
    let cfg = config(prefix, "reader", lease);
    leases_held_as(
        "every cluster Lease held by its owner",
        &cfg,
        clusters,
        &refs,
        &want,
    );
    replicas
}

/// Waits until this test's Leases of `clusters` are held as `want` says, checking on every poll that
/// no cluster is owned by two of `replicas`.
#[track_caller]
fn leases_held_as(
    what: &str,
    cfg: &OwnershipConfig,
    clusters: &BTreeSet<String>,
    replicas: &[&Replica],
    want: &BTreeMap<String, String>,
) {
    eventually(what, WAIT, || {
        owners(replicas);
        (lease_holders(cfg, clusters) == *want).then_some(())
    });
}

/// The Lease duration of these tests, unless one needs another.
const LEASE: Duration = Duration::from_secs(6);

/// Three replicas with a Lease prefix of their own (`test`, made unique), `<prefix>-a`, `-b` and
/// `-c`, started with two clusters hashing to each and waited for as [`start_all`] does. Returns
/// their identities, the clusters, the replicas, and a config of the prefix that names its Leases.
fn three_replicas_with_two_clusters_each(
    test: &str,
    lease: Duration,
) -> ([String; 3], BTreeSet<String>, Vec<Replica>, OwnershipConfig) {
    let prefix = unique(test);
    let ids = ["a", "b", "c"].map(|r| format!("{prefix}-{r}"));
    let refs = ids.each_ref().map(String::as_str);
    let pairs: Vec<(&str, &str)> = refs.iter().flat_map(|r| [(*r, *r), (*r, *r)]).collect();
    let clusters = clusters_for(&pairs, &refs, &refs);
    let replicas = start_all(&prefix, &ids, &clusters, lease);
    (ids, clusters, replicas, config(&prefix, "reader", lease))
}

/// Stops every replica gracefully.
fn stop_all(replicas: Vec<Replica>) {
    for replica in replicas {
        replica.stop(Duration::from_secs(10));
    }
}

#[test]
fn three_replicas_own_six_clusters_each_exactly_once() {
    let _turn = serial();
    let (ids, clusters, replicas, cfg) = three_replicas_with_two_clusters_each("own-spread", LEASE);

    // The metrics say the same: each replica reports its own clusters, and sees all three.
    for replica in &replicas {
        eventually(
            &format!("the metrics of {}", replica.identity),
            WAIT,
            || {
                let text = replica.metrics_text();
                let right = clusters.iter().all(|cluster| {
                    let series = format!("scoped_secrets_cluster_owned{{cluster=\"{cluster}\"}} 1");
                    text.contains(&series) == (owner_among(cluster, &ids) == replica.identity)
                });
                (right && text.contains("scoped_secrets_replicas_live 3")).then_some(())
            },
        );
    }

    // A registration removed: no replica owns the cluster any more, and its Lease goes once unused.
    let gone = clusters.first().expect("six clusters").clone();
    let kept: BTreeSet<String> = clusters.iter().filter(|c| **c != gone).cloned().collect();
    for replica in &replicas {
        replica.register(&kept);
    }
    let refs: Vec<&Replica> = replicas.iter().collect();
    let want = expected(&kept, &ids);
    eventually("the removed cluster owned by nobody", WAIT, || {
        (owners(&refs) == want).then_some(())
    });
    eventually("the removed cluster's Lease deleted", WAIT, || {
        owners(&refs);
        (!lease_exists(&cfg.cluster_lease(&gone))).then_some(())
    });
    assert_eq!(lease_holders(&cfg, &kept), want, "the other Leases stay");
    stop_all(replicas);
}

#[test]
fn a_crashed_replicas_clusters_are_taken_over_within_the_lease_duration() {
    let _turn = serial();
    let (ids, clusters, mut replicas, cfg) =
        three_replicas_with_two_clusters_each("own-crash", LEASE);

    let crashed = replicas.remove(1);
    let orphans = crashed.owned();
    assert_eq!(
        orphans.len(),
        2,
        "the crashed replica held its two clusters"
    );
    let crashed_at = Instant::now();
    crashed.crash();

    let survivors = [&ids[0], &ids[2]];
    let want = expected(&clusters, &survivors);
    let refs: Vec<&Replica> = replicas.iter().collect();
    eventually(
        "the crashed replica's clusters owned by the survivors",
        LEASE + Duration::from_secs(5),
        || (owners(&refs) == want).then_some(()),
    );
    let took = crashed_at.elapsed();
    eprintln!("a crashed replica's clusters taken over after {took:?} (lease {LEASE:?})");
    assert!(
        took >= LEASE / 2,
        "taken over after {took:?}: before the crashed replica's Leases could have expired"
    );
    leases_held_as(
        "the Leases name the survivors",
        &cfg,
        &clusters,
        &refs,
        &want,
    );
    // Nobody renews the crashed replica's Lease: it is deleted once unused; the survivors' stay.
    let crashed_lease = cfg.replica_lease(&ids[1]);
    eventually("the crashed replica's Lease deleted", WAIT, || {
        owners(&refs);
        (!lease_exists(&crashed_lease)).then_some(())
    });
    for id in survivors {
        assert!(lease_exists(&cfg.replica_lease(id)), "{id}'s Lease");
    }
    stop_all(replicas);
}

#[test]
fn a_joining_replica_takes_only_the_clusters_that_hash_to_it() {
    let _turn = serial();
    let prefix = unique("own-join");
    let all = ["a", "b", "c", "d"].map(|r| format!("{prefix}-{r}"));
    let after: Vec<&str> = all.iter().map(String::as_str).collect();
    let before = &after[..3];
    let (a, b, c, d) = (after[0], after[1], after[2], after[3]);
    let clusters = clusters_for(
        &[(a, a), (b, b), (c, c), (a, d), (b, d), (c, c)],
        before,
        &after,
    );
    let mut replicas = start_all(&prefix, before, &clusters, LEASE);
    let was = expected(&clusters, before);
    let want = expected(&clusters, &after);

    let joined_at = Instant::now();
    replicas.push(Replica::start(config(&prefix, d, LEASE), &clusters));
    let refs: Vec<&Replica> = replicas.iter().collect();
    eventually("the new replica owns what hashes to it", WAIT, || {
        let now = owners(&refs);
        // A cluster that does not move to the new replica is never owned by anyone else.
        for (cluster, owner) in &now {
            if want[cluster] != d {
                assert_eq!(owner, &was[cluster], "{cluster} moved without cause");
            }
        }
        (now == want).then_some(())
    });
    // Released at once, not left to expire.
    let took = joined_at.elapsed();
    eprintln!("clusters moved to a joining replica after {took:?} (lease {LEASE:?})");
    assert!(took < LEASE, "moved after {took:?}");
    let cfg = config(&prefix, "reader", LEASE);
    leases_held_as(
        "the Leases name the new owners",
        &cfg,
        &clusters,
        &refs,
        &want,
    );
    stop_all(replicas);
}

#[test]
fn a_replica_that_stops_releases_its_leases_and_the_others_take_over_quickly() {
    let _turn = serial();
    // Long enough that a takeover well inside it can only come from a release.
    let lease = Duration::from_secs(12);
    let (ids, clusters, mut replicas, cfg) =
        three_replicas_with_two_clusters_each("own-stop", lease);

    let stopping = replicas.remove(1);
    let stopping_id = stopping.identity.clone();
    let owned_rx = stopping.owned.clone();
    let stopped_at = Instant::now();
    stopping.stop(Duration::from_secs(10));
    assert!(owned_rx.borrow().is_empty(), "nothing owned after stopping");
    assert_eq!(
        replica_lease_holder(&cfg, &stopping_id),
        "",
        "the replica Lease shows no holder"
    );

    let survivors = [&ids[0], &ids[2]];
    let want = expected(&clusters, &survivors);
    let refs: Vec<&Replica> = replicas.iter().collect();
    eventually("the survivors own every cluster", lease / 3, || {
        (owners(&refs) == want).then_some(())
    });
    let took = stopped_at.elapsed();
    eprintln!("a stopped replica's clusters taken over after {took:?} (lease {lease:?})");
    assert!(took < lease / 2, "taken over after {took:?}");
    assert_eq!(lease_holders(&cfg, &clusters), want);
    stop_all(replicas);
}
