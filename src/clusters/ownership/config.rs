//! Where the ownership Leases live, their names, and the timings.

use super::writes::{LEASE_CLUSTER_LABEL, LEASE_KIND_LABEL};
use crate::clusters::credentials::check_cluster_id;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Where the Leases live, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// The product's namespace (the leader-election Lease lives there too).
    pub namespace: String,
    /// This replica's identity (the pod name, unique per replica).
    pub identity: String,
    /// The Leases' name prefix: one set of replicas shares one (tests run several sets side by side).
    pub prefix: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// We stop writing to a cluster whose Lease we could not renew for this long (less than the
    /// lease duration, so we have stopped before another replica may take it over).
    pub renew_deadline: Duration,
    /// How often held Leases are renewed.
    pub renew_every: Duration,
    /// Lease writes in flight at once (renewing hundreds of clusters one by one takes too long).
    pub concurrent_writes: usize,
    /// A replica Lease, or the Lease of a cluster no longer registered, that has stood still this
    /// long past its expiry is deleted (every restarted pod has a new name: without this, the Leases
    /// of pods long gone would pile up).
    pub forget_after: Duration,
}

impl OwnershipConfig {
    /// Lease duration 15 s, renew deadline 10 s, renewal every 5 s (the leader election's timings).
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            prefix: crate::reconciler::CONTROLLER_NAME.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(5),
            concurrent_writes: 16,
            forget_after: Duration::from_secs(3600),
        }
    }

    /// The same proportions for another lease duration (whole seconds, at least 3): renew deadline
    /// at two thirds, renewal every third.
    pub fn with_lease_duration(mut self, duration: Duration) -> Self {
        let duration = Duration::from_secs(duration.as_secs().max(3));
        self.lease_duration = duration;
        self.renew_deadline = duration * 2 / 3;
        self.renew_every = duration / 3;
        self
    }

    /// The name of the replica Lease of `identity`: a hash, since an identity need not fit a name.
    pub fn replica_lease(&self, identity: &str) -> String {
        let digest = Sha256::digest(identity.as_bytes());
        let mut name = format!("{}-replica-", self.prefix);
        for byte in &digest[..8] {
            let _ = write!(name, "{byte:02x}");
        }
        name
    }

    /// The name of the Lease of cluster `cluster` (a DNS label, so the name is a valid one).
    pub fn cluster_lease(&self, cluster: &str) -> String {
        format!("{}-cluster-{cluster}", self.prefix)
    }

    pub(super) fn cluster_of<'a>(&self, lease: &'a str) -> Option<&'a str> {
        lease
            .strip_prefix(&self.prefix)?
            .strip_prefix("-cluster-")
            .filter(|id| check_cluster_id(id).is_ok())
    }

    pub(super) fn is_replica_lease(&self, lease: &str) -> bool {
        lease
            .strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with("-replica-"))
    }

    pub(super) fn labels(&self, kind: &str, cluster: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([(LEASE_KIND_LABEL.to_owned(), kind.to_owned())]);
        if let Some(cluster) = cluster {
            labels.insert(LEASE_CLUSTER_LABEL.to_owned(), cluster.to_owned());
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_valid_and_tell_replicas_from_clusters() {
        let cfg = OwnershipConfig::new("ns", "scoped-secrets-7d9f8b6c5-x2x4q");
        let replica = cfg.replica_lease(&cfg.identity);
        assert!(replica.starts_with("scoped-secrets-replica-") && replica.len() <= 63);
        assert_ne!(replica, cfg.replica_lease("scoped-secrets-7d9f8b6c5-x2x4r"));
        assert!(cfg.is_replica_lease(&replica) && cfg.cluster_of(&replica).is_none());
        let cluster = cfg.cluster_lease("c-abc123");
        assert_eq!(cluster, "scoped-secrets-cluster-c-abc123");
        assert_eq!(cfg.cluster_of(&cluster), Some("c-abc123"));
        assert!(!cfg.is_replica_lease(&cluster));
        // The leader election's Lease and other prefixes are not ours.
        assert!(
            cfg.cluster_of("scoped-secrets").is_none() && !cfg.is_replica_lease("scoped-secrets")
        );
        assert!(cfg.cluster_of("other-cluster-c-abc123").is_none());
    }

    #[test]
    fn timings_keep_their_order() {
        for cfg in [
            OwnershipConfig::new("ns", "me"),
            OwnershipConfig::new("ns", "me").with_lease_duration(Duration::from_secs(4)),
            OwnershipConfig::new("ns", "me").with_lease_duration(Duration::from_millis(10)),
        ] {
            assert!(
                cfg.renew_every < cfg.renew_deadline && cfg.renew_deadline < cfg.lease_duration,
                "{cfg:?}"
            );
        }
    }
}
