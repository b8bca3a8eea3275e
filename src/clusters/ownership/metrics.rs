//! Who owns what, as metrics.

use crate::metrics::registered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

/// Who owns what: `scoped_secrets_cluster_owned{cluster}` is 1 for each cluster this replica holds
/// (summed over the replicas, 1 per registered cluster), `scoped_secrets_replicas_live` how many
/// replicas this one sees alive (itself included).
#[derive(Clone, Default)]
pub struct OwnershipMetrics {
    owned: Family<ClusterLabels, Gauge>,
    pub(super) replicas_live: Gauge,
}

impl OwnershipMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            owned: registered(
                registry,
                "scoped_secrets_cluster_owned",
                "1 for each downstream cluster whose Lease this replica holds: it alone writes there",
            ),
            replicas_live: registered(
                registry,
                "scoped_secrets_replicas_live",
                "Replicas this one sees alive (unexpired replica Leases, itself included)",
            ),
        }
    }

    pub(super) fn owned_changed(&self, before: &BTreeSet<String>, after: &BTreeSet<String>) {
        for cluster in before.difference(after) {
            self.owned.remove(&ClusterLabels {
                cluster: cluster.clone(),
            });
        }
        for cluster in after {
            self.owned
                .get_or_create(&ClusterLabels {
                    cluster: cluster.clone(),
                })
                .set(1);
        }
    }
}
