//! Per-cluster metrics, for every cluster copies are written in (the management cluster under its
//! own id too): whether it answers, when its copies were last in sync, and what was written there.

use crate::metrics::registered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    cluster: String,
    kind: String,
}

/// Per-cluster metrics.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    connected: Family<ClusterLabels, Gauge>,
    last_sync: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    writes: Family<WriteLabels, Counter>,
    errors: Family<ClusterLabels, Counter>,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            connected: registered(
                registry,
                "scoped_secrets_cluster_connected",
                "Whether a registered downstream cluster answered its last probe with the registered credentials (1) or not (0)",
            ),
            last_sync: registered(
                registry,
                "scoped_secrets_cluster_last_sync_timestamp_seconds",
                "When a round last planned and wrote a cluster's copies from a complete, current list of it (Unix time)",
            ),
            writes: registered(
                registry,
                "scoped_secrets_cluster_writes",
                "Writes made in a cluster, by kind",
            ),
            errors: registered(
                registry,
                "scoped_secrets_cluster_errors",
                "Writes that failed in a cluster",
            ),
        }
    }

    fn labels(cluster: &str) -> ClusterLabels {
        ClusterLabels {
            cluster: cluster.to_owned(),
        }
    }

    pub fn set_connected(&self, cluster: &str, connected: bool) {
        self.connected
            .get_or_create(&Self::labels(cluster))
            .set(i64::from(connected));
    }

    pub fn synced(&self, cluster: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_sync
            .get_or_create(&Self::labels(cluster))
            .set(now);
    }

    pub fn written(&self, cluster: &str, kind: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                cluster: cluster.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn failed(&self, cluster: &str) {
        self.errors.get_or_create(&Self::labels(cluster)).inc();
    }

    /// A cluster no longer registered: its series go (but the counters of what was written).
    pub fn forget(&self, cluster: &str) {
        let labels = Self::labels(cluster);
        self.connected.remove(&labels);
        self.last_sync.remove(&labels);
    }
}
