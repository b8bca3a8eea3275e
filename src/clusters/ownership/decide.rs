//! What a replica does with each cluster's Lease, given what it sees: pure, so every rule is tested
//! without an apiserver.
//!
//! A cluster belongs to the rendezvous owner among the live replicas (`sharding::owner`). The owner
//! takes the cluster's Lease when it is absent, free or expired, and renews it while it holds it; any
//! other holder releases it, so a replica that joins gets its clusters without waiting for expiry.
//! Views differ for a moment between replicas (each sees a replica come or go when its own clock
//! says so); the Lease's resourceVersion precondition settles such moments, and the views agree
//! again within a lease duration.

use crate::clusters::sharding;
use crate::coordination::Step;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What to do with one cluster's Lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// We own it by hashing and nobody holds it (absent, free or expired): take it.
    Take,
    /// We own it and hold it: keep renewing.
    Renew,
    /// We hold it but it is not ours (any more): stop writing, then release it.
    Release,
}

/// The live replicas: ourselves, and every holder of a replica Lease that has not expired.
pub fn live_replicas<'a>(
    identity: &str,
    replica_leases: impl IntoIterator<Item = (Option<&'a str>, bool)>,
) -> BTreeSet<String> {
    replica_leases
        .into_iter()
        .filter(|(_, expired)| !expired)
        .filter_map(|(holder, _)| holder)
        .chain([identity])
        .map(str::to_owned)
        .collect()
}

/// Each cluster's move. `steps` is the coordination step of each cluster's Lease as seen (a cluster
/// without a Lease is absent), `claimed` the clusters whose Lease we hold by our own record.
/// Clusters with nothing to do are left out.
pub fn decide(
    identity: &str,
    live: &BTreeSet<String>,
    registered: &BTreeSet<String>,
    steps: &BTreeMap<String, Step>,
    claimed: &BTreeSet<String>,
) -> BTreeMap<String, Move> {
    let seen_as_ours = steps
        .iter()
        .filter(|(_, step)| **step == Step::Renew)
        .map(|(cluster, _)| cluster);
    let candidates: BTreeSet<&String> = registered
        .iter()
        .chain(claimed)
        .chain(seen_as_ours)
        .collect();
    candidates
        .into_iter()
        .filter_map(|cluster| {
            let step = steps.get(cluster).copied();
            let ours = claimed.contains(cluster) || step == Some(Step::Renew);
            let owner = registered.contains(cluster)
                && sharding::owner(cluster, live.iter().map(String::as_str)) == Some(identity);
            let action = match (owner, ours, step) {
                (true, true, _) => Move::Renew,
                (true, false, None | Some(Step::TakeOver)) => Move::Take,
                (false, true, _) => Move::Release,
                (true, false, Some(Step::Follow | Step::Renew)) | (false, false, _) => return None,
            };
            Some((cluster.clone(), action))
        })
        .collect()
}

/// One of our Leases as the forgetting rule sees it.
pub struct Stale<'a> {
    pub name: &'a str,
    /// The cluster it belongs to; `None` for a replica Lease.
    pub cluster: Option<&'a str>,
    pub holder: Option<&'a str>,
    /// When its record (as last seen) expires unless it changes.
    pub expires: Instant,
}

/// Whether we delete a Lease nobody needs any more: a replica Lease, or the Lease of a cluster no
/// longer registered, that has stood still for `forget_after` past its expiry (a replica that died
/// or stopped; every restarted pod has a new name). Never one we hold. Of the live replicas, only
/// the rendezvous owner of the Lease's name deletes it, so they do not all race for it.
pub fn forgettable(
    lease: &Stale<'_>,
    identity: &str,
    live: &BTreeSet<String>,
    registered: &BTreeSet<String>,
    now: Instant,
    forget_after: Duration,
) -> bool {
    let unneeded = lease
        .cluster
        .is_none_or(|cluster| !registered.contains(cluster));
    unneeded
        && lease.holder != Some(identity)
        && now >= lease.expires + forget_after
        && sharding::owner(lease.name, live.iter().map(String::as_str)) == Some(identity)
}

/// Our hold on one Lease, by our own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// When the last successful take or renewal was sent: the apiserver may have recorded it any
    /// time after, so the claim counts from here.
    pub sent: Instant,
}

impl Claim {
    /// Whether we may still write as the holder at `now`: until the renew deadline, which is shorter
    /// than the lease duration, so we have stopped before anyone else may take the Lease over.
    pub fn holds(&self, now: Instant, renew_deadline: Duration) -> bool {
        now < self.ends(renew_deadline)
    }

