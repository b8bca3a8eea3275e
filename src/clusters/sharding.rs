//! Which replica writes to which downstream cluster: rendezvous (highest-random-weight) hashing of
//! the cluster id over the live replicas. Every replica computes the same answer from the same set of
//! live replicas, with no coordination beyond knowing who is alive; adding a replica moves only the
//! clusters that now hash highest to it, and removing one moves only its own. Pure.
//!
//! The weight is SHA-256, not `std`'s hasher: its keys are random per process, and every replica (of
//! any version) must agree.

use sha2::{Digest, Sha256};

/// The weight of `replica` for `cluster`.
fn weight(cluster: &str, replica: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(cluster.as_bytes())
        // A separator no DNS label holds, so ("ab", "c") and ("a", "bc") differ.
        .chain_update([0u8])
        .chain_update(replica.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The replica that owns `cluster` among `replicas`, or `None` when none is alive. Ties (equal
/// weights, in practice never) go to the smaller name, so the answer never depends on order.
pub fn owner<'a>(cluster: &str, replicas: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    replicas
        .into_iter()
        .map(|replica| (weight(cluster, replica), std::cmp::Reverse(replica)))
        .max()
        .map(|(_, std::cmp::Reverse(replica))| replica)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn clusters(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c-{i:04}")).collect()
    }

    fn owners<'a>(clusters: &[String], replicas: &[&'a str]) -> BTreeMap<String, &'a str> {
        clusters
            .iter()
            .map(|c| (c.clone(), owner(c, replicas.iter().copied()).unwrap()))
            .collect()
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_replicas_are_listed_in() {
        let forward = ["scoped-secrets-a", "scoped-secrets-b", "scoped-secrets-c"];
        let mut backward = forward;
        backward.reverse();
        for cluster in clusters(100) {
            assert_eq!(owner(&cluster, forward), owner(&cluster, backward));
        }
        assert_eq!(owner("c-abc123", []), None);
    }

    #[test]
    fn a_new_replica_takes_only_clusters_that_move_to_it() {
        let all = clusters(600);
        let before = owners(&all, &["r-1", "r-2", "r-3"]);
        let after = owners(&all, &["r-1", "r-2", "r-3", "r-4"]);
        let moved: Vec<_> = all.iter().filter(|c| before[*c] != after[*c]).collect();
        assert!(
            moved.iter().all(|c| after[*c] == "r-4"),
            "only to the new replica"
        );
        // About a quarter moves: the new replica's fair share, not a reshuffle.
        assert!((100..=200).contains(&moved.len()), "{} moved", moved.len());
    }

    #[test]
    fn a_lost_replica_gives_up_only_its_own_clusters_and_they_spread() {
        let all = clusters(600);
        let before = owners(&all, &["r-1", "r-2", "r-3"]);
        let after = owners(&all, &["r-1", "r-3"]);
        for cluster in &all {
            if before[cluster] != "r-2" {
                assert_eq!(
                    before[cluster], after[cluster],
                    "{cluster} moved without cause"
                );
            }
        }
        let taken_by_r1 = all
            .iter()
            .filter(|c| before[*c] == "r-2" && after[*c] == "r-1")
            .count();
        let orphaned = all.iter().filter(|c| before[*c] == "r-2").count();
        assert!(
            taken_by_r1 > orphaned / 4 && taken_by_r1 < orphaned * 3 / 4,
            "{taken_by_r1} of {orphaned}"
        );
    }

    #[test]
    fn clusters_spread_evenly_over_replicas() {
        let all = clusters(900);
        let owned = owners(&all, &["r-1", "r-2", "r-3"]);
        for replica in ["r-1", "r-2", "r-3"] {
            let n = owned.values().filter(|r| **r == replica).count();
            assert!((240..=360).contains(&n), "{replica} owns {n} of 900");
        }
    }
}
