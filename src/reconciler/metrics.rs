//! The reconciler's Prometheus metrics, under the `scoped_secrets_reconciler_` prefix.

use crate::metrics::{registered, registered_as};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Cheap to clone: every metric is an `Arc` inside.
#[derive(Clone)]
pub struct ReconcilerMetrics {
    reconciles: Counter,
    duration: Histogram,
    writes: Family<KindLabels, Counter>,
    conflicts: Gauge,
    requeues: Family<ReasonLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    pending: Gauge,
    leader: Gauge,
    copy_failures: Family<ReasonLabels, Counter>,
    in_backoff: Gauge,
    /// Per downstream cluster (`scoped_secrets_cluster_*`): kept by the leader's connections.
    pub clusters: crate::clusters::connections::ClusterMetrics,
    pub ownership: crate::clusters::ownership::OwnershipMetrics,
}

impl ReconcilerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let clusters = crate::clusters::connections::ClusterMetrics::register(registry);
        let ownership = crate::clusters::ownership::OwnershipMetrics::register(registry);
        let r = registry.sub_registry_with_prefix("scoped_secrets_reconciler");
        // Registered in this order (the order of /metrics): the fields are evaluated as written.
        Self {
            reconciles: registered(r, "reconciles", "Reconcile rounds (plan + execute) run"),
            duration: registered_as(
                r,
                "reconcile_duration_seconds",
                "Duration of one reconcile round",
                Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            ),
            writes: registered(r, "writes", "Writes made, by action kind"),
            conflicts: registered(
                r,
                "conflicts",
                "Copies not written because overwriting is not allowed (latest round)",
            ),
            requeues: registered(
                r,
                "requeues",
                "Actions put off to the next round, by reason",
            ),
            errors: registered(r, "errors", "Failed actions, by error"),
            pending: registered(r, "pending_actions", "Actions planned in the latest round"),
            copy_failures: registered(
                r,
                "copy_failures",
                "Copy writes that failed, by the apiserver's reason (transport: no answer)",
            ),
            in_backoff: registered(
                r,
                "actions_in_backoff",
                "Actions waiting before their next attempt (failed, or waiting for a deletion)",
            ),
            leader: registered(r, "leader", "1 while this instance holds the lease"),
            clusters,
            ownership,
        }
    }

    /// Counts a round and times it until the guard is dropped.
    pub fn round(&self, pending: usize) -> RoundTimer<'_> {
        self.reconciles.inc();
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        RoundTimer {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    pub fn written(&self, kind: &str) {
        self.writes
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn set_conflicts(&self, conflicts: i64) {
        self.conflicts.set(conflicts);
    }

    pub fn requeued(&self, reason: &str) {
        self.requeues
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn failed(&self, error: &super::Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }

    pub fn copy_failed(&self, reason: &str) {
        self.copy_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn set_in_backoff(&self, actions: usize) {
        self.in_backoff
            .set(i64::try_from(actions).unwrap_or(i64::MAX));
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

/// Observes a round's duration when dropped (controller-rs's habit).
pub struct RoundTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for RoundTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn metrics_carry_the_prefix_and_labels() {
        let mut registry = Registry::default();
        let metrics = ReconcilerMetrics::register(&mut registry);
        drop(metrics.round(3));
        metrics.written("create");
        metrics.failed(&super::super::Error::NotLeading);
        metrics.requeued("stale");
        metrics.set_leader(true);
        metrics.copy_failed("Invalid");
        metrics.set_in_backoff(2);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        for line in [
            "scoped_secrets_reconciler_reconciles_total 1",
            "scoped_secrets_reconciler_writes_total{kind=\"create\"} 1",
            "scoped_secrets_reconciler_errors_total{error=\"not_leading\"} 1",
            "scoped_secrets_reconciler_requeues_total{reason=\"stale\"} 1",
            "scoped_secrets_reconciler_pending_actions 3",
            "scoped_secrets_reconciler_leader 1",
            "scoped_secrets_reconciler_copy_failures_total{reason=\"Invalid\"} 1",
            "scoped_secrets_reconciler_actions_in_backoff 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