    pub fn ends(&self, renew_deadline: Duration) -> Instant {
        self.sent + renew_deadline
    }

    /// When the next renewal is due.
    pub fn due(&self, renew_every: Duration) -> Instant {
        self.sent + renew_every
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A cluster id that hashes to `replica` among `live`.
    fn cluster_of(replica: &str, live: &BTreeSet<String>) -> String {
        (0..)
            .map(|i| format!("c-{i}"))
            .find(|c| sharding::owner(c, live.iter().map(String::as_str)) == Some(replica))
            .unwrap()
    }

    #[test]
    fn live_replicas_are_ourselves_and_the_unexpired_holders() {
        let live = live_replicas(
            "me",
            [
                (Some("a"), false),
                (Some("b"), true),
                (None, false),
                (Some("me"), true),
            ],
        );
        assert_eq!(live, set(&["a", "me"]));
    }

    #[test]
    fn the_owner_takes_an_absent_free_or_expired_lease_and_waits_for_a_held_one() {
        let live = set(&["me", "other"]);
        let mine = cluster_of("me", &live);
        let registered = set(&[&mine]);
        let none = BTreeSet::new();
        for (step, expected) in [
            (None, Some(Move::Take)),
            (Some(Step::TakeOver), Some(Move::Take)),
            (Some(Step::Follow), None),
            (Some(Step::Renew), Some(Move::Renew)),
        ] {
            let steps: BTreeMap<_, _> = step.map(|s| (mine.clone(), s)).into_iter().collect();
            let moves = decide("me", &live, &registered, &steps, &none);
            assert_eq!(moves.get(&mine).copied(), expected, "{step:?}");
        }
        // Our own record counts even before the watch shows our write.
        let steps = BTreeMap::from([(mine.clone(), Step::Follow)]);
        let moves = decide("me", &live, &registered, &steps, &set(&[&mine]));
        assert_eq!(moves[&mine], Move::Renew);
    }

    #[test]
    fn a_cluster_of_another_replica_is_never_taken_and_released_if_held() {
        let live = set(&["me", "other"]);
        let theirs = cluster_of("other", &live);
        let registered = set(&[&theirs]);
        for step in [None, Some(Step::TakeOver), Some(Step::Follow)] {
            let steps: BTreeMap<_, _> = step.map(|s| (theirs.clone(), s)).into_iter().collect();
            let moves = decide("me", &live, &registered, &steps, &BTreeSet::new());
            assert!(moves.is_empty(), "{step:?}: {moves:?}");
        }
        // Held by our record, or seen as ours: it moved to the other replica, so we let go.
        let moves = decide("me", &live, &registered, &BTreeMap::new(), &set(&[&theirs]));
        assert_eq!(moves[&theirs], Move::Release);
        let steps = BTreeMap::from([(theirs.clone(), Step::Renew)]);
        let moves = decide("me", &live, &registered, &steps, &BTreeSet::new());
        assert_eq!(moves[&theirs], Move::Release);
    }

    #[test]
    fn a_cluster_no_longer_registered_is_released_and_never_taken() {
        let live = set(&["me"]);
        let steps = BTreeMap::from([("c-gone".to_owned(), Step::TakeOver)]);
        let moves = decide("me", &live, &BTreeSet::new(), &steps, &BTreeSet::new());
        assert!(moves.is_empty());
        let moves = decide(
            "me",
            &live,
            &BTreeSet::new(),
            &BTreeMap::new(),
            &set(&["c-gone"]),
        );
        assert_eq!(moves["c-gone"], Move::Release);
    }

    #[test]
    fn a_joining_replica_is_given_exactly_the_clusters_that_hash_to_it() {
        let before = set(&["r-1", "r-2", "r-3"]);
        let after = set(&["r-1", "r-2", "r-3", "r-4"]);
        let registered: BTreeSet<String> = (0..200).map(|i| format!("c-{i}")).collect();
        let held_by = |live: &BTreeSet<String>, replica: &str| -> BTreeSet<String> {
            registered
                .iter()
                .filter(|c| sharding::owner(c, live.iter().map(String::as_str)) == Some(replica))
                .cloned()
                .collect()
        };
        for replica in ["r-1", "r-2", "r-3"] {
            let claimed = held_by(&before, replica);
            let moves = decide(replica, &after, &registered, &BTreeMap::new(), &claimed);
            for (cluster, action) in moves {
                let owner_after = sharding::owner(&cluster, after.iter().map(String::as_str));
                match action {
                    Move::Release => assert_eq!(owner_after, Some("r-4"), "{cluster}"),
                    Move::Renew => assert_eq!(owner_after, Some(replica), "{cluster}"),
                    // Every cluster is held by someone: a take would only be of an orphan.
                    Move::Take => panic!("{replica} takes {cluster}, which it did not hold"),
                }
            }
        }
    }

    #[test]
    fn a_claim_stops_at_the_renew_deadline() {
        let sent = Instant::now();
        let claim = Claim { sent };
        let deadline = Duration::from_secs(10);
        assert!(claim.holds(sent + Duration::from_secs(9), deadline));
        assert!(!claim.holds(sent + deadline, deadline));
        assert_eq!(
            claim.due(Duration::from_secs(5)),
            sent + Duration::from_secs(5)
        );
    }

    #[test]
    fn only_unneeded_leases_long_past_expiry_are_forgotten_by_one_replica() {
        let now = Instant::now();
        let after = Duration::from_secs(60);
        let live = set(&["me", "other"]);
        let registered = set(&["c-kept"]);
        // Names that hash to us, and one that hashes to the other replica.
        let name_of = |replica: &str, stem: &str| {
            (0..)
                .map(|i| format!("{stem}-{i}"))
                .find(|n| sharding::owner(n, live.iter().map(String::as_str)) == Some(replica))
                .unwrap()
        };
        let (mine, theirs) = (name_of("me", "lease"), name_of("other", "lease"));
        let long_ago = now - Duration::from_secs(61);
        fn lease<'a>(
            name: &'a str,
            cluster: Option<&'a str>,
            holder: Option<&'a str>,
            expires: Instant,
        ) -> Stale<'a> {
            Stale {
                name,
                cluster,
                holder,
                expires,
            }
        }
        let (mine, theirs) = (mine.as_str(), theirs.as_str());
        let forget = |l: &Stale<'_>| forgettable(l, "me", &live, &registered, now, after);
        assert!(forget(&lease(mine, None, Some("dead"), long_ago)));
        assert!(forget(&lease(mine, None, None, long_ago)));
        assert!(forget(&lease(mine, Some("c-gone"), None, long_ago)));
        assert!(
            !forget(&lease(theirs, None, Some("dead"), long_ago)),
            "the other replica's to delete"
        );
        assert!(
            !forget(&lease(mine, Some("c-kept"), None, long_ago)),
            "a registered cluster's"
        );
        assert!(!forget(&lease(mine, None, Some("me"), long_ago)), "our own");
        assert!(
            !forget(&lease(
                mine,
                None,
                Some("dead"),
                now - Duration::from_secs(59)
            )),
            "too recent"
        );
    }

    proptest! {
        /// With one view of the live replicas and of the Leases, at most one replica writes (takes or
        /// renews) each cluster: the hashing gives it one owner, and the owner alone acts.
        #[test]
        fn replicas_that_see_alike_never_both_act_on_a_cluster(
            replicas in proptest::collection::btree_set("r-[a-z]{1,4}", 1..5),
            clusters in proptest::collection::btree_set("c-[a-z0-9]{1,6}", 1..20),
            holders in proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>(), any::<bool>()), 20),
        ) {
            let replicas: Vec<String> = replicas.into_iter().collect();
            let live: BTreeSet<String> = replicas.iter().cloned().collect();
            // Each cluster's Lease: absent, or held by some replica (maybe expired).
            let held: BTreeMap<String, (String, bool)> = clusters
                .iter()
                .zip(&holders)
                .filter(|(_, (_, present, _))| *present)
                .map(|(c, (which, _, expired))| (c.clone(), (which.get(&replicas).clone(), *expired)))
                .collect();
            let mut writers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for replica in &replicas {
                let steps: BTreeMap<String, Step> = held
                    .iter()
                    .map(|(c, (holder, expired))| {
                        let step = if holder == replica {
                            Step::Renew
                        } else if *expired {
                            Step::TakeOver
                        } else {
                            Step::Follow
                        };
                        (c.clone(), step)
                    })
                    .collect();
                for (cluster, action) in decide(replica, &live, &clusters, &steps, &BTreeSet::new()) {
                    if action != Move::Release {
                        writers.entry(cluster).or_default().push(replica.clone());
                    }
                }
            }
            for (cluster, who) in writers {
                prop_assert_eq!(who.len(), 1, "{} written by {:?}", cluster, who);
            }
        }
    }
}
